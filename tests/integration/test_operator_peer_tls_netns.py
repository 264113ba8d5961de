"""Agents with the peer certificates the real operator issues, on separate network hosts.

The real buildcache-operator, against a real kube-apiserver, issues the peer CA and agent
certificate of two BuildCaches (team-a/ci and team-b/other) into Secrets and renders
replication.tls into their ConfigMaps. The test copies what the kubelet would mount (the
peer-tls Secret's files and the rendered tls section) into three agents on network-namespace
hosts (tests/harness/netns.py): two with team-a/ci's certificate, the third with team-b/other's
or, in the second test, with none. The two must replicate; the third must be refused both ways:
it can neither read from them nor push into them. Needs root (CAP_NET_ADMIN).
"""

import base64
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.cpfixture import running_control_plane  # noqa: E402
from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent  # noqa: E402
from harness.netns import NetnsCluster  # noqa: E402

from conftest import metric  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
OPERATOR = BIN_DIR / "buildcache-operator"
CRD = REPO / "crds" / "buildcache.io_buildcaches.yaml"


def buildcache(name, ns):
    return {"apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"storage": {"maxSize": "1Gi"}, "ecosystems": {"httpcache": {}}}}


def wait_for(what, fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}", pytrace=False)


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    """{BuildCache name: (directory with ca.crt/tls.crt/tls.key, rendered replication.tls)}."""
    if not OPERATOR.exists():
        pytest.fail(f"{OPERATOR} is missing: build the buildcache-operator target", pytrace=False)
    with running_control_plane(tmp_path_factory.mktemp("cp"), crd=CRD,
                               namespaces=("team-a", "team-b"),
                               objects=(buildcache("ci", "team-a"),
                                        buildcache("other", "team-b"))) as plane:
        op = subprocess.Popen(
            [str(OPERATOR), "--kubeconfig", str(plane.kubeconfig), "--agent-image", "agent:it",
             "--metrics-addr", "127.0.0.1:0", "--leader-elect=false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            yield issued_secrets(plane, tmp_path_factory)
        finally:
            op.terminate()
            op.wait(20)


def issued_secrets(plane, tmp_path_factory):
    """Waits for the operator to issue each BuildCache's peer TLS Secret and render its config."""

    def get(kind, name, ns):
        proc = plane.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    out = {}
    for name, ns in (("ci", "team-a"), ("other", "team-b")):
        secret = wait_for(f"Secret {ns}/buildcache-{name}-peer-tls",
                          lambda: get("secret", f"buildcache-{name}-peer-tls", ns))
        cm = wait_for(f"ConfigMap {ns}/buildcache-{name}-config",
                      lambda: get("configmap", f"buildcache-{name}-config", ns))
        d = tmp_path_factory.mktemp(name)
        for key in ("ca.crt", "tls.crt", "tls.key"):
            (d / key).write_bytes(base64.b64decode(secret["data"][key]))
        tls = yaml.safe_load(cm["data"]["agent.yaml"])["replication"]["tls"]
        out[name] = (d, tls)
    return out


def config_for(node, data_dir, tls_dir=None, tls=None):
    lines = [
        f"listen: {node.address}:{HTTP_PORT}",
        "logLevel: debug",
        f"store: {{dataDir: {data_dir}, maxSize: 1Gi}}",
        "httpcache: {enabled: true}",
        "replication:",
        f"  listen: {node.address}:{PEER_PORT}",
        "  copies: 3",
        "  peerTimeout: 1s",
        "  hydrate: {enabled: false}",
    ]
    if tls is not None:
        # The rendered section, with the Secret's mount directory replaced by where the files are.
        files = {k: str(tls_dir / pathlib.Path(tls[k]).name) for k in ("certFile", "keyFile",
                                                                       "caFile")}
        lines.append(f"  tls: {{certFile: {files['certFile']}, keyFile: {files['keyFile']}, "
                     f"caFile: {files['caFile']}, serverName: {tls['serverName']}}}")
    return lines


@pytest.fixture
def agents(tmp_path):
    started = []
    nets = []

    def start(tls_of):
        net = NetnsCluster(3).__enter__()
        nets.append(net)
        peers = [f"{n.address}:{PEER_PORT}" for n in net.nodes]
        for i in range(3):
            data = tmp_path / f"node{i}" / "data"
            data.parent.mkdir()
            tls_dir, tls = tls_of(i)
            lines = config_for(net.nodes[i], data, tls_dir, tls)
            lines.insert(-1 if tls is not None else len(lines),
                         "  peers: [" + ", ".join(peers) + "]")
            started.append(NetAgent(net, i, data, "\n".join(lines) + "\n"))
        return started

    yield start
    for a in started:
        a.stop()
    for net in nets:
        net.close()


def assert_third_is_refused(agents):
    blob = os.urandom(40_000)
    assert agents[0].request("PUT", "/cache/tls/obj", data=blob)[0] in (200, 201, 204)
    status, got, _ = agents[1].get("/cache/tls/obj")
    assert status == 200 and got == blob  # the two agents of team-a/ci replicate over mTLS
    assert metric(agents[1].metrics(), "buildcache_peer_bytes_total", direction="in") >= len(blob)
    # The third can read nothing from them...
    status, _, _ = agents[2].get("/cache/tls/obj")
    assert status == 404
    m = agents[2].metrics()
    assert metric(m, "buildcache_peer_requests_total", outcome="hit") == 0
    assert metric(m, "buildcache_peer_requests_total", outcome="error") >= 1
    # ...and nothing it writes reaches them.
    assert agents[2].request("PUT", "/cache/tls/rogue", data=b"x" * 1000)[0] in (200, 201, 204)
    assert agents[0].get("/cache/tls/rogue")[0] == 404
    assert agents[1].get("/cache/tls/rogue")[0] == 404


def test_operator_certificates_join_and_another_buildcaches_agent_is_refused(issued, agents):
    ci_dir, ci_tls = issued["ci"]
    other_dir, other_tls = issued["other"]
    assert ci_tls["serverName"] == "buildcache-ci-peers.team-a.svc"
    assert other_tls["serverName"] == "buildcache-other-peers.team-b.svc"
    started = agents(lambda i: (other_dir, other_tls) if i == 2 else (ci_dir, ci_tls))
    assert started[0].wait_for_log("peer server listening").get("tls") is True
    assert_third_is_refused(started)


def test_an_agent_without_a_certificate_is_refused(issued, agents):
    ci_dir, ci_tls = issued["ci"]
    started = agents(lambda i: (None, None) if i == 2 else (ci_dir, ci_tls))
    assert_third_is_refused(started)
