"""A CI Job on the real-node cluster (tests/harness/kubecluster.py) cut off by its agent: an
agent pod deleted while a Job runs `pip install` through it (the CI image: Debian's python3, pip
and gcc, tests/harness/nodeimages.py). The Job (backoffLimit 1) ends Complete; a failed
attempt's log shows the client error docs/operations.md describes; the new agent pod serves what
the old one stored from the same hostPath store.

The Jobs' cold / warm / peer-warm flow (pip and `go build`) is the demo's, tested by
test_demo.py. Not in CTest: a second CI-image cluster costs more than the CI budget leaves
(docs/development.md). By hand, as root:
    python3 -m pytest -q -p no:cacheprovider tests/integration/test_cluster_jobs.py"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness import clusterflow, upstreams, workloads  # noqa: E402
from harness.clusterflow import agent_metrics, agent_pods, wait_for  # noqa: E402
from harness.kubecluster import KubeCluster  # noqa: E402
from harness.metrics import metric  # noqa: E402

NS, NAME = "ci", "jobs"
PIP_SCRIPT = """set -e
cat > /tmp/req.txt <<'EOF'
{requirements}EOF
python3 -m venv /tmp/venv
/tmp/venv/bin/pip install --disable-pip-version-check --no-cache-dir -r /tmp/req.txt
/tmp/venv/bin/python -c "{imports}"
echo INSTALLED_OK
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("kubecluster")
    with KubeCluster(work / "cluster", nodes=2) as kc:
        try:
            clusterflow.load_images(kc, work, ci=True)
            sumdb_name = upstreams.go_sumdb_key().split("+", 1)[0]
            clusterflow.helm_install(kc, "--set", f"agent.goSumdbName={sumdb_name}")
            kc.kubectl("create", "namespace", NS)
            kc.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
                "metadata": {"name": NAME, "namespace": NS},
                "spec": {"nodeSelector": {"buildcache.io/ci": "true"},
                         "agent": {"imagePullPolicy": "Never"},
                         "storage": {"maxSize": "5Gi"},
                         "ecosystems": {"pypi": {"upstream": upstreams.pypi_index()},
                                        "goproxy": {"upstream": upstreams.go_proxy()}},
                         "directories": [{"name": "gobuild", "mountPath": "/root/.cache/go-build",
                                          "maxSize": "2Gi"}],
                         "replication": {"copies": 2}}}))
            agent_pods(kc, NS, NAME, timeout=300)
            yield kc
        except BaseException:
            print(kc.describe(), file=sys.stderr)
            raise


def served(kc, frontend: str) -> dict[str, dict[str, float]]:
    """{node: {source: bytes}} that each node's agent served for `frontend`."""
    out = {}
    for node, pod in agent_pods(kc, NS, NAME).items():
        m = agent_metrics(pod["status"]["podIP"])
        out[node] = {s: metric(m, "buildcache_served_bytes_total", frontend=frontend, source=s)
                     for s in ("local", "peer", "upstream")}
    return out


def delta(after: dict, before: dict, node: str) -> dict[str, float]:
    return {s: after[node][s] - before[node][s] for s in after[node]}


def test_agent_pod_deleted_while_a_job_installs(cluster):
    """node 1's agent pod is deleted as soon as it has served the cold pip Job its first bytes:
    the Job (backoffLimit 1) completes, on the first attempt or the retry, whose pod waits for the
    new agent in the webhook's init container; a failed attempt failed in pip with a connection
    error naming the agent's Service (docs/operations.md). The new agent pod serves pypi bytes
    it did not fetch again (its store is the node's hostPath)."""
    kc = cluster
    node1 = kc.node_names[0]
    # A cold install (an sdist built among them): long enough to be cut off in the middle.
    script = PIP_SCRIPT.format(requirements=workloads.PIP_REQUIREMENTS,
                               imports=workloads.PIP_IMPORTS)
    old = agent_pods(kc, NS, NAME)[node1]
    served_before = sum(served(kc, "pypi")[node1].values())
    kc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pip-interrupted",
                                                              "namespace": NS},
        "spec": {"backoffLimit": 1, "template": {
            "metadata": {"annotations": {"buildcache.io/cache": NAME}},
            "spec": {"nodeName": node1, "restartPolicy": "Never",
                     "containers": [{"name": "job", "image": clusterflow.nodeimages.CI_REF,
                                     "imagePullPolicy": "Never",
                                     "command": ["sh", "-c", script]}]}}}}))

    # Deleted once pip is downloading through it: the agent has sent the Job its first bytes.
    wait_for("pip to download through node 1's agent",
             lambda: sum(served(kc, "pypi")[node1].values()) > served_before, 600,
             interval=0.3)
    kc.kubectl("delete", "pod", "-n", NS, old["metadata"]["name"], "--wait=false")

    def finished():
        job = json.loads(kc.kubectl("get", "job", "pip-interrupted", "-n", NS,
                                    "-o", "json").stdout)
        return next((c["type"] for c in job.get("status", {}).get("conditions", [])
                     if c["type"] in ("Complete", "Failed") and c["status"] == "True"), None)
    outcome = wait_for("the interrupted Job to finish", finished, 900, interval=2)
    logs = {p["metadata"]["name"]: (p["status"].get("phase"), kc.kubectl(
        "logs", "-n", NS, p["metadata"]["name"], "-c", "job", check=False).stdout)
        for p in clusterflow.pods(kc, NS, "job-name=pip-interrupted")}
    print(json.dumps({"interrupted_job": outcome,
                      "attempts": {n: phase for n, (phase, _) in logs.items()}}), file=sys.stderr)
    assert outcome == "Complete", logs
    for phase, log in logs.values():
        if phase == "Failed":  # the documented client error, not a corrupt install
            assert f"buildcache-{NAME}.{NS}.svc" in log and re.search(
                r"Connection refused|NewConnectionError|ConnectTimeout|Read timed out|"
                r"ProtocolError|IncompleteRead", log), log[-3000:]
        else:
            assert "INSTALLED_OK" in log, log[-3000:]
    new = agent_pods(kc, NS, NAME)[node1]
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    before = served(kc, "pypi")
    clusterflow.run_job(kc, NS, "pip-after", node1, script, {"buildcache.io/cache": NAME})
    after = delta(served(kc, "pypi"), before, node1)
    assert after["local"] > 0 and after["upstream"] == 0, after
