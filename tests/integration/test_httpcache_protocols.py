"""The build-cache HTTP API as sccache (WebDAV), Gradle and Bazel speak it, against the real
agent: the real sccache, and curl replaying Gradle's and Bazel's request shapes (see
agent/frontends/httpcache/README.md for where they come from)."""

import hashlib
import os
import shutil
import subprocess

import pytest

from conftest import metric
from harness import sccache

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(not CURL, reason="needs curl")


def curl(*args, data_file=None):
    """Runs curl; returns (status, body bytes, verbose stderr text)."""
    cmd = [CURL, "-sS", "-v", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", *args]
    if data_file is not None:
        cmd += ["--data-binary", f"@{data_file}"]
    out = subprocess.run(cmd, capture_output=True, timeout=60)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code), body, out.stderr.decode(errors="replace")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def small_limit_agent(start_agent, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("httpcache:\n  maxObjectSize: 1Mi\n")
    return start_agent(config=config)


def test_gradle_store_and_load_with_expect_continue(agent, tmp_path):
    artifact = os.urandom(3 << 20)
    path = tmp_path / "artifact"
    path.write_bytes(artifact)
    url = f"{agent.url}/cache/0f3a9c7e1b2d4c5e6f708192a3b4c5d6"
    assert curl(url)[0] == 404  # miss
    code, _, log = curl("-X", "PUT", "-H", "Expect: 100-continue", "-H",
                        "Content-Type: application/vnd.gradle.build-cache-artifact.v2", url,
                        data_file=path)
    assert code in (200, 201, 204), log
    assert "HTTP/1.1 100 Continue" in log
    code, body, _ = curl(url)
    assert code == 200 and body == artifact


def test_gradle_too_large_is_413_without_sending_the_body(small_limit_agent, tmp_path):
    path = tmp_path / "big"
    path.write_bytes(os.urandom(2 << 20))
    url = f"{small_limit_agent.url}/cache/deadbeef"
    code, _, log = curl("-X", "PUT", "-H", "Expect: 100-continue", url, data_file=path)
    assert code == 413, log
    assert "100 Continue" not in log
    assert curl(url)[0] == 404
    # A chunked upload (no length up front) that turns out too large is refused the same way.
    code, _, log = curl("-X", "PUT", "-H", "Transfer-Encoding: chunked", url, data_file=path)
    assert code == 413, log
    assert curl(url)[0] == 404


def test_bazel_action_cache_and_cas(agent, tmp_path):
    blob = os.urandom(300000)
    digest = sha256(blob)
    blob_file = tmp_path / "blob"
    blob_file.write_bytes(blob)
    for base in (agent.url, f"{agent.url}/cache"):
        action = sha256(base.encode())
        result = tmp_path / "action_result"
        result.write_bytes(b"serialized ActionResult for " + base.encode())
        assert curl(f"{base}/ac/{action}")[0] == 404
        code, _, log = curl("-X", "PUT", f"{base}/ac/{action}", data_file=result)
        assert code in (200, 201, 202, 204), log  # the codes Bazel's HTTP client accepts
        assert curl(f"{base}/ac/{action}")[1] == result.read_bytes()

        code, _, log = curl("-X", "PUT", f"{base}/cas/{digest}", data_file=blob_file)
        assert code in (200, 201, 202, 204), log
        code, body, _ = curl(f"{base}/cas/{digest}")
        assert code == 200 and body == blob
        code, _, log = curl("-I", f"{base}/cas/{digest}")
        assert code == 200 and f"Content-Length: {len(blob)}" in log

        # Content that does not hash to the path's digest is refused and not stored.
        wrong = sha256(b"not the content" + base.encode())
        code, body, _ = curl("-X", "PUT", f"{base}/cas/{wrong}", data_file=blob_file)
        assert code == 400, body
        assert curl(f"{base}/cas/{wrong}")[0] == 404
    # The AC entry under /cache/ac/ is the same as /ac/ (ccache's layout=bazel relies on it).
    action = sha256(agent.url.encode())
    assert curl(f"{agent.url}/cache/ac/{action}")[0] == 200
    assert curl(f"{agent.url}/ac/not-a-digest")[0] == 400


def test_real_sccache_with_and_without_a_trailing_slash(agent, tmp_path):
    # The real sccache: its start-up check (a read and a write of .sccache_check), directory
    # probing (PROPFIND, MKCOL) and objects. With an endpoint ending in "/" (what the webhook
    # used to set) it asks for ".../sccache//.sccache_check"; the agent refused that with 400 and
    # sccache's server did not start, so every compile through it failed.
    sources = sccache.write_sources(tmp_path / "src", 10)
    slash = f"{agent.url}/cache/sccache/"
    first = sccache.compile_all(slash, sources, tmp_path / "run1")
    assert (sccache.misses(first), sccache.hits(first)) == (10, 0), first
    assert first["cache_writes"] == 10 and first["cache_write_errors"] == 0, first
    # A new pod (empty local directory): every object comes from the agent, with the trailing
    # slash and without it (the same keys).
    for run, endpoint in (("run2", slash), ("run3", slash.rstrip("/"))):
        again = sccache.compile_all(endpoint, sources, tmp_path / run)
        assert (sccache.hits(again), sccache.misses(again)) == (10, 0), (endpoint, again)
        assert again["cache_read_errors"] == 0 and again["cache_errors"]["counts"] == {}, again
    # With a key prefix, as docs/clients/sccache.md configures it.
    prefixed = sccache.compile_all(f"{agent.url}/cache", sources, tmp_path / "run4", "sccache-p")
    assert sccache.misses(prefixed) == 10, prefixed
    m = agent.metrics()
    assert metric(m, "buildcache_requests_total", frontend="httpcache", result="rejected") == 0
    assert metric(m, "buildcache_requests_total", frontend="httpcache", result="error") == 0



def test_ccache_style_generic_api_and_delete(agent, tmp_path):
    value = tmp_path / "v"
    value.write_bytes(b"ccache result")
    url = f"{agent.url}/cache/3f/kq2j9vmf3c5u5lq6dvbi8e1hc2f0p"
    assert curl("-I", url)[0] == 404  # ccache HEADs before a PUT that must not overwrite
    assert curl("-X", "PUT", "-H", "Content-Type: application/octet-stream", url,
                data_file=value)[0] == 201
    assert curl(url)[1] == b"ccache result"
    assert curl("-X", "DELETE", url)[0] == 204
    assert curl(url)[0] == 404


@pytest.mark.parametrize("path", [
    "/cache/../../etc/passwd", "/cache/a/../b", "/cache/%2e%2e/x", "/cache/a/%2E%2E/b",
    "/cache/a%00b", "/cache/a%5c..%5cb", "/cache/a//../b", "/cache/./a", "/cache/" + "k" * 1100,
])
def test_bad_keys_and_traversal_are_400(agent, tmp_path, path):
    value = tmp_path / "v"
    value.write_bytes(b"x")
    assert curl(f"{agent.url}{path}")[0] == 400
    assert curl("-X", "PUT", f"{agent.url}{path}", data_file=value)[0] == 400


def test_empty_key_segments_are_merged_not_a_second_key_space(agent, tmp_path):
    # "a//b" names "a/b", as WebDAV servers merge slashes (sccache doubles the slash after an
    # endpoint that ends in "/"): the same object, never a different one.
    value = tmp_path / "v"
    value.write_bytes(b"merged")
    assert curl("-X", "PUT", f"{agent.url}/cache//merge//a///b", data_file=value)[0] == 201
    code, body, _ = curl(f"{agent.url}/cache/merge/a/b")
    assert (code, body) == (200, b"merged")
    assert curl("-X", "DELETE", f"{agent.url}/cache/merge/a//b")[0] == 204
    assert curl(f"{agent.url}/cache//merge/a/b")[0] == 404
