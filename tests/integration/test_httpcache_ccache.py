"""The real ccache against the real agent: a build, a wiped local cache, and a rebuild that must be
served entirely from the agent's HTTP cache (ccache's http remote storage backend)."""

import os
import pathlib
import shutil

import pytest

from harness import ccache

CCACHE = shutil.which("ccache")
CC = shutil.which("gcc") or shutil.which("cc")

pytestmark = pytest.mark.skipif(not CCACHE or not CC, reason="needs ccache and a C compiler")

SOURCES = {
    "util.h": "int add(int a, int b);\nint mul(int a, int b);\nconst char *greeting(void);\n",
    "add.c": '#include "util.h"\nint add(int a, int b) { return a + b; }\n',
    "mul.c": '#include "util.h"\nint mul(int a, int b) { int r = 0; '
             "for (int i = 0; i < b; ++i) r = add(r, a); return r; }\n",
    "greet.c": '#include "util.h"\nconst char *greeting(void) { return "hello from ccache"; }\n',
    "main.c": '#include <stdio.h>\n#include "util.h"\n'
              'int main(void) { printf("%s %d\\n", greeting(), mul(6, 7)); return 0; }\n',
}
C_FILES = sorted(name for name in SOURCES if name.endswith(".c"))


def ccache_env(ccache_dir, remote, config_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCACHE_")}
    env.update({
        "CCACHE_DIR": str(ccache_dir),
        "CCACHE_CONFIGPATH": str(config_path),  # ignore any machine or user configuration
        "CCACHE_REMOTE_STORAGE": remote,
        "CCACHE_NOHASHDIR": "true",
        "CCACHE_LOGFILE": str(ccache_dir) + ".log",
    })
    return env


def build(src_dir, env):
    """Compiles every .c file through ccache and links the program; returns ccache's counters."""
    counters, out = ccache.build(src_dir, env, C_FILES)
    assert out == "hello from ccache 42\n"
    return counters


@pytest.mark.parametrize("layout", ["subdirs", "flat", "bazel"])
def test_second_build_is_all_remote_hits(agent, tmp_path, layout):
    src = tmp_path / "src"
    src.mkdir()
    for name, text in SOURCES.items():
        (src / name).write_text(text)
    config = tmp_path / "ccache.conf"
    config.write_text("")
    remote = f"{agent.url}/cache|layout={layout}"
    n = len(C_FILES)

    first = build(src, ccache_env(tmp_path / "ccache-1", remote, config))
    assert first.get("cache_miss") == n, first
    assert first.get("remote_storage_error", 0) == 0, first
    assert first.get("remote_storage_write", 0) >= n, first

    # A different machine, or a pod on another node: empty local cache, same agent.
    shutil.rmtree(tmp_path / "ccache-1")
    second = build(src, ccache_env(tmp_path / "ccache-2", remote, config))
    assert second.get("cache_miss", 0) == 0, second
    assert second.get("remote_storage_hit") == n, second
    assert second.get("local_storage_hit", 0) == 0, second
    assert second.get("remote_storage_error", 0) == 0, second
    assert second.get("direct_cache_hit", 0) + second.get("preprocessed_cache_hit", 0) == n


def test_agent_outage_is_a_miss_not_a_failure(start_agent, tmp_path):
    """ccache treats an unreachable cache as a miss; the build still succeeds."""
    src = tmp_path / "src"
    src.mkdir()
    for name, text in SOURCES.items():
        (src / name).write_text(text)
    config = tmp_path / "ccache.conf"
    config.write_text("")
    agent = start_agent()
    url = agent.url
    agent.stop()
    counters = build(src, ccache_env(tmp_path / "ccache", f"{url}/cache", config))
    assert counters.get("cache_miss") == len(C_FILES), counters
