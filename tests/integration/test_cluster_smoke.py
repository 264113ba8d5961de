"""The product on real nodes: kubelets, containerd and pods (tests/harness/kubecluster.py).

One cluster of two nodes for the module, then, in order, what a user does first:
1. `helm install` the chart (operator, webhook, CRD, RBAC) with the images scripts/build-images
   makes, loaded into each node's containerd (no registry); the operator pod becomes Ready;
2. `kubectl apply` a BuildCache: the DaemonSet's agent pods become Ready on both nodes, each with
   its hostPath store, and each agent's peers are the pod IPs cluster DNS gives for the headless
   Service;
3. a pod pinned to node 1 reaches its own node's agent through the `internalTrafficPolicy: Local`
   Service by name and downloads a wheel through it, whose bytes match the index's sha256.

Needs root, the node binaries (scripts/build-test-tools) and containerd, runc and the CNI plugins
(scripts/setup). Run by hand (not in CTest yet; docs/real-cluster.md says why):
    python3 -m pytest -q -p no:cacheprovider tests/integration/test_cluster_smoke.py
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.parse

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness import nodeimages, upstreams  # noqa: E402
from harness.controlplane import tools_bin_dir  # noqa: E402
from harness.kubecluster import KubeCluster  # noqa: E402
from harness.metrics import metric, parse_metrics  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
RELEASE, NS, CI_NS, NAME = "bc", "buildcache-system", "ci", "smoke"
VERSION = re.search(r"project\(\s*buildcache\s+VERSION\s+([0-9.]+)",
                    (REPO / "CMakeLists.txt").read_text()).group(1)
# Image names the nodes know the images by (a reserved domain: nothing is ever pulled).
AGENT_REPO, OPERATOR_REPO = "buildcache.test/agent", "buildcache.test/operator"
PROJECT = "six"  # a small pure-Python wheel


def wait_for(what, fn, timeout, interval=1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("kubecluster")
    images = work / "images"
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "build-images"), "--tar",
                          "--bin-dir", str(BIN_DIR), "--out", str(images), "agent", "operator"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    with KubeCluster(work / "cluster", nodes=2) as kc:
        try:
            for name, repo in (("agent", AGENT_REPO), ("operator", OPERATOR_REPO)):
                kc.import_image(images / f"{name}.tar", f"{repo}:{VERSION}")
            ref, archive = nodeimages.busybox_image(images)
            kc.import_image(archive, ref)
            yield kc
        except BaseException:
            print(kc.describe(), file=sys.stderr)
            raise


def pods(kc, ns, selector):
    out = kc.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json")
    return json.loads(out.stdout)["items"]


def ready(pod) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def test_helm_install_runs_the_operator(cluster):
    kc = cluster
    kc.kubectl("create", "namespace", NS)
    kc.kubectl("create", "namespace", CI_NS)
    helm = tools_bin_dir() / "helm"
    home = kc.work / "helm-home"
    env = {**kc.cp.env(), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    out = subprocess.run(
        [str(helm), "install", RELEASE, str(REPO / "charts" / "buildcache"), "-n", NS,
         "--set", f"operator.image.repository={OPERATOR_REPO}",
         "--set", "operator.image.pullPolicy=Never", "--set", "operator.replicas=1",
         "--set", f"agent.image.repository={AGENT_REPO}",
         "--set", "agent.goSumdbName=sum.golang.org"],
        capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for("the operator pod Ready",
             lambda: any(ready(p) for p in pods(kc, NS, "app.kubernetes.io/component=operator")),
             180)


def test_buildcache_agents_ready_on_every_node_with_peers_from_dns(cluster):
    kc = cluster
    index = upstreams.pypi_index()
    kc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
        "metadata": {"name": NAME, "namespace": CI_NS},
        "spec": {"nodeSelector": {"buildcache.io/ci": "true"},
                 "agent": {"imagePullPolicy": "Never"},
                 "storage": {"maxSize": "2Gi"},
                 "ecosystems": {"pypi": {"upstream": index}},
                 "replication": {"copies": 2}}}))
    selector = f"app.kubernetes.io/instance={NAME}"

    def all_ready():
        found = pods(kc, CI_NS, selector)
        return found if (len(found) == 2 and all(ready(p) for p in found)) else None
    agents = wait_for("an agent pod Ready on both nodes", all_ready, 240)
    assert {p["spec"]["nodeName"] for p in agents} == set(kc.node_names)
    ips = {p["status"]["podIP"] for p in agents}
    # Each agent's peers come from cluster DNS (the headless Service): both pod IPs.
    for pod in agents:
        def peers_known(ip=pod["status"]["podIP"]):
            m = agent_metrics(kc, ip)
            return metric(m, "buildcache_peer_members") == 2 and m
        wait_for(f"agent {pod['metadata']['name']} to know both peers", peers_known, 90)
    # The store is the node's hostPath.
    for node in kc.nodes:
        data = node.dir / "var-lib" / "buildcache" / CI_NS / NAME
        assert data.is_dir() and any(data.iterdir()), f"no store under {data}"
    assert len(ips) == 2


def agent_metrics(kc, pod_ip):
    out = subprocess.run(["curl", "-sf", "--noproxy", "*", f"http://{pod_ip}:8080/metrics"],
                         capture_output=True, text=True, timeout=30)
    return parse_metrics(out.stdout) if out.returncode == 0 else {}


def test_pod_gets_a_package_from_its_own_nodes_agent(cluster):
    kc = cluster
    node1 = kc.node_names[0]
    kc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": CI_NS},
        "spec": {"nodeName": node1, "restartPolicy": "Never",
                 "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": nodeimages.BUSYBOX_REF,
                                 "imagePullPolicy": "Never",
                                 "command": ["sleep", "3600"]}]}}))
    wait_for("the client pod Ready",
             lambda: ready(json.loads(kc.kubectl("get", "pod", "client", "-n", CI_NS,
                                                 "-o", "json").stdout)), 120)
    service = f"buildcache-{NAME}.{CI_NS}.svc"

    def http_get(path):
        # busybox nc (its wget is broken on Debian): a plain HTTP/1.0 request, the raw answer.
        script = (f"printf 'GET {path} HTTP/1.0\\r\\nHost: {service}\\r\\n\\r\\n' "
                  f"| nc {service} 80")
        return kc.kubectl("exec", "-n", CI_NS, "client", "--", "sh", "-c", script,
                          timeout=120).stdout

    agents = {p["spec"]["nodeName"]: p["status"]["podIP"]
              for p in pods(kc, CI_NS, f"app.kubernetes.io/instance={NAME}")}
    before = {n: agent_metrics(kc, ip) for n, ip in agents.items()}
    page = http_get(f"/pypi/simple/{PROJECT}/")
    assert page.startswith("HTTP/1.") and " 200 " in page.splitlines()[0], page[:500]
    links = re.findall(r'href="([^"]+\.whl)#sha256=([0-9a-f]{64})"', page)
    assert links, page[:2000]
    url, digest = links[-1]
    path = urllib.parse.urlsplit(urllib.parse.urljoin(f"http://{service}/pypi/simple/{PROJECT}/",
                                                      url)).path
    # The body is the response's last Content-Length bytes (tail -c is binary-safe; sed is not).
    script = (f"mkdir -p /tmp && printf 'GET {path} HTTP/1.0\\r\\nHost: {service}\\r\\n\\r\\n' "
              f"| nc {service} 80 >/tmp/r && head -n1 /tmp/r && "
              "len=$(grep -i -m1 '^content-length:' /tmp/r | tr -dc 0-9) && "
              "tail -c \"$len\" /tmp/r | sha256sum")
    lines = kc.kubectl("exec", "-n", CI_NS, "client", "--", "sh", "-c", script,
                       timeout=120).stdout.splitlines()
    assert " 200 " in lines[0], lines
    assert lines[-1].split()[0] == digest, lines
    # Served by node 1's agent only: the Service routes to the agent on the client's node.
    after = {n: agent_metrics(kc, ip) for n, ip in agents.items()}
    served = {n: sum(v for (name, _), v in after[n].items()
                     if name == "buildcache_served_bytes_total")
              - sum(v for (name, _), v in before[n].items()
                    if name == "buildcache_served_bytes_total") for n in agents}
    assert served[node1] > 0, served
    assert all(v == 0 for n, v in served.items() if n != node1), served
