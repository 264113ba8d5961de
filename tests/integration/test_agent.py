"""The real buildcache-agent binary: configuration errors, /metrics against promtool, crash safety."""

import concurrent.futures
import hashlib
import http.client
import os
import random
import re
import subprocess
import time
import urllib.error

import pytest

from conftest import BIN_DIR, REPO, Agent, metric

AGENT = str(BIN_DIR / "buildcache-agent")


def run_agent(*args, timeout=20):
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=timeout)


def test_version_and_help():
    out = run_agent("--version")
    assert out.returncode == 0 and out.stdout.startswith("buildcache-agent ")
    out = run_agent("--help")
    assert out.returncode == 0
    for flag in ("--config", "--listen", "--data-dir", "--max-size", "--log-level"):
        assert flag in out.stdout


@pytest.mark.parametrize("yaml_text, expected", [
    ("store:\n  maxSize: -5Gi\n", "store.maxSize"),
    ("store:\n  maxSizee: 5Gi\n", "store.maxSizee"),
    ("logLevel: chatty\n", "logLevel"),
    ("listen: [not, a, string]\n", "listen"),
    ("store: {dataDir: /x\n", "agent.yaml:2:1: malformed YAML"),  # names the position
    ("httpcache:\n  maxObjectSize: 2Gi\nstore:\n  maxSize: 1Gi\n", "httpcache.maxObjectSize"),
])
def test_bad_config_stops_agent_naming_the_key(tmp_path, yaml_text, expected):
    config = tmp_path / "agent.yaml"
    config.write_text(yaml_text)
    out = run_agent("--config", str(config), "--data-dir", str(tmp_path / "data"),
                    "--listen", "127.0.0.1:0")
    assert out.returncode == 2, out
    assert expected in out.stderr, out.stderr


def test_unwritable_data_dir_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where a directory should be")
    out = run_agent("--data-dir", str(blocker / "data"), "--listen", "127.0.0.1:0")
    assert out.returncode == 2
    assert "store.dataDir" in out.stderr


def test_bad_flag_value(tmp_path):
    out = run_agent("--max-size", "lots", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "--max-size" in out.stderr


def test_example_config_runs(tmp_path, start_agent):
    agent = start_agent(config=REPO / "examples" / "agent.yaml")
    assert agent.get("/readyz")[0] == 200
    assert agent.put("/cache/example/key", b"x")[0] // 100 == 2


def test_metrics_pass_promtool(agent):
    agent.put("/cache/a/b", b"hello")
    agent.get("/cache/a/b")
    with pytest.raises(urllib.error.HTTPError):
        agent.get("/cache/a/missing")
    _, body, headers = agent.get("/metrics")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # promtool prints lint problems (e.g. a counter without _total) even on exit 0.
    assert check.stdout.strip() == b"" and check.stderr.strip() == b"", check
    text = body.decode()
    for name in ("buildcache_requests_total", "buildcache_served_bytes_total",
                 "buildcache_request_duration_seconds_bucket", "buildcache_store_bytes",
                 "buildcache_store_objects", "buildcache_store_evictions_total",
                 "buildcache_store_corrupt_blobs_total"):
        assert name in text, name
    m = agent.metrics()
    assert metric(m, "buildcache_requests_total", frontend="httpcache", result="hit") == 1
    assert metric(m, "buildcache_requests_total", frontend="httpcache", result="miss") == 1


def test_logs_are_json_lines_with_fixed_messages(agent):
    agent.put("/cache/log/test", b"x")
    agent.stop()
    assert agent.logs, "no logs"
    for entry in agent.logs:
        assert entry["msg"] != "<unparsable>", entry
        assert {"ts", "level", "msg"} <= set(entry), entry
    assert any(e["msg"] == "stopped" for e in agent.logs)


def test_corrupted_blob_is_never_served(tmp_path, start_agent):
    agent = start_agent()
    payload = os.urandom(10000)
    agent.put("/cache/victim", payload)
    digest = hashlib.sha256(payload).hexdigest()
    blob = tmp_path / "data0" / "blobs" / digest[:2] / digest
    assert blob.exists(), list((tmp_path / "data0").rglob("*"))
    with open(blob, "r+b") as f:
        f.seek(5000)
        f.write(b"\x00corrupt\x00")
    with pytest.raises(urllib.error.HTTPError) as err:
        agent.get("/cache/victim")
    assert err.value.code == 404
    assert metric(agent.metrics(), "buildcache_store_corrupt_blobs_total") == 1
    assert not blob.exists()


def test_kill9_during_uploads_loses_nothing_committed(tmp_path):
    """Uploads run while the agent is SIGKILLed; after restart every object that was acknowledged
    reads back byte-identical, and nothing half-written is served."""
    data = tmp_path / "data"
    agent = Agent(data)
    acknowledged = {}
    stop_at = time.monotonic() + 1.5

    def upload(worker):
        rng = random.Random(worker)
        i = 0
        while time.monotonic() < stop_at + 5:
            body = rng.randbytes(rng.choice([100, 5000, 300000]))
            key = f"/cache/crash/{worker}/{i}"
            try:
                status, _ = agent.put(key, body)
            except Exception:
                return
            if status // 100 == 2:
                acknowledged[key] = body
            i += 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(upload, w) for w in range(4)]
        while time.monotonic() < stop_at:
            time.sleep(0.05)
        agent.kill9()
        for f in futures:
            f.result()
    assert len(acknowledged) > 10, "too few uploads to prove anything"

    restarted = Agent(data)
    try:
        for key, body in acknowledged.items():
            status, got, _ = restarted.get(key)
            assert status == 200 and got == body, key
        recon = restarted.wait_for_log("store reconciled", timeout=5)
        assert recon.get("full_scan") in (True, 1), recon
    finally:
        restarted.stop()


def test_second_agent_on_one_data_directory_exits_naming_the_holder(tmp_path):
    """Two agents on one directory: the second would clean the first's tmp/ (deleting the file of
    an upload in flight) and both would write one index. The second must exit before it touches
    anything, naming the holder, and the first's upload in flight completes."""
    data = tmp_path / "data"
    first = Agent(data)
    try:
        assert first.put("/cache/held/before", b"stored before")[0] // 100 == 2
        body = os.urandom(1 << 20)
        host, port = first.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.putrequest("PUT", "/cache/held/in-flight")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:len(body) // 2])  # the upload's temp file now exists in tmp/

        out = run_agent("--data-dir", str(data), "--listen", "127.0.0.1:0")
        assert out.returncode == 1, out
        assert "is in use by another agent" in out.stderr, out.stderr
        assert f"pid {first.proc.pid}" in out.stderr, out.stderr
        assert "listening" not in out.stderr

        conn.send(body[len(body) // 2:])
        resp = conn.getresponse()
        assert resp.status // 100 == 2, (resp.status, resp.read())
        conn.close()
        assert first.get("/cache/held/in-flight")[1] == body
        assert first.get("/cache/held/before")[1] == b"stored before"
    finally:
        first.stop()
    # Once the holder is gone (the kernel drops the lock however it exits), the directory is free.
    again = Agent(data)
    try:
        assert again.get("/cache/held/before")[1] == b"stored before"
    finally:
        again.stop()


def test_metrics_reference_is_complete(agent):
    """docs/metrics.md lists exactly the metric families the agent exports."""
    agent.put("/cache/ref/a", b"x")
    agent.get("/cache/ref/a")  # labelled families appear once they have a sample
    _, body, _ = agent.get("/metrics")
    exported = {line.split()[2] for line in body.decode().splitlines()
                if line.startswith("# TYPE ")}
    agent_part = (REPO / "docs/metrics.md").read_text().split("\n## The operator\n")[0]
    documented = set(re.findall(r"^\| `(buildcache_[a-z_]+)` \|", agent_part, flags=re.M))
    assert exported == documented, {"undocumented": exported - documented,
                                    "not exported": documented - exported}
