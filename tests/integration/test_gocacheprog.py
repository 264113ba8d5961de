"""buildcache-gocacheprog: the real go command's GOCACHEPROG against the real agent.

A generated multi-package module (no dependencies, no network) is built with an empty GOCACHE and
an empty local directory for the program each time, so every hit below came through the agent."""

import base64
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import pytest

from conftest import BIN_DIR
from harness.metrics import metric

GO = shutil.which("go")
PROG = BIN_DIR / "buildcache-gocacheprog"
PACKAGES = 8


def write_module(root):
    """A module of PACKAGES packages in a chain plus a main that prints a checksum of them all."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text("module example.test/gcp\n\ngo 1.22\n")
    for i in range(PACKAGES):
        pkg = root / f"p{i}"
        pkg.mkdir(exist_ok=True)
        imports = '"strings"\n\t"strconv"' + (f'\n\t"example.test/gcp/p{i - 1}"' if i else "")
        prev = f" + p{i - 1}.Value()" if i else ""
        (pkg / f"p{i}.go").write_text(
            f"package p{i}\n\nimport (\n\t{imports}\n)\n\n"
            f"func Value() string {{\n\treturn strings.Repeat(strconv.Itoa({i}), 2){prev}\n}}\n")
    (root / "main.go").write_text(
        "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.test/gcp/p%d\"\n)\n\n"
        "func main() { fmt.Println(p%d.Value()) }\n" % (PACKAGES - 1, PACKAGES - 1))
    return "".join(str(i) * 2 for i in reversed(range(PACKAGES)))


def go_env(tmp_path, prog_args, tag):
    gocache = tmp_path / f"gocache-{tag}"
    gocache.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOCACHE=str(gocache), GOPATH=str(tmp_path / "gopath"), GOPROXY="off",
               GOTOOLCHAIN="local", GOENV="off", GOFLAGS="", CGO_ENABLED="0",
               GOCACHEPROG=" ".join([str(PROG), *prog_args]))
    return env


def go_build(module, env, out):
    """Runs go build -x; returns (stderr text, the built program's output)."""
    res = subprocess.run([GO, "build", "-x", "-o", str(out), "."], cwd=module, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    ran = subprocess.run([str(out)], capture_output=True, text=True, timeout=60)
    return res.stderr, ran.stdout.strip()


def compiles(build_log):
    """The compile commands go build -x ran (one per package compiled)."""
    return [line for line in build_log.splitlines() if "/compile " in line and " -o " in line]


def stats(build_log):
    line = [l for l in build_log.splitlines() if "buildcache-gocacheprog: stats" in l]
    assert len(line) == 1, build_log[-2000:]
    return {k: int(v) for k, v in (kv.split("=") for kv in line[0].split()[2:])}


@pytest.fixture
def module(tmp_path):
    if not GO:
        pytest.fail("go is not installed (scripts/setup installs it)")
    if not PROG.exists():
        pytest.fail(f"{PROG} is missing: build first")
    root = tmp_path / "mod"
    return root, write_module(root)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_second_build_with_empty_caches_compiles_nothing(agent, module, tmp_path):
    root, want = module
    args = [f"--agent={agent.url}", "--stats"]
    log1, out1 = go_build(root, go_env(tmp_path, args + [f"--dir={tmp_path / 'd1'}"], "1"),
                          tmp_path / "bin1")
    assert out1 == want
    assert len(compiles(log1)) >= PACKAGES + 1  # ours and the standard library's
    s1 = stats(log1)
    assert s1["puts"] > 0 and s1["uploads"] == s1["puts"], s1
    m1 = agent.metrics()
    stored = metric(m1, "buildcache_requests_total", frontend="httpcache", result="stored")
    assert stored == 2 * s1["uploads"]  # one output, one action entry each

    log2, out2 = go_build(root, go_env(tmp_path, args + [f"--dir={tmp_path / 'd2'}"], "2"),
                          tmp_path / "bin2")
    assert out2 == want
    assert compiles(log2) == [], compiles(log2)
    s2 = stats(log2)
    assert s2["remote_hits"] > 0 and s2["local_hits"] == 0 and s2["bytes_downloaded"] > 0, s2
    m2 = agent.metrics()
    hits = (metric(m2, "buildcache_requests_total", frontend="httpcache", result="hit")
            - metric(m1, "buildcache_requests_total", frontend="httpcache", result="hit"))
    assert hits >= s2["remote_hits"]  # each remote hit is an entry hit (plus its output's)
    # The Go build cache's own series: build 1 stored an action entry and an output per upload;
    # build 2's remote hits are action hits, and the output bytes it downloaded were served as Go
    # outputs. (A request is counted when its handler returns, which can be just after the client
    # read the response: ask again, for a bounded time, until the last one is in.)
    go = lambda m, **labels: metric(m, "buildcache_gocache_requests_total", **labels)
    go_bytes = lambda m: metric(m, "buildcache_gocache_bytes_total", object="output",
                                direction="served")
    assert go(m1, object="action", result="stored") == s1["uploads"]
    assert go(m1, object="output", result="stored") == s1["uploads"]
    deadline = time.monotonic() + 10
    while True:
        m3 = agent.metrics()
        got = (go(m3, object="action", result="hit") - go(m1, object="action", result="hit"),
               go_bytes(m3) - go_bytes(m1))
        if got == (s2["remote_hits"], s2["bytes_downloaded"]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == (s2["remote_hits"], s2["bytes_downloaded"]), (got, s2)
    assert 0 < go(m3, object="output", result="hit") - go(m1, object="output", result="hit") \
        <= s2["remote_hits"]


def test_agent_down_or_hanging_never_fails_the_build(module, tmp_path):
    root, want = module
    # Nothing listens: connection refused.
    args = [f"--agent=http://127.0.0.1:{closed_port()}", f"--dir={tmp_path / 'd1'}", "--stats"]
    log, out = go_build(root, go_env(tmp_path, args, "refused"), tmp_path / "bin1")
    assert out == want
    assert log.count("agent unreachable") == 1, log[-2000:]
    # Something accepts connections and never answers: each request is bounded by --timeout, and
    # the first one that times out turns the agent off for the rest of the run.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    try:
        args = [f"--agent=http://127.0.0.1:{hang.getsockname()[1]}", "--timeout=0.5",
                f"--dir={tmp_path / 'd2'}", "--stats"]
        log, out = go_build(root, go_env(tmp_path, args, "hang"), tmp_path / "bin2")
    finally:
        hang.close()
    assert out == want
    assert log.count("agent unreachable") == 1 and "DEADLINE" in log.upper(), log[-2000:]


def test_poisoned_outputs_and_entries_are_never_used(agent, module, tmp_path):
    """A pod that can reach the agent tries to plant bytes under real output IDs before the honest
    build uploads them, and writes garbage action entries: the agent stores none of the outputs,
    and the builds that follow compile or fetch the real bytes."""
    root, want = module
    # Learn the build's action and output IDs with a local-only run.
    local = tmp_path / "local"
    log0, _ = go_build(root, go_env(tmp_path, [f"--dir={local}"], "0"), tmp_path / "bin0")
    outputs = sorted(p.name for p in (local / "o").iterdir())
    actions = sorted(p.name for p in (local / "a").iterdir())
    assert outputs and actions
    evil = b"package evil; this is not what the compiler wrote"
    for out_hex in outputs:
        status = put_status(agent, f"/cas/{out_hex}", evil)
        assert status == 400, (out_hex, status)
        assert get_status(agent, f"/cas/{out_hex}") == 404
    # Garbage action entries for half the actions, entries naming an absent output for the rest.
    for i, act_hex in enumerate(actions):
        body = b"v1 not-an-id 1 2\n" if i % 2 else f"v1 {'0' * 64} 5 1\n".encode()
        assert put_status(agent, f"/cache/gocache/v1/a/{act_hex}", body) == 201
    args = [f"--agent={agent.url}", "--stats"]
    log1, out1 = go_build(root, go_env(tmp_path, args + [f"--dir={tmp_path / 'd1'}"], "1"),
                          tmp_path / "bin1")
    assert out1 == want
    s1 = stats(log1)
    assert s1["remote_hits"] == 0 and s1["uploads"] > 0, s1
    assert "malformed action entry" in log1
    for out_hex in outputs:
        status, body = get(agent, f"/cas/{out_hex}")
        if status == 200:
            assert hashlib.sha256(body).hexdigest() == out_hex
    log2, out2 = go_build(root, go_env(tmp_path, args + [f"--dir={tmp_path / 'd2'}"], "2"),
                          tmp_path / "bin2")
    assert out2 == want and compiles(log2) == []


def in_root(root):
    """A preexec_fn that makes `root` the child's / (the test runs as root)."""
    def enter():
        os.chroot(root)
        os.chdir("/")
    return enter


def test_static_binary_runs_in_an_empty_root(agent, tmp_path):
    """No dynamic loader, no libc, no /etc: the binary alone in a chroot does the handshake, a put
    and a get through the agent, and close."""
    ldd = subprocess.run(["ldd", str(PROG)], capture_output=True, text=True)
    assert "not a dynamic executable" in (ldd.stdout + ldd.stderr), ldd.stdout + ldd.stderr
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(PROG, root / "prog")
    body = b"an output the empty root uploads"
    action = hashlib.sha256(b"action in an empty root").digest()
    output = hashlib.sha256(body).digest()
    b64 = lambda b: base64.b64encode(b).decode()
    requests = (
        json.dumps({"ID": 1, "Command": "put", "ActionID": b64(action), "OutputID": b64(output),
                    "BodySize": len(body)}) + "\n" + json.dumps(b64(body)) + "\n" +
        json.dumps({"ID": 2, "Command": "close"}) + "\n")
    res = subprocess.run(["/prog", f"--agent={agent.url}", "--dir=/c", "--stats"],
                         input=requests, capture_output=True, text=True, timeout=60, env={},
                         preexec_fn=in_root(root))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(l) for l in res.stdout.splitlines()]
    assert lines[0]["KnownCommands"] == ["get", "put", "close"]
    assert lines[1] == {"ID": 1, "DiskPath": f"/c/o/{output.hex()}"}
    assert lines[2] == {"ID": 2}
    assert (root / "c" / "o" / output.hex()).read_bytes() == body
    assert get(agent, f"/cas/{output.hex()}") == (200, body)
    # A second empty root gets it back from the agent.
    shutil.rmtree(root / "c")
    requests = (json.dumps({"ID": 5, "Command": "get", "ActionID": b64(action)}) + "\n" +
                json.dumps({"ID": 6, "Command": "close"}) + "\n")
    res = subprocess.run(["/prog", f"--agent={agent.url}", "--dir=/c"], input=requests,
                         capture_output=True, text=True, timeout=60, env={},
                         preexec_fn=in_root(root))
    assert res.returncode == 0, res.stderr
    hit = json.loads(res.stdout.splitlines()[1])
    assert hit["OutputID"] == b64(output) and hit["Size"] == len(body), hit
    assert (root / "c" / "o" / output.hex()).read_bytes() == body


def test_bad_configuration_is_a_clear_error(tmp_path):
    for args, words in ((["--agent=http://bad_host:80"], "invalid host"),
                        (["--timeout=soon"], "--timeout"), (["--frobnicate"], "unknown argument"),
                        (["--dir=relative"], "absolute")):
        res = subprocess.run([str(PROG), *args], input="", capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 2 and words in res.stderr, (args, res.stderr)


def get(agent, path):
    import urllib.error
    try:
        status, body, _ = agent.get(path)
        return status, body
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_status(agent, path):
    return get(agent, path)[0]


def put_status(agent, path, data):
    import urllib.error
    try:
        return agent.put(path, data)[0]
    except urllib.error.HTTPError as e:
        return e.code


def test_output_that_does_not_match_its_id_is_a_miss(tmp_path):
    """Whatever sits between the client and the CAS (a damaged store, a forged answer on the
    path) hands back bytes of the right size that do not hash to the output ID: the client
    answers a miss and writes nothing the go command could read."""
    import http.server
    import threading

    real = b"the compiler's real output"
    forged = b"X" * len(real)
    output = hashlib.sha256(real).digest()
    action = hashlib.sha256(b"an action").digest()
    entry = f"v1 {output.hex()} {len(real)} 1\n".encode()
    served = []

    class Lying(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            body = {f"/cache/gocache/v1/a/{action.hex()}": entry,
                    f"/cas/{output.hex()}": forged}.get(self.path)
            served.append(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Lying)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        b64 = lambda b: base64.b64encode(b).decode()
        requests = (json.dumps({"ID": 1, "Command": "get", "ActionID": b64(action)}) + "\n" +
                    json.dumps({"ID": 2, "Command": "close"}) + "\n")
        res = subprocess.run([str(PROG), f"--agent=http://127.0.0.1:{server.server_address[1]}",
                              f"--dir={tmp_path / 'd'}"], input=requests, capture_output=True,
                             text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == 0, res.stderr
    assert served == [f"/cache/gocache/v1/a/{action.hex()}", f"/cas/{output.hex()}"]
    assert json.loads(res.stdout.splitlines()[1]) == {"ID": 1, "Miss": True}
    assert "does not match its ID" in res.stderr
    assert list((tmp_path / "d" / "o").iterdir()) == []
    assert list((tmp_path / "d" / "a").iterdir()) == []


def test_scoped_agent_takes_writes_only_with_a_token(start_agent, module, tmp_path):
    """An agent with caller identity (tokens file, anonymous read): gocacheprog without a token
    stores nothing (its writes are refused), with --token-file its writes land in the token's
    scope, which a build with the same token reads back and an anonymous or other-scope build
    does not see. A wrong token is refused too and stores nothing."""
    import secrets
    root, want = module
    team_a, team_b = "ta-" + secrets.token_hex(16), "tb-" + secrets.token_hex(16)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n"
                      f"  - {{token: \"{team_a}\", scope: team-a}}\n"
                      f"  - {{token: \"{team_b}\", scope: team-b}}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(f"identity:\n  tokensFile: {tokens}\n  anonymous: read\n")
    agent = start_agent(config=config)

    def build(tag, token=None):
        args = [f"--agent={agent.url}", "--stats", f"--dir={tmp_path / ('d-' + tag)}"]
        if token is not None:
            path = tmp_path / f"token-{tag}"
            path.write_text(token + "\n")
            args.append(f"--token-file={path}")
        log, out = go_build(root, go_env(tmp_path, args, tag), tmp_path / f"bin-{tag}")
        assert out == want
        return log, stats(log)

    def stored():
        return metric(agent.metrics(), "buildcache_requests_total", frontend="httpcache",
                      result="stored")

    log, s = build("anonymous")
    assert s["puts"] > 0 and s["uploads"] == 0, s
    assert "agent refused an output" in log and "HTTP 403" in log, log[-2000:]
    log, s = build("forged", token="tb-" + secrets.token_hex(16))
    assert s["uploads"] == 0 and "HTTP 401" in log, s
    assert stored() == 0

    log, s = build("team-a-1", token=team_a)
    assert s["uploads"] == s["puts"] > 0, s
    assert stored() == 2 * s["uploads"]
    log, s = build("team-a-2", token=team_a)
    assert compiles(log) == [] and s["remote_hits"] > 0, s
    # Another scope and anonymous callers do not see team-a's action entries.
    for tag, token in (("team-b", team_b), ("anonymous-2", None)):
        log, s = build(tag, token=token)
        assert s["remote_hits"] == 0 and len(compiles(log)) >= PACKAGES, (tag, s)
