#!/usr/bin/env python3
"""Build-cache PUT latency as a cold ccache build sees it (issue 16): one PUT per object, each on a
new connection (every ccache process opens its own), objects of ccache's sizes, from a few
parallel clients. Compares agent binaries (this tree's and, e.g., one built from an older commit)
interleaved round by round, each with a new data directory.

Usage: python3 bench/put_latency.py [--rounds N] [--objects N] [--clients N] [--other BINARY]
Prints per binary the median over rounds of the per-PUT p50 and p90 and the wall time of all PUTs.
"""

import argparse
import concurrent.futures
import http.client
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from harness.jsonlog import JsonLog  # noqa: E402


def start(binary, data):
    proc = subprocess.Popen([str(binary), "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    log = JsonLog(proc)
    address = log.wait_for("listening", 30)["address"]
    return proc, log, address


def put_all(address, objects, clients):
    host, port = address.rsplit(":", 1)

    def put(item):
        key, body = item
        t = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("PUT", key, body=body)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 201, resp.status
        return time.perf_counter() - t

    start_t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        lat = list(pool.map(put, objects))
    return time.perf_counter() - start_t, lat


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--other", help="a second agent binary to compare with")
    args = parser.parse_args()
    binaries = {"this": REPO / "build" / "bin" / "buildcache-agent"}
    if args.other:
        binaries["other"] = pathlib.Path(args.other)
    rng = random.Random(16)
    results = {name: [] for name in binaries}
    for r in range(args.rounds):
        names = list(binaries) if r % 2 == 0 else list(reversed(binaries))
        for name in names:
            # ccache result files: mostly a few KB to a few hundred KB.
            objects = [(f"/cache/ccache/{r}/{name}/{i:04d}",
                        rng.randbytes(rng.choice([2000, 8000, 30000, 120000])))
                       for i in range(args.objects)]
            with tempfile.TemporaryDirectory(prefix="bc-put-") as tmp:
                proc, log, address = start(binaries[name], pathlib.Path(tmp) / "data")
                try:
                    wall, lat = put_all(address, objects, args.clients)
                finally:
                    proc.terminate()
                    proc.wait(30)
                    log.join()
            lat.sort()
            results[name].append((wall, lat[len(lat) // 2], lat[int(len(lat) * 0.9)]))
            print(f"round {r + 1} {name}: wall {wall:.2f} s, p50 {lat[len(lat) // 2] * 1e3:.2f} "
                  f"ms, p90 {lat[int(len(lat) * 0.9)] * 1e3:.2f} ms", file=sys.stderr, flush=True)
    print(f"{args.objects} PUTs, {args.clients} clients, {args.rounds} rounds, load "
          f"{os.getloadavg()[0]:.1f}")
    for name, rows in results.items():
        print(f"{name}: wall {statistics.median(w for w, _, _ in rows):.2f} s, "
              f"p50 {statistics.median(p for _, p, _ in rows) * 1e3:.2f} ms, "
              f"p90 {statistics.median(p for _, _, p in rows) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
