#!/usr/bin/env python3
"""`cargo fetch` of a real-world-sized lockfile (well over a hundred crates), direct against
through a cold agent, interleaved in each round (issue 16).

Each round, in alternating order:
  direct: `cargo fetch --locked` with an empty CARGO_HOME against the index cargo uses on this
          machine (its registry configuration copied, its caches not);
  cold:   the same through a buildcache-agent started for the round with an empty data dir (a
          `[source]` replacement, as docs/clients/cargo.md writes it), so every index file and
          crate is a miss.
Printed per round and as medians: seconds, cold / direct, and the agent's own view of the cold run:
request time and count, upstream fetch time, and upstream connections opened (how many resumed a
TLS session), from /metrics and the agent's debug log.

With --baseline-bin DIR (another build's bin directory, for example main's), a third variant
"base" runs the same cold fetch through that agent in every round, so two agents are compared
in the same rounds.

Usage: python3 bench/cargo_cold.py [--rounds N] [--baseline-bin DIR]
No host name is written here: the upstream is the one cargo reports using on this machine.
"""

import argparse
import datetime
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
from harness import upstreams  # noqa: E402
from package_managers import Agent, log, run  # noqa: E402

# Resolves to ~150-200 crates (all targets' dependencies: cargo fetch downloads them all).
CARGO_TOML = """[package]
name = "cold-bench"
version = "0.1.0"
edition = "2021"

[dependencies]
tokio = { version = "1", features = ["full"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
clap = { version = "4", features = ["derive"] }
reqwest = { version = "0.12", features = ["json"] }
regex = "1"
anyhow = "1"
tracing = "0.1"
tracing-subscriber = { version = "0.3", features = ["env-filter"] }
chrono = "0.4"
rand = "0.8"
itertools = "0.13"
syn = { version = "2", features = ["full"] }
"""


def cargo_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_")}
    env.update({k: v for k, v in os.environ.items()
                if k.startswith(("CARGO_REGISTRIES_", "CARGO_SOURCE_", "CARGO_HTTP_"))})
    env.update(CARGO_HOME=str(home), CARGO_TERM_COLOR="never")
    return env


def fresh_home(work):
    home = work / "cargo-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    for name in ("config.toml", "config"):
        if (upstreams.machine_cargo_home() / name).is_file():
            shutil.copy(upstreams.machine_cargo_home() / name, home / name)
    return home


def project(work, lockfile=None, agent_url=None):
    shutil.rmtree(work / "p", ignore_errors=True)
    p = work / "p"
    (p / "src").mkdir(parents=True)
    (p / "src" / "main.rs").write_text("fn main() {}\n")
    (p / "Cargo.toml").write_text(CARGO_TOML)
    if lockfile is not None:
        (p / "Cargo.lock").write_text(lockfile)
    if agent_url:
        (p / ".cargo").mkdir()
        (p / ".cargo" / "config.toml").write_text(
            '[source.crates-io]\nreplace-with = "buildcache"\n\n'
            f'[source.buildcache]\nregistry = "sparse+{agent_url}/cargo/index/"\n')
    return p


def agent_view(agent):
    """(request s, requests, upstream s, upstream fetches) for the cargo front end."""
    with urllib.request.urlopen(f"{agent.url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    v = {"req_s": 0.0, "req_n": 0, "up_s": 0.0, "up_n": 0}
    for line in text.splitlines():
        if 'frontend="cargo"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("buildcache_request_duration_seconds_sum{"):
            v["req_s"] += value
        elif line.startswith("buildcache_request_duration_seconds_count{"):
            v["req_n"] += int(value)
        elif line.startswith("buildcache_upstream_request_duration_seconds_sum{"):
            v["up_s"] += value
        elif line.startswith("buildcache_upstream_request_duration_seconds_count{"):
            v["up_n"] += int(value)
    connects = [e for e in agent.logs if e.get("msg") == "upstream connected"]
    v["connects"] = len(connects)
    v["resumed"] = sum(1 for e in connects if e.get("tls_resumed") in (True, 1))
    v["connect_ms"] = statistics.median([e["ms"] for e in connects]) if connects else 0.0
    return v


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-bin", help="bin directory of another agent build to compare")
    args = parser.parse_args()
    upstream = upstreams.cargo_index()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bc-cargo-cold-") as tmp:
        work = pathlib.Path(tmp)
        home = fresh_home(work)
        p = project(work)
        run(["cargo", "generate-lockfile"], env=cargo_env(home), cwd=p)
        lockfile = (p / "Cargo.lock").read_text()
        crates = lockfile.count("[[package]]") - 1
        log(f"lockfile: {crates} crates")
        variants = ["direct", "cold"] + (["base"] if args.baseline_bin else [])
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            row = {}
            for variant in order:
                home = fresh_home(work)
                if variant == "direct":
                    p = project(work, lockfile)
                    row["direct"], _ = run(["cargo", "fetch", "--locked"], env=cargo_env(home),
                                           cwd=p)
                    continue
                agent = Agent(work / f"agent{r}",
                              f"logLevel: debug\ncargo:\n  upstream: sparse+{upstream}\n",
                              bin_dir=args.baseline_bin if variant == "base" else None)
                try:
                    p = project(work, lockfile, agent.url)
                    row[variant], _ = run(["cargo", "fetch", "--locked"], env=cargo_env(home),
                                          cwd=p)
                    view = agent_view(agent)
                    row.update(view if variant == "cold" else {"base_" + k: v
                                                               for k, v in view.items()})
                finally:
                    agent.stop()
                shutil.rmtree(work / f"agent{r}", ignore_errors=True)
            row["ratio"] = row["cold"] / row["direct"]
            row["own_ms"] = 1000 * (row["req_s"] - row["up_s"]) / max(row["req_n"], 1)
            row["up_ms"] = 1000 * row["up_s"] / max(row["up_n"], 1)
            log(f"round {r + 1}: direct {row['direct']:.2f} s, cold {row['cold']:.2f} s, "
                f"ratio {row['ratio']:.2f}; agent {row['req_s']:.2f} s in {row['req_n']} "
                f"requests, upstream {row['up_s']:.2f} s in {row['up_n']} fetches, "
                f"{row['connects']} connects ({row['resumed']} TLS resumed, median "
                f"{row['connect_ms']:.1f} ms)")
            if "base" in row:
                row["base_ratio"] = row["base"] / row["direct"]
                row["base_own_ms"] = (1000 * (row["base_req_s"] - row["base_up_s"]) /
                                      max(row["base_req_n"], 1))
                log(f"round {r + 1}: base {row['base']:.2f} s, ratio {row['base_ratio']:.2f}; "
                    f"agent {row['base_req_s']:.2f} s in {row['base_req_n']} requests, upstream "
                    f"{row['base_up_s']:.2f} s")
            rows.append(row)
    load_after = os.getloadavg()

    def med(k):
        return statistics.median(r[k] for r in rows)

    print(f"cargo cold / direct, {crates} crates, {args.rounds} rounds, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()} {os.cpu_count()} cores, load {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after")
    print("| round | direct s | cold s | cold / direct | agent request s (n) | upstream s (n) | "
          "agent's own ms / request | upstream ms / fetch | upstream connects (TLS resumed) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rows):
        print(f"| {i + 1} | {r['direct']:.2f} | {r['cold']:.2f} | {r['ratio']:.2f} | "
              f"{r['req_s']:.2f} ({r['req_n']}) | {r['up_s']:.2f} ({r['up_n']}) | "
              f"{r['own_ms']:.1f} | {r['up_ms']:.1f} | {r['connects']} ({r['resumed']}) |")
    print(f"| median | {med('direct'):.2f} | {med('cold'):.2f} | {med('ratio'):.2f} | "
          f"{med('req_s'):.2f} | {med('up_s'):.2f} | {med('own_ms'):.1f} | {med('up_ms'):.1f} | "
          f"{med('connects'):.0f} |")
    if args.baseline_bin:
        print(f"\nbaseline agent ({args.baseline_bin}), same rounds:")
        print("| round | base s | base / direct | cold / base | agent request s (n) | "
              "agent's own ms / request |")
        print("|---|---:|---:|---:|---:|---:|")
        for i, r in enumerate(rows):
            print(f"| {i + 1} | {r['base']:.2f} | {r['base_ratio']:.2f} | "
                  f"{r['cold'] / r['base']:.2f} | {r['base_req_s']:.2f} ({r['base_req_n']}) | "
                  f"{r['base_own_ms']:.1f} |")
        print(f"| median | {med('base'):.2f} | {med('base_ratio'):.2f} | "
              f"{statistics.median(r['cold'] / r['base'] for r in rows):.2f} | "
              f"{med('base_req_s'):.2f} | {med('base_own_ms'):.1f} |")


if __name__ == "__main__":
    main()
