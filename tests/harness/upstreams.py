"""Which real registries this machine's clients use: the upstreams the integration tests give the
agent. No registry host name is written in the repository; each one is asked of the client's own
configuration (`pip config list`, `go env`, `npm config get registry`, cargo's network log,
Maven's effective repositories), the way a user's agent configuration would name them.

Each function raises UpstreamError with a clear message when the client is missing or names no
usable registry, and never returns a guess. Used by the integration tests, the benchmarks and the
demo.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request


class UpstreamError(RuntimeError):
    """The machine's client configuration names no usable registry."""


def tool(name):
    """The path of a client on PATH; scripts/setup installs every one the tests use."""
    path = shutil.which(name)
    if path is None:
        raise UpstreamError(f"{name} is not installed (scripts/setup installs it)")
    return path


def reachable(url, headers=None, timeout=30):
    """Whether GET url answers 200."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def pypi_index():
    """The simple index pip uses on this machine: env, then install., then global. settings,
    then pip's own default."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True, timeout=60, check=False)
    found = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        found[key.strip()] = value.strip().strip("'\"")
    for key in (":env:.index-url", "install.index-url", "global.index-url"):
        if found.get(key):
            return found[key]
    from pip._internal.models.index import PyPI  # pylint: disable=import-outside-toplevel
    return PyPI.simple_url


def npm_registry():
    """The registry npm uses on this machine, ending in '/'."""
    out = subprocess.run([tool("npm"), "config", "get", "registry"], capture_output=True,
                         text=True, timeout=60, check=False)
    registry = out.stdout.strip()
    if out.returncode != 0 or not registry.startswith(("http://", "https://")):
        raise UpstreamError(f"npm config get registry gave no registry: {out.stdout}{out.stderr}")
    return registry if registry.endswith("/") else registry + "/"


def go_env(name):
    out = subprocess.run([tool("go"), "env", name], capture_output=True, text=True, timeout=60,
                         check=False)
    if out.returncode != 0:
        raise UpstreamError(f"go env {name} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def go_proxy():
    """The first entry of `go env GOPROXY` that is a URL, without a trailing '/'."""
    for entry in go_env("GOPROXY").replace("|", ",").split(","):
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    raise UpstreamError(f"go env GOPROXY names no proxy URL: {go_env('GOPROXY')!r}")


def go_sumdb_key():
    """The checksum database's key from `go env GOSUMDB` (its name is the part before '+')."""
    fields = go_env("GOSUMDB").split()
    if not fields or fields[0] == "off":
        raise UpstreamError("go env GOSUMDB is off: checksum verification is part of these tests")
    return fields[0]


def go_sumdb(proxy):
    """(GOSUMDB key as configured, database name, database URL) from `go env GOSUMDB`. The URL
    is the one GOSUMDB gives, else <proxy>/sumdb/<name> when the proxy proxies the database,
    else https://<name>, as the go command itself decides."""
    key = go_sumdb_key()
    fields = go_env("GOSUMDB").split()
    name = key.split("+", 1)[0]
    if len(fields) > 1:
        url = fields[1].rstrip("/")
    elif reachable(f"{proxy}/sumdb/{name}/supported"):
        url = f"{proxy}/sumdb/{name}"
    else:
        url = f"https://{name}"
    return key, name, url


def machine_cargo_home():
    return pathlib.Path(os.environ.get("CARGO_HOME", pathlib.Path.home() / ".cargo"))


def cargo_index():
    """The sparse index cargo uses on this machine, as cargo's own network log reports it (the
    machine's registry configuration applies, its caches do not)."""
    with tempfile.TemporaryDirectory(prefix="cargo-upstream-") as tmp:
        work = pathlib.Path(tmp)
        home = work / "home"
        home.mkdir()
        for name in ("config.toml", "config"):
            if (machine_cargo_home() / name).is_file():
                shutil.copy(machine_cargo_home() / name, home / name)
        project = work / "probe"
        (project / "src").mkdir(parents=True)
        (project / "src" / "lib.rs").write_text("")
        (project / "Cargo.toml").write_text(
            '[package]\nname = "probe"\nversion = "0.1.0"\nedition = "2021"\n\n'
            '[dependencies]\nitoa = "1"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_")}
        env.update({k: v for k, v in os.environ.items()
                    if k.startswith(("CARGO_REGISTRIES_", "CARGO_SOURCE_", "CARGO_HTTP_"))})
        env.update(CARGO_HOME=str(home), CARGO_TERM_COLOR="never", CARGO_LOG="network=debug")
        out = subprocess.run([tool("cargo"), "generate-lockfile"], capture_output=True,
                             text=True, cwd=project, env=env, timeout=600, check=False)
        text = out.stdout + out.stderr
    configs = [u for u in re.findall(r"\bfetch (https?://\S+)", text)
               if u.endswith("/config.json")]
    if not configs:
        raise UpstreamError("cannot tell which sparse index cargo uses here (is the registry reachable, "
                    f"and a sparse one?):\n{text[-4000:]}")
    return configs[0][: -len("config.json")]


def maven_repository():
    """The repository Maven resolves from on this machine (its settings and mirrors applied),
    ending in '/'."""
    with tempfile.TemporaryDirectory(prefix="maven-upstream-") as tmp:
        out_file = pathlib.Path(tmp) / "url.txt"
        env = {k: v for k, v in os.environ.items() if k not in ("MAVEN_OPTS", "MAVEN_ARGS")}
        env["MAVEN_OPTS"] = "-Dstyle.color=never"
        out = subprocess.run([tool("mvn"), "-B", "-q", "help:evaluate",
                              "-Dexpression=project.remoteArtifactRepositories[0].url",
                              f"-Doutput={out_file}"], capture_output=True, text=True, cwd=tmp,
                             env=env, timeout=600, check=False)
        url = out_file.read_text().strip() if out_file.exists() else ""
    if out.returncode != 0 or not re.fullmatch(r"https?://\S+", url):
        raise UpstreamError(f"cannot ask Maven for its repository (exit {out.returncode}, got {url!r}):\n"
                    f"{(out.stdout + out.stderr)[-4000:]}")
    return url.rstrip("/") + "/"
