"""Requests that meet a cold module zip while another request streams it, on the real agent.

A .zip miss is fetched into a staging key, streamed to its client while it is hashed, its last
byte held back until the checksum database's h1 matches, then moved into place. A HEAD or a GET
of the same zip arriving meanwhile must join that fetch and be answered as soon as it is stored,
never wait on something the streaming request needs to finish (a HEAD used to wait the full
5 minutes, holding the streaming request's last byte back as long).

The upstream is a local module proxy that also serves the checksum database's lookup for its one
module and trickles the zip out over a few seconds. The second GET is the real go command.
"""

import base64
import hashlib
import http.client
import http.server
import io
import subprocess
import threading
import time
import zipfile

from conftest import metric
from harness import workloads

MODULE = "example.test/slow"
VERSION = "v1.0.0"
SUMDB = "sum.example.test"
GO_MOD = "module example.test/slow\n\ngo 1.21\n"
TRICKLE_SECONDS = 3.0
PIECES = 30
CLIENT_TIMEOUT = 60  # far below the 5 minutes a stuck request would wait


def h1(files):
    """The go command's dirhash (Hash1) of {name: bytes}."""
    summary = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n"
                      for name in sorted(files))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


class TricklingProxy:
    """A module proxy with one module whose zip is sent in PIECES pieces over TRICKLE_SECONDS,
    and the checksum database's lookup for it (at <proxy>/sumdb/<SUMDB>/lookup/...). Records
    every request."""

    def __init__(self):
        prefix = f"{MODULE}@{VERSION}/"
        # Some 300 KiB, stored uncompressed, so the trickle has something to spread out.
        big = b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() + b"\n"
                       for i in range(4500))
        files = {prefix + "go.mod": GO_MOD.encode(),
                 prefix + "slow.go": b"package slow\n\n// N is a number.\nconst N = 7\n",
                 prefix + "data.txt": big}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in files.items():
                z.writestr(name, data, compress_type=zipfile.ZIP_STORED)
        self.zip = buf.getvalue()
        base = f"/{MODULE}/@v/{VERSION}"
        info = f'{{"Version":"{VERSION}","Time":"2024-01-02T15:04:05Z"}}'.encode()
        lookup = (f"7\n{MODULE} {VERSION} {h1(files)}\n"
                  f"{MODULE} {VERSION}/go.mod {h1({'go.mod': GO_MOD.encode()})}\n\n"
                  "go.sum database tree\n8\nroot\n").encode()
        self.files = {f"/{MODULE}/@v/list": f"{VERSION}\n".encode(), base + ".info": info,
                      base + ".mod": GO_MOD.encode(), base + ".zip": self.zip,
                      f"/sumdb/{SUMDB}/lookup/{MODULE}@{VERSION}": lookup}
        self.zip_path = base + ".zip"
        self.requests = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # pylint: disable=invalid-name
                with proxy.lock:
                    proxy.requests.append(self.path)
                body = proxy.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path != proxy.zip_path:
                    self.wfile.write(body)
                    return
                piece = len(body) // PIECES + 1
                for start in range(0, len(body), piece):
                    self.wfile.write(body[start:start + piece])
                    self.wfile.flush()
                    time.sleep(TRICKLE_SECONDS / PIECES)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen(self, path):
        with self.lock:
            return self.requests.count(path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


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
    proxy = TricklingProxy()
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
            if proxy.seen(proxy.zip_path):
                break
            time.sleep(0.01)
        assert proxy.seen(proxy.zip_path) == 1, "the first GET never reached the upstream"
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
        assert proxy.seen(proxy.zip_path) == 1
        m = agent.metrics()
        assert metric(m, "buildcache_requests_total", frontend="goproxy", result="error") == 0
    finally:
        proxy.close()
