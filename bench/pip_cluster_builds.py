#!/usr/bin/env python3
"""One wheel build per sdist in a cluster (issue 14 A, Measure): N network-namespace hosts whose
agents are peers with a builder each; clients download the same sdist (bitarray, a C extension
with no wheel for this Python upstream).

Each round builds a fresh N-host cluster (tests/harness/cluster.py, NAT to the machine's index):
  - "one asks": a pip client on host 1 downloads the sdist; the time from the download's start
    to the built wheel listed on every node's index page, and the builds that ran.
  - "all ask": pip clients on all N hosts download it at the same moment; the same time and
    count. Target: one build (before issue 14 A's cluster scheduling each node built its own),
    and about the time of "one asks" (the joiners wait for the owner's build, then get the wheel
    pushed).
Prints medians and all ask / one asks. Needs root (network namespaces) and bubblewrap.

    bench/pip_cluster_builds.py [--nodes 3] [--rounds 2] [--bin-dir build/bin]
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
from harness.cluster import AgentCluster, Masquerade  # noqa: E402
from harness.metrics import metric  # noqa: E402
from harness.netns import NetnsCluster  # noqa: E402

BUILDER = "/usr/bin/python3"
PROJECT, VERSION = workloads.PIP_C_PROJECT, "2.3.0"
BUILD_TIMEOUT = 900


def log(msg):
    print(f"[pip_cluster_builds] {msg}", file=sys.stderr, flush=True)


def download_sdist(net, i, url, dest):
    host = url.split("/")[2].split(":")[0]
    out = subprocess.run(net.exec_prefix(i) + [
        BUILDER, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--no-build-isolation", "--index-url", f"{url}/pypi/simple/", "--trusted-host", host,
        "-d", str(dest), f"{PROJECT}=={VERSION}"], env=workloads.pip_env(), capture_output=True,
        text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"pip download on host {i + 1} failed: {out.stdout}{out.stderr}")


def listed_everywhere(agents, n):
    for i in range(n):
        page = agents.agents[i].get(f"/pypi/simple/{PROJECT}/")[1]
        if f"{PROJECT}-{VERSION}-cp".encode() not in page:
            return False
    return True


def one_round(work, bin_dir, pip_index, n, askers):
    config = {"pypi": {"upstream": pip_index, "wheelListTtl": "1s",
                       "builders": [{"name": "debian-py311", "python": BUILDER}],
                       "buildDeadline": "15m"},
              "replication": {"copies": 2}}
    with NetnsCluster(n) as net, Masquerade(net), \
            AgentCluster(net, work / "hosts", config, bin_dir / "buildcache-agent") as agents:
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(askers)) as pool:
            list(pool.map(lambda i: download_sdist(net, i, agents.url(i), work / f"dl{i}"),
                          askers))
        deadline = start + BUILD_TIMEOUT
        while not listed_everywhere(agents, n):
            if time.monotonic() > deadline:
                raise RuntimeError("the wheel was not listed on every node in time")
            time.sleep(0.2)
        seconds = time.monotonic() - start
        builds = sum(metric(agents.metrics(i), "buildcache_pypi_builds_total", outcome="started")
                     for i in range(n))
        joined = sum(metric(agents.metrics(i), "buildcache_pypi_builds_total",
                            outcome="deduplicated") for i in range(n))
    return seconds, int(builds), int(joined)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bin-dir", default=str(REPO / "build" / "bin"))
    args = parser.parse_args()
    pip_index = upstreams.pypi_index()
    load_before = open("/proc/loadavg").read().split()[:3]
    results = {"one asks": [], "all ask": []}
    for r in range(args.rounds):
        for name, askers in (("one asks", [0]), ("all ask", list(range(args.nodes)))):
            with tempfile.TemporaryDirectory(prefix="pip-cluster.") as tmp:
                try:
                    results[name].append(one_round(pathlib.Path(tmp), pathlib.Path(args.bin_dir),
                                                   pip_index, args.nodes, askers))
                finally:
                    subprocess.run(["chmod", "-R", "u+w", tmp], check=False)
            log(f"round {r + 1}, {name}: {results[name][-1]}")
    load_after = open("/proc/loadavg").read().split()[:3]
    med = {k: statistics.median(s for s, _, _ in v) for k, v in results.items()}
    print(f"# one build per sdist in a cluster, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{platform.node()}, {platform.release()}, {args.nodes} nodes, {args.rounds} rounds, "
          f"load {' '.join(load_before)} -> {' '.join(load_after)}")
    print("| clients | first sdist download -> wheel listed on every node, s | builds per "
          "round | joins per round |")
    print("|---|---|---|---|")
    for name, rounds in results.items():
        print(f"| {name} | {med[name]:.1f} | {[b for _, b, _ in rounds]} | "
              f"{[j for _, _, j in rounds]} |")
    print(f"\nall ask / one asks: {med['all ask'] / med['one asks']:.2f}")
    ok = all(b == 1 for rounds in results.values() for _, b, _ in rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
