#!/usr/bin/env python3
"""Peak RSS of buildcache-agent with many small objects indexed.

Fills a store with COUNT objects (bench/store_populate, no fsync), starts the agent on it, reads
a random sample of objects through HTTP, and reports the agent's peak RSS (VmHWM) and its current
RSS split into anonymous and file-backed pages, next to the same agent on an empty store
(the baseline, in this invocation).
"""

import argparse
import os
import pathlib
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    get = lambda k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) / 1024
    return {"peak": get("VmHWM"), "rss": get("VmRSS"), "anon": get("RssAnon"),
            "file": get("RssFile")}


def run_agent(bin_dir, data, reads, count):
    port = free_port()
    proc = subprocess.Popen([str(bin_dir / "buildcache-agent"), "--listen", f"127.0.0.1:{port}",
                             "--data-dir", str(data), "--max-size", str(64 << 30),
                             "--log-level", "warn"])
    try:
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(url + "/readyz", timeout=2).read()
                break
            except Exception:
                if time.monotonic() - started > 600:
                    raise
                time.sleep(0.2)
        startup = time.monotonic() - started
        rng = random.Random(1)
        for _ in range(reads if count else 0):
            urllib.request.urlopen(f"{url}/cache/bench/{rng.randrange(count)}", timeout=10).read()
        time.sleep(2)  # let the access-time flusher run
        return memory(proc.pid), startup
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--reads", type=int, default=20_000)
    ap.add_argument("--bin-dir", default=REPO / "build" / "bin")
    ap.add_argument("--bench-dir", default=REPO / "build" / "bench")
    args = ap.parse_args()
    bin_dir, bench_dir = pathlib.Path(args.bin_dir), pathlib.Path(args.bench_dir)

    work = pathlib.Path(tempfile.mkdtemp(prefix="bc-rss-", dir="/var/tmp"))
    try:
        empty, _ = run_agent(bin_dir, work / "empty", 0, 0)
        t0 = time.monotonic()
        subprocess.run([str(bench_dir / "store_populate"), str(work / "full"), str(args.count),
                        "100", "16"], check=True)
        populate = time.monotonic() - t0
        full, startup = run_agent(bin_dir, work / "full", args.reads, args.count)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"# agent memory, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
          f"{os.cpu_count()} cores")
    print(f"populate {args.count:,} objects: {populate:.0f}s; agent start-up {startup:.1f}s; "
          f"{args.reads:,} random GETs")
    print("| store | peak RSS MiB | RSS MiB | anon MiB | file-backed MiB |")
    print("|---|---|---|---|---|")
    for name, m in (("empty (baseline)", empty), (f"{args.count:,} objects", full)):
        print(f"| {name} | {m['peak']:.1f} | {m['rss']:.1f} | {m['anon']:.1f} | {m['file']:.1f} |")
    print(f"\npeak RSS with {args.count:,} objects: {full['peak']:.1f} MiB (target < 200 MiB)")


if __name__ == "__main__":
    main()
