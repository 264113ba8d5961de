#!/usr/bin/env python3
"""Peer transfer throughput between two agents on separate network hosts vs iperf3.

Two network namespaces on a bridge (tests/harness/netns.py), one agent in each, replication with
copies=1. An object whose only owner is agent A is PUT on A (so nothing is pushed). Measured on B,
timed by curl inside B's namespace:
- peer transfer: a HEAD on B, which pulls the object from A over gRPC into B's store (verified,
  written, fsynced, indexed) and answers with no body;
- cold GET: a GET of another such object, which B serves while it pulls it;
- warm GET: the same GET again, served locally.
iperf3 measures TCP over the same veth pair in the same direction, and a plain TCP copy of the
same-sized file from A's disk to B's (sendfile, write, fsync; bench/hydration.py's baseline)
measures what moving an object costs without the agents. Each round may shape A's
egress (tc tbf) to a link rate, so the ratio is also seen where the link, not memory, is the
limit. Needs root.

    python3 bench/peer_throughput.py [--sizes 1Mi,256Mi] [--runs 3] [--rates unlimited,1gbit]
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

sys.path.insert(0, str(REPO / "bench"))
from hydration import RECEIVER, SENDER  # noqa: E402  (the plain TCP copy baseline)

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


def iperf3(net):
    """TCP throughput A -> B over the veth pair (iperf3 -R: the server on A sends)."""
    server = net.popen(0, ["iperf3", "-s", "-1", "-B", net.nodes[0].address],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    out = net.run(1, ["iperf3", "-c", net.nodes[0].address, "-t", "5", "-J", "-R"], timeout=60)
    server.wait(30)
    mbs = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
    print(f"iperf3 A->B TCP: {mbs:.1f} MB/s", flush=True)
    return mbs


def put_owned_by_a(net, work, peers, a, size, name_prefix):
    """PUTs a fresh object that only A owns (so nothing is pushed); returns its name."""
    n = 0
    while True:
        name = f"bench/{name_prefix}/{n}"
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
    curl_time(net, 0, ["-X", "PUT", "--data-binary", f"@{blob}", f"http://{a}:8080/cache/{name}"])
    return name


def tcp_copy(net, work, a, size, runs):
    """Median MB/s of a plain TCP copy of one file of `size` bytes from A's disk to B's, over the
    same veth: sendfile on A, write and fsync on B (what `cat file | nc` plus a sync does)."""
    src = work / "tcp-src"
    subprocess.run(["rm", "-rf", str(src)])
    src.mkdir()
    with open(src / "blob", "wb") as f:
        f.write(os.urandom(min(size, 1 << 20)) * max(1, size >> 20))
    speeds = []
    for run in range(runs):
        dst = work / f"tcp-dst{run}"
        subprocess.run(["rm", "-rf", str(dst)])
        dst.mkdir()
        sender = net.popen(0, ["python3", "-c", SENDER, str(src), a])
        out = net.run(1, ["python3", "-c", RECEIVER, str(dst), a, str(size)], timeout=600)
        sender.wait(60)
        copied, seconds = out.stdout.split()
        assert int(copied) == size, (copied, size)
        speeds.append(size / float(seconds) / 1e6)
        subprocess.run(["rm", "-rf", str(dst)])
    return sorted(speeds)[len(speeds) // 2]


def measure(net, work, peers, a, b, size, runs, label):
    """Medians over runs of: a HEAD on B (B pulls the object from A into its store: verified,
    written, fsynced, indexed; no body to a client), a cold GET on B (the pull streamed to curl)
    and a warm GET on B (local)."""
    pull, cold, warm = [], [], []
    for run in range(runs):
        # The sender's blob is read after the store's timestamp window, as an old one would be.
        name = put_owned_by_a(net, work, peers, a, size, f"{label}/head/{run}")
        time.sleep(0.2)
        t, _ = curl_time(net, 1, ["-I", f"http://{b}:8080/cache/{name}"])
        pull.append(size / t / 1e6)
        name = put_owned_by_a(net, work, peers, a, size, f"{label}/get/{run}")
        time.sleep(0.2)
        t, got = curl_time(net, 1, [f"http://{b}:8080/cache/{name}"])
        assert got == size, (got, size)
        cold.append(size / t / 1e6)
        t, got = curl_time(net, 1, [f"http://{b}:8080/cache/{name}"])
        warm.append(size / t / 1e6)
    return [sorted(x)[len(x) // 2] for x in (pull, cold, warm)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1Mi,256Mi")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rates", default="unlimited,1gbit,4gbit",
                    help="A's egress shaping (tc tbf) per round, e.g. 1gbit; 'unlimited' = none")
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

        a, b = net.nodes[0], net.nodes[1]
        results = []
        for rate in args.rates.split(","):
            if rate != "unlimited":
                net.limit_rate(0, rate)  # what A sends: the peer stream and iperf3 -R alike
            iperf_mbs = iperf3(net)
            rows = []
            for size in sizes:
                rows.append((size, tcp_copy(net, work, a.address, size, args.runs),
                             *measure(net, work, peers, a.address, b.address, size,
                                      args.runs, f"{rate}/{size}")))
            results.append((rate, iperf_mbs, rows))
            if rate != "unlimited":
                net.run(0, ["tc", "qdisc", "del", "dev", "eth0", "root"])
        print()
        print("| link (A's egress) | size | iperf3 MB/s | TCP copy + fsync MB/s |"
              " peer transfer MB/s (HEAD on B) | transfer / iperf3 | transfer / TCP copy |"
              " cold GET MB/s (pull + serve) | cold GET / iperf3 | warm GET MB/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for rate, iperf_mbs, rows in results:
            for size, copy, pull, cold, warm in rows:
                label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
                print(f"| {rate} | {label} | {iperf_mbs:.1f} | {copy:.1f} | {pull:.1f} | "
                      f"{pull / iperf_mbs:.2f} | {pull / copy:.2f} | {cold:.1f} | "
                      f"{cold / iperf_mbs:.2f} | {warm:.1f} |")
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
