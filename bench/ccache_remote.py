#!/usr/bin/env python3
"""A cold ccache build with remote storage, broken down per request (issue 16).

The same C files (bench/real_workloads.py's 80-file build) are compiled one after another, each
variant with empty caches, the variants interleaved within each round (the order rotates):
  gcc     plain gcc, no ccache: the baseline ("direct")
  local   ccache with an empty local cache and no remote storage (ccache's own work, though it
          also writes the local cache, which remote-only runs do not)
  nginx   ccache, remote storage only (CCACHE_REMOTE_ONLY), nginx with WebDAV PUT as the server:
          the floor of ccache's HTTP storage against a plain file server
  agent   the same against buildcache-agent (this tree's build, or BUILDCACHE_BIN_DIR)
  other   the same against another agent build (--other-bin-dir, e.g. one built before a change)

Per file ccache sends two GETs that miss (manifest, result), then two PUTs, over one keep-alive
connection. Besides wall times the script prints
  - the agent's own view: its request seconds and count for the build (from /metrics);
  - a replay of exactly that request pattern from Python, timed per request on the client side:
    GET misses and PUTs whose head and body go in two writes without TCP_NODELAY, as ccache's
    HTTP client (cpp-httplib) sends them. This separates what each server costs per request from
    the compiler's and ccache's own time.

Usage: python3 bench/ccache_remote.py [--rounds N] [--files N] [--replay N] [--other-bin-dir DIR]
"""

import argparse
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import package_managers as pm  # noqa: E402
import real_workloads  # noqa: E402


class Nginx:
    """nginx on loopback serving GET and WebDAV PUT from `root`."""

    def __init__(self, work):
        self.work = pathlib.Path(work)
        (self.work / "root").mkdir(parents=True)
        (self.work / "body").mkdir()
        self.port = pm.free_port()
        conf = self.work / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes 1;
pid {self.work}/nginx.pid;
error_log {self.work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {self.work}/body;
  client_max_body_size 100m;
  server {{
    listen 127.0.0.1:{self.port};
    root {self.work}/root;
    location / {{ dav_methods PUT DELETE; create_full_put_path on; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"],
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start") from None
                time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


def compile_all(src, env, ccache):
    cmd = ["ccache", "gcc"] if ccache else ["gcc"]
    start = time.monotonic()
    for i in range(len(list(src.glob("unit*.c")))):
        pm.run([*cmd, "-O2", "-c", f"unit{i}.c", "-o", f"unit{i}.o"], env=env, cwd=src)
    return time.monotonic() - start


def ccache_env(work, remote):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("CCACHE_"):
            del env[k]
    env.update(CCACHE_DIR=str(work / "ccache"), CCACHE_NOHASHDIR="1",
               CCACHE_BASEDIR=str(work / "src"))
    if remote:
        env.update(CCACHE_REMOTE_STORAGE=remote, CCACHE_REMOTE_ONLY="true")
    return env


# ---------------------------------------------------------------------------------------------
# The replay: ccache's request pattern, timed per request


def read_response(sock, buf):
    """Reads one response with a Content-Length body (or none); returns (status, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed the connection")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        if name.strip().lower() == "transfer-encoding":
            raise RuntimeError("chunked response: not handled by this replay")
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed the connection mid-body")
        buf += chunk
    return status, buf[length:]


def replay(url, prefix, files):
    """Per file: GET miss (manifest), GET miss (result), PUT result, PUT manifest, on one
    keep-alive connection, PUT head and body in separate writes, Nagle on (as cpp-httplib).
    Returns {"get": [s, ...], "put": [s, ...]}."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    times = {"get": [], "put": []}
    buf = b""
    try:
        for i in range(files):
            keys = [f"{prefix}/{i:02x}/{os.urandom(12).hex()}M", f"{prefix}/{i:02x}/"
                    f"{os.urandom(12).hex()}R"]
            for key in keys:
                t = time.perf_counter()
                sock.sendall(f"GET {key} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                status, buf = read_response(sock, buf)
                times["get"].append(time.perf_counter() - t)
                if status != 404:
                    raise RuntimeError(f"GET {key}: {status}, expected 404")
            for key, size in zip(reversed(keys), (2400, 700)):
                body = os.urandom(size)
                t = time.perf_counter()
                sock.sendall(f"PUT {key} HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                             f"application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
                             .encode())
                sock.sendall(body)
                status, buf = read_response(sock, buf)
                times["put"].append(time.perf_counter() - t)
                if status not in (200, 201, 204):
                    raise RuntimeError(f"PUT {key}: {status}")
    finally:
        sock.close()
    return times


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=real_workloads.C_FILES)
    ap.add_argument("--replay", type=int, default=100, help="files in the replay (4 requests each)")
    ap.add_argument("--other-bin-dir", default="",
                    help="directory with another buildcache-agent build to compare")
    args = ap.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bc-ccache-", dir="/var/tmp"))
    src = tmp / "src"
    src.mkdir()
    for i in range(args.files):
        (src / f"unit{i}.c").write_text(real_workloads.c_source(i))
    variants = ["gcc", "local", "nginx", "agent"] + (["other"] if args.other_bin_dir else [])
    bin_dirs = {"agent": None, "other": args.other_bin_dir}
    wall = {v: [] for v in variants}
    view = {v: [] for v in ("agent", "other")}
    replays = {v: {"get": [], "put": []} for v in ("nginx", "agent", "other")}
    nginx = Nginx(tmp / "nginx")
    pm.log(f"{args.files} C files, {args.rounds} rounds, variants {', '.join(variants)}; "
           f"load {os.getloadavg()[0]:.1f}")
    try:
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                work = tmp / f"r{r}-{v}"
                shutil.copytree(src, work / "src")
                agent = None
                try:
                    if v in ("agent", "other"):
                        agent = pm.Agent(work / "agent", "", bin_dir=bin_dirs[v])
                        remote = f"{agent.url}/cache"
                    elif v == "nginx":
                        remote = f"{nginx.url}/r{r}/cache"
                    else:
                        remote = None
                    env = ccache_env(work, remote)
                    before = agent.request_seconds("httpcache") if agent else None
                    secs = compile_all(work / "src", env, ccache=v != "gcc")
                    wall[v].append(secs)
                    if agent:
                        view[v].append(agent.request_seconds("httpcache", before))
                    if v in replays:
                        times = replay(agent.url if agent else nginx.url,
                                       "/cache/replay" if agent else f"/r{r}/replay", args.replay)
                        for k in times:
                            replays[v][k] += times[k]
                finally:
                    if agent:
                        agent.stop()
                shutil.rmtree(work, ignore_errors=True)
                extra = ""
                if v in view and view[v]:
                    s, n = view[v][-1]
                    extra = f"; agent's own request time {s:.2f} s over {n} requests"
                pm.log(f"round {r + 1} {v}: {secs:.1f} s{extra}")
            pm.log(f"round {r + 1} done, load {os.getloadavg()[0]:.1f}")
    finally:
        nginx.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {v: statistics.median(wall[v]) for v in variants}
    print(f"\n{args.files} C files, medians of {args.rounds} rounds "
          f"(load at the end {os.getloadavg()[0]:.1f}):\n")
    print("| variant | wall s | / gcc (median of rounds) | server's own request s (n) |")
    print("| --- | ---: | ---: | ---: |")
    for v in variants:
        ratio = statistics.median(w / g for w, g in zip(wall[v], wall["gcc"]))
        own = ""
        if view.get(v):
            own = (f"{statistics.median(s for s, _ in view[v]):.2f} "
                   f"({statistics.median(n for _, n in view[v]):.0f})")
        print(f"| {v} | {med[v]:.1f} | {ratio:.2f} | {own} |")
    print("\nPer round, s: " + "; ".join(
        f"{v} " + "/".join(f"{w:.1f}" for w in wall[v]) for v in variants))
    print(f"\nReplay of ccache's requests ({args.replay} files x 4 requests per round), client side:\n")
    print("| server | GET miss p50 ms | GET miss p90 ms | PUT p50 ms | PUT p90 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for v, t in replays.items():
        if not t["get"]:
            continue
        print(f"| {v} | {1000 * pct(t['get'], .5):.2f} | {1000 * pct(t['get'], .9):.2f} | "
              f"{1000 * pct(t['put'], .5):.2f} | {1000 * pct(t['put'], .9):.2f} |")


if __name__ == "__main__":
    main()
