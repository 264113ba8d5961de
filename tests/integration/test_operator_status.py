"""status.hitRatio and the rendered agent config, with a real operator, API server and agent.

No kubelet runs, so the agent pods never start. Instead a real buildcache-agent runs in a network
namespace of its own (tests/harness/netns.py: the API server refuses loopback addresses in
EndpointSlices), and the test creates by hand the EndpointSlice the EndpointSlice controller would
create for the peers Service (with a managed-by label of its own, so no controller touches it). The operator
finds the agent through it, scrapes /metrics and writes status.hitRatio; the test drives hits and
misses through the agent's HTTP cache and compares with the agent's own counters.

The rendered ConfigMap of a BuildCache that uses every feature is handed to the real agent binary
with --check-config.
"""

import base64
import json
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from conftest import BIN_DIR, metric, parse_metrics  # noqa: E402
from harness.cpfixture import control_plane_fixture  # noqa: E402
from harness.netns import NetnsCluster  # noqa: E402
from test_operator_reconcile import CRD, Operator, wait_for  # noqa: E402

NS = "hits"


cp = control_plane_fixture(crd=CRD, namespaces=(NS,))


@pytest.fixture(scope="module")
def operator(cp):
    op = Operator(cp.kubeconfig, "--namespace", NS, "--metrics-scrape-interval", "1")
    yield op
    op.stop()


class NetnsAgent:
    """A buildcache-agent serving on its namespace's bridge address, port 8080."""

    def __init__(self, net, data_dir):
        self.host = net.nodes[0].address
        self.port = 8080
        self.url = f"http://{self.host}:{self.port}"
        self.proc = net.popen(0, [str(BIN_DIR / "buildcache-agent"), "--listen",
                                  f"{self.host}:{self.port}", "--data-dir", str(data_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(150):
            if self.proc.poll() is not None:
                pytest.fail(f"agent exited with {self.proc.returncode}", pytrace=False)
            try:
                if status_code(f"{self.url}/healthz") == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail("agent never answered /healthz", pytrace=False)

    def metrics(self):
        with OPENER.open(f"{self.url}/metrics", timeout=10) as resp:
            return parse_metrics(resp.read().decode())


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    with NetnsCluster(1) as net:
        yield NetnsAgent(net, tmp_path_factory.mktemp("agent"))


def apply(cp, obj):
    cp.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(obj))


def get(cp, kind, name):
    proc = cp.kubectl("get", kind, name, "-n", NS, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def full_buildcache(name):
    return {
        "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
        "metadata": {"name": name},
        "spec": {
            "storage": {"maxSize": "10Gi"},
            "ecosystems": {
                "pypi": {"upstream": "https://pypi.example.internal/simple/"},
                "goproxy": {"upstream": "https://goproxy.example.internal", "sumdb": True,
                            "sumdbName": "sum.example.internal"},
                "npm": {"upstream": "https://npm.example.internal/",
                        "upstreamSecretRef": {"name": "npm-token", "type": "bearer"}},
                "cargo": {"upstream": "https://index.example.internal/"},
                "maven": {"upstream": "https://maven.example.internal/maven2/",
                          "upstreamSecretRef": {"name": "maven-credentials", "type": "basic"}},
                "httpcache": {"maxObjectSize": "64Mi"},
            },
            "directories": [
                {"name": "gobuild", "mountPath": "/root/.cache/go-build", "maxSize": "2Gi"},
                {"name": "pip", "mountPath": "/root/.cache/pip", "maxSize": "1Gi"}],
            "replication": {"copies": 3, "hydrate": False},
        }}


def endpoint_slice(service, address, port):
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": service + "-by-hand",
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "tests.buildcache.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "peer", "port": 1, "protocol": "TCP"},
                  {"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
    }


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def status_code(url, data=None, method="GET"):
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with OPENER.open(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def lookups(agent, expected=None):
    """(hits, misses) of the agent's httpcache front end. With `expected`, waits (bounded) until
    they are that: a request is counted after its answer is written, so a client that has its
    answer can read /metrics a moment before the count moves."""
    if expected is not None:
        return wait_for(f"lookups {expected}", lambda: lookups(agent) == expected and expected,
                        timeout=10)
    m = agent.metrics()
    return (metric(m, "buildcache_requests_total", frontend="httpcache", result="hit"),
            metric(m, "buildcache_requests_total", frontend="httpcache", result="miss"))


def test_hit_ratio_in_status_follows_the_agents_counters(cp, operator, agent):
    apply(cp, full_buildcache("ci"))
    apply(cp, endpoint_slice("buildcache-ci-peers", agent.host, agent.port))
    # Before any lookup the ratio is unknown, not zero.
    wait_for("reconcile", lambda: (bc := get(cp, "buildcache", "ci")) and
             bc.get("status", {}).get("observedGeneration") and bc)
    assert "hitRatio" not in get(cp, "buildcache", "ci")["status"]

    for i in range(3):
        assert status_code(f"{agent.url}/cache/obj{i}", data=b"x" * (100 + i), method="PUT") in \
            (200, 201, 204)
        assert status_code(f"{agent.url}/cache/obj{i}") == 200
    assert status_code(f"{agent.url}/cache/absent0") == 404
    assert lookups(agent, (3, 1)) == (3, 1)

    bc = wait_for("hitRatio 0.75", lambda: (b := get(cp, "buildcache", "ci")) and
                  b.get("status", {}).get("hitRatio") == "0.75" and b, timeout=30)
    assert bc["status"]["ecosystems"] == [{"name": "httpcache", "hitRatio": "0.75", "lookups": 4}]
    # The agent runs without identity: every caller is "(unscoped)"; 100 + 101 + 102 bytes saved.
    # (The real API server keeps the field: the CRD's status schema has it.)
    assert bc["status"]["topNamespaces"] == [
        {"name": "(unscoped)", "savedBytes": 303, "hitRatio": "0.75", "lookups": 4}]

    # More misses: the next scrape lowers it (3 of 9), without any change to the BuildCache.
    for i in range(5):
        assert status_code(f"{agent.url}/cache/absent{i + 1}") == 404
    assert lookups(agent, (3, 6)) == (3, 6)
    bc = wait_for("hitRatio 0.33", lambda: (b := get(cp, "buildcache", "ci")) and
                  b["status"].get("hitRatio") == "0.33" and b, timeout=30)
    assert bc["status"]["ecosystems"][0]["lookups"] == 9
    assert bc["metadata"]["generation"] == 1


def test_an_unreachable_agent_does_not_hide_the_others(cp, operator, agent):
    # A second slice naming a closed port: the reachable agent's numbers still count alone.
    apply(cp, {**endpoint_slice("buildcache-ci-peers", agent.host, 1), "metadata": {
        "name": "buildcache-ci-peers-dead",
        "labels": {"kubernetes.io/service-name": "buildcache-ci-peers",
                   "endpointslice.kubernetes.io/managed-by": "tests.buildcache.io"}}})
    assert status_code(f"{agent.url}/cache/obj0") == 200  # 4 of 10
    wait_for("hitRatio 0.40", lambda: get(cp, "buildcache", "ci")["status"].get("hitRatio") ==
             "0.40", timeout=30)


def test_rendered_config_is_accepted_by_the_agent(cp, operator, tmp_path):
    apply(cp, full_buildcache("full"))
    cm = wait_for("configmap", lambda: get(cp, "configmap", "buildcache-full-config"))
    rendered = cm["data"]["agent.yaml"]
    for expected in ("listen: 0.0.0.0:8081", "name: buildcache-full-peers.hits.svc",
                     "copies: 3", "path: /var/lib/buildcache/directories/gobuild",
                     "name: sum.example.internal"):
        assert expected in rendered, rendered
    ds = wait_for("daemonset", lambda: get(cp, "daemonset", "buildcache-full"))
    container = ds["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--advertise", "$(POD_IP):8081"]
    assert {"name": "peer", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    peers = get(cp, "service", "buildcache-full-peers")
    assert {p["name"]: p["port"] for p in peers["spec"]["ports"]} == {"http": 8080, "peer": 8081}

    # The container paths do not exist here: point them into the test's directory, and write the
    # peer certificate Secret's files where the kubelet would mount them.
    secret = wait_for("peer-tls Secret", lambda: get(cp, "secret", "buildcache-full-peer-tls"))
    tls_dir = tmp_path / "peer-tls"
    tls_dir.mkdir()
    for key, value in secret["data"].items():
        (tls_dir / key).write_bytes(base64.b64decode(value))
    assert "serverName: buildcache-full-peers.hits.svc" in rendered, rendered
    admin = wait_for("admin Secret", lambda: get(cp, "secret", "buildcache-full-admin"))
    admin_dir = tmp_path / "admin"
    admin_dir.mkdir()
    (admin_dir / "token").write_bytes(base64.b64decode(admin["data"]["token"]))
    assert "tokenFile: /etc/buildcache-admin/token" in rendered, rendered
    config = tmp_path / "agent.yaml"
    config.write_text(rendered.replace("/var/lib/buildcache", str(tmp_path / "node"))
                      .replace("/etc/buildcache-peer-tls", str(tls_dir))
                      .replace("/etc/buildcache-admin", str(admin_dir)))
    agent_bin = str(BIN_DIR / "buildcache-agent")
    check = subprocess.run([agent_bin, "--config", str(config), "--advertise", "10.1.2.3:8081",
                            "--check-config"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr

    # And --check-config does check: an unknown key and a bad value are refused.
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("copies: 3", "copies: 0"))
    check = subprocess.run([agent_bin, "--config", str(bad), "--check-config"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode != 0 and "replication.copies" in check.stderr, check.stderr
