#!/usr/bin/env python3
"""pip, go and npm: the same workload direct to the upstream, through a cold agent, and through
the warm agent with the client's own cache emptied.

For each tool and each round:
  (a) direct: the client talks to the machine's configured upstream,
  (b) cold:   through a freshly started buildcache-agent with an empty data dir,
  (c) warm:   through the same agent again, with a fresh client cache (venv / GOMODCACHE+GOCACHE /
              npm cache), so only the agent can be warm.
  (d) floor:  the client alone, with no server at all: everything (c) downloaded handed to it
              locally (pip --no-index --find-links, go GOPROXY=file://, npm ci --offline). No
              proxy can make (c) faster than this; (d)/(a) is the best warm ratio reachable.
The medians over --rounds are printed as a Markdown table with the ratios (b)/(a), (c)/(a) and
(d)/(a) and the targets of the issue, and the agent's own time in (c) (the sum of its request
durations, from its /metrics) against (c) - (d).

Workloads:
  pip: `pip install -r requirements.txt` (10 packages) into a fresh venv with a fresh pip cache;
       bitarray 2.3.0 has no wheel for this interpreter, so pip compiles it from the sdist. After
       (b) the wheel pip built is uploaded to the agent's wheel house with twine, so (c)
       downloads it instead of compiling.
  go:  `go mod download` then `go build` of a module with a few dozen modules in its build list;
       for (b)/(c) GOPROXY is only the agent and GOSUMDB goes through the agent.
  npm: `npm ci` of a ~100-package lockfile (made once against the upstream, without `resolved`
       URLs, before any timing), fresh --cache each run.

Upstreams come from the machine's client configuration (pip config / pip's default index,
`go env GOPROXY` + `go env GOSUMDB`, `npm config get registry`); no host name is written here.

Optional peers, each run cold then warm (fresh client cache) on the same workload in the same
round: proxpi (a PyPI caching proxy), when `--proxpi` names its installed Python; Verdaccio (npm),
when `--verdaccio` names its executable (see --install-verdaccio). Their warm time is compared
with buildcache's warm time of the same round.

With --real, the real-world-sized workloads of bench/real_workloads.py instead (issue 16): npm,
go, cargo, maven, pip and ccache, direct / cold / warm interleaved in every round, with the
agent's own share of its cold answers (request time minus upstream time, from /metrics).

Usage: python3 bench/package_managers.py [--rounds N] [--tools pip,go,npm] [--proxpi PYTHON]
       [--verdaccio EXE | --install-verdaccio] [--keep]
       python3 bench/package_managers.py --real [--rounds N] [--tools npm,go,cargo,maven,pip,ccache]
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from harness import upstreams, workloads  # noqa: E402
from harness.jsonlog import JsonLog  # noqa: E402
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
TIMEOUT = 1800
TOOLS_DIR = pathlib.Path.home() / ".cache" / "buildcache" / "tools"
# Verdaccio 6.8.0 is the newest that runs on Node 20; node-fetch must be pinned for it to install.
VERDACCIO_VERSION = "6.8.0"

# ---------------------------------------------------------------------------------------------
# Workloads

# The pip and Go workloads are shared with bench/peer_warm.py and the demo.
PIP_REQUIREMENTS = workloads.PIP_REQUIREMENTS
PIP_IMPORTS = workloads.PIP_IMPORTS
PIP_C_PROJECT = workloads.PIP_C_PROJECT
GO_MOD = workloads.GO_MOD
GO_MAIN = workloads.GO_MAIN

NPM_DEPENDENCIES = {"express": "4.19.2", "yargs": "17.7.2", "@types/express": "4.17.21"}

# (tool, part) -> (max (b)/(a), max (c)/(a)); None: no target.
TARGETS = {
    ("pip", "install"): (1.1, 0.3),
    ("go", "download"): (1.1, 0.3),
    ("go", "total"): (1.1, None),
    ("npm", "ci"): (1.1, 0.5),
}

# ---------------------------------------------------------------------------------------------
# Helpers


def log(msg):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr,
          flush=True)


def run(cmd, env=None, cwd=None):
    """Runs cmd; returns (seconds, output). Fails loudly on a non-zero exit."""
    start = time.monotonic()
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=TIMEOUT, check=False)
    elapsed = time.monotonic() - start
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{text[-4000:]}")
    return elapsed, text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class Agent:
    """buildcache-agent on loopback with the given config text and an empty (new) data dir."""

    def __init__(self, workdir, config_text, bin_dir=None):
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        config = workdir / "agent.yaml"
        config.write_text(config_text)
        binary = pathlib.Path(bin_dir or BIN_DIR) / "buildcache-agent"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: build the agent first")
        self.proc = subprocess.Popen(
            [str(binary), "--config", str(config), "--listen", "127.0.0.1:0",
             "--data-dir", str(self.data_dir)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            start_new_session=True)
        self._log = JsonLog(self.proc)
        self.logs = self._log.logs
        self.url = f"http://{self.wait_for('listening')['address']}"

    def wait_for(self, msg, timeout=30, start=0):
        return self._log.wait_for(msg, timeout, start)

    def request_seconds(self, frontend, since=(0.0, 0)):
        """(seconds, requests) the agent spent answering `frontend` requests, from its request
        duration histogram, minus `since` (an earlier return value)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=30) as resp:
            text = resp.read().decode()
        total, count = 0.0, 0
        label = f'frontend="{frontend}"'
        for line in text.splitlines():
            if line.startswith("buildcache_request_duration_seconds_sum{") and label in line:
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("buildcache_request_duration_seconds_count{") and label in line:
                count += int(float(line.rsplit(" ", 1)[1]))
        return total - since[0], count - since[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------------
# pip


def pip_upstream():
    return upstreams.pypi_index()


pip_env = workloads.pip_env


def pip_run(work, index_url, python=sys.executable):
    """Fresh venv + fresh pip cache; times `pip install -r`. Returns (secs, built, cache_dir)."""
    work = pathlib.Path(work)
    work.mkdir(parents=True)
    reqs = work / "requirements.txt"
    reqs.write_text(PIP_REQUIREMENTS)
    env = pip_env()
    run([python, "-m", "venv", work / "venv"], env=env)
    py = work / "venv" / "bin" / "python"
    cache = work / "pip-cache"
    secs, text = run([py, "-m", "pip", "install", "--cache-dir", cache, "--index-url", index_url,
                      "-r", reqs], env=env)
    run([py, "-c", PIP_IMPORTS], env=env)
    built = f"Building wheel for {PIP_C_PROJECT}" in text
    return secs, built, cache


def pip_upload_built_wheel(cache, agent, twine):
    wheels = sorted(pathlib.Path(cache).glob(f"wheels/**/{PIP_C_PROJECT}-*.whl"))
    if not wheels:
        raise RuntimeError(f"no built {PIP_C_PROJECT} wheel in {cache}")
    start = len(agent.logs)
    run([twine, "upload", "--non-interactive", "--disable-progress-bar", "--repository-url",
         f"{agent.url}/pypi/", "-u", "bench", "-p", "unused", wheels[0]], env=pip_env())
    agent.wait_for("pypi wheel stored", start=start)
    return wheels[0].name


def pip_floor(work, index_url):
    """pip with no server: the wheels (c) installed, from a local directory (--no-index)."""
    work = pathlib.Path(work)
    wheels = work / "wheels"
    wheels.mkdir(parents=True)
    reqs = work / "requirements.txt"
    reqs.write_text(PIP_REQUIREMENTS)
    env = pip_env()
    # The same files (c) got from the agent, the wheel-house wheel included (not timed).
    run([sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps",
         "--cache-dir", work / "dl-cache", "--index-url", index_url, "-d", wheels, "-r", reqs],
        env=env)
    run([sys.executable, "-m", "venv", work / "venv"], env=env)
    py = work / "venv" / "bin" / "python"
    secs, text = run([py, "-m", "pip", "install", "--cache-dir", work / "pip-cache", "--no-index",
                      "--find-links", wheels, "-r", reqs], env=env)
    run([py, "-c", PIP_IMPORTS], env=env)
    if f"Building wheel for {PIP_C_PROJECT}" in text:
        raise RuntimeError("the floor run compiled an sdist")
    return secs


def start_nginx(work, root, types):
    """nginx serving `root` on loopback with its static-file settings; returns (proc, url)."""
    work = pathlib.Path(work)
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  types {{ {types} }}
  default_type application/octet-stream;
  client_body_temp_path {work}/nginx-body;
  server {{ listen 127.0.0.1:{port}; root {root}; index index.json; }}
}}
""")
    work.chmod(0o755)  # nginx workers run unprivileged when started as root
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"],
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def pip_static_mirror(root, agent, wheels):
    """Copies what the warm pip run read from the agent (the JSON project pages, the wheels in
    `wheels` and their core metadata) into a static tree under root/pypi/."""
    root = pathlib.Path(root)
    wanted = {w.name for w in pathlib.Path(wheels).iterdir()}
    for line in PIP_REQUIREMENTS.splitlines():
        project = line.split("==")[0].lower().replace("_", "-")
        page_url = f"{agent.url}/pypi/simple/{project}/"
        req = urllib.request.Request(page_url,
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read()
        page_dir = root / "pypi" / "simple" / project
        page_dir.mkdir(parents=True)
        (page_dir / "index.json").write_bytes(body)
        for f in json.loads(body)["files"]:
            if f["filename"] not in wanted:
                continue
            urls = [f["url"]]
            if f.get("core-metadata") or f.get("dist-info-metadata"):
                urls.append(f["url"] + ".metadata")
            for rel in urls:
                absolute = urllib.parse.urljoin(page_url, rel)
                local = root / urllib.parse.urlsplit(absolute).path.lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                with urllib.request.urlopen(absolute, timeout=120) as resp:
                    local.write_bytes(resp.read())


def pip_static_index(work, agent, wheels):
    """pip through nginx serving a static copy of the agent's answers: the same protocol and the
    same bytes, from the fastest static server at hand."""
    work = pathlib.Path(work)
    work.mkdir(parents=True)
    root = work / "root"
    pip_static_mirror(root, agent, wheels)
    proc, url = start_nginx(work, root, "application/vnd.pypi.simple.v1+json json;")
    try:
        wait_http(f"{url}/pypi/simple/six/")
        secs, built, _ = pip_run(work / "run", f"{url}/pypi/simple/")
    finally:
        proc.terminate()
        proc.wait(20)
    if built:
        raise RuntimeError("the static-index run compiled an sdist")
    return secs


def bench_pip(tmp, rounds, results, notes, proxpi_python, peers):
    upstream = pip_upstream()
    twine = shutil.which("twine")
    if not twine:
        raise RuntimeError("twine is not installed")
    for r in range(rounds):
        base = pathlib.Path(tmp) / f"pip{r}"
        log(f"pip round {r + 1}: direct")
        a, built_a, _ = pip_run(base / "a", upstream)
        agent = Agent(base / "agent", f"pypi:\n  upstream: {upstream}\n")
        try:
            index = f"{agent.url}/pypi/simple/"
            log("pip: cold agent")
            b, built_b, cache_b = pip_run(base / "b", index)
            wheel = pip_upload_built_wheel(cache_b, agent, twine)
            log(f"pip: uploaded {wheel}; warm agent")
            before = agent.request_seconds("pypi")
            c, built_c, _ = pip_run(base / "c", index)
            served = agent.request_seconds("pypi", before)
            log("pip: client floor (no server)")
            d = pip_floor(base / "d", index)
            log("pip: static index (nginx)")
            e = pip_static_index(base / "e", agent, base / "d" / "wheels")
        finally:
            agent.stop()
        results.setdefault(("pip", "install"), []).append((a, b, c, d, *served))
        results.setdefault(("pip", "install (nginx static index)"), []).append((a, b, e))
        log(f"pip round {r + 1}: static index (nginx) {e:.1f} s")
        notes.setdefault("pip", set()).add(
            "install (nginx static index): its (c) is pip through nginx serving a static copy of "
            "what the warm agent served (the same JSON pages, wheels and metadata), its (b) the "
            "cold agent's")
        log(f"pip round {r + 1}: {a:.1f} / {b:.1f} / {c:.1f} / floor {d:.1f} s; agent "
            f"{served[0]:.2f} s over {served[1]} requests")
        notes.setdefault("pip", set()).add(
            f"{PIP_C_PROJECT} compiled from sdist: direct={built_a} cold={built_b} "
            f"warm={built_c} (warm should be False: wheel-house wheel)")
        if proxpi_python and r == 0:  # the peer in the first round only (time on a shared box)
            log("pip: proxpi cold, warm")
            proxpi = bench_proxpi(base / "proxpi", upstream, proxpi_python, a)
            results.setdefault(("pip", "install (proxpi peer)"), []).append(proxpi)
            peers.setdefault("pip", []).append(("proxpi", c, proxpi[2]))
        shutil.rmtree(base, ignore_errors=True)


def bench_proxpi(work, upstream, proxpi_python, direct):
    work = pathlib.Path(work)
    work.mkdir(parents=True)
    port = free_port()
    env = {**os.environ, "PROXPI_INDEX_URL": upstream.rstrip("/") + "/",
           "PROXPI_CACHE_DIR": str(work / "cache")}
    gunicorn = pathlib.Path(proxpi_python).parent / "gunicorn"
    if gunicorn.exists():
        cmd = [str(gunicorn), "-w", "4", "-b", f"127.0.0.1:{port}", "proxpi.server:app"]
    else:
        cmd = [str(proxpi_python), "-m", "flask", "--app", "proxpi.server", "run",
               "--port", str(port), "--host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, env=env, stdout=(work / "log").open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        index = f"http://127.0.0.1:{port}/index/"
        b, _, _ = pip_run(work / "b", index)
        c, built_c, _ = pip_run(work / "c", index)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return direct, b, c


# ---------------------------------------------------------------------------------------------
# go


def go_upstream():
    proxy = upstreams.go_proxy()
    key, name, sumdb_url = upstreams.go_sumdb(proxy)
    return {"proxy": proxy, "gosumdb": upstreams.go_env("GOSUMDB"), "key": key, "name": name,
            "sumdb_url": sumdb_url}


def go_run(work, goproxy, gosumdb, build=True):
    """Fresh project, GOMODCACHE and GOCACHE; times download and build separately."""
    work = pathlib.Path(work)
    project = work / "project"
    project.mkdir(parents=True)
    (project / "go.mod").write_text(GO_MOD)
    (project / "main.go").write_text(GO_MAIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOENV="off", GOPROXY=goproxy, GOSUMDB=gosumdb, GONOSUMDB="", GOPRIVATE="",
               GONOPROXY="", GOINSECURE="", GOFLAGS="-mod=mod -modcacherw", GOTOOLCHAIN="local",
               GOPATH=str(work / "gopath"), GOMODCACHE=str(work / "modcache"),
               GOCACHE=str(work / "gocache"), HOME=str(work))
    # `go mod download` alone fetches only the modules go.mod lists (11 of 23 zips here); the
    # rest would be fetched inside `go build`. `go list -deps` fetches them without compiling,
    # so "download" covers every module the build needs and "build" is the compile.
    download, _ = run(["go", "mod", "download"], env=env, cwd=project)
    listed, _ = run(["go", "list", "-deps", "."], env=env, cwd=project)
    if not build:
        return download + listed, None
    compiled, _ = run(["go", "build", "-o", str(work / "demo"), "."], env=env, cwd=project)
    run([work / "demo"])
    return download + listed, download + listed + compiled


def bench_go(tmp, rounds, results, notes, build=True):
    up = go_upstream()
    for r in range(rounds):
        base = pathlib.Path(tmp) / f"go{r}"
        log(f"go round {r + 1}: direct")
        a_dl, a_tot = go_run(base / "a", up["proxy"], up["gosumdb"], build)
        agent = Agent(base / "agent",
                      "goproxy:\n"
                      f"  upstream: {up['proxy']}\n"
                      "  sumdb:\n"
                      f"    name: {up['name']}\n"
                      f"    upstream: {up['sumdb_url']}\n")
        try:
            goproxy = f"{agent.url}/gomod"
            gosumdb = f"{up['key']} {agent.url}/gomod/sumdb/{up['name']}"
            log("go: cold agent")
            b_dl, b_tot = go_run(base / "b", goproxy, gosumdb, build)
            log("go: warm agent")
            before = agent.request_seconds("goproxy")
            c_dl, c_tot = go_run(base / "c", goproxy, gosumdb, build)
            served = agent.request_seconds("goproxy", before)
        finally:
            agent.stop()
        # The floor: the module cache (c) filled, read through a file:// GOPROXY, no server. The
        # checksum database is off there (a file proxy cannot serve its signed tree head), so
        # the floor skips the sumdb look-ups the warm run makes through the agent.
        log("go: client floor (file:// GOPROXY)")
        d_dl, _ = go_run(base / "d", f"file://{base / 'c' / 'modcache' / 'cache' / 'download'}",
                       "off", build=False)
        results.setdefault(("go", "download"), []).append((a_dl, b_dl, c_dl, d_dl, *served))
        if build:
            results.setdefault(("go", "total"), []).append((a_tot, b_tot, c_tot))
        total = f", total {a_tot:.1f} / {b_tot:.1f} / {c_tot:.1f} s" if build else ""
        log(f"go round {r + 1}: download {a_dl:.1f} / {b_dl:.1f} / {c_dl:.1f} / floor {d_dl:.1f} s "
            f"(agent {served[0]:.2f} s over {served[1]} requests){total}")
        zips = len(list((base / "c" / "modcache").glob("cache/download/**/@v/*.zip")))
        notes.setdefault("go", set()).add(
            f"{zips} module zips in the module cache; download = `go mod download` + "
            "`go list -deps .`, total = download + `go build` (fresh GOCACHE: full compile)")
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# npm


def npm_upstream():
    return upstreams.npm_registry()


def npm_env(work):
    """npm reads only this user config: no resolved URLs, so `npm ci` uses --registry."""
    npmrc = pathlib.Path(work) / "npmrc"
    npmrc.write_text("omit-lockfile-registry-resolved=true\naudit=false\nfund=false\n"
                     "update-notifier=false\nloglevel=warn\n")
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    env["npm_config_userconfig"] = str(npmrc)
    return env


def npm_lockfile(tmp, registry):
    """package.json + package-lock.json resolved once against the upstream (not timed)."""
    work = pathlib.Path(tmp) / "npm-lock"
    work.mkdir(parents=True)
    (work / "package.json").write_text(json.dumps({
        "name": "buildcache-npm-bench", "version": "1.0.0", "private": True,
        "dependencies": NPM_DEPENDENCIES}))
    run(["npm", "install", "--package-lock-only", "--registry", registry,
         "--cache", work / "cache"], env=npm_env(work), cwd=work)
    lock = (work / "package-lock.json").read_text()
    if '"resolved"' in lock:
        raise RuntimeError("lockfile has resolved URLs")
    packages = sum(1 for p in json.loads(lock)["packages"] if p)
    return work, packages


def npm_run(work, lockdir, registry, offline_cache=None):
    work = pathlib.Path(work)
    project = work / "project"
    project.mkdir(parents=True)
    shutil.copy(lockdir / "package.json", project)
    shutil.copy(lockdir / "package-lock.json", project)
    env = npm_env(work)
    cache = offline_cache or work / "cache"
    extra = ["--offline"] if offline_cache else []
    secs, _ = run(["npm", "ci", "--registry", registry, "--cache", cache, *extra], env=env,
                  cwd=project)
    run(["node", "-e", "require('express'); require('yargs')"], env=env, cwd=project)
    return secs


def verdaccio_install(version=VERDACCIO_VERSION):
    """Installs Verdaccio with npm into the tools directory (once); returns its executable."""
    tool = TOOLS_DIR / f"verdaccio-{version}"
    exe = tool / "node_modules" / ".bin" / "verdaccio"
    if not exe.exists():
        tool.mkdir(parents=True, exist_ok=True)
        (tool / "package.json").write_text(json.dumps({
            "name": "buildcache-bench-verdaccio", "version": "1.0.0", "private": True,
            "dependencies": {"verdaccio": version}, "overrides": {"node-fetch": "2.7.0"}}))
        run(["npm", "install", "--no-audit", "--no-fund", "--registry", npm_upstream()],
            cwd=tool)
    return exe


class Verdaccio:
    """Verdaccio on loopback proxying (and caching) the upstream registry."""

    def __init__(self, work, exe, upstream):
        work = pathlib.Path(work)
        work.mkdir(parents=True)
        port = free_port()
        config = work / "config.yaml"
        config.write_text(
            f"storage: {work / 'storage'}\n"
            f"uplinks:\n  up:\n    url: {upstream}\n    cache: true\n    maxage: 10m\n"
            "packages:\n"
            "  '@*/*':\n    access: $all\n    proxy: up\n"
            "  '**':\n    access: $all\n    proxy: up\n"
            "web:\n  enable: false\n"
            "log: {type: stdout, format: pretty, level: warn}\n")
        self.proc = subprocess.Popen(
            [str(exe), "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            stdout=(work / "log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}/"
        wait_http(f"{self.url}-/ping")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bench_npm(tmp, rounds, results, notes, verdaccio, peers):
    upstream = npm_upstream()
    lockdir, packages = npm_lockfile(tmp, upstream)
    notes.setdefault("npm", set()).add(f"{packages} packages in the lockfile")
    for r in range(rounds):
        base = pathlib.Path(tmp) / f"npm{r}"
        log(f"npm round {r + 1}: direct")
        a = npm_run(base / "a", lockdir, upstream)
        agent = Agent(base / "agent", f"npm:\n  upstream: {upstream}\n")
        try:
            registry = f"{agent.url}/npm/"
            log("npm: cold agent")
            b = npm_run(base / "b", lockdir, registry)
            log("npm: warm agent")
            before = agent.request_seconds("npm")
            c = npm_run(base / "c", lockdir, registry)
            served = agent.request_seconds("npm", before)
        finally:
            agent.stop()
        # The floor: npm ci from the cache (c) filled, offline, no server.
        log("npm: client floor (npm ci --offline)")
        d = npm_run(base / "d", lockdir, registry, offline_cache=base / "c" / "cache")
        results.setdefault(("npm", "ci"), []).append((a, b, c, d, *served))
        log(f"npm round {r + 1}: {a:.1f} / {b:.1f} / {c:.1f} / floor {d:.1f} s; agent "
            f"{served[0]:.2f} s over {served[1]} requests")
        if verdaccio:
            peer = Verdaccio(base / "verdaccio", verdaccio, upstream)
            try:
                log("npm: Verdaccio cold, warm")
                vb = npm_run(base / "vb", lockdir, peer.url)
                vc = npm_run(base / "vc", lockdir, peer.url)
            finally:
                peer.stop()
            results.setdefault(("npm", "ci (Verdaccio peer)"), []).append((a, vb, vc))
            peers.setdefault("npm", []).append(("Verdaccio", c, vc))
            log(f"npm round {r + 1}: Verdaccio {vb:.1f} / {vc:.1f} s")
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Report


def verdict(ratio, limit):
    if limit is None:
        return "-"
    return f"{'met' if ratio <= limit else 'MISSED'} (<= {limit})"


def report(results, notes, rounds, load_before, load_after, peer_note, peers):
    lines = []
    now = datetime.datetime.now(datetime.timezone.utc)
    lines.append(f"Date: {now:%Y-%m-%d %H:%M} UTC; machine: {socket.gethostname()}, "
                 f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
                 f"rounds: {rounds} (median); load average (1/5/15 min) before: "
                 f"{' / '.join(f'{x:.2f}' for x in load_before)}, after: "
                 f"{' / '.join(f'{x:.2f}' for x in load_after)}")
    lines.append("")
    lines.append("| tool | part | (a) direct s | (b) cold agent s | (c) warm agent s "
                 "| (d) client floor s | (b)/(a) | (c)/(a) | (d)/(a) | target (b)/(a) "
                 "| target (c)/(a) | agent time in (c) s (requests) |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    for (tool, part), samples in results.items():
        a, b, c = (statistics.median(s[i] for s in samples) for i in range(3))
        has_floor = all(len(s) >= 6 for s in samples)
        d = statistics.median(s[3] for s in samples) if has_floor else None
        agent_s = statistics.median(s[4] for s in samples) if has_floor else None
        agent_n = statistics.median(s[5] for s in samples) if has_floor else None
        limit_b, limit_c = TARGETS.get((tool, part), (None, None))
        lines.append(
            f"| {tool} | {part} | {a:.1f} | {b:.1f} | {c:.1f} | "
            f"{'-' if d is None else f'{d:.1f}'} | {b / a:.2f} | {c / a:.2f} | "
            f"{'-' if d is None else f'{d / a:.2f}'} | {verdict(b / a, limit_b)} | "
            f"{verdict(c / a, limit_c)} | "
            f"{'-' if agent_s is None else f'{agent_s:.2f} ({agent_n:.0f})'} |")
    lines.append("")
    for tool, items in peers.items():
        for name in sorted({n for n, _, _ in items}):
            pairs = [(bc, peer) for n, bc, peer in items if n == name]
            bc = statistics.median(p[0] for p in pairs)
            peer = statistics.median(p[1] for p in pairs)
            lines.append(f"Peer ({tool}, warm, {len(pairs)} round(s), same rounds): buildcache "
                         f"{bc:.1f} s / {name} {peer:.1f} s = {bc / peer:.2f} (target <= 1.0). "
                         f"(For the {name} row, (b)/(c) are its cold/warm runs.)")
    lines.append(f"Peer note: {peer_note}")
    for tool, items in notes.items():
        for item in sorted(items):
            lines.append(f"- {tool}: {item}")
    lines.append("")
    lines.append("Per round, (a) / (b) / (c) [/ (d)] in seconds:")
    for (tool, part), samples in results.items():
        rows = ", ".join("/".join(f"{x:.1f}" for x in s[:4]) for s in samples)
        lines.append(f"- {tool} {part}: {rows}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tools", default="pip,go,npm")
    parser.add_argument("--proxpi", default=os.environ.get("PROXPI_PYTHON", ""),
                        help="a Python with proxpi installed (optional peer for pip)")
    parser.add_argument("--verdaccio", default="",
                        help="Verdaccio's executable (optional peer for npm)")
    parser.add_argument("--install-verdaccio", action="store_true",
                        help=f"install Verdaccio {VERDACCIO_VERSION} with npm into {TOOLS_DIR} "
                             "(once) and use it as the npm peer")
    parser.add_argument("--no-go-build", action="store_true",
                        help="go: time the download only (skip the `go build` of the total row)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--real", action="store_true",
                        help="the real-world-sized workloads of bench/real_workloads.py")
    args = parser.parse_args()
    if args.real:
        return main_real(args)

    proxpi_python = args.proxpi
    if proxpi_python:
        check = subprocess.run([proxpi_python, "-c", "import proxpi.server"],
                               capture_output=True, timeout=60, check=False)
        if check.returncode != 0:
            proxpi_python = ""
    peer_note = ("proxpi run on the pip workload, first round only (it has no wheel house, "
                 "so its warm run still compiles the sdist)" if proxpi_python else
                 "no peer proxy run (pass --proxpi PYTHON with proxpi installed)")
    verdaccio = args.verdaccio
    if args.install_verdaccio and not verdaccio:
        verdaccio = str(verdaccio_install())
    peer_note += ("; Verdaccio run on the npm workload in every round" if verdaccio else
                  "; no npm peer (pass --verdaccio or --install-verdaccio)")
    peer_note += ("; no Go peer: Athens is not served by the Go module proxy this machine "
                  "reaches, and no other Go module proxy is")

    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="bc-pm-bench-")
    os.chmod(tmp, 0o755)  # nginx workers (the static-index run) read below it unprivileged
    results, notes, peers = {}, {}, {}
    try:
        tools = args.tools.split(",")
        if "pip" in tools:
            bench_pip(tmp, args.rounds, results, notes, proxpi_python, peers)
        # Quick ones first; go (a full compile per run) last.
        if "npm" in tools:
            bench_npm(tmp, args.rounds, results, notes, verdaccio, peers)
        if "go" in tools:
            bench_go(tmp, args.rounds, results, notes, build=not args.no_go_build)
    finally:
        if args.keep:
            log(f"work directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(results, notes, args.rounds, load_before, os.getloadavg(), peer_note, peers))


def main_real(args):
    import real_workloads  # noqa: PLC0415  (it imports this module's helpers through `bench`)
    tools = (args.tools.split(",") if args.tools != "pip,go,npm"
             else list(real_workloads.WORKLOADS))
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="bc-pm-real-")
    try:
        results = real_workloads.bench_real(sys.modules[__name__], tmp, args.rounds, tools, log)
    finally:
        if args.keep:
            log(f"work directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"Date: {now:%Y-%m-%d %H:%M} UTC; machine: {socket.gethostname()}, {os.cpu_count()} "
          f"cores, {platform.system()} {platform.machine()}; rounds: {args.rounds} (median of "
          f"per-round ratios); load average before: {load_before[0]:.1f}, after: "
          f"{load_after[0]:.1f}\n")
    print(real_workloads.report_real(results))


if __name__ == "__main__":
    main()
