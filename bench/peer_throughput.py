#!/usr/bin/env python3
"""Peer transfer throughput between two agents on separate network hosts vs iperf3.

Two network namespaces on a bridge (tests/harness/netns.py), one agent in each, replication with
copies=1. An object whose only owner is agent A is PUT on A (so nothing is pushed); a GET on B
then misses locally, pulls the object from A over gRPC (verifying it while storing) and serves it
from its store. Reported: that cold GET's MB/s, a warm GET of the same object on B (local only),
and iperf3's TCP throughput over the same veth pair, with the ratio peer/iperf3. Needs root.

    python3 bench/peer_throughput.py [--sizes 1Mi,256Mi] [--runs 3]
"""

import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import json

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.netns import NetnsCluster  # noqa: E402
from harness.rendezvous import owners  # noqa: E402

def first_owner(key, members):
    return owners(key, members, 1)[0]


def parse_size(s):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for u, mult in units.items():
        if s.endswith(u):
            return int(s[:-2]) * mult
    return int(s)


def curl_time(net, index, args):
    """Runs curl inside node index; returns (seconds, bytes) as curl measured them."""
    out = net.run(index, ["curl", "-sS", "-o", "/dev/null", "-w",
                          "%{http_code} %{time_total} %{size_download}", *args], timeout=600)
    code, seconds, size = out.stdout.split()
    if out.returncode != 0 or code not in ("200", "201", "204"):
        raise RuntimeError(f"curl {args}: {out.returncode} {out.stdout} {out.stderr}")
    return float(seconds), int(size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1Mi,256Mi")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin-dir", default=os.environ.get("BUILDCACHE_BIN_DIR",
                                                        str(REPO / "build" / "bin")))
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    agent_bin = pathlib.Path(args.bin_dir) / "buildcache-agent"
    work = pathlib.Path(tempfile.mkdtemp(prefix="bc-peer-bench-"))
    with NetnsCluster(2) as net:
        peers = [f"{n.address}:8081" for n in net.nodes]
        procs = []
        for i, node in enumerate(net.nodes):
            cfg = work / f"agent{i}.yaml"
            cfg.write_text(
                f"listen: {node.address}:8080\nlogLevel: warn\n"
                f"store: {{dataDir: {work}/data{i}, maxSize: 4Gi}}\n"
                f"httpcache: {{maxObjectSize: 1Gi}}\n"
                f"replication: {{listen: {node.address}:8081, copies: 1, peerTimeout: 5s,\n"
                f"  peers: [{', '.join(peers)}], hydrate: {{enabled: false}}}}\n")
            procs.append(net.popen(i, [str(agent_bin), "--config", str(cfg)],
                                   stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        for i, node in enumerate(net.nodes):
            for _ in range(300):
                r = net.run(i, ["curl", "-sf", f"http://{node.address}:8080/healthz"])
                if r.returncode == 0:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"agent {i} did not start")

        # iperf3 over the same veth pair: server on A, client on B.
        server = net.popen(0, ["iperf3", "-s", "-1", "-B", net.nodes[0].address],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        out = net.run(1, ["iperf3", "-c", net.nodes[0].address, "-t", "5", "-J", "-R"],
                      timeout=60)
        server.wait(30)
        iperf_bps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
        iperf_mbs = iperf_bps / 8 / 1e6
        print(f"iperf3 A->B TCP: {iperf_mbs:.1f} MB/s")

        a, b = net.nodes[0].address, net.nodes[1].address
        rows = []
        for size in sizes:
            cold, warm = [], []
            for run in range(args.runs):
                n = 0
                while True:  # a key A owns, so the PUT is not pushed and B must pull
                    name = f"bench/{size}/{run}/{n}"
                    if first_owner("httpcache/" + name, peers) == peers[0]:
                        break
                    n += 1
                blob = work / "blob"
                with open(blob, "wb") as f:
                    chunk = hashlib.sha256(name.encode()).digest() * 32768  # 1 MiB
                    left = size
                    while left > 0:
                        f.write(chunk[:min(left, len(chunk))])
                        left -= min(left, len(chunk))
                curl_time(net, 0, ["-X", "PUT", "--data-binary", f"@{blob}",
                                   f"http://{a}:8080/cache/{name}"])
                t, got = curl_time(net, 1, [f"http://{b}:8080/cache/{name}"])
                assert got == size, (got, size)
                cold.append(size / t / 1e6)
                t, got = curl_time(net, 1, [f"http://{b}:8080/cache/{name}"])
                warm.append(size / t / 1e6)
            cold.sort()
            warm.sort()
            rows.append((size, cold[len(cold) // 2], warm[len(warm) // 2]))
        print()
        print("| size | peer pull MB/s (cold GET on B) | local GET MB/s (warm) | iperf3 MB/s |"
              " peer / iperf3 |")
        print("|---|---|---|---|---|")
        for size, cold, warm in rows:
            label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
            print(f"| {label} | {cold:.1f} | {warm:.1f} | {iperf_mbs:.1f} | "
                  f"{cold / iperf_mbs:.2f} |")
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
