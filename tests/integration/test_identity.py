"""Caller identity and scopes (agent/identity, docs/security.md) against the real agent with real
clients: ccache (bearer token and URL user-info), sccache (WebDAV basic auth) and curl replaying
Bazel's and the generic API's requests. Each hostile case performs the attack and then asserts
that nothing was stored or served from it."""

import hashlib
import os
import secrets
import time
import shutil
import subprocess

import pytest

from conftest import metric
from harness import ccache, sccache

CCACHE = shutil.which("ccache")
CC = shutil.which("gcc") or shutil.which("cc")
CURL = shutil.which("curl")

# Real tokens for this run (never fixed strings a test could pass by accident).
RELEASE = "rel-" + secrets.token_hex(16)  # trusted writer, scope "release"
TEAM_A = "ta-" + secrets.token_hex(16)  # scope "team-a"
TEAM_B = "tb-" + secrets.token_hex(16)  # scope "team-b"
ALL_TOKENS = (RELEASE, TEAM_A, TEAM_B)

SOURCES = {
    "util.h": "int add(int a, int b);\nconst char *greeting(void);\n",
    "add.c": '#include "util.h"\nint add(int a, int b) { return a + b; }\n',
    "greet.c": '#include "util.h"\nconst char *greeting(void) { return "hello, trusted"; }\n',
    "main.c": '#include <stdio.h>\n#include "util.h"\n'
              'int main(void) { printf("%s %d\\n", greeting(), add(40, 2)); return 0; }\n',
}
C_FILES = sorted(name for name in SOURCES if name.endswith(".c"))


def write_tokens(path):
    path.write_text(
        "tokens:\n"
        f"  - {{token: \"{RELEASE}\", scope: release, trustedWriter: true}}\n"
        f"  - {{token: \"{TEAM_A}\", scope: team-a}}\n"
        f"  - {{token: \"{TEAM_B}\", scope: team-b, name: team-b-ci}}\n")


def start_identity_agent(start_agent, tmp_path, anonymous="read", extra=""):
    tokens = tmp_path / "tokens.yaml"
    write_tokens(tokens)
    config = tmp_path / f"agent-{anonymous}.yaml"
    config.write_text(f"logLevel: debug\nidentity:\n  tokensFile: {tokens}\n"
                      f"  anonymous: {anonymous}\n{extra}")
    return start_agent(config=config)


@pytest.fixture
def id_agent(start_agent, tmp_path):
    return start_identity_agent(start_agent, tmp_path)


def curl(*args, token=None, basic=None, data=None):
    """Runs curl; returns (status, body bytes)."""
    cmd = [CURL, "-sS", "-o", "-", "-w", "\n%{http_code}", *args]
    if token is not None:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if basic is not None:
        cmd += ["-u", basic]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    out = subprocess.run(cmd, capture_output=True, timeout=60, input=data, check=True)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code), body


def assert_no_token_logged(agent):
    text = "\n".join(str(entry) for entry in agent.logs)
    for token in ALL_TOKENS:
        assert token not in text


def ccache_build(src_dir, ccache_dir, remote):
    """Compiles every .c file through ccache with this remote storage and links; returns
    ccache's counters and the program's output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCACHE_")}
    env.update(CCACHE_DIR=str(ccache_dir), CCACHE_CONFIGPATH=str(src_dir / "ccache.conf"),
               CCACHE_REMOTE_STORAGE=remote, CCACHE_NOHASHDIR="true")
    return ccache.build(src_dir, env, C_FILES)


def sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, text in SOURCES.items():
        (src / name).write_text(text)
    (src / "ccache.conf").write_text("")
    return src


def put_paths(agent, subject):
    """The paths this subject PUT, from the agent's debug log ("caller identified")."""
    return sorted({e["path"] for e in agent.logs
                   if e.get("msg") == "caller identified" and e.get("subject") == subject
                   and e.get("method") == "PUT"})


@pytest.mark.skipif(not (CCACHE and CC and CURL), reason="needs ccache, a C compiler and curl")
def test_untrusted_put_into_trusted_keys_does_not_reach_trusted_readers(id_agent, tmp_path):
    src = sources(tmp_path)
    host = id_agent.address
    # The trusted (release) build warms the cache, with ccache's bearer-token attribute.
    first, out = ccache_build(src, tmp_path / "cc-release",
                              f"http://{host}/cache|bearer-token={RELEASE}")
    assert out == "hello, trusted 42\n"
    assert first.get("remote_storage_error", 0) == 0, first
    assert first.get("remote_storage_write", 0) >= len(C_FILES), first
    keys = put_paths(id_agent, "release")
    assert len(keys) >= len(C_FILES), keys
    before = {k: curl(f"{id_agent.url}{k}", token=RELEASE) for k in keys}
    assert all(code == 200 for code, _ in before.values()), before

    # The attack: team-a overwrites every key the release build wrote (and the Bazel AC shape).
    for key in keys:
        assert curl("-X", "PUT", f"{id_agent.url}{key}", token=TEAM_A, data=b"poison")[0] == 201
    # Anonymous callers are refused outright and store nothing.
    for key in keys:
        assert curl("-X", "PUT", f"{id_agent.url}{key}", data=b"poison")[0] == 403
        assert curl("-X", "DELETE", f"{id_agent.url}{key}")[0] == 403
        assert curl("-X", "DELETE", f"{id_agent.url}{key}", token=TEAM_B)[0] == 404

    # Every other reader still gets the trusted bytes: release, team-b, anonymous.
    for key, (_, body) in before.items():
        assert curl(f"{id_agent.url}{key}", token=RELEASE) == (200, body)
        assert curl(f"{id_agent.url}{key}", token=TEAM_B) == (200, body)
        assert curl(f"{id_agent.url}{key}") == (200, body)
        assert curl(f"{id_agent.url}{key}", token=TEAM_A) == (200, b"poison")  # its own scope

    # And real rebuilds from empty local caches are all remote hits of the trusted objects:
    # team-b through URL user-info (basic auth), anonymous without credentials.
    for name, remote in (("cc-team-b", f"http://ci:{TEAM_B}@{host}/cache"),
                         ("cc-anonymous", f"http://{host}/cache")):
        again, out = ccache_build(src, tmp_path / name, remote)
        assert out == "hello, trusted 42\n", name
        assert again.get("remote_storage_hit", 0) >= len(C_FILES), (name, again)
        assert again.get("cache_miss", 0) == 0, (name, again)
        assert again.get("remote_storage_error", 0) == 0, (name, again)
    m = id_agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="anonymous_write") == 2 * len(keys)
    assert_no_token_logged(id_agent)


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_a_scope_cannot_read_another_scopes_entries(id_agent):
    action = secrets.token_hex(32)
    for path in (f"/cache/gocache/v1/a/{action}", f"/ac/{action}", f"/cache/ab/{action[:38]}"):
        url = f"{id_agent.url}{path}"
        assert curl("-X", "PUT", url, token=TEAM_A, data=b"team-a only")[0] == 201
        assert curl(url, token=TEAM_A) == (200, b"team-a only")
        assert curl(url, token=TEAM_B)[0] == 404
        assert curl("-I", url, token=TEAM_B)[0] == 404
        assert curl(url)[0] == 404
        assert curl(url, token=RELEASE)[0] == 404
    # CAS content proves itself and is shared; a wrong body is refused and stores nothing.
    blob = os.urandom(4096)
    digest = hashlib.sha256(blob).hexdigest()
    assert curl("-X", "PUT", f"{id_agent.url}/cas/{digest}", token=TEAM_A, data=blob)[0] == 201
    assert curl(f"{id_agent.url}/cas/{digest}", token=TEAM_B) == (200, blob)
    assert curl(f"{id_agent.url}/cas/{digest}") == (200, blob)
    assert curl("-X", "DELETE", f"{id_agent.url}/cas/{digest}", token=TEAM_A)[0] == 403
    assert curl(f"{id_agent.url}/cas/{digest}", token=TEAM_B) == (200, blob)
    m = id_agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="untrusted_write") == 1


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_forged_and_unknown_tokens_are_401_and_store_nothing(id_agent):
    key = f"/cache/{secrets.token_hex(20)}"
    forged = "forged-" + secrets.token_hex(16)
    cases = [dict(token=forged), dict(token=RELEASE[:-1]), dict(token=RELEASE + "x"),
             dict(basic=f"release:{forged}"), dict(basic=f"{forged}:")]
    for creds in cases:
        code, body = curl("-X", "PUT", f"{id_agent.url}{key}", data=b"forged", **creds)
        assert code == 401, creds
        assert b"unknown token" in body
        code, body = curl(f"{id_agent.url}{key}", **creds)
        assert code == 401, creds  # never a silent downgrade to anonymous
    code, body = curl("-H", "Authorization: Digest username=x", f"{id_agent.url}{key}")
    assert code == 401 and b"unsupported Authorization scheme" in body
    for token in (RELEASE, TEAM_A, TEAM_B, None):
        assert curl(f"{id_agent.url}{key}", token=token)[0] == 404
    m = id_agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="bad_credentials") == 11
    assert metric(m, "buildcache_requests_total", frontend="httpcache", result="stored") == 0
    refused = [e for e in id_agent.logs if e.get("msg") == "request refused"]
    assert len(refused) == 11 and all(e["reason"] == "bad_credentials" for e in refused)
    text = "\n".join(str(entry) for entry in id_agent.logs)
    assert forged not in text
    assert_no_token_logged(id_agent)


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_anonymous_none_refuses_reads(start_agent, tmp_path):
    agent = start_identity_agent(start_agent, tmp_path, anonymous="none")
    key = f"{agent.url}/cache/{secrets.token_hex(20)}"
    assert curl("-X", "PUT", key, token=RELEASE, data=b"trusted")[0] == 201
    code, body = curl(key)
    assert code == 401 and b"credentials required" in body
    assert curl("-I", key)[0] == 401
    assert curl("-X", "PUT", key, data=b"anon")[0] == 401
    assert curl(key, token=TEAM_B) == (200, b"trusted")
    m = agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="anonymous_read") == 3


@pytest.mark.skipif(not (CCACHE and CC and CURL), reason="needs ccache, a C compiler and curl")
def test_anonymous_read_refuses_writes_and_clients_keep_building(id_agent, tmp_path):
    src = sources(tmp_path)
    # ccache without credentials: the build succeeds, its writes are refused (403).
    counters, out = ccache_build(src, tmp_path / "cc-anon", f"{id_agent.url}/cache")
    assert out == "hello, trusted 42\n"
    assert counters.get("cache_miss", 0) == len(C_FILES), counters
    # sccache without credentials: its start-up write check is refused, it runs read-only and
    # every compilation still succeeds.
    files = sccache.write_sources(tmp_path / "sc-src", 4)
    stats = sccache.compile_all(f"{id_agent.url}/cache", files, tmp_path / "sc-anon")
    assert sccache.misses(stats) == 4 and stats["cache_writes"] == 0, stats
    m = id_agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="anonymous_write") >= 1
    assert metric(m, "buildcache_requests_total", frontend="httpcache", result="stored") == 0
    assert metric(m, "buildcache_store_keys") == 0
    # A bazel-style upload without credentials: refused, nothing stored.
    blob = os.urandom(1024)
    digest = hashlib.sha256(blob).hexdigest()
    assert curl("-X", "PUT", f"{id_agent.url}/cas/{digest}", data=blob)[0] == 403
    assert curl("-X", "PUT", f"{id_agent.url}/ac/{digest}", data=b"result")[0] == 403
    assert curl(f"{id_agent.url}/cas/{digest}", token=RELEASE)[0] == 404


def test_sccache_scopes_with_basic_auth(id_agent, tmp_path):
    files = sccache.write_sources(tmp_path / "src", 4)
    endpoint = f"{id_agent.url}/cache/sccache"

    def creds(token):
        return {"SCCACHE_WEBDAV_USERNAME": "ci", "SCCACHE_WEBDAV_PASSWORD": token}

    a1 = sccache.compile_all(endpoint, files, tmp_path / "a1", extra_env=creds(TEAM_A))
    assert sccache.misses(a1) == 4 and a1["cache_writes"] == 4, a1
    # team-b cannot read team-a's objects...
    b1 = sccache.compile_all(endpoint, files, tmp_path / "b1", extra_env=creds(TEAM_B))
    assert (sccache.hits(b1), sccache.misses(b1)) == (0, 4), b1
    # ...team-a reads its own...
    a2 = sccache.compile_all(endpoint, files, tmp_path / "a2", extra_env=creds(TEAM_A))
    assert (sccache.hits(a2), sccache.misses(a2)) == (4, 0), a2
    # ...and what the trusted writer stores, everyone reads (anonymous too).
    sccache.compile_all(endpoint, files, tmp_path / "r1", extra_env=creds(RELEASE))
    for name, env in (("b2", creds(TEAM_B)), ("anon", None)):
        again = sccache.compile_all(endpoint, files, tmp_path / name, extra_env=env)
        assert (sccache.hits(again), sccache.misses(again)) == (4, 0), (name, again)
    assert_no_token_logged(id_agent)


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_wheel_uploads_need_a_trusted_writer(start_agent, tmp_path):
    # The upstream is never reached: the refusal comes before the front end.
    agent = start_identity_agent(start_agent, tmp_path,
                                 extra="pypi:\n  upstream: http://127.0.0.1:9/simple/\n")
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    form = ["-F", ":action=file_upload", "-F", "name=evil", "-F", "version=1.0",
            "-F", f"content=@{wheel}"]
    for creds in (dict(token=TEAM_A), dict(basic=f"__token__:{TEAM_B}"), {}):
        code, body = curl(*form, f"{agent.url}/pypi/legacy/", **creds)
        assert code == 403, (creds, body)
    m = agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="untrusted_write") == 2
    assert metric(m, "buildcache_identity_refused_total", reason="anonymous_write") == 1
    assert metric(m, "buildcache_store_keys") == 0
    refused = [e for e in agent.logs if e.get("msg") == "request refused"]
    assert {(e["frontend"], e["scope"]) for e in refused} == {("pypi", "team-a"),
                                                              ("pypi", "team-b"), ("pypi", "")}
    assert_no_token_logged(agent)


def test_a_bad_tokens_file_stops_the_agent_with_the_reason(tmp_path):
    from conftest import BIN_DIR
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n  - {token: short, scope: Team_A}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(f"identity: {{tokensFile: {tokens}}}\n")
    out = subprocess.run([str(BIN_DIR / "buildcache-agent"), "--config", str(config),
                          "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "identity.tokensFile" in out.stderr
    assert "tokens[0].token: must be 16 to 4096 characters long" in out.stderr
    assert "tokens[0].scope: must be 1-63 characters" in out.stderr
    assert "short" not in out.stderr.replace("tokens[0]", "")


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_an_edited_tokens_file_takes_effect_without_a_restart(id_agent, tmp_path):
    key = f"{id_agent.url}/cache/{secrets.token_hex(20)}"
    assert curl(key, token=TEAM_A)[0] == 404
    tokens = tmp_path / "tokens.yaml"
    tmp = tmp_path / "tokens.new"
    tmp.write_text(f"tokens:\n  - {{token: \"{RELEASE}\", scope: release, trustedWriter: true}}\n")
    tmp.rename(tokens)  # team-a revoked
    loaded = len([e for e in id_agent.logs if e.get("msg") == "tokens file loaded"])
    # The file is looked at (at most once a second) when requests come: wait for the reload.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        curl(key)
        if len([e for e in id_agent.logs if e.get("msg") == "tokens file loaded"]) > loaded:
            break
        time.sleep(0.2)
    assert curl(key, token=TEAM_A)[0] == 401
    assert curl(key, token=RELEASE)[0] == 404
