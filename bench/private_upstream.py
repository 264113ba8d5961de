#!/usr/bin/env python3
"""What a private upstream's credential costs the agent: upstream round trips with `auth` (a token
file, looked at before every upstream request and sent as a Bearer header) against the same
round trips without it, in the same invocation, alternating round by round.

The upstream is the private registry fixture on loopback (tests/harness/private_registry.py),
which wants the token in the first case and accepts anyone in the second. The agent's pypi
`metadataTtl` is 0, so every GET of a project page goes upstream (a revalidation: the cold path,
the only one the credential is on; cached content is served without it). Each round runs
--requests sequential GETs on one kept-alive connection against a fresh agent of each kind.

Usage: python3 bench/private_upstream.py [--rounds N] [--requests N]
"""

import argparse
import http.client
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import urllib.parse

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
from harness.private_registry import PrivateRegistry  # noqa: E402
from package_managers import Agent  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def run(agent, requests):
    u = urllib.parse.urlsplit(agent.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    start = time.perf_counter()
    for _ in range(requests):
        conn.request("GET", "/pypi/simple/bc-private-pkg/")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET answered {resp.status}")
    seconds = time.perf_counter() - start
    conn.close()
    return requests / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    rates = {"without auth": [], "with auth": []}
    with tempfile.TemporaryDirectory() as tmp, PrivateRegistry() as registry:
        token = pathlib.Path(tmp) / "token"
        token.write_text(TOKEN + "\n")
        base = f"pypi:\n  upstream: {registry.pypi_index}\n  metadataTtl: 0s\n"
        configs = {"without auth": base,
                   "with auth": base + f"  auth:\n    tokenFile: {token}\n"}
        for r in range(args.rounds):
            for kind in ("without auth", "with auth") if r % 2 == 0 else ("with auth",
                                                                         "without auth"):
                if kind == "with auth":
                    registry.want_bearer(TOKEN)
                else:
                    registry.accept_anyone()
                agent = Agent(pathlib.Path(tmp) / f"{r}-{kind.replace(' ', '-')}", configs[kind])
                try:
                    run(agent, 20)  # warm the connection pool and the credential
                    rates[kind].append(run(agent, args.requests))
                finally:
                    agent.stop()
    load = os.getloadavg()
    print(f"machine: {platform.system()} {platform.release()}, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    base = statistics.median(rates["without auth"])
    for kind, values in rates.items():
        med = statistics.median(values)
        print(f"{kind:13s} median {med:8.1f} upstream round trips/s "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})  ratio {med / base:.3f}")


if __name__ == "__main__":
    main()
