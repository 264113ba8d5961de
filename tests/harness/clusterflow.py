"""The user's flow on a real-node cluster (harness.kubecluster): the images on every node, the
chart installed with helm, a BuildCache applied, its agents Ready, and CI pods and Jobs. Shared
by tests/integration/test_cluster_smoke.py and bench/cluster_peer_warm.py.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

from harness import nodeimages, polling
from harness.controlplane import tools_bin_dir
from harness.metrics import parse_metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
VERSION = re.search(r"project\(\s*buildcache\s+VERSION\s+([0-9.]+)",
                    (REPO / "CMakeLists.txt").read_text()).group(1)
# Image names the nodes know the images by (a reserved domain: nothing is ever pulled).
AGENT_REPO, OPERATOR_REPO = "buildcache.test/agent", "buildcache.test/operator"
RELEASE, RELEASE_NS = "bc", "buildcache-system"
AGENT_PORT = 8080  # the agent's HTTP port in its pod (metrics too)


class FlowError(RuntimeError):
    pass


def wait_for(what: str, fn, timeout: float, interval: float = 1.0):
    return polling.wait_for(what, fn, timeout, interval, error=FlowError)


def built_images() -> pathlib.Path:
    """scripts/build-images' agent and operator archives (agent.tar, operator.tar) of the binaries
    in BIN_DIR, built once per set of inputs (the binaries, the script, the package lists) into
    BIN_DIR/../cluster-images/<key>/, so the real-cluster tests of one CTest run share them.
    Older keys are removed; a concurrent builder of the same key loses the rename and uses the
    winner's."""
    digest = hashlib.sha256()
    inputs = [BIN_DIR / b for b in ("buildcache-agent", "buildcache-gocacheprog",
                                    "buildcache-operator")]
    inputs += [REPO / "scripts" / "build-images", *sorted((REPO / "images").glob("*.packages"))]
    for path in inputs:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    root = BIN_DIR.parent / "cluster-images"
    done = root / digest.hexdigest()[:16]
    if (done / "operator.tar").exists():
        return done
    root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "build-images"), "--tar",
                          "--bin-dir", str(BIN_DIR), "--out", str(tmp), "agent", "operator"],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FlowError(f"scripts/build-images failed: {out.stderr}")
    try:
        tmp.rename(done)
    except OSError:  # built meanwhile by another test
        shutil.rmtree(tmp, ignore_errors=True)
    for old in root.iterdir():
        if old != done and not old.name.startswith(".build-"):
            shutil.rmtree(old, ignore_errors=True)
    return done


def load_images(kc, work: pathlib.Path, ci: bool = False) -> None:
    """scripts/build-images' agent and operator images (built_images), the busybox image (and the
    CI image), imported into every node."""
    images = work / "images"
    built = built_images()
    for name, repo in (("agent", AGENT_REPO), ("operator", OPERATOR_REPO)):
        kc.import_image(built / f"{name}.tar", f"{repo}:{VERSION}")
    builders = [nodeimages.busybox_image] + ([nodeimages.ci_image] if ci else [])
    for build in builders:
        ref, archive = build(images)
        kc.import_image(archive, ref)


def _helm(kc, what: str, *args: str) -> None:
    """Runs `helm <what> RELEASE charts/buildcache -n RELEASE_NS <args>` with a helm home of the
    cluster's own; raises with helm's output if it fails."""
    home = kc.work / "helm-home"
    env = {**kc.cp.env(), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    out = subprocess.run([str(tools_bin_dir() / "helm"), what, RELEASE,
                          str(REPO / "charts" / "buildcache"), "-n", RELEASE_NS, *args],
                         capture_output=True, text=True, env=env, timeout=300)
    if out.returncode != 0:
        raise FlowError(f"helm {what} failed:\n{out.stdout}{out.stderr}")


def helm_install(kc, *extra: str) -> None:
    """The chart from charts/buildcache, with the images the nodes have, into RELEASE_NS; waits
    for the operator pod to be Ready."""
    kc.kubectl("create", "namespace", RELEASE_NS)
    _helm(kc, "install", "--set", f"operator.image.repository={OPERATOR_REPO}",
          "--set", "operator.image.pullPolicy=Never", "--set", "operator.replicas=1",
          "--set", f"agent.image.repository={AGENT_REPO}", *extra)
    wait_for("the operator pod Ready",
             lambda: any(ready(p) for p in pods(kc, RELEASE_NS,
                                                "app.kubernetes.io/component=operator")), 300)


def helm_upgrade(kc, *extra: str) -> None:
    """`helm upgrade --reuse-values` of RELEASE with `extra` settings; waits until the operator
    Deployment has rolled out."""
    _helm(kc, "upgrade", "--reuse-values", *extra)
    deployments = kc.kubectl("get", "deployment", "-n", RELEASE_NS, "-l",
                             "app.kubernetes.io/component=operator", "-o", "name").stdout.split()
    for d in deployments:
        kc.kubectl("rollout", "status", "-n", RELEASE_NS, d, "--timeout=300s", timeout=320)


def pods(kc, ns: str, selector: str) -> list[dict]:
    out = kc.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json")
    return json.loads(out.stdout)["items"]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def agent_pods(kc, ns: str, name: str, timeout: float = 300) -> dict[str, dict]:
    """Waits until the BuildCache's agent pod is Ready on every node; {node name: pod}."""
    def all_ready():
        found = pods(kc, ns, f"app.kubernetes.io/instance={name}")
        by_node = {p["spec"].get("nodeName"): p for p in found if ready(p)}
        return by_node if set(by_node) >= set(kc.node_names) else None
    return wait_for(f"an agent pod of {ns}/{name} Ready on every node", all_ready, timeout)


def agent_metrics(pod_ip: str) -> dict:
    """An agent pod's /metrics, fetched from the host (it routes the pod CIDRs)."""
    out = subprocess.run(["curl", "-sf", "--noproxy", "*",
                          f"http://{pod_ip}:{AGENT_PORT}/metrics"],
                         capture_output=True, text=True, timeout=30)
    return parse_metrics(out.stdout) if out.returncode == 0 else {}


def sleeper_pod(kc, ns: str, name: str, node: str, image: str = nodeimages.BUSYBOX_REF,
                annotations: dict | None = None) -> None:
    """A pod that sleeps on `node` (commands run in it with kubectl exec); waits until Ready."""
    kc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
        "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                                 "command": ["sleep", "3600"]}]}}))
    wait_for(f"pod {ns}/{name} Ready",
             lambda: ready(json.loads(kc.kubectl("get", "pod", name, "-n", ns,
                                                 "-o", "json").stdout)), 180)


def run_job(kc, ns: str, name: str, node: str, script: str, annotations: dict,
            image: str = nodeimages.CI_REF, timeout: float = 1800) -> str:
    """A Job of one pod on `node` running `sh -c script`; waits for it to finish and returns
    its log; raises with the log if it failed."""
    kc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": annotations},
            "spec": {"nodeName": node, "restartPolicy": "Never",
                     "containers": [{"name": "job", "image": image, "imagePullPolicy": "Never",
                                     "command": ["sh", "-c", script]}]}}}}))

    def finished():
        job = json.loads(kc.kubectl("get", "job", name, "-n", ns, "-o", "json").stdout)
        for c in job.get("status", {}).get("conditions", []):
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                return c["type"]
        return None
    outcome = wait_for(f"job {ns}/{name}", finished, timeout, interval=2)
    log = kc.kubectl("logs", "-n", ns, f"job/{name}", timeout=120).stdout
    if outcome != "Complete":
        raise FlowError(f"job {ns}/{name} failed:\n{log[-6000:]}")
    return log


def working_sets(kc, pods_by_node: dict[str, dict]) -> dict[str, int]:
    """{node: working-set bytes} of the given pods, from each node's kubelet stats (the Summary
    API, through the API server's node proxy)."""
    out = {}
    for node, pod in pods_by_node.items():
        stats = json.loads(kc.kubectl("get", "--raw",
                                      f"/api/v1/nodes/{node}/proxy/stats/summary").stdout)
        for p in stats.get("pods", []):
            if p["podRef"]["name"] == pod["metadata"]["name"]:
                out[node] = p.get("memory", {}).get("workingSetBytes", 0)
    return out


def _stamp(rfc3339: str) -> float:
    return datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def start_to_ready_seconds(pod: dict) -> float:
    """From the pod's container start to its Ready condition (whole seconds: the API's
    timestamps have no fraction)."""
    started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    ready_at = next(c["lastTransitionTime"] for c in pod["status"]["conditions"]
                    if c["type"] == "Ready" and c["status"] == "True")
    return _stamp(ready_at) - _stamp(started)
