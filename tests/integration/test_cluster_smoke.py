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
6. node 1's kubelet restarted: the agent pod stays, and so does its data; the kubelet down and the
   agent's container killed meanwhile: the new kubelet restarts it, and it serves from its store.
Before all that (no cluster up yet), a harness whose owner is SIGKILLed with a pod running leaves
nothing behind once the next start has cleaned up.

Then what goes wrong in real clusters, with busybox pods only (the CI Jobs with pip and go are in
test_cluster_jobs.py):
7. a pod on a node whose agent is not Ready waits in the webhook's init container and runs once
   the agent is Ready (a pod that turned the wait off fails, as every wired pod did before);
8. the operator and its webhook down: annotated pods are still admitted, unwired; back up, the
   next pod is wired;
9. `helm upgrade` with a new agent image: the agent pods are replaced one node at a time, and
   node 1's new agent serves from the same store.

Needs root, the node binaries (scripts/build-test-tools) and containerd, runc and the CNI plugins
(scripts/setup); without them it fails naming what is missing. In CTest
(integration.test_cluster_smoke); by hand:
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
from harness import clusterflow, nodeimages, upstreams  # noqa: E402
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
    kubecluster.check_host()  # fails naming what is missing (root, tools), never skips
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



def test_agent_killed_while_the_kubelet_is_down_comes_back_with_its_data(cluster):
    """Node 1's kubelet stopped, then the agent's container killed (SIGKILL, as a node losing its
    processes would): the new kubelet finds the container dead and starts it again in the same
    pod, which turns Ready and serves the wheel from the node's store (local bytes, nothing from
    the peer or upstream)."""
    kc = cluster
    node = kc.nodes[0]
    before = agent_pods(kc, CI_NS, NAME)[node.name]
    restarts = before["status"]["containerStatuses"][0]["restartCount"]
    container = before["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    node.procs.pop("kubelet").stop()
    try:
        node.ctr("tasks", "kill", "-s", "SIGKILL", container)

        def task_status() -> str:  # `ctr tasks list`: TASK PID STATUS
            rows = (line.split() for line in node.ctr("tasks", "list").stdout.splitlines())
            return next((r[2] for r in rows if len(r) >= 3 and r[0] == container), "")
        wait_for("the agent's container to exit", lambda: task_status() != "RUNNING", 60)
    finally:
        node.start_kubelet()

    def restarted():
        pod = agent_pods(kc, CI_NS, NAME)[node.name]
        return pod if pod["status"]["containerStatuses"][0]["restartCount"] > restarts else None
    after = wait_for("node 1's agent container restarted and Ready", restarted, 240)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    served = pypi_served(after["status"]["podIP"])
    assert served == {"local": 0, "peer": 0, "upstream": 0}, served  # a new process
    wait_for("exec in node 1's client pod through the new kubelet",
             lambda: kc.kubectl("exec", "-n", CI_NS, "client", "--", "echo",
                                check=False).returncode == 0, 120)
    client_get_wheel(kc)
    served = pypi_served(after["status"]["podIP"])
    assert served["local"] > 0 and served["peer"] == 0 and served["upstream"] == 0, served


def fetch_pod(kc, name: str, node: str, cache: str,
              annotations: dict | None = None) -> subprocess.CompletedProcess:
    """An annotated busybox pod on `node` that GETs the pip index page of PROJECT from the agent
    of BuildCache `cache` through its Service, prints the status line and exits 0 only on a 200."""
    service = f"buildcache-{cache}.{CI_NS}.svc"
    script = (f"mkdir -p /tmp && printf 'GET /pypi/simple/{PROJECT}/ HTTP/1.0\\r\\nHost: "
              f"{service}\\r\\n\\r\\n' | nc -w 10 {service} 80 >/tmp/r; head -n1 /tmp/r; "
              "grep -q '^HTTP/1.[01] 200 ' /tmp/r")
    return kc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": CI_NS,
                     "annotations": {"buildcache.io/cache": cache, **(annotations or {})}},
        "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": nodeimages.BUSYBOX_REF,
                                 "imagePullPolicy": "Never", "command": ["sh", "-c", script]}]}}))


def pod_json(kc, name: str) -> dict:
    return json.loads(kc.kubectl("get", "pod", name, "-n", CI_NS, "-o", "json").stdout)


def pod_phase(kc, name: str) -> str:
    return pod_json(kc, name).get("status", {}).get("phase", "")


def test_pod_on_a_node_whose_agent_is_not_ready_waits_for_it(cluster):
    """A BuildCache whose agents are not on node 2 yet (its nodeSelector matches no node): an
    annotated pod pinned there waits in the webhook's init container (its main container does not
    start) and runs once the node is labelled and its agent is Ready; a pod that turned the wait
    off (buildcache.io/agent-wait: "0") runs at once and fails to reach an agent, which is what
    every wired pod did before the init container.

    The annotation is the pod's input, so it is attacked too: a pod asking to wait 10 years gets
    the webhook's maximum (1 h, with a warning kubectl prints) and still just waits for its agent;
    a pod whose bound runs out fails in the init container with the documented message, and its
    own container never starts; a value that tries to add a --url gets the default wait on the
    BuildCache's own Service."""
    kc = cluster
    node2 = kc.node_names[1]
    late = "late"
    kc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
        "metadata": {"name": late, "namespace": CI_NS},
        "spec": {"nodeSelector": {"buildcache.io/late": "true"},
                 "agent": {"imagePullPolicy": "Never"}, "storage": {"maxSize": "1Gi"},
                 "ecosystems": {"pypi": {"upstream": upstreams.pypi_index()}}}}))
    try:
        fetch_pod(kc, "early", node2, late)
        fetch_pod(kc, "nowait", node2, late, {"buildcache.io/agent-wait": "0"})
        fetch_pod(kc, "bounded", node2, late, {"buildcache.io/agent-wait": "3s"})
        forever = fetch_pod(kc, "forever", node2, late, {"buildcache.io/agent-wait": "87600h"})
        redirect = fetch_pod(kc, "redirect", node2, late,
                             {"buildcache.io/agent-wait": "5m --url=http://10.0.0.1:443/"})
        wired = pod_json(kc, "early")["spec"]["initContainers"]
        assert [c["name"] for c in wired] == ["buildcache-wait-agent"], wired
        url = f"--url=http://buildcache-{late}.{CI_NS}.svc/readyz"
        for name, proc, timeout in (("forever", forever, "3600s"), ("redirect", redirect, "300s")):
            [init] = pod_json(kc, name)["spec"]["initContainers"]
            assert init["args"] == ["wait-ready", url, f"--timeout={timeout}"], init
            assert "buildcache.io/agent-wait" in proc.stderr, proc.stderr
        # The bound ends the wait by itself: the init container fails naming the agent's URL and
        # what to check; the pod's own container never ran.
        wait_for("the pod with a 3 s bound to fail", lambda: pod_phase(kc, "bounded") == "Failed",
                 180)
        status = pod_json(kc, "bounded")["status"]
        [init] = status["initContainerStatuses"]
        assert init["state"]["terminated"]["exitCode"] == 1, status
        assert all("running" not in c["state"] and c["state"].get("terminated", {}).get(
            "reason") != "Completed" for c in status.get("containerStatuses", [])), status
        log = kc.kubectl("logs", "-n", CI_NS, "bounded", "-c", "buildcache-wait-agent",
                         check=False).stdout
        assert "no ready buildcache agent on this node" in log and url[6:] in log, log
        assert "initContainers" not in pod_json(kc, "nowait")["spec"]
        # Without the wait: the pod's client finds no agent behind the Service on its node.
        wait_for("the pod without a wait to fail",
                 lambda: pod_phase(kc, "nowait") in ("Failed", "Succeeded"), 180)
        log = kc.kubectl("logs", "-n", CI_NS, "nowait", check=False).stdout
        assert pod_phase(kc, "nowait") == "Failed" and "nc: " in log, log
        # With it: the init container says what it waits for; the pod's container has not run.
        wait_for("the wait container's first report",
                 lambda: "waiting for http://buildcache-late.ci.svc/readyz" in kc.kubectl(
                     "logs", "-n", CI_NS, "early", "-c", "buildcache-wait-agent",
                     check=False).stdout, 120)
        status = pod_json(kc, "early")["status"]
        assert status["phase"] == "Pending", status
        assert "running" in status["initContainerStatuses"][0]["state"], status
        assert all("waiting" in c["state"] for c in status["containerStatuses"]), status

        kc.kubectl("label", "node", node2, "buildcache.io/late=true")
        for name in ("early", "forever", "redirect"):
            wait_for(f"pod {name} to finish",
                     lambda n=name: pod_phase(kc, n) in ("Failed", "Succeeded"), 240)
            log = kc.kubectl("logs", "-n", CI_NS, name, check=False).stdout
            assert pod_phase(kc, name) == "Succeeded", (name, log)
            assert " 200 " in log, (name, log)
    finally:
        kc.kubectl("delete", "pod", "-n", CI_NS, "early", "nowait", "bounded", "forever",
                   "redirect", "--ignore-not-found",
                   "--wait=false", check=False)
        kc.kubectl("label", "node", node2, "buildcache.io/late-", check=False)
        kc.kubectl("delete", "buildcache", "-n", CI_NS, late, "--wait=false", check=False)


def operator_deployment(kc) -> str:
    out = kc.kubectl("get", "deployment", "-n", clusterflow.RELEASE_NS, "-l",
                     "app.kubernetes.io/component=operator", "-o", "name")
    names = out.stdout.split()
    assert len(names) == 1, out.stdout
    return names[0]


def test_pods_are_admitted_while_the_webhook_is_down_and_wired_once_it_is_back(cluster):
    """The operator (and with it the webhook) scaled to zero: an annotated pod is still admitted
    and runs (failurePolicy Ignore), unwired; the operator back, the next annotated pod is wired."""
    kc = cluster
    deployment = operator_deployment(kc)
    kc.kubectl("scale", "-n", clusterflow.RELEASE_NS, deployment, "--replicas=0")
    try:
        wait_for("no operator pod left",
                 lambda: not clusterflow.pods(kc, clusterflow.RELEASE_NS,
                                              "app.kubernetes.io/component=operator"), 120)
        sleeper_pod(kc, CI_NS, "unwired", kc.node_names[1],
                    annotations={"buildcache.io/cache": NAME})
        env = kc.kubectl("exec", "-n", CI_NS, "unwired", "--", "env").stdout
        assert "PIP_INDEX_URL" not in env, env
        assert "initContainers" not in pod_json(kc, "unwired")["spec"]
    finally:
        kc.kubectl("scale", "-n", clusterflow.RELEASE_NS, deployment, "--replicas=1")
    wait_for("the operator pod Ready again",
             lambda: any(clusterflow.ready(p) for p in clusterflow.pods(
                 kc, clusterflow.RELEASE_NS, "app.kubernetes.io/component=operator")), 180)
    sleeper_pod(kc, CI_NS, "rewired", kc.node_names[1], annotations={"buildcache.io/cache": NAME})
    env = kc.kubectl("exec", "-n", CI_NS, "rewired", "--", "env").stdout.splitlines()
    assert f"PIP_INDEX_URL=http://buildcache-{NAME}.{CI_NS}.svc/pypi/simple/" in env, env
    kc.kubectl("delete", "pod", "-n", CI_NS, "unwired", "rewired", "--wait=false")


def ready_since(pod: dict) -> str:
    """When the pod's Ready condition last turned True (RFC 3339, sorts as text)."""
    return next(c["lastTransitionTime"] for c in pod["status"]["conditions"]
                if c["type"] == "Ready" and c["status"] == "True")


def test_helm_upgrade_of_the_agent_image_rolls_one_node_at_a_time_with_stores_intact(cluster):
    """`helm upgrade` with a new agent image (the same image under a second tag on the nodes):
    the operator re-renders the DaemonSet, which replaces the agent pods one node at a time (the
    second new pod is created only after the first is Ready), and node 1's new agent serves the
    wheel from its store."""
    kc = cluster
    node1 = kc.node_names[0]
    tag = f"{clusterflow.VERSION}-upgraded"
    for node in kc.nodes:
        node.ctr("images", "tag", "--force", f"{clusterflow.AGENT_REPO}:{clusterflow.VERSION}",
                 f"{clusterflow.AGENT_REPO}:{tag}")
    before = {n: p["metadata"]["uid"] for n, p in agent_pods(kc, CI_NS, NAME).items()}
    clusterflow.helm_upgrade(kc, "--set", f"agent.image.tag={tag}")

    def rolled():
        found = clusterflow.pods(kc, CI_NS, f"app.kubernetes.io/instance={NAME}")
        new = {p["spec"].get("nodeName"): p for p in found
               if p["metadata"]["uid"] not in before.values() and clusterflow.ready(p)
               and p["spec"]["containers"][0]["image"].endswith(":" + tag)}
        return new if set(new) >= set(kc.node_names) else None
    new = wait_for("an upgraded agent pod Ready on every node", rolled, 300)
    first, second = sorted(new.values(), key=lambda p: p["metadata"]["creationTimestamp"])
    assert second["metadata"]["creationTimestamp"] >= ready_since(first), (first, second)
    client_get_wheel(kc)
    served = pypi_served(new[node1]["status"]["podIP"])
    assert served["local"] > 0 and served["upstream"] == 0, served
