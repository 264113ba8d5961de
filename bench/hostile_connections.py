#!/usr/bin/env python3
"""A second client's latency while a hostile client holds thousands of connections (issue 11
item 6). Starts the real agent on loopback, measures a quiet baseline of a victim client
(127.0.0.2: GETs of a 4 KiB object, each on a fresh connection, so connection acceptance is part
of what is measured), then has a hostile client (127.0.0.1) open and hold --hostile connections
(the agent accepts maxConnectionsPerClient of them and answers the rest 429) and hold them while
the victim measures again (--churn: keep opening new ones, closing the oldest). Prints p50/p99 quiet and under attack and their ratio
(target: p99 under attack <= 2x quiet).

  python3 bench/hostile_connections.py [--requests 2000] [--hostile 3000]
"""

import argparse
import http.client
import json
import os
import pathlib
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
AGENT = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin")) / "buildcache-agent"


def start_agent(tmp):
    config = pathlib.Path(tmp) / "agent.yaml"
    config.write_text("server:\n  maxConnections: 1024\n  maxConnectionsPerClient: 128\n"
                      "  probeListen: 127.0.0.1:0\nlogLevel: warn\n")
    proc = subprocess.Popen([str(AGENT), "--config", str(config), "--listen", "127.0.0.1:0",
                             "--data-dir", str(pathlib.Path(tmp) / "data"), "--log-level", "info"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        entry = json.loads(line)
        if entry.get("msg") == "listening":
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            host, port = entry["address"].rsplit(":", 1)
            phost, pport = entry["probe_address"].rsplit(":", 1)
            return proc, (host, int(port)), (phost, int(pport))
    raise RuntimeError("agent did not start")


def one_get(addr, path, source="127.0.0.2"):
    start = time.perf_counter()
    conn = http.client.HTTPConnection(*addr, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    finally:
        conn.close()
    return time.perf_counter() - start, status


def measure(addr, n):
    times, bad = [], 0
    for _ in range(n):
        t, status = one_get(addr, "/cache/bench/object")
        times.append(t)
        bad += status != 200
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000, bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--hostile", type=int, default=3000)
    ap.add_argument("--churn", action="store_true",
                    help="keep opening new connections (closing the oldest) while measuring; on a "
                         "small machine this measures CPU contention with the hostile client too")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        proc, addr, probe = start_agent(tmp)
        try:
            conn = http.client.HTTPConnection(*addr, timeout=30)
            conn.request("PUT", "/cache/bench/object", body=os.urandom(4096))
            conn.getresponse().read()
            conn.close()
            time.sleep(3)  # past the store's timestamp window: reads are not re-hashed
            measure(addr, 200)  # warm-up
            q50, q99, qbad = measure(addr, args.requests)

            held, stop = [], threading.Event()
            counts = {"opened": 0, "refused": 0}

            def hostile():
                while not stop.is_set():
                    try:
                        s = socket.create_connection(addr, timeout=5,
                                                     source_address=("127.0.0.1", 0))
                    except OSError:
                        time.sleep(0.01)
                        continue
                    counts["opened"] += 1
                    held.append(s)
                    if len(held) >= args.hostile:
                        if not args.churn:
                            return  # hold them all
                        # Keep churning: drop the oldest, so new connections keep arriving.
                        held.pop(0).close()

            threads = [threading.Thread(target=hostile) for _ in range(1 if not args.churn else 2)]
            for t in threads:
                t.start()
            while counts["opened"] < args.hostile:
                time.sleep(0.1)
            a50, a99, abad = measure(addr, args.requests)
            probes = [one_get(probe, "/healthz", source="127.0.0.1")[1] for _ in range(20)]
            stop.set()
            for t in threads:
                t.join()
            for s in held:
                s.close()
        finally:
            proc.terminate()
            proc.wait(20)
    print(f"victim GET 4KiB, fresh connection each, {args.requests} requests")
    print(f"quiet:        p50 {q50:.2f} ms  p99 {q99:.2f} ms  non-200 {qbad}")
    print(f"under attack: p50 {a50:.2f} ms  p99 {a99:.2f} ms  non-200 {abad}  "
          f"(hostile opened {counts['opened']} connections)")
    print(f"p99 ratio {a99 / q99:.2f} (target <= 2.0); probes from the hostile address: "
          f"{sum(p == 200 for p in probes)}/20 answered 200")
    return 0 if a99 <= 2 * q99 and abad == 0 and all(p == 200 for p in probes) else 1


if __name__ == "__main__":
    sys.exit(main())
