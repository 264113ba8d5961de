"""A private registry on loopback for the private-upstream tests: a PyPI simple index and an npm
registry that answer only requests carrying the expected credential (Basic or Bearer), serving
packages built here (a pure-Python wheel, an npm tarball), so the tests need no network and no
registry host name.

Like a real private registry it answers 401 with a WWW-Authenticate challenge to a request
without (or with a wrong) credential, and its 401 body echoes the Authorization header it got:
the hostile case of an upstream that reflects the credential into an error page, which the agent
must not pass to its clients. Wheel downloads are redirected to a second server on another port
(a "CDN", another origin) that serves anonymously and records every Authorization header that
reaches it: the agent must never send the credential there.
"""

import base64
import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile


def _wheel(name, version):
    """A minimal pure-Python wheel (bytes) whose module `name` sets VALUE = "private"."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b'VALUE = "private"\n',
        f"{dist_info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                  ).encode(),
        f"{dist_info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: buildcache-tests\n"
                               b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    record += f"{dist_info}/RECORD,,\n"
    files[f"{dist_info}/RECORD"] = record.encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return out.getvalue()


def _npm_tarball(name, version):
    """An npm package tarball (package/package.json, package/index.js)."""
    files = {
        "package/package.json": json.dumps({"name": name, "version": version,
                                            "main": "index.js"}).encode(),
        "package/index.js": b'module.exports = "private";\n',
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class PrivateRegistry:
    """Start with `with PrivateRegistry() as reg:`; set the credential it wants with want_bearer
    or want_basic (None wants nothing: every request is refused with 401)."""

    PYPI_PACKAGES = ("bc-private-pkg", "bc-private-other")
    NPM_PACKAGES = ("bc-private-pkg", "bc-private-other")
    VERSION = "1.0.0"

    def __init__(self):
        self._lock = threading.Lock()
        self._wanted = None
        self.seen = []       # (path, Authorization or "") of every request to the registry
        self.cdn_seen = []   # the same for the CDN
        self.wheels = {}
        for name in self.PYPI_PACKAGES:
            module = name.replace("-", "_")
            self.wheels[f"{module}-{self.VERSION}-py3-none-any.whl"] = _wheel(name, self.VERSION)
        self.tarballs = {name: _npm_tarball(name, self.VERSION) for name in self.NPM_PACKAGES}
        self._registry = _Server(("127.0.0.1", 0), self._handler(self._serve_registry))
        self._cdn = _Server(("127.0.0.1", 0), self._handler(self._serve_cdn))
        self.url = f"http://127.0.0.1:{self._registry.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True)
                         for s in (self._registry, self._cdn)]

    # -- configuration ------------------------------------------------------------------------

    def want_bearer(self, token):
        with self._lock:
            self._wanted = f"Bearer {token}"

    def accept_anyone(self):
        """Serve every request, with or without a credential (a baseline for benchmarks)."""
        with self._lock:
            self._wanted = "*"

    def want_basic(self, username, password):
        value = base64.b64encode(f"{username}:{password}".encode()).decode()
        with self._lock:
            self._wanted = f"Basic {value}"

    def authorizations(self, path_prefix=""):
        """The Authorization values the registry got for paths starting with path_prefix."""
        with self._lock:
            return [auth for path, auth in self.seen if path.startswith(path_prefix)]

    @property
    def pypi_index(self):
        return f"{self.url}/simple/"

    @property
    def npm_registry(self):
        return f"{self.url}/npm/"

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        for s in (self._registry, self._cdn):
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(timeout=10)

    # -- serving ------------------------------------------------------------------------------

    @staticmethod
    def _handler(serve):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (the http.server name)
                serve(self)

            def log_message(self, *args):
                pass

        return Handler

    @staticmethod
    def _reply(req, status, body, content_type="application/octet-stream", headers=()):
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            req.send_header(name, value)
        req.end_headers()
        req.wfile.write(body)

    def _serve_cdn(self, req):
        with self._lock:
            self.cdn_seen.append((req.path, req.headers.get("Authorization", "")))
        name = req.path.rsplit("/", 1)[-1]
        if req.path.startswith("/blob/") and name in self.wheels:
            return self._reply(req, 200, self.wheels[name])
        return self._reply(req, 404, b"not found\n", "text/plain")

    def _serve_registry(self, req):
        got = req.headers.get("Authorization", "")
        with self._lock:
            self.seen.append((req.path, got))
            wanted = self._wanted
        if wanted != "*" and (wanted is None or got != wanted):
            # The hostile part: the error page reflects what was sent.
            body = f"401 unauthorized: you sent Authorization: {got!r}\n".encode()
            return self._reply(req, 401, body, "text/plain",
                               [("WWW-Authenticate", 'Basic realm="private"'),
                                ("X-Echo-Authorization", got)])
        path = req.path.split("?", 1)[0]
        if path.startswith("/simple/"):
            return self._serve_simple(req, path[len("/simple/"):].strip("/"))
        if path.startswith("/files/"):
            name = path[len("/files/"):]
            if name in self.wheels:
                return self._reply(req, 302, b"", headers=[("Location",
                                                            f"{self.cdn_url}/blob/{name}")])
        if path.startswith("/npm/"):
            return self._serve_npm(req, path[len("/npm/"):])
        return self._reply(req, 404, b"not found\n", "text/plain")

    def _serve_simple(self, req, project):
        links = []
        for file, data in self.wheels.items():
            if file.startswith(project.replace("-", "_") + "-"):
                digest = hashlib.sha256(data).hexdigest()
                links.append(f'<a href="/files/{file}#sha256={digest}">{file}</a><br/>')
        if not links:
            return self._reply(req, 404, b"not found\n", "text/plain")
        page = ("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
        return self._reply(req, 200, page.encode(), "text/html")

    def _serve_npm(self, req, rest):
        if "/-/" in rest:
            name, _, file = rest.partition("/-/")
            if name in self.tarballs and file == f"{name}-{self.VERSION}.tgz":
                return self._reply(req, 200, self.tarballs[name])
            return self._reply(req, 404, b"not found\n", "text/plain")
        name = rest
        if name not in self.tarballs:
            return self._reply(req, 404, b'{"error":"not found"}', "application/json")
        data = self.tarballs[name]
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
        doc = {
            "name": name,
            "dist-tags": {"latest": self.VERSION},
            "versions": {self.VERSION: {
                "name": name, "version": self.VERSION,
                "dist": {"tarball": f"{self.url}/npm/{name}/-/{name}-{self.VERSION}.tgz",
                         "integrity": integrity,
                         "shasum": hashlib.sha1(data).hexdigest()}}},
        }
        return self._reply(req, 200, json.dumps(doc).encode(), "application/json")
