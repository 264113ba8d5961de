#!/usr/bin/env python3
"""Wheels the agent builds, across nodes (issue 14 A, Measure): the seed's pip experiment with no
upload step, on two network-namespace hosts whose agents are peers and have a builder.

The workload: a dozen wheels and two sdists with C extensions that have no wheel for this
interpreter (bitarray 2.3.0, ~3 s to compile, and psutil 5.9.0, ~5 s), so a cold install takes
about as long as the seed's 9.6 s. --light drops psutil (the workload of the first runs).

Each round builds a fresh two-host cluster (tests/harness/cluster.py, NAT to the machine's
index) whose agents build wheels with Debian's /usr/bin/python3 (bubblewrap sandbox, build
requirements through the agent's own index):
  1. host 1, empty agent, empty pip cache: `pip install -r` of the workload          -> "cold"
     The client compiles the sdists itself; their downloads start the agents' builds.
  2. the agents' builds: from the first sdist download (`pypi build queued`) to the last wheel
     stored and listed (`pypi wheel stored`)                                        -> "build"
     then host 1 again, a new venv with the cold run's pip cache kept: the seed's warm run on
     one box (pip reads its cached pages and wheels; the built wheels come from the agent) -> "warm"
  3. host 2, empty pip cache, no upload anywhere: the same install                  -> "host 2"
  4. pip's floor on host 2: the same wheels (downloaded through the agent beforehand, not timed)
     installed from a local directory with --no-index, empty pip cache              -> "floor"
     No index can make step 3 faster than this; it is pip's own install work.
  5. uv on host 2, empty uv cache, through host 2's agent                           -> "uv host 2"
     and uv direct to the upstream with an empty cache (it compiles the sdists)     -> "uv cold"
Prints medians, host 2 / cold (target <= 0.25; the seed: 2.2 / 9.6 = 0.23 on one box), host 2
against pip's own warm run on one box and against the floor, and the builds each agent ran. Needs root (network namespaces) and bubblewrap.

    bench/pip_built_wheels.py [--rounds 3] [--bin-dir build/bin] [--light]
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import shutil
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

TARGET = 0.25
BUILDER = "/usr/bin/python3"
BUILD_TIMEOUT = 600
# Released before this interpreter (3.11): no compatible wheel upstream, so pip compiles it.
HEAVY_SDIST, HEAVY_PIN = "psutil", "psutil==5.9.0\n"


class Workload:
    def __init__(self, light):
        self.sdists = (workloads.PIP_C_PROJECT,) if light else (workloads.PIP_C_PROJECT,
                                                                 HEAVY_SDIST)
        self.requirements = workloads.PIP_REQUIREMENTS + ("" if light else HEAVY_PIN)
        self.imports = workloads.PIP_IMPORTS + ("" if light else f", {HEAVY_SDIST}")

    def pip_install(self, work, index_url, prefix, cache=None):
        return workloads.pip_install(work, index_url, prefix, requirements=self.requirements,
                                     imports=self.imports, sdists=self.sdists, cache=cache)


def log(msg):
    print(f"[pip_built_wheels] {msg}", file=sys.stderr, flush=True)


def ts(entry):
    return datetime.datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()


def uv_install(work, index_url, prefix, workload):
    work = pathlib.Path(work)
    work.mkdir(parents=True)
    (work / "requirements.txt").write_text(workload.requirements)
    env = workloads.pip_env()
    env = {k: v for k, v in env.items() if not k.startswith("UV_")}
    env.update(UV_NO_CONFIG="1", UV_CACHE_DIR=str(work / "uv-cache"))
    uv = shutil.which("uv")
    workloads.timed([uv, "venv", "-q", "--python", sys.executable, work / "venv"], env=env)
    env["VIRTUAL_ENV"] = str(work / "venv")
    secs, text = workloads.timed([uv, "pip", "install", "--index-url", index_url,
                                  "-r", work / "requirements.txt"], env=env, prefix=prefix)
    return secs, text


def pip_floor(work, index_url, prefix, workload):
    """pip installing the workload's wheels from a local directory: fetched through index_url
    first (not timed), then a fresh venv and an empty cache, --no-index --find-links."""
    work = pathlib.Path(work)
    work.mkdir(parents=True)
    reqs, wheels = work / "requirements.txt", work / "wheels"
    reqs.write_text(workload.requirements)
    env = workloads.pip_env()
    host = index_url.split("/")[2]
    workloads.timed([sys.executable, "-m", "pip", "download", "--no-cache-dir", "--only-binary",
                     ":all:", "--index-url", index_url, "--trusted-host", host, "-d", wheels,
                     "-r", reqs], env=env, prefix=prefix)
    workloads.timed([sys.executable, "-m", "venv", work / "venv"], env=env)
    py = work / "venv" / "bin" / "python"
    secs, _ = workloads.timed([py, "-m", "pip", "install", "--cache-dir", work / "pip-cache",
                               "--no-index", "--find-links", wheels, "-r", reqs], env=env,
                              prefix=prefix)
    workloads.timed([py, "-c", workload.imports], env=env)
    return secs


def wait_for_builds(agents, projects):
    """Waits until an agent logged a succeeded build for each project (the sdist's owner builds
    it: host 1 or host 2) and host 2 lists the wheel. Returns (seconds from the first build queued
    to the last wheel stored, the wheel file names)."""
    deadline = time.monotonic() + BUILD_TIMEOUT
    done = {}
    while len(done) < len(projects):
        for entry in [e for a in agents.agents.values() for e in list(a.logs)]:
            if entry.get("msg") == "pypi build failed":
                raise RuntimeError(f"a build failed: {entry}")
            if entry.get("msg") == "pypi build succeeded":
                project = entry["wheel"].split("-")[0].lower()
                if project in projects:
                    done[project] = entry["wheel"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"built only {sorted(done)} of {sorted(projects)}")
        time.sleep(0.2)
    logs = [e for a in agents.agents.values() for e in a.logs]
    queued = [ts(e) for e in logs if e.get("msg") == "pypi build queued"]
    stored = [ts(e) for e in logs if e.get("msg") == "pypi wheel stored"
              and e.get("filename") in done.values()]
    for project, wheel in done.items():
        deadline = time.monotonic() + 60
        while wheel.encode() not in agents.agents[1].get(f"/pypi/simple/{project}/")[1]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"host 2 never listed {wheel}")
            time.sleep(0.2)
    return max(stored) - min(queued), sorted(done.values())


def one_round(work, bin_dir, pip_index, workload):
    config = {"pypi": {"upstream": pip_index,
                       "builders": [{"name": "debian-py311", "python": BUILDER}],
                       "buildDeadline": "10m"},
              "replication": {"copies": 2}}
    times = {}
    with NetnsCluster(2) as net, Masquerade(net), \
            AgentCluster(net, work / "hosts", config, bin_dir / "buildcache-agent") as agents:
        h1, h2 = net.exec_prefix(0), net.exec_prefix(1)
        url1, url2 = agents.url(0), agents.url(1)
        log("pip cold on host 1")
        times["cold"], built, cache = workload.pip_install(work / "pip-cold",
                                                           f"{url1}/pypi/simple/", h1)
        if set(built) != set(workload.sdists):
            raise RuntimeError(f"the cold run compiled {built}, not all of {workload.sdists}")
        times["build"], wheels = wait_for_builds(agents, set(workload.sdists))
        # After the builds, which would take its CPU.
        log("pip warm on host 1: a new venv, the cold run's pip cache (the seed's warm run)")
        times["warm"], built, _ = workload.pip_install(work / "pip-warm", f"{url1}/pypi/simple/",
                                                       h1, cache=cache)
        if built:
            raise RuntimeError(f"the warm run compiled {built}: pip's wheel cache was not used")
        log("pip on host 2, empty pip cache")
        times["host 2"], built, _ = workload.pip_install(work / "pip-2", f"{url2}/pypi/simple/",
                                                         h2)
        if built:
            raise RuntimeError(f"host 2 compiled {built}: the built wheels did not reach it")
        log("pip's floor on host 2: the same wheels from a local directory")
        times["floor"] = pip_floor(work / "floor", f"{url2}/pypi/simple/", h2, workload)
        log("uv on host 2, empty uv cache")
        times["uv host 2"], _ = uv_install(work / "uv-2", f"{url2}/pypi/simple/", h2, workload)
        log("uv direct from host 2, empty uv cache")
        times["uv cold"], _ = uv_install(work / "uv-cold", pip_index, h2, workload)
        builds = [metric(agents.metrics(i), "buildcache_pypi_builds_total", outcome="started")
                  for i in range(2)]
    return times, builds, wheels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bin-dir", default=str(REPO / "build" / "bin"))
    parser.add_argument("--light", action="store_true",
                        help="bitarray only (the workload of the first runs), without psutil")
    args = parser.parse_args()
    workload = Workload(args.light)
    pip_index = upstreams.pypi_index()
    load_before = open("/proc/loadavg").read().split()[:3]
    rounds = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="pip-built.") as tmp:
            try:
                rounds.append(one_round(pathlib.Path(tmp), pathlib.Path(args.bin_dir), pip_index,
                                        workload))
            finally:
                subprocess.run(["chmod", "-R", "u+w", tmp], check=False)
        log(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in rounds[-1][0].items()))
    load_after = open("/proc/loadavg").read().split()[:3]
    med = {k: statistics.median(rd[0][k] for rd in rounds) for k in rounds[0][0]}
    ratio, uv_ratio = med["host 2"] / med["cold"], med["uv host 2"] / med["uv cold"]
    print(f"# built wheels across nodes, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
          f"{platform.machine()}, {len(rounds)} rounds, load {' '.join(load_before)} -> "
          f"{' '.join(load_after)}; built {', '.join(rounds[-1][2])}")
    print("| client | cold s | host 2 s | host 2 / cold | target |")
    print("|---|---|---|---|---|")
    print(f"| pip | {med['cold']:.2f} | {med['host 2']:.2f} | {ratio:.2f} | <= {TARGET} "
          f"{'met' if ratio <= TARGET else 'MISSED'} |")
    print(f"| uv | {med['uv cold']:.2f} (direct) | {med['uv host 2']:.2f} | {uv_ratio:.2f} | - |")
    print(f"\npip warm on host 1 (the cold run's pip cache kept, as the seed's cache mount): "
          f"{med['warm']:.2f} s = {med['warm'] / med['cold']:.2f} of cold; host 2 / warm "
          f"{med['host 2'] / med['warm']:.2f}")
    print(f"pip's floor on host 2 (the same wheels from a local directory, no index): "
          f"{med['floor']:.2f} s = {med['floor'] / med['cold']:.2f} of cold; host 2 / floor "
          f"{med['host 2'] / med['floor']:.2f}")
    print(f"\nagent build, sdist download -> wheel listed: median {med['build']:.1f} s; builds "
          f"started per round (host 1, host 2): {[rd[1] for rd in rounds]}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
