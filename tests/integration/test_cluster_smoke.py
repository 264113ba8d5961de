"""The product on real nodes: kubelets, containerd and pods (tests/harness/kubecluster.py).

One cluster of two nodes for the module, then, in order, what a user does first:
1. `helm install` the chart (operator, webhook, CRD, RBAC) with the images scripts/build-images
   makes, loaded into each node's containerd (no registry); the operator pod becomes Ready;
2. `kubectl apply` a BuildCache: the DaemonSet's agent pods become Ready on both nodes, each with
   its hostPath store, and each agent's peers are the pod IPs cluster DNS gives for the headless
   Service;
3. a pod pinned to node 1 reaches its own node's agent through the `internalTrafficPolicy: Local`
   Service by name and downloads a wheel through it, whose bytes match the index's sha256;
4. an annotated pod is wired by the operator's webhook, which the API server calls in its pod;
5. node 1's agent pod deleted: the DaemonSet's new pod serves the wheel from the same store;
6. node 1's kubelet restarted: the agent pod stays, and so does its data.
Before all that (no cluster up yet), a harness whose owner is SIGKILLed with a pod running leaves
nothing behind once the next start has cleaned up.

Needs root, the node binaries (scripts/build-test-tools) and containerd, runc and the CNI plugins
(scripts/setup). Not in CTest yet (docs/real-cluster.md says why); by hand:
    python3 -m pytest -q -p no:cacheprovider tests/integration/test_cluster_smoke.py
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import urllib.parse

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness import clusterflow, upstreams  # noqa: E402
from harness.clusterflow import agent_metrics, agent_pods, sleeper_pod, wait_for  # noqa: E402
from harness import kubecluster  # noqa: E402
from harness.kubecluster import KubeCluster  # noqa: E402
from harness.metrics import metric  # noqa: E402

CI_NS, NAME = "ci", "smoke"
PROJECT = "six"  # a small pure-Python wheel
SERVICE = f"buildcache-{NAME}.{CI_NS}.svc"
WHEEL: dict[str, str] = {}  # path and sha256 of the wheel the client fetched, for later tests


CRASHING_OWNER = """
import pathlib, sys, time
sys.path.insert(0, sys.argv[2])
from harness import clusterflow, nodeimages
from harness.kubecluster import KubeCluster
work = pathlib.Path(sys.argv[1])
kc = KubeCluster(work / "cluster", nodes=1)
kc.start()
ref, archive = nodeimages.busybox_image(work / "images")
kc.import_image(archive, ref)
clusterflow.sleeper_pod(kc, "default", "left", kc.node_names[0])
print(kc.id, flush=True)
time.sleep(3600)
"""


def test_a_killed_harness_leaves_nothing_after_the_next_start(tmp_path):
    sysctls = {k: (pathlib.Path("/proc/sys") / k).read_text() for k in kubecluster.KUBELET_SYSCTLS}
    owner = subprocess.Popen([sys.executable, "-c", CRASHING_OWNER, str(tmp_path),
                              str(pathlib.Path(__file__).resolve().parents[1])],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        cluster_id = owner.stdout.readline().strip()
        assert cluster_id, "the cluster did not come up"
    finally:
        owner.kill()  # SIGKILL: no clean-up of its own
        owner.wait(30)
    state = json.loads((kubecluster.STATE_ROOT / f"{cluster_id}.json").read_text())
    # What the dead run left: the pod's container and shim alive in the node's cgroup, the
    # namespaces, the bridge, the NAT table.
    cgroup = f"bckube-{cluster_id}-1"
    assert kubecluster._cgroup_pids(cgroup), "no container left to clean up"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert state["netns"][0] in netns

    assert cluster_id in kubecluster.cleanup_leftovers()  # what start() does first

    assert not (kubecluster.STATE_ROOT / f"{cluster_id}.json").exists()
    for h in kubecluster._hierarchies():
        assert not list(h.glob(f"bckube-{cluster_id}-*")), h
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in netns for ns in state["netns"])
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert state["bridge"] not in links and not any(v in links for v in state["veths"])
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert state["nft_table"] not in tables
    assert {k: (pathlib.Path("/proc/sys") / k).read_text()
            for k in kubecluster.KUBELET_SYSCTLS} == sysctls
    assert not any(pathlib.Path(d).exists() for d in state["dirs"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("kubecluster")
    with KubeCluster(work / "cluster", nodes=2) as kc:
        try:
            clusterflow.load_images(kc, work)
            kc.kubectl("create", "namespace", CI_NS)
            yield kc
        except BaseException:
            print(kc.describe(), file=sys.stderr)
            raise


def test_helm_install_runs_the_operator(cluster):
    # The checksum database the machine's go command uses (go env GOSUMDB), not a name written here.
    sumdb_name = upstreams.go_sumdb_key().split("+", 1)[0]
    clusterflow.helm_install(cluster, "--set", f"agent.goSumdbName={sumdb_name}")


def test_buildcache_agents_ready_on_every_node_with_peers_from_dns(cluster):
    kc = cluster
    kc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
        "metadata": {"name": NAME, "namespace": CI_NS},
        "spec": {"nodeSelector": {"buildcache.io/ci": "true"},
                 "agent": {"imagePullPolicy": "Never"},
                 "storage": {"maxSize": "2Gi"},
                 "ecosystems": {"pypi": {"upstream": upstreams.pypi_index()}},
                 "replication": {"copies": 2}}}))
    agents = agent_pods(kc, CI_NS, NAME, timeout=240)
    assert set(agents) == set(kc.node_names)
    # Each agent's peers come from cluster DNS (the headless Service): both agents.
    for pod in agents.values():
        wait_for(f"agent {pod['metadata']['name']} to know both peers",
                 lambda ip=pod["status"]["podIP"]:
                 metric(agent_metrics(ip), "buildcache_peer_members") == 2, 90)
    # The store is the node's own hostPath directory.
    for node in kc.nodes:
        data = node.dir / "var-lib" / "buildcache" / CI_NS / NAME
        assert data.is_dir() and any(data.iterdir()), f"no store under {data}"


def served_bytes(metrics: dict) -> float:
    return metric(metrics, "buildcache_served_bytes_total")


def client_get(kc, path: str, then: str = "cat /tmp/r") -> list[str]:
    """GET path by the Service's name from the client pod on node 1 (busybox nc: its wget is
    broken on Debian), then runs `then` on the raw response in /tmp/r."""
    script = (f"mkdir -p /tmp && printf 'GET {path} HTTP/1.0\\r\\nHost: {SERVICE}\\r\\n\\r\\n' "
              f"| nc {SERVICE} 80 >/tmp/r && {then}")
    return kc.kubectl("exec", "-n", CI_NS, "client", "--", "sh", "-c", script,
                      timeout=120).stdout.splitlines()


def client_get_wheel(kc) -> None:
    """The wheel through node 1's agent: status 200 and the index's sha256. The body is the
    response's last Content-Length bytes (tail -c is binary-safe; sed is not)."""
    lines = client_get(kc, WHEEL["path"], "head -n1 /tmp/r && len=$(grep -i -m1 "
                       "'^content-length:' /tmp/r | tr -dc 0-9) && tail -c \"$len\" /tmp/r "
                       "| sha256sum")
    assert " 200 " in lines[0], lines
    assert lines[-1].split()[0] == WHEEL["sha256"], lines


def pypi_served(pod_ip: str) -> dict[str, float]:
    m = agent_metrics(pod_ip)
    return {s: metric(m, "buildcache_served_bytes_total", frontend="pypi", source=s)
            for s in ("local", "peer", "upstream")}


def test_pod_gets_a_package_from_its_own_nodes_agent(cluster):
    kc = cluster
    node1 = kc.node_names[0]
    sleeper_pod(kc, CI_NS, "client", node1)
    agents = {n: p["status"]["podIP"] for n, p in agent_pods(kc, CI_NS, NAME).items()}
    before = {n: served_bytes(agent_metrics(ip)) for n, ip in agents.items()}
    page = client_get(kc, f"/pypi/simple/{PROJECT}/")
    assert " 200 " in page[0], page[:20]
    links = re.findall(r'href="([^"]+\.whl)#sha256=([0-9a-f]{64})"', "\n".join(page))
    assert links, page[:50]
    url, digest = links[-1]
    path = urllib.parse.urlsplit(urllib.parse.urljoin(f"http://{SERVICE}/pypi/simple/{PROJECT}/",
                                                      url)).path
    WHEEL.update(path=path, sha256=digest)
    client_get_wheel(kc)
    # Served by node 1's agent only: the Service routes to the agent on the client's node.
    served = {n: served_bytes(agent_metrics(ip)) - before[n] for n, ip in agents.items()}
    assert served[node1] > 0, served
    assert all(v == 0 for n, v in served.items() if n != node1), served


def test_annotated_pod_is_wired_by_the_webhook_in_its_pod(cluster):
    """The API server calls the operator's webhook in its pod (at the pod IP, over the routes
    to the node), and the wired variables reach the container."""
    kc = cluster
    sleeper_pod(kc, CI_NS, "wired", kc.node_names[1], annotations={"buildcache.io/cache": NAME})
    env = kc.kubectl("exec", "-n", CI_NS, "wired", "--", "env").stdout.splitlines()
    assert f"PIP_INDEX_URL=http://buildcache-{NAME}.{CI_NS}.svc/pypi/simple/" in env, env


def test_agent_pod_replaced_keeps_its_store(cluster):
    """Deleting node 1's agent pod: the DaemonSet's new pod there serves the wheel from the
    node's hostPath store (local bytes; nothing from the peer or the upstream)."""
    kc = cluster
    node1 = kc.node_names[0]
    old = agent_pods(kc, CI_NS, NAME)[node1]
    kc.kubectl("delete", "pod", "-n", CI_NS, old["metadata"]["name"], "--wait=true",
               timeout=120)
    new = wait_for("a new agent pod Ready on node 1",
                   lambda: (lambda p: p if p["metadata"]["uid"] != old["metadata"]["uid"]
                            else None)(agent_pods(kc, CI_NS, NAME)[node1]), 180)
    client_get_wheel(kc)
    served = pypi_served(new["status"]["podIP"])
    assert served["local"] > 0 and served["peer"] == 0 and served["upstream"] == 0, served


def test_kubelet_restart_keeps_the_agent_and_its_data(cluster):
    """Node 1's kubelet stopped and started again: the same agent pod (same container, not
    restarted) is Ready again and still serves the wheel from its store."""
    kc = cluster
    node = kc.nodes[0]
    before = agent_pods(kc, CI_NS, NAME)[node.name]
    node.procs.pop("kubelet").stop()
    node.start_kubelet()
    # The node stays Ready through a short restart; the new kubelet serves a pod (exec) only
    # once it has synced its pods again.
    wait_for("exec in node 1's client pod through the new kubelet",
             lambda: kc.kubectl("exec", "-n", CI_NS, "client", "--", "echo",
                                check=False).returncode == 0, 120)
    kc.wait_nodes_ready()
    after = agent_pods(kc, CI_NS, NAME)[node.name]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    restarts = [c["restartCount"] for c in after["status"]["containerStatuses"]]
    assert restarts == [c["restartCount"] for c in before["status"]["containerStatuses"]]
    local = pypi_served(after["status"]["podIP"])["local"]
    client_get_wheel(kc)
    served = pypi_served(after["status"]["podIP"])
    assert served["local"] > local and served["upstream"] == 0, served

