#!/usr/bin/env python3
"""Go's build cache through buildcache-gocacheprog against building without it (issue 14 B).

Builds a real program from this machine's Go module cache (default: bbolt's command, 141
packages with the standard library, from the etcd module scripts/build-test-tools prepares;
--module/--target pick another) with GOPROXY=off, in five configurations, in one run:

  cold         empty GOCACHE, no GOCACHEPROG
  warm-local   the same GOCACHE again (the go command's own warm cache)
  prog-cold    GOCACHEPROG against an empty agent, empty local dir (everything misses, uploads)
  prog-warm    GOCACHEPROG against that now-warm agent, empty GOCACHE and empty local dir
               (a new node: every output comes through the agent)
  prog-down    GOCACHEPROG with the agent unreachable (the fallback's cost)

and prints the ratios the issue sets targets for (prog-warm <= 0.15x cold and <= 1.5x warm-local;
prog-cold <= 1.1x cold). Each configuration runs --rounds times; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
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


def build(module, target, work, tag, prog_args=None, gocache=None):
    """One go build; returns seconds. A fresh GOCACHE unless one is given."""
    gocache = gocache or work / f"gocache-{tag}"
    gocache.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOCACHE=str(gocache), GOMODCACHE=str(TOOLS / "gomod"), GOPROXY="off",
               GOFLAGS="-mod=mod", GOTOOLCHAIN="local", GOENV="off", CGO_ENABLED="0")
    if prog_args is not None:
        env["GOCACHEPROG"] = " ".join(prog_args)
    out = work / f"bin-{tag}"
    t = time.monotonic()
    res = subprocess.run(["go", "build", "-o", str(out), target], cwd=module, env=env,
                         capture_output=True, text=True, timeout=3600)
    secs = time.monotonic() - t
    if res.returncode != 0:
        raise SystemExit(f"{tag}: go build failed:\n{res.stderr[-3000:]}")
    stats = [l for l in res.stderr.splitlines() if "gocacheprog: stats" in l]
    if stats:
        log(f"{tag}: {stats[-1].split(': ', 1)[1]}")
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--module", type=pathlib.Path, default=TOOLS / "etcd-v3.6.5" / "module",
                    help="a module directory whose dependencies are in the tools module cache")
    ap.add_argument("--target", default="go.etcd.io/bbolt/cmd/bbolt")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--bin-dir", type=pathlib.Path, default=REPO / "build" / "bin")
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
        times = {k: [] for k in ("cold", "warm-local", "prog-cold", "prog-warm", "prog-down")}
        served = 0.0
        for r in range(args.rounds):
            work = tmp / f"round{r}"
            work.mkdir()
            agent = Agent(work / "agent-data")
            try:
                warm_cache = work / "gocache-cold"
                times["cold"].append(build(module, args.target, work, "cold"))
                times["warm-local"].append(
                    build(module, args.target, work, "warm-local", gocache=warm_cache))
                base = [str(prog), f"--agent={agent.url}", "--stats"]
                times["prog-cold"].append(build(module, args.target, work, "prog-cold",
                                                base + [f"--dir={work / 'prog-cold'}"]))
                before = agent.metrics()
                times["prog-warm"].append(build(module, args.target, work, "prog-warm",
                                                base + [f"--dir={work / 'prog-warm'}"]))
                after = agent.metrics()
                served = (metric(after, "buildcache_served_bytes_total", frontend="httpcache")
                          - metric(before, "buildcache_served_bytes_total", frontend="httpcache"))
                times["prog-down"].append(build(
                    module, args.target, work, "prog-down",
                    [str(prog), f"--agent=http://127.0.0.1:{closed_port()}",
                     f"--dir={work / 'prog-down'}"]))
            finally:
                agent.stop()
            log("round %d: %s" % (r, ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items())))

    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()
    goversion = subprocess.run(["go", "env", "GOVERSION"], capture_output=True,
                               text=True).stdout.strip()
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {goversion}")
    print(f"target: {args.target} ({len(pkgs)} packages), rounds: {args.rounds}")
    print("| configuration | seconds (median) | / cold |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {v / med['cold']:.3f} |")
    print(f"prog-warm / cold = {med['prog-warm'] / med['cold']:.3f} (target <= 0.15)")
    print(f"prog-warm / warm-local = {med['prog-warm'] / med['warm-local']:.2f} (target <= 1.5)")
    print(f"prog-cold / cold = {med['prog-cold'] / med['cold']:.3f} (target <= 1.1)")
    print(f"prog-down / cold = {med['prog-down'] / med['cold']:.3f}")
    print(f"bytes the agent served to the prog-warm build: {served / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
