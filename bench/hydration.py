#!/usr/bin/env python3
"""Hydrating a directory cache between two network hosts vs a raw TCP copy of the same bytes.

Two network namespaces on a bridge (tests/harness/netns.py). Agent A indexes a directory of
--total bytes in files of --file-size; then agent B starts with the same `directories:` entry,
empty, and hydrates it from A before its /readyz says ready. Reported: the hydration itself
(between its "hydration started" and "hydration finished" log lines) and start-to-ready, in MB/s;
the baseline is the same files streamed A -> B over one TCP connection by a sendfile sender and a
receiver that writes and fsyncs them (what `cat files | nc` plus a sync would do), and iperf3.
Needs root.

    python3 bench/hydration.py [--total 1Gi] [--file-size 4Mi] [--runs 1]
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.jsonlog import JsonLog  # noqa: E402
from harness.netns import NetnsCluster  # noqa: E402

SENDER = r"""
import os, socket, sys
root = sys.argv[1]
s = socket.create_server((sys.argv[2], 9000))
c, _ = s.accept()
for dirpath, _, names in sorted(os.walk(root)):
    for n in sorted(names):
        with open(os.path.join(dirpath, n), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            off = 0
            while off < size:
                off += os.sendfile(c.fileno(), f.fileno(), off, size - off)
c.close()
"""

RECEIVER = r"""
import os, socket, sys, time
out, host, file_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(100):
    try:
        c = socket.create_connection((host, 9000))
        break
    except OSError:
        time.sleep(0.05)
t0 = time.monotonic()
buf = bytearray(1 << 20)
total, i, f, in_file = 0, 0, None, 0
while True:
    n = c.recv_into(buf)
    if n == 0:
        break
    view = memoryview(buf)[:n]
    while view:
        if f is None:
            f = open(os.path.join(out, f"f{i}"), "wb")
        take = min(len(view), file_size - in_file)
        f.write(view[:take])
        view = view[take:]
        in_file += take
        total += take
        if in_file == file_size:
            f.flush(); os.fsync(f.fileno()); f.close()
            f, in_file, i = None, 0, i + 1
if f is not None:
    f.flush(); os.fsync(f.fileno()); f.close()
print(total, time.monotonic() - t0)
"""


def parse_size(s):
    for u, mult in {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}.items():
        if s.endswith(u):
            return int(s[:-2]) * mult
    return int(s)


def ts(entry):
    return datetime.datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


class Proc:
    """An agent inside a namespace with its JSON log lines collected."""

    def __init__(self, net, index, cmd):
        self.proc = net.popen(index, cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True)
        self._log = JsonLog(self.proc)
        self.logs = self._log.logs

    def wait_for(self, msg, timeout=1200):
        return self._log.wait_for(msg, timeout)


def config(node, work, i, cache, peers, max_size):
    return (f"listen: {node.address}:8080\nlogLevel: info\n"
            f"store: {{dataDir: {work}/data{i}, maxSize: {max(2 * max_size, 1 << 30)}}}\n"
            f"replication: {{listen: {node.address}:8081, peerTimeout: 10s,\n"
            f"  peers: [{', '.join(peers)}],\n"
            f"  hydrate: {{enabled: true, maxTime: 20m, maxSize: {2 * max_size}}}}}\n"
            f"directories:\n  - {{name: bench, path: {cache}, maxSize: {2 * max_size},"
            f" settle: 100ms}}\n")


def ready(url):
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--total", default="1Gi")
    ap.add_argument("--file-size", default="4Mi")
    ap.add_argument("--bin-dir", default=os.environ.get("BUILDCACHE_BIN_DIR",
                                                        str(REPO / "build" / "bin")))
    args = ap.parse_args()
    total, file_size = parse_size(args.total), parse_size(args.file_size)
    count = total // file_size
    agent_bin = str(pathlib.Path(args.bin_dir) / "buildcache-agent")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bc-hydrate-bench-"))
    src = work / "a-cache"
    for i in range(count):  # 256 subdirectories, like GOCACHE
        p = src / f"{i % 256:02x}" / f"{i:08d}-d"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.write(os.urandom(file_size))
    print(f"{count} files of {file_size >> 10} KiB = {count * file_size / 2**20:.0f} MiB")
    with NetnsCluster(2) as net:
        peers = [f"{n.address}:8081" for n in net.nodes]
        a_node, b_node = net.nodes
        cfg_a = work / "a.yaml"
        cfg_a.write_text(config(a_node, work, 0, src, peers, total))
        a = Proc(net, 0, [agent_bin, "--config", str(cfg_a)])
        a.wait_for("listening")
        url_a = f"http://{a_node.address}:8080"
        for _ in range(12000):  # A indexes everything (bounded: 20 minutes)
            with urllib.request.urlopen(url_a + "/metrics") as r:
                line = [ln for ln in r.read().decode().splitlines()
                        if ln.startswith('buildcache_dircache_files{directory="bench"}')]
            if line and float(line[0].split()[-1]) >= count:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("A did not index the directory")

        # Baselines: iperf3, then the raw copy of the same files.
        server = net.popen(0, ["iperf3", "-s", "-1", "-B", a_node.address],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        out = net.run(1, ["iperf3", "-c", a_node.address, "-t", "5", "-J", "-R"], timeout=60)
        server.wait(30)
        iperf = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
        raw_dir = work / "raw"
        raw_dir.mkdir()
        subprocess.run(["sync"])
        subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=False)
        sender = net.popen(0, ["python3", "-c", SENDER, str(src), a_node.address])
        out = net.run(1, ["python3", "-c", RECEIVER, str(raw_dir), a_node.address,
                          str(file_size)], timeout=1200)
        sender.wait(60)
        raw_bytes, raw_s = out.stdout.split()
        raw_mbs = int(raw_bytes) / float(raw_s) / 1e6

        # Hydration: B starts empty and hydrates before /readyz.
        dst = work / "b-cache"
        cfg_b = work / "b.yaml"
        cfg_b.write_text(config(b_node, work, 1, dst, peers, total))
        subprocess.run(["sync"])
        subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=False)
        t0 = time.monotonic()
        b = Proc(net, 1, [agent_bin, "--config", str(cfg_b)])
        url_b = f"http://{b_node.address}:8080"
        while not ready(url_b):
            if time.monotonic() - t0 > 1800:
                raise RuntimeError("B never ready")
            time.sleep(0.05)
        to_ready = time.monotonic() - t0
        started, finished = b.wait_for("hydration started"), b.wait_for("hydration finished")
        hyd_s = ts(finished) - ts(started)
        got = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
        assert finished["bytes"] == total == got, (finished, total, got)
        for i in range(0, count, max(1, count // 16)):  # spot-check content
            rel = pathlib.Path(f"{i % 256:02x}") / f"{i:08d}-d"
            assert (dst / rel).read_bytes() == (src / rel).read_bytes(), rel
        b.proc.terminate()
        a.proc.terminate()
        b.proc.wait(30)
        a.proc.wait(30)

    subprocess.run(["rm", "-rf", str(work)])
    mib = total / 2**20
    print()
    print("| data | hydration MB/s (s) | start to ready (s) | raw TCP copy + fsync MB/s |"
          " iperf3 MB/s | hydration / raw |")
    print("|---|---|---|---|---|---|")
    print(f"| {mib:.0f} MiB in {count} files of {file_size >> 10} KiB | "
          f"{total / hyd_s / 1e6:.0f} ({hyd_s:.1f}) | {to_ready:.1f} | {raw_mbs:.0f} | "
          f"{iperf:.0f} | {total / hyd_s / 1e6 / raw_mbs:.2f} |")


if __name__ == "__main__":
    main()
