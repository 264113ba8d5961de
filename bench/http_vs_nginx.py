#!/usr/bin/env python3
"""GET/PUT throughput of buildcache-agent against nginx serving the same bytes from the same disk.

Both servers run on loopback in this invocation; wrk (-t2 -c32) drives each for the same time.
Prints a table of requests/s and MB/s with the ratio buildcache/nginx per object size, and the
PUT rate of the agent. With --markdown, prints the table as Markdown for bench/RESULTS.md.

With --identity the agent runs with caller identity on (identity.tokensFile, docs/security.md):
the objects are PUT by a trusted writer and every GET carries the bearer token of an untrusted
scope, so each request is authenticated (SHA-256 of the token, compared with every entry) and
looks in the caller's own scope before the trusted one: identity's worst warm path.

With --identity --replication the agent also has a peer (a second agent on loopback, copies 2,
so each owns every key and a local miss asks the other): the untrusted GET's own-scope lookup
misses locally, which asks the peer unless replication.scopeMissTtl remembers that the owners
lacked it (--scope-miss-ttl 0s: asked on every GET, the behaviour before that cache).
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZES = [("4KiB", 4 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20), ("64MiB", 64 << 20)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def to_bytes(text):
    m = re.match(r"([\d.]+)([KMGT]?B)", text)
    mult = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m.group(2)]
    return float(m.group(1)) * mult


def wrk(url, seconds, script=None, headers=()):
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bps = to_bytes(re.search(r"Transfer/sec:\s+([\d.]+[KMGT]?B)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[p99.group(2)] if p99 else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses from {url}:\n{out}")
    return rps, bps, p99_ms



def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--bin-dir", default=os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build/bin"))
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--identity", action="store_true",
                    help="caller identity on; GETs by an untrusted scope's token")
    ap.add_argument("--replication", action="store_true",
                    help="with --identity: a peer agent, copies 2 (see above)")
    ap.add_argument("--scope-miss-ttl", default=None,
                    help="replication.scopeMissTtl of the measured agent (default: the agent's)")
    ap.add_argument("--sizes", default=",".join(name for name, _ in SIZES),
                    help="comma-separated subset of " + ",".join(name for name, _ in SIZES))
    args = ap.parse_args()
    bin_dir = pathlib.Path(args.bin_dir)
    sizes = [(name, size) for name, size in SIZES if name in args.sizes.split(",")]

    work = pathlib.Path(tempfile.mkdtemp(prefix="bc-bench-", dir="/var/tmp"))
    work.chmod(0o755)  # nginx workers run unprivileged when started as root
    procs = []
    try:
        files = work / "files"
        files.mkdir()
        for name, size in sizes:
            (files / name).write_bytes(os.urandom(size))

        # nginx: same files, same disk, its recommended static-file settings.
        nginx_port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {work}/nginx-body;
  server {{ listen 127.0.0.1:{nginx_port}; root {files}; }}
}}
""")
        procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"]))
        wait_http(f"http://127.0.0.1:{nginx_port}/4KiB")

        agent_port = free_port()
        extra, put_auth, get_headers = [], [], []
        if args.identity:
            writer, reader = os.urandom(16).hex(), os.urandom(16).hex()
            (work / "tokens.yaml").write_text(
                "tokens:\n"
                f"  - {{token: \"{writer}\", scope: release, trustedWriter: true}}\n"
                f"  - {{token: \"{reader}\", scope: pull-requests}}\n")
            config = f"identity: {{tokensFile: {work}/tokens.yaml}}\n"
            if args.replication:
                peer_ports = [free_port(), free_port()]
                peers = ", ".join(f"127.0.0.1:{p}" for p in peer_ports)
                ttl = (f"  scopeMissTtl: {args.scope_miss_ttl}\n"
                       if args.scope_miss_ttl is not None else "")
                for i, port in enumerate(peer_ports):
                    (work / f"agent{i}.yaml").write_text(
                        config + f"replication:\n  listen: 127.0.0.1:{port}\n  copies: 2\n"
                        f"  peers: [{peers}]\n  hydrate: {{enabled: false}}\n" + ttl)
                procs.append(subprocess.Popen(
                    [str(bin_dir / "buildcache-agent"), "--config", str(work / "agent1.yaml"),
                     "--listen", f"127.0.0.1:{free_port()}", "--data-dir",
                     str(work / "peer-data"), "--max-size", str(8 << 30), "--log-level", "warn"]))
                config = (work / "agent0.yaml").read_text()
            (work / "agent.yaml").write_text(config)
            extra = ["--config", str(work / "agent.yaml")]
            put_auth = ["-H", f"Authorization: Bearer {writer}"]
            get_headers = [f"Authorization: Bearer {reader}"]
        agent = subprocess.Popen(
            [str(bin_dir / "buildcache-agent"), *extra, "--listen", f"127.0.0.1:{agent_port}",
             "--data-dir", str(work / "agent-data"), "--max-size", str(8 << 30),
             "--log-level", "warn"])
        procs.append(agent)
        base = f"http://127.0.0.1:{agent_port}"
        wait_http(base + "/healthz")
        for name, _ in sizes:
            subprocess.run(["curl", "-fsS", "-X", "PUT", *put_auth, "--data-binary",
                            f"@{files / name}", f"{base}/cache/bench/{name}"], check=True,
                           stdout=subprocess.DEVNULL)
        # A blob file younger than the file system's timestamp granularity is re-hashed on every
        # read (its fingerprint cannot prove it unchanged yet); measure the steady state.
        time.sleep(3)

        rows = []
        for name, size in sizes:
            n = wrk(f"http://127.0.0.1:{nginx_port}/{name}", args.seconds)
            b = wrk(f"{base}/cache/bench/{name}", args.seconds, headers=get_headers)
            rows.append((name, n, b))

        # PUT rate: distinct keys so every request stores a new object (fsync included).
        put_rows = []
        for name, size in [] if args.identity else sizes[:3]:
            script = work / f"put-{name}.lua"
            script.write_text(f"""
local body = string.rep("x", {size} - 16)
local n = 0
local tid = math.random(1, 1000000000)
request = function()
  n = n + 1
  local suffix = string.format("%016d", n)
  return wrk.format("PUT", "/cache/put/{name}/" .. tid .. "/" .. n, nil, body .. suffix)
end
""")
            rps, _, p99 = wrk(f"{base}/", min(args.seconds, 5), script)
            # wrk's Transfer/sec counts response bytes; the upload rate is requests x body size.
            put_rows.append((name, rps, rps * size, p99))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}"
    mode = "identity on, untrusted-scope bearer token" if args.identity else "identity off"
    if args.identity and args.replication:
        mode += (", replication to one peer (copies 2), scopeMissTtl "
                 f"{args.scope_miss_ttl or 'default (30s)'}")
    print(f"# GET, wrk -t2 -c32 -d{args.seconds}s on loopback, {mode}; "
          f"{time.strftime('%Y-%m-%d')}; {machine}")
    hdr = "| size | nginx req/s | buildcache req/s | ratio req/s | nginx MB/s | buildcache MB/s | ratio MB/s | p99 ms nginx / buildcache |"
    print(hdr)
    print("|" + "---|" * 8)
    for name, (nr, nb, np99), (br, bb, bp99) in rows:
        print(f"| {name} | {nr:,.0f} | {br:,.0f} | {br / nr:.2f} | {nb / 1e6:,.1f} | {bb / 1e6:,.1f} "
              f"| {bb / nb:.2f} | {np99} / {bp99} |")
    print()
    print("| PUT size | buildcache req/s | MB/s | p99 ms |")
    print("|---|---|---|---|")
    for name, rps, bps, p99 in put_rows:
        print(f"| {name} | {rps:,.0f} | {bps / 1e6:,.1f} | {p99} |")
    worst = min(min(br / nr, bb / nb) for _, (nr, nb, _), (br, bb, _) in rows)
    print(f"\nworst ratio buildcache/nginx: {worst:.2f} (target >= 0.70)")


if __name__ == "__main__":
    main()
