#!/usr/bin/env python3
"""Peer-warm: the pip and Go workloads on a node whose agent is cold but whose peer is warm,
against the same workloads on the warm node itself, on two network-namespace hosts.

Each round builds a fresh two-host cluster (tests/harness/cluster.py, with NAT to the machine's
registries):
  1. host 1's agent alone: the workload cold (fills it; the built wheel is published to the
     wheel house as a CI job would), then warm (the client's own caches empty)  -> "warm"
  2. host 2's agent starts, empty, and joins (the peers file both agents re-read); the workload
     on host 2 with empty client caches: every object comes from host 1 over the link
                                                                              -> "peer-warm"
  3. the workload direct to the upstream from host 2, without any agent        -> "direct"
Host 2 joins after host 1 is warm on purpose: had it been a member from the start, host 1 would
have pushed it its copies (replication.copies) and the run would measure a local warm cache.

Prints medians over the rounds and the ratio peer-warm / warm (target <= 1.3), and the bytes
host 2's agent got from its peer and from the upstream. Needs root (network namespaces).

    bench/peer_warm.py [--rounds 3] [--bin-dir build/bin] [--skip-go]
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import upstreams, workloads  # noqa: E402
from harness.cluster import AgentCluster, Masquerade
from harness.metrics import metric  # noqa: E402
from harness.netns import NetnsCluster  # noqa: E402

TARGET = 1.3


def log(msg):
    print(f"[peer_warm] {msg}", file=sys.stderr, flush=True)


def one_round(work, bin_dir, pip_index, go_proxy, sumdb, skip_go):
    key, name, sumdb_url = sumdb
    config = {
        "pypi": {"upstream": pip_index},
        "goproxy": {"upstream": go_proxy, "sumdb": {"name": name, "upstream": sumdb_url}},
        "replication": {"copies": 2},
    }
    times = {}
    with NetnsCluster(2) as net, Masquerade(net), \
            AgentCluster(net, work / "hosts", config, bin_dir / "buildcache-agent", nodes=[0],
                         peers_file=True) as agents:
        h1, h2 = net.exec_prefix(0), net.exec_prefix(1)
        url1, url2 = agents.url(0), agents.url(1)
        log("pip cold on host 1")
        workloads.pip_install(work / "pip-cold", f"{url1}/pypi/simple/", h1)
        # No upload of the built wheel: the wheel house refuses anonymous uploads of upstream
        # versions (docs/security.md), so every cold pip run compiles the sdist.
        log("pip warm on host 1")
        times["pip warm"], _, _ = workloads.pip_install(work / "pip-warm", f"{url1}/pypi/simple/", h1)
        if not skip_go:
            log("go cold on host 1")
            workloads.go_download_build(work / "go-cold", f"{url1}/gomod",
                                        f"{key} {url1}/gomod/sumdb/{name}", h1, build=False)
            log("go warm on host 1")
            times["go warm"], _ = workloads.go_download_build(
                work / "go-warm", f"{url1}/gomod", f"{key} {url1}/gomod/sumdb/{name}", h1,
                build=False)
        log("host 2 joins, empty")
        agents.start(1)
        agents.wait_ready(1)
        # Host 1 must know host 2 before host 2 asks (it re-reads the peers file).
        deadline = time.monotonic() + 30
        while metric(agents.metrics(0), "buildcache_peer_members_live") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("host 1 never saw host 2 join")
            time.sleep(0.2)
        log("pip peer-warm on host 2")
        times["pip peer-warm"], built, _ = workloads.pip_install(
            work / "pip-peer", f"{url2}/pypi/simple/", h2)
        if built:
            raise RuntimeError("host 2 compiled the sdist: the wheel house did not reach it")
        if not skip_go:
            log("go peer-warm on host 2")
            times["go peer-warm"], _ = workloads.go_download_build(
                work / "go-peer", f"{url2}/gomod", f"{key} {url2}/gomod/sumdb/{name}", h2,
                build=False)
        m2 = agents.metrics(1)
        bytes_in = {src: metric(m2, "buildcache_served_bytes_total", source=src)
                    for src in ("local", "peer", "upstream")}
        peer_in = metric(m2, "buildcache_peer_bytes_total", direction="in")
        upstream_in = metric(m2, "buildcache_upstream_bytes_total")
        log("direct (no agent) on host 2")
        times["pip direct"], _, _ = workloads.pip_install(work / "pip-direct", pip_index, h2)
        if not skip_go:
            times["go direct"], _ = workloads.go_download_build(
                work / "go-direct", go_proxy, key, h2, build=False)
    return times, bytes_in, peer_in, upstream_in


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bin-dir", default=str(REPO / "build" / "bin"))
    parser.add_argument("--skip-go", action="store_true")
    args = parser.parse_args()
    pip_index = upstreams.pypi_index()
    go_proxy = upstreams.go_proxy()
    sumdb = upstreams.go_sumdb(go_proxy)
    load_before = open("/proc/loadavg").read().split()[:3]
    rounds = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="peer-warm.") as tmp:
            work = pathlib.Path(tmp)
            try:
                rounds.append(one_round(work, pathlib.Path(args.bin_dir), pip_index, go_proxy,
                                        sumdb, args.skip_go))
            finally:
                subprocess.run(["chmod", "-R", "u+w", tmp], check=False)
        log(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in rounds[-1][0].items()))
    load_after = open("/proc/loadavg").read().split()[:3]
    med = {k: statistics.median(rd[0][k] for rd in rounds) for k in rounds[0][0]}
    print(f"# peer-warm benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
          f"{platform.machine()}, {len(rounds)} rounds, load {' '.join(load_before)} -> "
          f"{' '.join(load_after)}")
    print("| workload | direct s | warm (same node) s | peer-warm s | peer-warm / warm | target |")
    print("|---|---|---|---|---|---|")
    ok = True
    for tool in ("pip", "go"):
        if f"{tool} warm" not in med:
            continue
        ratio = med[f"{tool} peer-warm"] / med[f"{tool} warm"]
        ok &= ratio <= TARGET
        part = " (download)" if tool == "go" else ""
        print(f"| {tool}{part} | {med[f'{tool} direct']:.2f} | {med[f'{tool} warm']:.2f} | "
              f"{med[f'{tool} peer-warm']:.2f} | {ratio:.2f} | <= {TARGET} "
              f"{'met' if ratio <= TARGET else 'MISSED'} |")
    _, bytes_in, peer_in, upstream_in = rounds[-1]
    print(f"\nhost 2 (last round): served {bytes_in['local'] / 1e6:.1f} MB from its store, "
          f"{bytes_in['peer'] / 1e6:.1f} MB streamed from a peer, {bytes_in['upstream'] / 1e6:.1f} "
          f"MB from upstream; received {peer_in / 1e6:.1f} MB from peers and "
          f"{upstream_in / 1e6:.1f} MB from upstream registries")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
