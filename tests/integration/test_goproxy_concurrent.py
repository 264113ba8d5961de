"""Requests that meet a cold module zip while another request streams it, on the real agent.

A .zip miss is fetched into a staging key, streamed to its client while it is hashed, its last
byte held back until the checksum database's h1 matches, then moved into place. A HEAD or a GET
of the same zip arriving meanwhile must join that fetch and be answered as soon as it is stored,
never wait on something the streaming request needs to finish (a HEAD used to wait the full
5 minutes, holding the streaming request's last byte back as long).

The upstream is a local module proxy that also serves the checksum database's lookup for its one
module and trickles the zip out over a few seconds. The second GET is the real go command.
"""

import hashlib
import http.client
import subprocess
import threading
import time
import zipfile

from conftest import metric
from harness import workloads
from harness.module_proxy import ModuleProxy

MODULE = "example.test/slow"
VERSION = "v1.0.0"
SUMDB = "sum.example.test"
GO_MOD = "module example.test/slow\n\ngo 1.21\n"
TRICKLE_SECONDS = 3.0
PIECES = 30
CLIENT_TIMEOUT = 60  # far below the 5 minutes a stuck request would wait


def trickling_proxy():
    """The module, its zip (some 300 KiB, stored uncompressed so the trickle has something to
    spread out) sent in PIECES pieces over TRICKLE_SECONDS, and the checksum database's lookup."""
    big = b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() + b"\n"
                   for i in range(4500))
    files = {"go.mod": GO_MOD.encode(),
             "slow.go": b"package slow\n\n// N is a number.\nconst N = 7\n",
             "data.txt": big}
    return ModuleProxy(MODULE, VERSION, files, compress=zipfile.ZIP_STORED, sumdb=SUMDB,
                       trickle=(PIECES, TRICKLE_SECONDS))


def seen(proxy, path):
    return proxy.requests().count(path)


def request(agent, method, path, results, name):
    """Sends method path to the agent and records (status, headers, body, seconds) under name."""
    start = time.monotonic()
    host, port = agent.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        results[name] = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
                         time.monotonic() - start)
    except OSError as e:
        results[name] = (None, {}, str(e).encode(), time.monotonic() - start)
    finally:
        conn.close()


def test_head_and_get_during_a_streamed_zip_miss_join_it(start_agent, tmp_path):
    proxy = trickling_proxy()
    try:
        config = tmp_path / "agent.yaml"
        config.write_text(f"goproxy:\n  upstream: {proxy.url}\n  sumdb:\n    name: {SUMDB}\n")
        agent = start_agent(config=config)
        zip_url = f"/gomod/{MODULE}/@v/{VERSION}.zip"
        results = {}
        started = time.monotonic()
        first = threading.Thread(target=request, args=(agent, "GET", zip_url, results, "get"))
        first.start()
        for _ in range(500):
            if seen(proxy, proxy.zip_path):
                break
            time.sleep(0.01)
        assert seen(proxy, proxy.zip_path) == 1, "the first GET never reached the upstream"
        head = threading.Thread(target=request, args=(agent, "HEAD", zip_url, results, "head"))
        head.start()

        # The real go command asks for the same zip while it streams.
        home = tmp_path / "home"
        env = workloads.go_env(home, f"{agent.url}/gomod", "off")
        go = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"],
                            capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=CLIENT_TIMEOUT, check=False)
        go_seconds = time.monotonic() - started
        first.join(CLIENT_TIMEOUT + 5)
        head.join(CLIENT_TIMEOUT + 5)

        status, _, body, get_seconds = results["get"]
        assert status == 200 and body == proxy.zip, (status, len(body))
        status, headers, body, head_seconds = results["head"]
        assert status == 200, (status, body)
        assert headers.get("content-length") == str(len(proxy.zip)), headers
        assert go.returncode == 0, go.stdout + go.stderr
        downloaded = home / "modcache" / "cache" / "download" / MODULE / "@v" / f"{VERSION}.zip"
        assert downloaded.read_bytes() == proxy.zip
        # Each answered within a few seconds of the zip's arrival, the upstream asked once.
        bound = TRICKLE_SECONDS + 10
        assert get_seconds < bound and head_seconds < bound and go_seconds < bound, \
            (get_seconds, head_seconds, go_seconds)
        assert seen(proxy, proxy.zip_path) == 1
        m = agent.metrics()
        assert metric(m, "buildcache_requests_total", frontend="goproxy", result="error") == 0
    finally:
        proxy.close()
