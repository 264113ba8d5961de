"""The Go module proxy front end of the real agent with the real go command.

A small program that imports a few modules (a few dozen modules in its build list) is downloaded
and built with GOPROXY pointing at the agent only (no direct fallback) and GOSUMDB pointing at
the agent's checksum-database proxy, so the go command's checksum verification stays on. A second
run with an empty module cache is then served from the agent's store.

The upstream is the machine's own Go configuration: the first URL in `go env GOPROXY` and the
database named by `go env GOSUMDB` (its URL is <GOPROXY>/sumdb/<name> when the proxy proxies it,
else https://<name>); no host name is written here. A recording relay sits between the agent and
that upstream, so the test sees every upstream request the agent makes.
"""

import http.client
import http.server
import os
import pathlib
import shutil
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

from conftest import metric
from harness import upstreams, workloads
from harness.module_proxy import ModuleProxy

CLIENT_TIMEOUT = 900

# The module of the benchmarks and the demo: a few dozen dependencies in all.
GO_MOD = workloads.GO_MOD
MAIN_GO = workloads.GO_MAIN


class Relay:
    """A recording HTTP relay: /proxy/<p> -> <proxy>/<p>, /sumdb/<p> -> <sumdb>/<p>."""

    def __init__(self, proxy, sumdb):
        self.routes = {"/proxy/": proxy, "/sumdb/": sumdb}
        self.requests = []
        self.lock = threading.Lock()
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # pylint: disable=invalid-name
                relay.forward(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, handler):
        with self.lock:
            self.requests.append(handler.path)
        target = None
        for prefix, base in self.routes.items():
            if handler.path.startswith(prefix):
                target = base + "/" + handler.path[len(prefix):]
        if target is None:
            handler.send_error(404)
            return
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() in ("if-none-match", "if-modified-since", "user-agent")}
        try:
            with urllib.request.urlopen(urllib.request.Request(target, headers=headers),
                                        timeout=120) as resp:
                status, resp_headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, resp_headers, body = e.code, e.headers, e.read()
        except (urllib.error.URLError, OSError) as e:
            status, resp_headers, body = 502, {}, str(e).encode()
        handler.send_response(status)
        for k in ("Content-Type", "ETag", "Last-Modified"):
            if resp_headers.get(k):
                handler.send_header(k, resp_headers[k])
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def seen(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def is_artifact(path):
    """Immutable objects: version files, checksum-database lookups and full tiles."""
    return (path.endswith((".info", ".mod", ".zip")) or "/lookup/" in path
            or ("/tile/" in path and ".p/" not in path))


@pytest.fixture(scope="module")
def upstream():
    proxy = upstreams.go_proxy()
    if not upstreams.reachable(f"{proxy}/github.com/google/uuid/@v/list"):
        pytest.fail(f"the configured Go module proxy is unreachable: {proxy}")
    key, name, sumdb_url = upstreams.go_sumdb(proxy)
    if not upstreams.reachable(f"{sumdb_url}/latest"):
        pytest.fail(f"the configured checksum database is unreachable: {sumdb_url}")
    relay = Relay(proxy, sumdb_url)
    yield {"key": key, "name": name, "relay": relay}
    relay.close()


@pytest.fixture
def agent(start_agent, tmp_path, upstream):
    config = tmp_path / "agent.yaml"
    config.write_text(
        "goproxy:\n"
        f"  upstream: {upstream['relay'].url}/proxy\n"
        "  sumdb:\n"
        f"    name: {upstream['name']}\n"
        f"    upstream: {upstream['relay'].url}/sumdb\n")
    return start_agent(config=config)


def go_client_env(agent, upstream, home):
    """Only the agent, with checksum verification through it; nothing from the machine leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    home = pathlib.Path(home)
    env.update(
        GOENV="off",
        GOPROXY=f"{agent.url}/gomod",
        GOSUMDB=f"{upstream['key']} {agent.url}/gomod/sumdb/{upstream['name']}",
        GONOSUMDB="", GONOSUMCHECK="", GOPRIVATE="", GONOPROXY="", GOINSECURE="",
        GOFLAGS="-mod=mod -modcacherw",
        GOTOOLCHAIN="local",
        GOPATH=str(home / "gopath"),
        GOMODCACHE=str(home / "modcache"),
        GOCACHE=str(home.parent / "gocache"),
        HOME=str(home))
    return env


def go(args, env, cwd):
    out = subprocess.run(["go", *args], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=CLIENT_TIMEOUT)
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"go {' '.join(args)} failed ({out.returncode}):\n{text[-5000:]}"
    return text


def raw_get(agent, path):
    host, port = agent.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def downloaded_zips(env):
    return sorted(pathlib.Path(env["GOMODCACHE"]).glob("cache/download/**/@v/*.zip"))


def test_protocol_over_http(agent, upstream):
    relay = upstream["relay"]
    before = len(relay.seen())
    for bad in ("/gomod/github.com/BurntSushi/toml/@v/list", "/gomod/github.com/../x/@v/list",
                "/gomod/github.com/google/uuid/@v/..%2f..%2fx.info",
                "/gomod/github.com/google/uuid/@v/master.zip",
                f"/gomod/sumdb/{upstream['name']}/tile/8/0/x000/001"):
        status, _, body = raw_get(agent, bad)
        assert status == 400, (bad, status, body)
    assert len(relay.seen()) == before, "bad input must not reach the upstream"

    status, _, body = raw_get(agent, "/gomod/github.com/!burnt!sushi/toml/@v/list")
    assert status == 200 and b"v1.4.0" in body
    status, headers, body = raw_get(agent, "/gomod/github.com/!burnt!sushi/toml/@v/v1.4.0.info")
    assert status == 200 and headers["content-type"] == "application/json", body
    # Not found upstream: the same code, so GOPROXY=<agent>,direct would fall through.
    status, _, _ = raw_get(agent, "/gomod/github.com/google/no-such-module-here/@latest")
    assert status in (404, 410), status
    status, _, _ = raw_get(agent, f"/gomod/sumdb/{upstream['name']}/supported")
    assert status == 200
    status, _, body = raw_get(agent, f"/gomod/sumdb/{upstream['name']}/latest")
    assert status == 200 and body.startswith(b"go.sum database tree\n"), body
    status, _, body = raw_get(agent, "/gomod/sumdb/another.db.invalid/supported")
    assert status == 404


def test_go_build_through_agent_then_from_cache(agent, upstream, tmp_path):
    relay = upstream["relay"]
    project = tmp_path / "project"
    project.mkdir()
    (project / "go.mod").write_text(GO_MOD)
    (project / "main.go").write_text(MAIN_GO)

    # First run: everything comes through the agent, checked against the checksum database.
    env1 = go_client_env(agent, upstream, tmp_path / "run1")
    go(["mod", "download"], env1, project)
    go(["build", "-o", str(tmp_path / "demo"), "."], env1, project)
    out = subprocess.run([str(tmp_path / "demo")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("Cache 36 true"), out
    zips = downloaded_zips(env1)
    mods = sorted(pathlib.Path(env1["GOMODCACHE"]).glob("cache/download/**/@v/*.mod"))
    assert 20 <= len(zips) <= 60, [str(z) for z in zips]
    assert len(mods) >= len(zips), [str(m) for m in mods]
    # The go command verified the downloads through the agent's checksum-database proxy.
    sumdb_cache = pathlib.Path(env1["GOMODCACHE"]) / "cache/download/sumdb" / upstream["name"]
    assert sumdb_cache.is_dir(), "the go command never consulted the checksum database"
    assert (project / "go.sum").read_text().count(" h1:") >= 2 * len(zips)
    first = relay.seen()
    assert any(p.endswith(".zip") for p in first), first
    assert any("/lookup/" in p for p in first), first
    m1 = agent.metrics()
    assert metric(m1, "buildcache_served_bytes_total", frontend="goproxy", source="upstream") > 0

    # Second run: an empty module cache, served from the agent's store.
    shutil.rmtree(tmp_path / "run1")
    env2 = go_client_env(agent, upstream, tmp_path / "run2")
    go(["mod", "download"], env2, project)
    go(["build", "-o", str(tmp_path / "demo2"), "."], env2, project)
    assert len(downloaded_zips(env2)) == len(zips)
    new = relay.seen()[len(first):]
    assert not [p for p in new if is_artifact(p)], f"artifacts fetched again: {new}"
    m2 = agent.metrics()

    def delta(name, **labels):
        return metric(m2, name, **labels) - metric(m1, name, **labels)

    assert delta("buildcache_requests_total", frontend="goproxy", result="hit") >= 2 * len(zips)
    assert delta("buildcache_requests_total", frontend="goproxy", result="error") == 0
    local = delta("buildcache_served_bytes_total", frontend="goproxy", source="local")
    assert local >= sum(z.stat().st_size for z in downloaded_zips(env2))
    assert delta("buildcache_served_bytes_total", frontend="goproxy", source="upstream") == 0
    assert delta("buildcache_upstream_requests_total", frontend="goproxy", outcome="ok") == 0


# One module, example.test/lib v1.0.0, on a local module proxy that answers 403 for every other
# path under example.test/ (as proxies do for path prefixes they refuse to look up), 404 elsewhere.
LIB, LIB_VERSION = "example.test/lib", "v1.0.0"


def forbidding_proxy():
    return ModuleProxy(
        LIB, LIB_VERSION,
        {"go.mod": b"module example.test/lib\n\ngo 1.21\n",
         "pkg/pkg.go": b"package pkg\n\n// Answer is the answer.\nfunc Answer() int { return 42 }\n"},
        missing_status=lambda path: 403 if path.startswith("/example.test/") else 404)


def test_forbidden_prefixes_are_not_found_and_remembered(start_agent, tmp_path):
    # `go mod tidy` looks for the module providing an import by asking for every path prefix of
    # it; this upstream refuses the prefixes with 403. The agent must answer "not found" (404),
    # remember it for negativeTtl, count it as not_found and log no warning, so a warm tidy does
    # not go upstream for the prefixes again and no error is counted on a healthy build.
    proxy = forbidding_proxy()
    try:
        config = tmp_path / "agent.yaml"
        config.write_text(f"goproxy:\n  upstream: {proxy.url}\n  metadataTtl: 1h\n"
                          "  negativeTtl: 1h\n")
        agent = start_agent(config=config)
        go_mod = "module example.com/tidy\n\ngo 1.21\n"
        main_go = ('package main\n\nimport (\n\t"fmt"\n\n\t"example.test/lib/pkg"\n)\n\n'
                   'func main() { fmt.Println(pkg.Answer()) }\n')

        def tidy(run):
            project = tmp_path / f"project-{run}"
            project.mkdir()
            (project / "go.mod").write_text(go_mod)
            (project / "main.go").write_text(main_go)
            env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
            home = tmp_path / f"home-{run}"
            env.update(GOENV="off", GOPROXY=f"{agent.url}/gomod", GOSUMDB="off",
                       GOFLAGS="-mod=mod -modcacherw", GOTOOLCHAIN="local",
                       GOPATH=str(home / "gopath"), GOMODCACHE=str(home / "modcache"),
                       GOCACHE=str(tmp_path / "gocache"), HOME=str(home))
            go(["mod", "tidy"], env, project)
            assert f"require {LIB} {LIB_VERSION}" in \
                (project / "go.mod").read_text()
            out = subprocess.run(["go", "run", "."], capture_output=True, text=True, cwd=project,
                                 env=env, timeout=CLIENT_TIMEOUT, check=False)
            assert out.returncode == 0 and out.stdout == "42\n", out

        tidy(1)
        refused = [p for p in proxy.requests() if p not in proxy.files]
        assert any(p.startswith("/example.test/@") for p in refused), proxy.requests()
        m = agent.metrics()
        assert metric(m, "buildcache_requests_total", frontend="goproxy", result="error") == 0
        assert metric(m, "buildcache_upstream_requests_total", frontend="goproxy",
                      outcome="error") == 0
        assert metric(m, "buildcache_upstream_requests_total", frontend="goproxy",
                      outcome="not_found") >= len(set(refused))
        warnings = [e for e in agent.logs if e.get("level") in ("warn", "error")]
        assert not warnings, warnings

        # Warm: another pod with an empty module cache tidies the same project.
        first = len(proxy.requests())
        tidy(2)
        assert proxy.requests()[first:] == [], "the warm tidy went upstream"
        m2 = agent.metrics()
        assert metric(m2, "buildcache_requests_total", frontend="goproxy", result="error") == 0
    finally:
        proxy.close()
