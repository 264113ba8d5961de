"""`kubectl buildcache purge` through the real kubectl and kube-apiserver to real agents.

Two buildcache-agents replicate on network-namespace hosts (tests/harness/netns.py; root). No
kubelet runs: the agent pods are Pod objects whose status names the agents' addresses, so the API
server's pod proxy (/api/v1/namespaces/NS/pods/POD:8080/proxy/...) reaches the real agents, as it
does in a cluster. The admin Secret holds the token the agents read from admin.tokenFile, as the
operator sets it up.
"""

import base64
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.cpfixture import running_control_plane  # noqa: E402
from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent  # noqa: E402
from harness.netns import NetnsCluster  # noqa: E402

from conftest import metric  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
PLUGIN = BIN_DIR / "kubectl-buildcache"
NS = "ci-system"
SELECTOR = {"app.kubernetes.io/name": "buildcache", "app.kubernetes.io/instance": "ci"}


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} is missing: build it first", pytrace=False)
    with running_control_plane(tmp_path_factory.mktemp("cp"), namespaces=(NS,)) as plane:
        yield plane


@pytest.fixture
def agents(tmp_path):
    token = "purge-e2e-" + os.urandom(16).hex()
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    net = NetnsCluster(2).__enter__()
    started = []
    try:
        peers = ", ".join(f"{node.address}:{PEER_PORT}" for node in net.nodes)
        for i, node in enumerate(net.nodes):
            data = tmp_path / f"node{i}" / "data"
            data.parent.mkdir()
            config = "\n".join([
                f"listen: {node.address}:{HTTP_PORT}",
                f"store: {{dataDir: {data}, maxSize: 1Gi}}",
                "httpcache: {enabled: true}",
                "replication:",
                f"  listen: {node.address}:{PEER_PORT}",
                "  copies: 2",
                "  peerTimeout: 1s",
                "  hydrate: {enabled: false}",
                f"  peers: [{peers}]",
                f"admin: {{tokenFile: {token_file}}}",
            ]) + "\n"
            started.append(NetAgent(net, i, data, config))
        yield token, started
    finally:
        for agent in started:
            agent.stop()
        net.close()


def apply(cp, manifest):
    cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def register_agents(cp, token, agents):
    """The objects the operator and the kubelet would make: the admin Secret, the DaemonSet and
    one Pod per agent with the agent's address as its pod IP."""
    apply(cp, {"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "buildcache-ci-admin", "namespace": NS},
               "data": {"token": base64.b64encode(token.encode()).decode()}})
    container = {"name": "agent", "image": "buildcache-agent:test",
                 "ports": [{"name": "http", "containerPort": HTTP_PORT}]}
    apply(cp, {"apiVersion": "apps/v1", "kind": "DaemonSet",
               "metadata": {"name": "buildcache-ci", "namespace": NS},
               "spec": {"selector": {"matchLabels": SELECTOR},
                        "template": {"metadata": {"labels": SELECTOR},
                                     "spec": {"containers": [container]}}}})
    for i, agent in enumerate(agents):
        name = f"buildcache-ci-{i}"
        apply(cp, {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": NS, "labels": SELECTOR},
                   "spec": {"nodeName": f"node-{i}", "containers": [container]}})
        address = agent.node.address
        cp.kubectl("patch", "pod", name, "-n", NS, "--subresource=status", "--type=merge", "-p",
                   json.dumps({"status": {"phase": "Running", "podIP": address,
                                          "podIPs": [{"ip": address}]}}))


def set_secret_token(cp, token):
    cp.kubectl("patch", "secret", "buildcache-ci-admin", "-n", NS, "--type=merge", "-p",
               json.dumps({"data": {"token": base64.b64encode(token.encode()).decode()}}))


def purge(cp, *args):
    return subprocess.run([str(PLUGIN), "--kubeconfig", str(cp.kubeconfig), "purge", "ci",
                           "-n", NS, *args], capture_output=True, text=True, timeout=60)


def wait_pushed(agent, stored, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        m = agent.metrics()
        if (metric(m, "buildcache_peer_push_queue") == 0
                and metric(m, "buildcache_peer_pushes_total", outcome="stored") >= stored):
            return
        assert time.monotonic() < deadline, f"pushes never completed: {m}"
        time.sleep(0.05)


def test_purge_through_the_api_server_removes_a_poisoned_object_from_every_agent(cp, agents):
    token, started = agents
    register_agents(cp, token, started)
    path = "/cache/ccache/ab/poisoned"
    poison = b"poisoned build output " * 1000
    assert started[0].request("PUT", path, data=poison)[0] in (200, 201, 204)
    wait_pushed(started[0], 1)
    # A DELETE on one agent is undone by the next GET, which pulls the copy back.
    assert started[1].request("DELETE", path)[0] in (200, 204)
    assert started[1].get(path)[:2] == (200, poison)

    # A wrong token in the Secret: every agent refuses, nothing is removed, exit 1.
    set_secret_token(cp, "wrong")
    proc = purge(cp, "--key", "httpcache/ccache/ab/poisoned")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout.count("failed: HTTP 403") == 2, proc.stdout
    for agent in started:
        assert agent.get(path)[:2] == (200, poison), agent.peer

    # The real token: removed on both, and a GET then misses everywhere.
    set_secret_token(cp, token)
    proc = purge(cp, "--key", "httpcache/ccache/ab/poisoned")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout == ("buildcache-ci-0 (node node-0): removed\n"
                           "buildcache-ci-1 (node node-1): removed\n"), proc.stdout
    for agent in started:
        assert agent.get(path)[0] == 404, agent.peer
    assert token not in proc.stdout + proc.stderr
    for agent in started:
        assert not any(token in json.dumps(line) for line in agent.logs)


def test_purge_by_prefix_removes_every_poisoned_key_from_every_agent(cp, agents):
    token, started = agents
    register_agents(cp, token, started)
    poisoned = {f"/cache/ccache/poison/{name}": f"poisoned {name} ".encode() * 500
                for name in ("a", "b", "c/d")}
    kept = {"/cache/ccache/keep/x": b"kept " * 500, "/cache/ccache/poisonx": b"near miss " * 500}
    for path, body in {**poisoned, **kept}.items():
        assert started[0].request("PUT", path, data=body)[0] in (200, 201, 204), path
    wait_pushed(started[0], len(poisoned) + len(kept))

    def expect_stored(objects):
        for agent in started:
            for path, body in objects.items():
                assert agent.get(path)[:2] == (200, body), (agent.peer, path)

    expect_stored({**poisoned, **kept})

    # An empty prefix is refused before any agent is called.
    proc = purge(cp, "--prefix", "")
    assert proc.returncode != 0 and "non-empty" in proc.stderr, (proc.stdout, proc.stderr)

    # A wrong token: every agent refuses, nothing is removed, exit 1.
    set_secret_token(cp, "wrong")
    proc = purge(cp, "--prefix", "httpcache/ccache/poison/")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stdout.count("failed: HTTP 403") == 2, proc.stdout
    expect_stored({**poisoned, **kept})

    # The real token: the three poisoned keys go on both agents, nothing else does, and a GET
    # then misses everywhere (no agent has a copy left to pull back).
    set_secret_token(cp, token)
    proc = purge(cp, "--prefix", "httpcache/ccache/poison/")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout == ("buildcache-ci-0 (node node-0): removed 3 keys\n"
                           "buildcache-ci-1 (node node-1): removed 3 keys\n"), proc.stdout
    for agent in started:
        for path in poisoned:
            assert agent.get(path)[0] == 404, (agent.peer, path)
    expect_stored(kept)
