#!/usr/bin/env python3
"""Cold misses one request at a time: npm packuments and Go module zips, direct against through
a cold agent, interleaved in the same invocation.

For each package (npm) or module version (Go), in each round:
  direct: GET from the machine's configured upstream (`npm config get registry`,
          `go env GOPROXY`), time to the first body byte and to the last;
  cold:   the same GET through a buildcache-agent started for the round with an empty data dir,
          so every item is a miss (for Go, the agent also checks the zip against the checksum
          database, `go env GOSUMDB`).
Direct and cold alternate item by item, so a change of network or machine load hits both. The
medians over every item and round are printed with the ratios cold / direct, and the agent's
own view of the same requests (its request-duration histogram from /metrics).

With --baseline-bin DIR a second agent (DIR/buildcache-agent, e.g. another tree's build) is
started beside the first in each round and every item is also fetched through it, rotating the
order of direct / cold / baseline item by item: before and after in the same invocation.

Usage: python3 bench/cold_miss.py [--rounds N] [--tools npm,go] [--baseline-bin DIR]
No host name is written here: upstreams come from the machine's client configuration.
"""

import argparse
import datetime
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
from harness import upstreams  # noqa: E402
from package_managers import Agent, go_upstream  # noqa: E402

# Packuments of ordinary sizes, a few KB to a few MB (full forms are larger).
NPM_PACKAGES = ["express", "react", "lodash", "typescript", "webpack", "yargs", "chalk",
                "debug", "semver", "commander", "glob", "minimatch", "@types/node",
                "@babel/core", "eslint", "rxjs", "axios", "moment", "uuid", "ws"]
ABBREVIATED = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
# Module zips of ordinary sizes (tens of KB to a few MB).
GO_MODULES = [("golang.org/x/text", "v0.14.0"), ("golang.org/x/sys", "v0.15.0"),
              ("golang.org/x/net", "v0.19.0"), ("golang.org/x/mod", "v0.14.0"),
              ("golang.org/x/sync", "v0.5.0"), ("golang.org/x/crypto", "v0.17.0"),
              ("github.com/google/uuid", "v1.5.0"), ("github.com/spf13/cobra", "v1.8.0"),
              ("github.com/stretchr/testify", "v1.8.4"), ("gopkg.in/yaml.v3", "v3.0.1")]


def log(msg):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def timed_get(url, headers):
    """(seconds to the first body byte, seconds to the end, bytes, status) of one GET on a new
    connection (clients open a few connections and reuse them; a new one is the cold case)."""
    u = urllib.parse.urlsplit(url)
    conn_class = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    start = time.perf_counter()
    conn = conn_class(u.hostname, u.port, timeout=120)
    path = u.path + (f"?{u.query}" if u.query else "")
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    first = resp.read(1)
    ttfb = time.perf_counter() - start
    rest = resp.read()
    total = time.perf_counter() - start
    conn.close()
    return ttfb, total, len(first) + len(rest), resp.status


def go_escape(path):
    return "".join("!" + c.lower() if c.isupper() else c for c in path)


def npm_items(registry, agent):
    for name in NPM_PACKAGES:
        escaped = name.replace("/", "%2f")
        for accept in (ABBREVIATED, "application/json"):
            yield (f"{name} ({'abbr' if accept == ABBREVIATED else 'full'})",
                   registry + escaped, f"{agent.url}/npm/{escaped}", {"Accept": accept})


def go_items(proxy, agent):
    for module, version in GO_MODULES:
        path = f"/{go_escape(module)}/@v/{version}.zip"
        yield f"{module}@{version}", proxy + path, f"{agent.url}/gomod{path}", {}


def bench(tool, rounds, tmp, baseline_bin=None):
    rows, base_rows = [], []
    agent_seconds, base_seconds = [], []
    for r in range(rounds):
        if tool == "npm":
            registry = upstreams.npm_registry()
            config = f"npm:\n  upstream: {registry}\n"
        else:
            up = go_upstream()
            config = ("goproxy:\n"
                      f"  upstream: {up['proxy']}\n"
                      "  sumdb:\n"
                      f"    name: {up['name']}\n"
                      f"    upstream: {up['sumdb_url']}\n")
        agent = Agent(pathlib.Path(tmp) / f"{tool}{r}", config)
        base = (Agent(pathlib.Path(tmp) / f"{tool}{r}-baseline", config, bin_dir=baseline_bin)
                if baseline_bin else None)
        try:
            items = (npm_items(registry, agent) if tool == "npm"
                     else go_items(up["proxy"], agent))
            frontend = "npm" if tool == "npm" else "goproxy"
            since = agent.request_seconds(frontend)
            base_since = base.request_seconds(frontend) if base else None
            for i, (label, direct_url, agent_url, headers) in enumerate(items):
                base_url = base.url + agent_url[len(agent.url):] if base else None
                # Who goes first rotates item by item, so drift hits every column alike.
                order = ["direct", "cold", "base"] if base else ["direct", "cold"]
                k = (i + r) % len(order)
                got = {}
                for which in order[k:] + order[:k]:
                    url = {"direct": direct_url, "cold": agent_url, "base": base_url}[which]
                    got[which] = timed_get(url, headers)
                d, c = got["direct"], got["cold"]
                if d[3] != 200 or c[3] != 200 or d[2] != c[2] and tool == "go":
                    log(f"{tool} {label}: direct {d[3]} {d[2]} B, agent {c[3]} {c[2]} B")
                rows.append((label, d, c))
                if base:
                    base_rows.append((label, d, got["base"]))
            spent, count = agent.request_seconds(frontend, since)
            agent_seconds.append((spent, count))
            if base:
                base_seconds.append(base.request_seconds(frontend, base_since))
        finally:
            agent.stop()
            if base:
                base.stop()
        log(f"{tool} round {r + 1} done")
    return rows, agent_seconds, base_rows, base_seconds


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def slowest(tool, rows, n=6):
    """The items whose cold request took longest against direct, with sizes: where a gap is."""
    worst = sorted(rows, key=lambda row: row[2][1] - row[1][1], reverse=True)[:n]
    for label, d, c in worst:
        print(f"  {tool} {label}: {c[2]} bytes, direct {d[0] * 1000:.0f}/{d[1] * 1000:.0f} ms, "
              f"cold {c[0] * 1000:.0f}/{c[1] * 1000:.0f} ms (first byte / end)")


def report(tool, rows, agent_seconds, agent="cold"):
    d_ttfb = [d[0] for _, d, _ in rows]
    c_ttfb = [c[0] for _, _, c in rows]
    d_tot = [d[1] for _, d, _ in rows]
    c_tot = [c[1] for _, _, c in rows]
    ratio_tot = [c[1] / d[1] for _, d, c in rows if d[1] > 0]
    ratio_ttfb = [c[0] / d[0] for _, d, c in rows if d[0] > 0]
    sum_d, sum_c = sum(d_tot), sum(c_tot)
    spent = sum(s for s, _ in agent_seconds)
    count = sum(n for _, n in agent_seconds)
    print(f"| {tool} | {agent} | {len(rows)} | {median(d_ttfb) * 1000:.0f} | {median(c_ttfb) * 1000:.0f} | "
          f"{median(ratio_ttfb):.2f} | {median(d_tot) * 1000:.0f} | {median(c_tot) * 1000:.0f} | "
          f"{median(ratio_tot):.2f} | {sum_c / sum_d:.2f} | {spent:.2f} s / {count} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tools", default="npm,go")
    parser.add_argument("--baseline-bin", type=pathlib.Path,
                        help="a directory with another buildcache-agent, measured beside this one")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bc-cold-") as tmp:
        for tool in args.tools.split(","):
            results[tool] = bench(tool, args.rounds, tmp, args.baseline_bin)
    load_after = os.getloadavg()[0]
    print(f"\n{datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, load average "
          f"{load_before:.1f} before / {load_after:.1f} after, {args.rounds} rounds\n")
    print("| tool | agent | requests | direct TTFB ms (p50) | cold TTFB ms (p50) | "
          "TTFB ratio (p50) | direct total ms (p50) | cold total ms (p50) | total ratio (p50) | "
          "sum ratio | agent's own time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tool, (rows, agent_seconds, base_rows, base_seconds) in results.items():
        report(tool, rows, agent_seconds)
        if base_rows:
            report(tool, base_rows, base_seconds, agent=f"baseline ({args.baseline_bin})")
    print("\nSlowest cold requests against direct:")
    for tool, (rows, _, base_rows, _) in results.items():
        slowest(tool, rows)
        if base_rows:
            print("  baseline:")
            slowest(tool, base_rows)


if __name__ == "__main__":
    main()
