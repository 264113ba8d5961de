#!/usr/bin/env python3
"""Runs two real agents, a Maven fixture upstream and a real Prometheus (with the rule file) on
loopback, drives a CI-like workload through them for a few minutes, and renders the key
dashboard panels with tools/render_panels.py. Produces docs/images/dashboard-*.png.

    BUILDCACHE_BIN_DIR=build/bin tools/dashboard_demo.py --minutes 4 [--keep]

The workload: "builds" on agent A look up ccache-style objects from a working set and store what
misses, and resolve Maven jars (first from the upstream, then from the store); half-way the
working set changes (a dependency bump), so the hit ratio dips and recovers. Agent B gets the
same builds with a quota smaller than the working set, so it evicts and its hit ratio stays low.
Agents C and D replicate (peers over gRPC, each object owned by one of them) and resolve the same
jars: a jar the other one owns comes from the peer.
--keep leaves Prometheus running afterwards for a look at its UI.
"""

import argparse
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests"))
from conftest import Agent  # noqa: E402
from test_dashboard import MavenFixture, Prometheus, write_peer_pair_configs  # noqa: E402

KIB = 1024


def get(agent, path):
    try:
        return agent.get(path)[0]
    except urllib.error.HTTPError as err:
        return err.code


def build(agent, rng, generation, jars=()):
    """One CI job: 40 lookups from a working set of 400 objects; misses are compiled and stored."""
    for key in rng.sample(range(400), 40):
        path = f"/cache/ccache/g{generation}/{key}"
        if get(agent, path) == 404:
            agent.put(path, bytes([key % 256]) * (rng.randint(2, 16) * KIB))
    for jar in rng.sample(jars, min(4, len(jars))):
        get(agent, jar)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="buildcache-dashboard-"))
    maven = MavenFixture()
    # Two generations of dependencies: the second replaces the first half way.
    jars = {g: [maven.add_jar(f"lib{i}", f"{g}.0", random.Random(i).randint(20, 200) * KIB)[0]
                for i in range(40)] for g in (1, 2)}
    (work / "a.yaml").write_text(f"maven:\n  upstream: {maven.url}\n")
    (work / "b.yaml").write_text("store:\n  maxSize: 1Mi\nhttpcache:\n  maxObjectSize: 64Ki\n")
    write_peer_pair_configs(work, maven.url)
    agents = {name: Agent(work / f"data-{name}", config=work / f"{name}.yaml")
              for name in "abcd"}
    a, b = agents["a"], agents["b"]
    prom = Prometheus(work, [(agent.address, {"namespace": "ci-system", "buildcache": "ci",
                                              "node": f"node-{name}"})
                             for name, agent in agents.items()], None)
    print(f"prometheus: {prom.url}  (work dir {work})", flush=True)
    try:
        rng = random.Random(1)
        start = time.monotonic()
        duration = args.minutes * 60
        while (elapsed := time.monotonic() - start) < duration:
            generation = 1 if elapsed < duration / 2 else 2
            build(a, rng, generation, jars[generation])
            build(b, rng, generation)
            for name in "cd":
                for jar in rng.sample(jars[generation], 4):
                    get(agents[name], jar)
            time.sleep(0.5)
        time.sleep(5)  # the last scrapes
        subprocess.run([sys.executable, str(REPO / "tools" / "render_panels.py"),
                        "--prometheus", prom.url, "--minutes", str(args.minutes + 0.5),
                        "--rate-interval", "20s", "--step", "5", "--out", args.out], check=True)
        if args.keep:
            input("Prometheus is still running; press Enter to stop. ")
    finally:
        prom.stop()
        for agent in agents.values():
            agent.stop()
        maven.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
