"""Wheel builds in builder pods, the operator's side, against a real kube-apiserver, etcd and
kube-controller-manager (garbage collector; no kubelet, so the test plays the kubelet by writing
pod status).

A BuildCache with a pypi builder gets the builders' NetworkPolicy and the agents' RoleBinding; a
WheelBuild created as an agent creates it becomes a locked-down pod that the API server's Pod
Security admission admits in a namespace enforcing `restricted`; the pod's progress is mirrored
into the WheelBuild's status; hostile WheelBuilds end Failed with no pod; the CRD refuses the
corpus in crds/testdata/wheelbuild-invalid with the messages operator/api's unit test expects;
finished WheelBuilds are garbage collected, and their pods with them.
"""

import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.request

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.cpfixture import running_control_plane, wait_for  # noqa: E402
from harness.jsonlog import JsonLog  # noqa: E402
from harness.metrics import metric, parse_metrics  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
OPERATOR = BIN_DIR / "buildcache-operator"
CRDS = REPO / "crds"
INVALID = sorted((CRDS / "testdata" / "wheelbuild-invalid").glob("*.yaml"))
NS = "wb-system"
OTHER_NS = "wb-other"
AGENT_IP = "10.244.1.7"
IMAGE = "registry.example.internal/ci/python:3.11-bookworm"
TOKEN = "Q" * 43
SHA = "4e5c1ba7e2b8c4b6a39cf5e19f6a8ef84e1a1c5e1b0e0d9a0a1ad55d8d3f3b2a"


def buildcache(name, ns=NS):
    return {"apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"storage": {"maxSize": "10Gi"},
                     "ecosystems": {"pypi": {
                         "upstream": "https://pypi.example.internal/simple",
                         "wheelHouse": True,
                         "builders": [{"name": "py311", "image": IMAGE, "python": "3.11",
                                       "libcVersion": "2.36",
                                       "resources": {"limits": {"memory": "1Gi"}}}],
                         "buildDeadline": "10m"}}}}


def wheelbuild(build_id, *, cache="ci", builder="py311", agent_url=f"http://{AGENT_IP}:8080",
               ns=NS):
    """As the agent creates it (contract: /work/prompts/podbuilds-contract.md)."""
    return {"apiVersion": "buildcache.io/v1alpha1", "kind": "WheelBuild",
            "metadata": {"name": f"{cache}-{build_id}", "namespace": ns,
                         "labels": {"buildcache.io/buildcache": cache,
                                    "buildcache.io/node": "node-1"}},
            "spec": {"buildCache": cache, "builder": builder, "buildId": build_id,
                     "sdist": {"project": "bitarray", "version": "2.9.2",
                               "filename": "bitarray-2.9.2.tar.gz", "sha256": SHA},
                     "agentURL": agent_url, "uploadToken": TOKEN, "deadlineSeconds": 900}}


# The agents' wheel-build ClusterRole as the chart ships it (charts/buildcache/templates/rbac.yaml),
# under the name the operator binds by default (--agent-cluster-role + "-wheelbuilds").
AGENT_ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
              "metadata": {"name": "buildcache-agent-wheelbuilds"},
              "rules": [{"apiGroups": ["buildcache.io"], "resources": ["wheelbuilds"],
                         "verbs": ["create", "get", "list", "watch", "delete"]}]}

# A stand-in for one agent pod of BuildCache ci (no kubelet runs one): the operator checks a
# WheelBuild's agentURL against the pod IPs of Running pods with the agents' labels.
FAKE_AGENT = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "buildcache-ci-fake", "namespace": NS,
                           "labels": {"app.kubernetes.io/name": "buildcache-agent",
                                      "app.kubernetes.io/instance": "ci"}},
              "spec": {"containers": [{"name": "agent", "image": "buildcache-agent:it"}]}}


def kget(cp, kind, name, ns=NS):
    proc = cp.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def apply(cp, obj):
    cp.kubectl("apply", "-f", "-", input=json.dumps(obj))


def set_status(cp, kind, name, status, ns=NS):
    cp.kubectl("patch", kind, name, "-n", ns, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": status}))


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    with running_control_plane(tmp_path_factory.mktemp("cp"), crd=CRDS / "buildcache.io_buildcaches.yaml",
                               namespaces=(NS, OTHER_NS), controller_manager=True) as plane:
        plane.apply_crd(CRDS / "buildcache.io_wheelbuilds.yaml", name="wheelbuilds.buildcache.io")
        apply(plane, AGENT_ROLE)
        apply(plane, FAKE_AGENT)
        set_status(plane, "pod", "buildcache-ci-fake",
                   {"phase": "Running", "podIP": AGENT_IP, "podIPs": [{"ip": AGENT_IP}]})
        # From here on the namespace admits only pods that pass the restricted standard.
        plane.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted",
                      "pod-security.kubernetes.io/enforce-version=latest")
        yield plane


@pytest.fixture(scope="module")
def operator(cp):
    if not OPERATOR.exists():
        pytest.fail(f"{OPERATOR} is missing: build the buildcache-operator target", pytrace=False)
    proc = subprocess.Popen(
        [str(OPERATOR), "--kubeconfig", str(cp.kubeconfig), "--agent-image", "buildcache-agent:it",
         "--metrics-addr", "127.0.0.1:0", "--metrics-scrape-interval", "0", "--log-level", "debug"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = JsonLog(proc)
    log.wait_for("wheel build controller synced", timeout=60)
    yield log
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cache(cp, operator):
    apply(cp, buildcache("ci"))
    wait_for("the builders' NetworkPolicy", lambda: kget(cp, "networkpolicy", "ci-wheel-builders"))
    return "ci"


def operator_metric(operator, name, **labels):
    """A sample of the operator's /metrics (0 when absent)."""
    address = operator.wait_for("metrics listening")["address"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{address}/metrics", timeout=10) as resp:
        return metric(parse_metrics(resp.read().decode()), name, **labels)


def phase(cp, name, ns=NS):
    wb = kget(cp, "wheelbuild", name, ns) or {}
    return wb.get("status", {}).get("phase")


def test_buildcache_with_builders_gets_policy_rolebinding_and_agent_identity(cp, cache):
    policy = kget(cp, "networkpolicy", "ci-wheel-builders")["spec"]
    assert policy["podSelector"] == {"matchLabels": {
        "app.kubernetes.io/name": "buildcache", "app.kubernetes.io/component": "wheel-builder",
        "buildcache.io/buildcache": "ci"}}
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy.get("ingress", []) == []
    assert policy["egress"] == [{
        "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "buildcache-agent",
                                                "app.kubernetes.io/instance": "ci"}}}],
        "ports": [{"protocol": "TCP", "port": 8080}]}]
    binding = wait_for("RoleBinding", lambda: kget(cp, "rolebinding", "buildcache-ci-agent-wheelbuilds"))
    assert binding["roleRef"]["name"] == "buildcache-agent-wheelbuilds"
    pod = wait_for("DaemonSet", lambda: kget(cp, "daemonset", "buildcache-ci"))["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "buildcache-ci-agent"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"apiVersion": "v1",
                                                              "fieldPath": "metadata.namespace"}}
    # The agents may create WheelBuilds in their own namespace, and nothing new besides.
    sa = f"system:serviceaccount:{NS}:buildcache-ci-agent"

    def can(*args):
        return cp.kubectl("auth", "can-i", "--as", sa, *args, check=False).stdout.strip()
    assert can("create", "wheelbuilds.buildcache.io", "-n", NS) == "yes"
    assert can("delete", "wheelbuilds.buildcache.io", "-n", NS) == "yes"
    assert can("create", "wheelbuilds.buildcache.io", "-n", OTHER_NS) == "no"
    assert can("create", "pods", "-n", NS) == "no"
    assert can("get", "secrets", "-n", NS) == "no"
    assert can("patch", "wheelbuilds.buildcache.io", "--subresource=status", "-n", NS) == "no"


def test_namespace_really_enforces_restricted(cp):
    # The control for the next test: a root pod is refused here.
    root = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root", "namespace": NS},
            "spec": {"containers": [{"name": "c", "image": IMAGE,
                                     "securityContext": {"runAsUser": 0}}]}}
    proc = cp.kubectl("apply", "-f", "-", input=json.dumps(root), check=False)
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr


def test_wheelbuild_becomes_a_locked_down_pod_and_its_status_follows(cp, cache, operator):
    apply(cp, wheelbuild("0123456789abcdef"))
    name = "ci-0123456789abcdef"
    wait_for("Pending", lambda: phase(cp, name) == "Pending", timeout=30)
    pod = kget(cp, "pod", name)  # created under enforce=restricted: the admission accepted it
    assert pod is not None
    wb = kget(cp, "wheelbuild", name)
    assert wb["status"]["podName"] == name
    assert pod["metadata"]["ownerReferences"] == [{
        "apiVersion": "buildcache.io/v1alpha1", "kind": "WheelBuild", "name": name,
        "uid": wb["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "buildcache", "app.kubernetes.io/component": "wheel-builder",
        "buildcache.io/buildcache": "ci", "buildcache.io/wheelbuild": "0123456789abcdef"}
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 600  # capped at buildDeadline 10m
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert spec["securityContext"]["runAsUser"] == 65534
    assert spec["securityContext"]["runAsGroup"] == 65534
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # No token volume was added (ServiceAccount admission would add one if automount were on).
    assert [v["name"] for v in spec["volumes"]] == ["tmp"]
    assert spec["volumes"][0]["emptyDir"] == {"sizeLimit": "4Gi"}
    [c] = spec["containers"]
    assert c["image"] == IMAGE
    assert c["command"][:2] == ["python3", "-c"]
    assert "/pypi/builds/'+e['BUILDCACHE_BUILD_ID']+'/script'" in c["command"][2]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BUILDCACHE_AGENT_URL"] == f"http://{AGENT_IP}:8080"
    assert env["BUILDCACHE_BUILD_ID"] == "0123456789abcdef"
    assert env["BUILDCACHE_BUILD_TOKEN"] == TOKEN
    assert env["PIP_DISABLE_PIP_VERSION_CHECK"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "4Gi"}

    # The kubelet's side, played here: running, then finished.
    set_status(cp, "pod", name, {"phase": "Running", "startTime": "2026-12-07T03:00:00Z"})
    wait_for("Running", lambda: phase(cp, name) == "Running", timeout=30)
    assert kget(cp, "wheelbuild", name)["status"]["startTime"] == "2026-12-07T03:00:00Z"
    set_status(cp, "pod", name, {"phase": "Succeeded"})
    wait_for("Succeeded", lambda: phase(cp, name) == "Succeeded", timeout=30)
    assert kget(cp, "wheelbuild", name)["status"]["completionTime"]
    events = cp.kubectl("get", "events.events.k8s.io", "-n", NS, "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]
               if e["regarding"].get("name") == name}
    assert {"PodCreated", "Running", "Succeeded"} <= reasons, reasons
    # Counted after the status write the test waited for: wait for the count, bounded.
    wait_for("a successful WheelBuild reconcile counted", lambda: operator_metric(
        operator, "buildcache_operator_wheelbuild_reconciles_total", result="success") >= 3)


def test_oom_killed_build_is_failed_with_the_reason(cp, cache):
    name = "ci-00000000000000aa"
    apply(cp, wheelbuild("00000000000000aa"))
    wait_for("pod", lambda: kget(cp, "pod", name), timeout=30)
    set_status(cp, "pod", name, {"phase": "Failed", "containerStatuses": [{
        "name": "build", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]})
    wait_for("Failed", lambda: phase(cp, name) == "Failed", timeout=30)
    assert kget(cp, "wheelbuild", name)["status"]["message"] == \
        "builder container OOMKilled (exit code 137)"


@pytest.mark.parametrize("build_id,changes,message", [
    # An attacker with create on wheelbuilds points a build (and its token) at another host.
    ("00000000000000b1", {"agent_url": "http://10.0.0.66:8080"},
     "Refused: agentURL http://10.0.0.66:8080 is not http://<pod IP>:8080 of a running agent pod "
     "of BuildCache \"ci\""),
    ("00000000000000b2", {"agent_url": f"http://{AGENT_IP}:9999"}, "is not http://<pod IP>:8080"),
    ("00000000000000b3", {"builder": "py399"}, "Refused: BuildCache \"ci\" has no pypi builder \"py399\""),
    # Another namespace's BuildCache: looked up in the WheelBuild's own namespace only.
    ("00000000000000b4", {"cache": "theirs"},
     f"Refused: BuildCache \"theirs\" not found in namespace {NS}"),
])
def test_hostile_wheelbuild_fails_without_a_pod(cp, cache, operator, build_id, changes, message):
    refused = operator_metric(operator, "buildcache_operator_wheelbuild_reconciles_total",
                              result="invalid")
    if changes.get("cache") == "theirs":
        apply(cp, buildcache("theirs", OTHER_NS))
    wb = wheelbuild(build_id, **changes)
    name = wb["metadata"]["name"]
    apply(cp, wb)
    wait_for("Failed", lambda: phase(cp, name) == "Failed", timeout=30)
    status = kget(cp, "wheelbuild", name)["status"]
    assert message in status["message"], status
    assert "podName" not in status
    assert kget(cp, "pod", name) is None
    events = json.loads(cp.kubectl("get", "events.events.k8s.io", "-n", NS, "-o", "json").stdout)
    assert any(e["regarding"].get("name") == name and e["type"] == "Warning" and
               e["reason"] == "Failed" for e in events["items"])
    wait_for("the refusal counted", lambda: operator_metric(
        operator, "buildcache_operator_wheelbuild_reconciles_total", result="invalid") > refused)


def expectations(path):
    return [line[len("# expect: "):] for line in path.read_text().splitlines()
            if line.startswith("# expect: ")]


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_crd_rejects_the_invalid_corpus(cp, path):
    wanted = expectations(path)
    assert wanted
    proc = cp.kubectl("create", "-n", NS, "-f", str(path), check=False)
    assert proc.returncode != 0, f"{path.name} was accepted:\n{proc.stdout}"
    for text in wanted:
        assert text in proc.stderr, f"{path.name}: wanted {text!r} in:\n{proc.stderr}"


def test_invalid_corpus_covers_every_rule():
    crd = (CRDS / "buildcache.io_wheelbuilds.yaml").read_text()
    messages = re.findall(r"^\s+message: (.+)$", crd, re.M)
    folded = re.findall(r"message: >-\n\s+(.+)\n", crd)
    expected = "\n".join(line for p in INVALID for line in expectations(p))
    uncovered = [m for m in [m for m in messages if m != ">-"] + folded
                 if " ".join(m.split()[:4]) not in expected and "immutable" not in m]
    assert not uncovered, uncovered


def test_spec_is_immutable(cp, cache):
    proc = cp.kubectl("patch", "wheelbuild", "ci-0123456789abcdef", "-n", NS, "--type=merge",
                      "-p", json.dumps({"spec": {"builder": "py312"}}), check=False)
    assert proc.returncode != 0 and "spec is immutable" in proc.stderr, proc.stderr


def test_finished_wheelbuilds_are_collected_with_their_pods(cp, cache):
    name = "ci-0123456789abcdef"
    assert kget(cp, "pod", name)
    long_ago = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2))
    set_status(cp, "wheelbuild", name, {"completionTime": long_ago.strftime("%Y-%m-%dT%H:%M:%SZ")})
    wait_for("WheelBuild collected", lambda: kget(cp, "wheelbuild", name) is None, timeout=30)
    # The garbage collector deletes the pod it owned.
    wait_for("pod collected", lambda: kget(cp, "pod", name) is None, timeout=60)


def test_builders_removed_removes_policy_and_rolebinding(cp, cache):
    cp.kubectl("patch", "buildcache", "ci", "-n", NS, "--type=json", "--patch=" + json.dumps(
        [{"op": "remove", "path": "/spec/ecosystems/pypi/builders"}]))
    wait_for("policy gone", lambda: kget(cp, "networkpolicy", "ci-wheel-builders") is None)
    wait_for("binding gone", lambda: kget(cp, "rolebinding", "buildcache-ci-agent-wheelbuilds") is None)
