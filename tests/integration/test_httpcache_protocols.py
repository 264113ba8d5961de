"""The build-cache HTTP API as sccache (WebDAV), Gradle and Bazel speak it, driven by real curl
against the real agent. The request shapes follow each client (see
agent/frontends/httpcache/README.md for where they come from)."""

import hashlib
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(not CURL, reason="needs curl")
DAV = "{DAV:}"


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


def test_sccache_webdav_probe_and_store(agent, tmp_path):
    endpoint = f"{agent.url}/cache"
    root = f"{endpoint}/sccache-prefix"
    propfind = tmp_path / "propfind.xml"
    propfind.write_text('<?xml version="1.0" encoding="utf-8" ?>'
                        '<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>')
    # sccache's start-up check reads (404 is fine) then writes .sccache_check.
    assert curl(f"{root}/.sccache_check")[0] == 404
    code, body, log = curl("-X", "PROPFIND", "-H", "Depth: 0", "-H",
                           "Content-Type: application/xml", f"{root}/", data_file=propfind)
    assert code == 207, log
    response = ET.fromstring(body).find(f"{DAV}response")
    prop = response.find(f"{DAV}propstat/{DAV}prop")
    assert prop.find(f"{DAV}getlastmodified").text.endswith("GMT")
    assert prop.find(f"{DAV}resourcetype/{DAV}collection") is not None
    assert response.find(f"{DAV}propstat/{DAV}status").text == "HTTP/1.1 200 OK"
    assert curl("-X", "MKCOL", f"{root}/")[0] == 201
    check = tmp_path / "check"
    check.write_bytes(b"Hello, World!")
    assert curl("-X", "PUT", f"{root}/.sccache_check", data_file=check)[0] == 201

    # An object: sccache shards its 64-hex keys as a/b/c/<key>.
    key = sha256(b"compilation")
    obj_url = f"{root}/{key[0]}/{key[1]}/{key[2]}/{key}"
    obj = tmp_path / "obj"
    obj.write_bytes(os.urandom(50000))
    for depth in range(3):
        parent = f"{root}/" + "/".join(key[:depth + 1]) + "/"
        assert curl("-X", "PROPFIND", "-H", "Depth: 0", parent, data_file=propfind)[0] == 207
        assert curl("-X", "MKCOL", parent)[0] == 201
    assert curl("-X", "PUT", obj_url, data_file=obj)[0] == 201
    code, body, _ = curl(obj_url)
    assert code == 200 and body == obj.read_bytes()
    code, body, _ = curl("-X", "PROPFIND", "-H", "Depth: 0", obj_url, data_file=propfind)
    assert code == 207
    prop = ET.fromstring(body).find(f"{DAV}response/{DAV}propstat/{DAV}prop")
    assert prop.find(f"{DAV}getcontentlength").text == "50000"
    assert prop.find(f"{DAV}resourcetype/{DAV}collection") is None
    assert curl("-X", "PROPFIND", "-H", "Depth: 0", f"{root}/nope", data_file=propfind)[0] == 404


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
    "/cache/a%00b", "/cache/a%5c..%5cb", "/cache/a//b", "/cache/./a", "/cache/" + "k" * 1100,
])
def test_bad_keys_and_traversal_are_400(agent, tmp_path, path):
    value = tmp_path / "v"
    value.write_bytes(b"x")
    assert curl(f"{agent.url}{path}")[0] == 400
    assert curl("-X", "PUT", f"{agent.url}{path}", data_file=value)[0] == 400
