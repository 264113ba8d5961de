#!/usr/bin/env python3
"""Go's build cache through buildcache-gocacheprog against building without it (issue 14 B).

Builds a real program from this machine's Go module cache (default: bbolt's command, 141
packages with the standard library, from the etcd module scripts/build-test-tools prepares;
--module/--target pick another) with GOPROXY=off, in these configurations, in one run:

  cold         empty GOCACHE, no GOCACHEPROG
  warm-local   the same GOCACHE again (the go command's own warm cache)
  prog-cold    GOCACHEPROG against an empty agent, empty local dir (everything misses, uploads)
  prog-warm    GOCACHEPROG against that now-warm agent, empty GOCACHE and empty local dir
               (a new node: every output comes through the agent)
  prog-down    GOCACHEPROG with the agent unreachable (the fallback's cost)

With --baseline-prog PATH (another buildcache-gocacheprog, e.g. a build before a change), after
prog-warm the same empty-GOCACHE build runs twice more on the prog-warm host, now that its agent
holds everything: prog-again with this tree's binary and prog-again-base with the other one, in
alternating order by round, so the two binaries are compared against the same warm agent.

With --netns (needs root) the agents are two network-namespace hosts peered with each other
(replication.copies 1, so an object lives on its rendezvous owner and host 2's agent fetches what
host 1's agent owns over the peer protocol): prog-cold runs on host 1 through agent 1 and
prog-warm on host 2 through agent 2, the cross-node case the issue's targets are about. The same
agents also replicate a `gobuild` directory cache (the hostPath alternative, side by side):

  dir-cold     host 1, GOCACHE is its node directory (empty): built while agent 1 indexes it
  dir-host2    host 2, GOCACHE is its node directory once agent 2 has pulled every entry host 1
               wrote (the wait, "dir-sync", is reported apart: replication, not the build's time)

Prints the ratios the issue sets targets for (prog-warm <= 0.15x cold and <= 1.5x warm-local;
prog-cold <= 1.1x cold). Each configuration runs --rounds times, odd rounds in reverse order of
cold vs prog-cold (load from other users drifts); medians and the load averages are reported.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import Agent  # noqa: E402
from harness.metrics import metric  # noqa: E402

TOOLS = pathlib.Path.home() / ".cache" / "buildcache" / "tools"


def log(msg):
    print(f"[go_build_cache] {msg}", file=sys.stderr, flush=True)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


PROG_STATS = {}  # tag -> the last gocacheprog stats line's fields


def build(module, target, work, tag, prog_args=None, gocache=None, prefix=()):
    """One go build (under `prefix`, e.g. ip netns exec); returns seconds. A fresh GOCACHE unless
    one is given."""
    gocache = gocache or work / f"gocache-{tag}"
    gocache.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOCACHE=str(gocache), GOMODCACHE=str(TOOLS / "gomod"), GOPROXY="off",
               GOFLAGS="-mod=mod", GOTOOLCHAIN="local", GOENV="off", CGO_ENABLED="0")
    if prog_args is not None:
        env["GOCACHEPROG"] = " ".join(prog_args)
    out = work / f"bin-{tag}"
    t = time.monotonic()
    res = subprocess.run([*prefix, shutil.which("go"), "build", "-o", str(out), target],
                         cwd=module, env=env,
                         capture_output=True, text=True, timeout=3600)
    secs = time.monotonic() - t
    if res.returncode != 0:
        raise SystemExit(f"{tag}: go build failed:\n{res.stderr[-3000:]}")
    stats = [l for l in res.stderr.splitlines() if "gocacheprog: stats" in l]
    if stats:
        line = stats[-1].split(": ", 1)[1]
        log(f"{tag}: {line}")
        PROG_STATS[tag] = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    return secs


CACHE_ENTRY = re.compile(r"^[0-9a-f]{64}-[ad]$")


def cache_entries(gocache):
    """Relative paths of the go command's cache entries (action and output files) in gocache."""
    return {str(p.relative_to(gocache)) for p in gocache.rglob("*")
            if p.is_file() and CACHE_ENTRY.match(p.name)}


def wait_replicated(src, dst, timeout=900):
    """Waits (bounded) until dst holds every cache entry src holds; returns seconds waited."""
    want = cache_entries(src)
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        missing = want - cache_entries(dst)
        if not missing:
            return time.monotonic() - t
        time.sleep(0.5)
    raise SystemExit(f"dir-sync: {len(missing)} of {len(want)} entries never reached host 2")


class Agents:
    """The agents the GOCACHEPROG builds use: one on loopback for both hosts, or (netns) one per
    network-namespace host, peered, with the builds run inside the hosts."""

    def __init__(self, work, netns):
        self.work, self.netns = work, netns
        self.net, self.agents = None, []
        self.gobuild_dirs = []  # (netns) each host's replicated GOCACHE directory

    def __enter__(self):
        try:
            if not self.netns:
                self.agents = [Agent(self.work / "agent-data")]
                return self
            from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent  # noqa: E402
            from harness.netns import NetnsCluster  # noqa: E402
            self.net = NetnsCluster(2).__enter__()
            peers = ", ".join(f"{n.address}:{PEER_PORT}" for n in self.net.nodes)
            for i, node in enumerate(self.net.nodes):
                data = self.work / f"node{i}" / "data"
                data.parent.mkdir()
                self.gobuild_dirs.append(self.work / f"node{i}" / "gobuild")
                self.gobuild_dirs[-1].mkdir()
                config = (f"listen: {node.address}:{HTTP_PORT}\n"
                          f"store: {{dataDir: {data}, maxSize: 4Gi}}\n"
                          f"replication:\n  listen: {node.address}:{PEER_PORT}\n"
                          f"  copies: 1\n  peerTimeout: 5s\n  hydrate: {{enabled: false}}\n"
                          f"  peers: [{peers}]\n"
                          f"directories:\n  - {{name: gobuild, path: {self.gobuild_dirs[-1]}, "
                          f"maxSize: 2Gi, settle: 200ms}}\n")
                self.agents.append(NetAgent(self.net, i, data, config))
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        for agent in self.agents:
            agent.stop()
        if self.net is not None:
            self.net.__exit__(None, None, None)

    def _agent(self, host):
        return self.agents[min(host, len(self.agents) - 1)]

    def url(self, host):
        return self._agent(host).url

    def prefix(self, host):
        return self.net.exec_prefix(host) if self.net else ()

    def metrics(self, host):
        return self._agent(host).metrics()

    def settle(self, timeout=120):
        """Waits (bounded) until agent 1's pushes to its peer are done, so host 2 measures
        serving, not a race with replication still in flight."""
        if not self.net:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if metric(self.agents[0].metrics(), "buildcache_peer_push_queue") == 0:
                return
            time.sleep(0.5)
        log("warning: agent 1 still had pushes queued")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--module", type=pathlib.Path, default=TOOLS / "etcd-v3.6.5" / "module",
                    help="a module directory whose dependencies are in the tools module cache")
    ap.add_argument("--target", default="go.etcd.io/bbolt/cmd/bbolt")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--bin-dir", type=pathlib.Path, default=REPO / "build" / "bin")
    ap.add_argument("--baseline-prog", type=pathlib.Path,
                    help="another buildcache-gocacheprog to compare with (prog-again-base)")
    ap.add_argument("--netns", action="store_true",
                    help="agents on two network-namespace hosts; prog-warm on host 2")
    args = ap.parse_args()
    prog = args.bin_dir / "buildcache-gocacheprog"
    if not prog.exists():
        raise SystemExit(f"{prog} is missing: build first")
    if not (args.module / "go.mod").exists():
        raise SystemExit(f"{args.module}/go.mod is missing: run scripts/build-test-tools etcd")

    with tempfile.TemporaryDirectory(prefix="go-build-cache-") as tmp:
        tmp = pathlib.Path(tmp)
        module = tmp / "module"  # a copy, so -mod=mod never edits the tools' module
        shutil.copytree(args.module, module)
        pkgs = subprocess.run(["go", "list", "-deps", args.target], cwd=module, text=True,
                              capture_output=True, check=True,
                              env={**os.environ, "GOMODCACHE": str(TOOLS / "gomod"),
                                   "GOPROXY": "off", "GOFLAGS": "-mod=mod"}).stdout.split()
        log(f"target {args.target}: {len(pkgs)} packages")
        names = ["cold", "warm-local", "prog-cold", "prog-warm", "prog-down"]
        if args.baseline_prog:
            names += ["prog-again", "prog-again-base"]
        if args.netns:
            names += ["dir-cold", "dir-host2", "dir-sync"]
        times = {k: [] for k in names}
        served, sources, loads, per_request = 0.0, {}, [], []
        for r in range(args.rounds):
            work = tmp / f"round{r}"
            work.mkdir()
            with Agents(work, args.netns) as agents:
                def local():
                    warm_cache = work / "gocache-cold"
                    times["cold"].append(build(module, args.target, work, "cold"))
                    times["warm-local"].append(
                        build(module, args.target, work, "warm-local", gocache=warm_cache))

                def request_seconds(metrics):
                    return (metric(metrics, "buildcache_request_duration_seconds_sum",
                                   frontend="httpcache"),
                            metric(metrics, "buildcache_request_duration_seconds_count",
                                   frontend="httpcache"))

                def through_agents():
                    nonlocal served, sources
                    times["prog-cold"].append(build(
                        module, args.target, work, "prog-cold",
                        [str(prog), f"--agent={agents.url(0)}", "--stats",
                         f"--dir={work / 'prog-cold'}"], prefix=agents.prefix(0)))
                    agents.settle()
                    before = agents.metrics(1)
                    times["prog-warm"].append(build(
                        module, args.target, work, "prog-warm",
                        [str(prog), f"--agent={agents.url(1)}", "--stats",
                         f"--dir={work / 'prog-warm'}"], prefix=agents.prefix(1)))
                    after = agents.metrics(1)
                    (s0, n0), (s1, n1) = request_seconds(before), request_seconds(after)
                    per_request.append(((s1 - s0) / max(1, n1 - n0) * 1000, n1 - n0,
                                        PROG_STATS.get("prog-warm", {}).get("connections", "?")))
                    if args.baseline_prog:
                        pair = [("prog-again", prog), ("prog-again-base", args.baseline_prog)]
                        for tag, binary in (pair if r % 2 == 0 else pair[::-1]):
                            times[tag].append(build(
                                module, args.target, work, tag,
                                [str(binary), f"--agent={agents.url(1)}", "--stats",
                                 f"--dir={work / tag}"], prefix=agents.prefix(1)))
                    served = (metric(after, "buildcache_served_bytes_total", frontend="httpcache")
                              - metric(before, "buildcache_served_bytes_total",
                                       frontend="httpcache"))
                    sources = {src: metric(after, "buildcache_served_bytes_total",
                                           frontend="httpcache", source=src)
                               - metric(before, "buildcache_served_bytes_total",
                                        frontend="httpcache", source=src)
                               for src in ("local", "peer")}

                def through_dirs():
                    src, dst = agents.gobuild_dirs
                    times["dir-cold"].append(build(module, args.target, work, "dir-cold",
                                                   gocache=src, prefix=agents.prefix(0)))
                    times["dir-sync"].append(wait_replicated(src, dst))
                    times["dir-host2"].append(build(module, args.target, work, "dir-host2",
                                                    gocache=dst, prefix=agents.prefix(1)))

                steps = [local, through_agents] + ([through_dirs] if args.netns else [])
                loads.append(os.getloadavg()[0])
                for step in (steps if r % 2 == 0 else steps[::-1]):
                    step()
                    loads.append(os.getloadavg()[0])
                times["prog-down"].append(build(
                    module, args.target, work, "prog-down",
                    [str(prog), f"--agent=http://127.0.0.1:{closed_port()}",
                     f"--dir={work / 'prog-down'}"]))
                loads.append(os.getloadavg()[0])
            log("round %d: %s" % (r, ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items())))

    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()
    goversion = subprocess.run(["go", "env", "GOVERSION"], capture_output=True,
                               text=True).stdout.strip()
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {goversion}")
    print(f"target: {args.target} ({len(pkgs)} packages), rounds: {args.rounds}")
    print("| configuration | seconds per round | median s | / cold |")
    print("|---|---|---|---|")
    for k, v in med.items():
        rounds = ", ".join(f"{x:.2f}" for x in times[k])
        print(f"| {k} | {rounds} | {v:.2f} | {v / med['cold']:.3f} |")
    print(f"prog-warm / cold = {med['prog-warm'] / med['cold']:.3f} (target <= 0.15)")
    print(f"prog-warm / warm-local = {med['prog-warm'] / med['warm-local']:.2f} (target <= 1.5)")
    print(f"prog-cold / cold = {med['prog-cold'] / med['cold']:.3f} (target <= 1.1)")
    print(f"prog-down / cold = {med['prog-down'] / med['cold']:.3f}")
    if args.baseline_prog:
        print(f"prog-again / prog-again-base = "
              f"{med['prog-again'] / med['prog-again-base']:.3f} (this gocacheprog against "
              f"{args.baseline_prog}, same warm agent); prog-again / warm-local = "
              f"{med['prog-again'] / med['warm-local']:.2f}, prog-again-base / warm-local = "
              f"{med['prog-again-base'] / med['warm-local']:.2f}")
    if args.netns:
        print(f"dir-host2 / cold = {med['dir-host2'] / med['cold']:.3f}, "
              f"dir-host2 / warm-local = {med['dir-host2'] / med['warm-local']:.2f}, "
              f"dir-cold / cold = {med['dir-cold'] / med['cold']:.3f} "
              f"(directory cache; host 2 waited {med['dir-sync']:.1f} s for replication)")
    for i, (ms, n, conns) in enumerate(per_request):
        print(f"round {i}: prog-warm: agent {n:.0f} requests, {ms:.2f} ms each on the agent's "
              f"side; gocacheprog opened {conns} connections")
    print(f"bytes the agent served to the prog-warm build: {served / 1e6:.1f} MB "
          f"(from its own store {sources.get('local', 0) / 1e6:.1f} MB, fetched from its peer "
          f"{sources.get('peer', 0) / 1e6:.1f} MB)")
    print(f"1-minute load average during the run: min {min(loads):.1f}, max {max(loads):.1f}")
    print(f"hosts: {'two network-namespace hosts, agents peered' if args.netns else 'one agent on loopback'}")


if __name__ == "__main__":
    main()
