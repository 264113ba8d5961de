"""A Go module proxy (the GOPROXY protocol) on loopback for tests: one module version, optionally
the checksum database's lookup for it, a status of the test's choosing for everything else, and
optionally the zip trickled out slowly. Records every request path."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import threading
import time
import zipfile


def h1(files: dict[str, bytes]) -> str:
    """The go command's dirhash (Hash1) of {name: bytes}."""
    summary = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n"
                      for name in sorted(files))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


class ModuleProxy:
    """Serves module@version: `files` ({path inside the module: bytes}, go.mod among them) as its
    zip (compressed with `compress`), .mod, .info, list and @latest. With `sumdb` (a checksum
    database name) also <url>/sumdb/<sumdb>/lookup/<module>@<version>. Other paths get
    missing_status(path) (default 404). With trickle=(pieces, seconds) the zip is written in that
    many pieces over that many seconds."""

    def __init__(self, module: str, version: str, files: dict[str, bytes], *,
                 compress: int = zipfile.ZIP_DEFLATED, sumdb: str | None = None,
                 missing_status=lambda path: 404, trickle: tuple[int, float] | None = None):
        prefix = f"{module}@{version}/"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in files.items():
                z.writestr(prefix + name, data, compress_type=compress)
        self.zip = buf.getvalue()
        base = f"/{module}/@v/{version}"
        info = f'{{"Version":"{version}","Time":"2024-01-02T15:04:05Z"}}'.encode()
        self.zip_path = base + ".zip"
        self.files = {f"/{module}/@v/list": f"{version}\n".encode(), f"/{module}/@latest": info,
                      base + ".info": info, base + ".mod": files["go.mod"],
                      self.zip_path: self.zip}
        if sumdb:
            lookup = (f"7\n{module} {version} {h1({prefix + n: d for n, d in files.items()})}\n"
                      f"{module} {version}/go.mod {h1({'go.mod': files['go.mod']})}\n\n"
                      "go.sum database tree\n8\nroot\n")
            self.files[f"/sumdb/{sumdb}/lookup/{module}@{version}"] = lookup.encode()
        self._requests = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # pylint: disable=invalid-name
                with proxy._lock:  # pylint: disable=protected-access
                    proxy._requests.append(self.path)  # pylint: disable=protected-access
                body = proxy.files.get(self.path)
                status = 200 if body is not None else missing_status(self.path)
                body = body if body is not None else b"not here\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path != proxy.zip_path or trickle is None:
                    self.wfile.write(body)
                    return
                pieces, seconds = trickle
                piece = len(body) // pieces + 1
                for start in range(0, len(body), piece):
                    self.wfile.write(body[start:start + piece])
                    self.wfile.flush()
                    time.sleep(seconds / pieces)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests(self) -> list[str]:
        """Every path asked for so far, in order."""
        with self._lock:
            return list(self._requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
