"""Caller identity wired by the operator (spec.access.trustedWriters / anonymous), end to end
against a real kube-apiserver with RBAC on.

The chart's RBAC (helm template) is applied and the real operator runs with its ServiceAccount's
token, so the chart must grant what identity needs (the agents' ServiceAccount, the
ClusterRoleBinding to the chart's agent ClusterRole). The agent runs the configuration the
operator rendered, with a token of the ServiceAccount the operator made for it: it lists its
node's pods and reads the issuer's keys with the chart's agent ClusterRole and nothing else.
Callers are pods registered on the agent's node (loopback addresses as pod IPs, as in
test_identity_kube.py) and pod-bound tokens the API server issues with the TokenRequest API for
audience buildcache.io, as the kubelet does for the projected volume the webhook adds. Each
hostile case performs the attack and asserts nothing was stored or served from it.

spec.access.attributionLimit and spec.replication.scopeMissTTL reach the rendered configuration
(and the agent, which counts a second namespace as "(other)" under a limit of 1); values outside
the agent's ranges are refused by the API server with the CRD's message.
"""

import json
import pathlib
import secrets
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from harness.controlplane import ControlPlane, ControlPlaneError, tools_bin_dir  # noqa: E402
from harness.cpfixture import wait_for  # noqa: E402
from harness.kubeidentity import CURL, add_pod, curl, pod_token  # noqa: E402
from harness.metrics import metric  # noqa: E402
from test_operator_reconcile import CRD, REPO, Operator  # noqa: E402

HELM = tools_bin_dir() / "helm"
CHART = REPO / "charts" / "buildcache"
RELEASE, OP_NS, NS, NODE = "bc", "buildcache-system", "ci-system", "node-1"
RELEASE_IP, TEAM_A_IP = "127.0.0.3", "127.0.0.2"
AGENT_SA = "system:serviceaccount:ci-system:buildcache-shared-agent"


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("cp"))
    try:
        plane.start()
    except ControlPlaneError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        plane.apply_crd(CRD)
        for ns, labels in ((OP_NS, {}), (NS, {}), ("team-a", {}),
                           ("release", {"buildcache.io/trust": "release"})):
            apply(plane, {"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": ns, "labels": labels}})
        yield plane
    finally:
        plane.stop()


def apply(cp, manifest):
    cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def get(cp, kind, name, ns=NS):
    proc = cp.kubectl("get", kind, name, *(["-n", ns] if ns else []), "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def kubeconfig_with_token(cp, path, token):
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def chart(cp, tmp_path_factory):
    """The chart's ServiceAccount and RBAC, applied; (operator SA, agent ClusterRole) names."""
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run scripts/build-test-tools", pytrace=False)
    home = tmp_path_factory.mktemp("helm-home")
    env = {"HELM_CACHE_HOME": str(home / "c"), "HELM_CONFIG_HOME": str(home / "g"),
           "HELM_DATA_HOME": str(home / "d"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(HELM), "template", RELEASE, str(CHART), "--namespace", OP_NS,
                          "--show-only", "templates/rbac.yaml",
                          "--show-only", "templates/serviceaccount.yaml"],
                         capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    for doc in docs:
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            doc["metadata"].setdefault("namespace", OP_NS)
        apply(cp, doc)
    [sa] = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    [role] = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith(
        "-agent")]
    return sa, role


@pytest.fixture(scope="module")
def operator(cp, chart, tmp_path_factory):
    sa, role = chart
    token = cp.kubectl("create", "token", sa, "-n", OP_NS, "--duration=1h").stdout.strip()
    kubeconfig = kubeconfig_with_token(cp, tmp_path_factory.mktemp("op") / "kubeconfig", token)
    op = Operator(kubeconfig, "--agent-cluster-role", role["metadata"]["name"])
    yield op
    op.stop()


def shared_cache(access):
    return {"apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
            "metadata": {"name": "shared", "namespace": NS},
            "spec": {"storage": {"maxSize": "1Gi"}, "ecosystems": {"httpcache": {}},
                     "replication": {"mutualTLS": False, "scopeMissTTL": SCOPE_MISS_TTL},
                     "agent": {"logLevel": "debug"}, "access": access}}


SCOPE_MISS_TTL = "1m30s"  # rendered in the agent's canonical form, 90s
IDENTITY_ACCESS = {"namespaceSelector": {}, "anonymous": "read", "attributionLimit": 1,
                   "trustedWriters": {"namespaceSelector": {"matchLabels": {
                       "buildcache.io/trust": "release"}}}}


def can_i(cp, verb, resource):
    proc = cp.kubectl("auth", "can-i", verb, resource, "--all-namespaces", f"--as={AGENT_SA}",
                      check=False)
    return proc.stdout.strip() == "yes"


@pytest.fixture(scope="module")
def rendered(cp, operator, chart):
    apply(cp, shared_cache(IDENTITY_ACCESS))
    wait_for("status.identity", lambda: (get(cp, "buildcache", "shared") or {}).get(
        "status", {}).get("identity") == "podAddress+token;anonymous=read")
    binding = wait_for("ClusterRoleBinding", lambda: get(
        cp, "clusterrolebinding", "buildcache-agent-ci-system-shared", ns=None))
    assert binding["roleRef"]["name"] == chart[1]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "buildcache-shared-agent",
                                    "namespace": NS}]
    ds = wait_for("DaemonSet", lambda: get(cp, "daemonset", "buildcache-shared"))
    pod = ds["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "buildcache-shared-agent"
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {
        "apiVersion": "v1", "fieldPath": "spec.nodeName"}}} in pod["containers"][0]["env"]
    return get(cp, "configmap", "buildcache-shared-config")["data"]["agent.yaml"]


def test_attribution_limit_and_scope_miss_ttl_are_rendered(rendered):
    config = yaml.safe_load(rendered)
    assert config["identity"]["attributionLimit"] == 1, rendered
    assert config["replication"]["scopeMissTtl"] == "90s", rendered


@pytest.mark.parametrize("patch, message", [
    ({"access": {"attributionLimit": 10001}},
     "spec.access.attributionLimit: Invalid value: 10001: spec.access.attributionLimit in body "
     "should be less than or equal to 10000"),
    ({"access": {"attributionLimit": -1}},
     "spec.access.attributionLimit: Invalid value: -1: spec.access.attributionLimit in body "
     "should be greater than or equal to 0"),
    ({"access": {"anonymous": None, "trustedWriters": None}},
     "access.attributionLimit counts callers by namespace, which needs caller identity"),
    ({"replication": {"scopeMissTTL": "-30s"}},
     "replication.scopeMissTTL must not be negative (0s asks every time)"),
    ({"replication": {"scopeMissTTL": "half a minute"}},
     "spec.replication.scopeMissTTL: Invalid value: \"string\": must be a duration such as 30s"),
], ids=["limit-too-large", "limit-negative", "limit-without-identity", "ttl-negative",
        "ttl-not-a-duration"])
def test_out_of_range_values_are_refused_by_the_api_server(cp, rendered, patch, message):
    before = get(cp, "buildcache", "shared")
    proc = cp.kubectl("patch", "buildcache", "shared", "-n", NS, "--type=merge",
                      "-p", json.dumps({"spec": patch}), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    after = get(cp, "buildcache", "shared")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]


def test_the_agents_may_watch_pods_and_read_issuer_keys_and_nothing_else(cp, rendered):
    assert can_i(cp, "list", "pods") and can_i(cp, "watch", "pods")
    assert can_i(cp, "create", "tokenreviews.authentication.k8s.io")  # the offline fallback
    # The attack surface of a compromised agent: no Secrets, no writes, no nodes, no pod exec.
    for verb, resource in (("get", "secrets"), ("list", "secrets"), ("create", "pods"),
                           ("delete", "pods"), ("get", "pods"), ("list", "nodes"),
                           ("create", "pods/exec"), ("create", "serviceaccounts/token")):
        assert not can_i(cp, verb, resource), (verb, resource)


@pytest.fixture(scope="module")
def agent_env(cp, rendered, tmp_path_factory):
    """The operator-rendered configuration with its container paths and ports made local, and a
    kubeconfig holding a token of the agents' ServiceAccount (what the pod's in-cluster
    configuration would give it)."""
    tmp = tmp_path_factory.mktemp("agent")
    add_pod(cp, "release", "main-1", RELEASE_IP, "builder")
    add_pod(cp, "team-a", "ci-1", TEAM_A_IP, "builder")
    assert "nodeName: $NODE_NAME" in rendered and "audience: buildcache.io" in rendered, rendered
    assert "- release\n" in rendered, rendered  # the namespace selector, resolved
    (tmp / "admin").mkdir()
    (tmp / "admin" / "token").write_text(secrets.token_hex(16))
    config = tmp / "agent.yaml"
    config.write_text(rendered.replace("/var/lib/buildcache", str(tmp / "node"))
                      .replace("/etc/buildcache-admin", str(tmp / "admin"))
                      .replace("0.0.0.0:8081", "127.0.0.1:0").replace("0.0.0.0:8082", "127.0.0.1:0"))
    token = cp.kubectl("create", "token", "buildcache-shared-agent", "-n", NS,
                       "--duration=1h").stdout.strip()
    kubeconfig = kubeconfig_with_token(cp, tmp / "kubeconfig", token)
    return config, {"NODE_NAME": NODE, "KUBECONFIG": str(kubeconfig)}


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_projected_tokens_and_pod_addresses_decide_the_scope(cp, agent_env, start_agent):
    config, env = agent_env
    agent = start_agent(config=config, env=env, args=("--advertise", "127.0.0.1:1"))
    watched = agent.wait_for_log("node pods watched")
    assert watched["synced"] is True and watched["node"] == NODE, watched

    key = f"{agent.url}/cache/ab/{secrets.token_hex(19)}"
    release = pod_token(cp, "release", "builder", "main-1")
    team_a = pod_token(cp, "team-a", "builder", "ci-1")
    # A trusted writer by the resolved namespace selector, from an address that is no pod's: the
    # token alone decides, and the entry goes into the trusted scope.
    assert curl(key, "127.0.0.1", data=b"release bytes", token=release)[0] == 201
    assert curl(key, "127.0.0.1") == (200, b"release bytes")

    # The attack: a pod of another namespace overwrites the trusted key, with its token and by its
    # address. Its write lands in its own scope; nobody else's read changes.
    assert curl(key, "127.0.0.1", data=b"poison", token=team_a)[0] == 201
    assert curl(key, TEAM_A_IP, data=b"poison 2")[0] == 201
    assert curl(key, "127.0.0.1") == (200, b"release bytes")
    assert curl(key, RELEASE_IP) == (200, b"release bytes")
    assert curl(key, "127.0.0.1", token=release) == (200, b"release bytes")
    assert curl(key, "127.0.0.1", token=team_a) == (200, b"poison 2")
    # Nor can it delete the trusted entry: a DELETE reaches its own scope only.
    curl(key, TEAM_A_IP, method="DELETE")
    curl(key, TEAM_A_IP, method="DELETE")
    assert curl(key, "127.0.0.1") == (200, b"release bytes")

    # Callers the agent cannot identify (anonymous: read) write nothing: 403, and no entry.
    fresh = f"{agent.url}/cache/{secrets.token_hex(20)}"
    assert curl(fresh, "127.0.0.1", data=b"anonymous")[0] == 403
    assert curl(fresh, "127.0.0.1")[0] == 404
    # A token for another audience is refused, never a downgrade to anonymous or the address.
    other = pod_token(cp, "release", "builder", "main-1", audience="not-buildcache")
    code, body = curl(fresh, RELEASE_IP, data=b"poison", token=other)
    assert code == 401 and b"not for audience buildcache.io" in body, (code, body)
    assert curl(fresh, "127.0.0.1", token=release)[0] == 404

    text = "\n".join(str(e) for e in agent.logs)
    for token in (release, team_a, other):
        assert token.split(".")[2] not in text
    subjects = {(e["subject"], e["trusted_writer"]) for e in agent.logs
                if e.get("msg") == "caller identified"}
    assert ("release/builder", True) in subjects and ("team-a/builder", False) in subjects
    # attributionLimit 1 (rendered from the spec): the first namespace to look something up keeps
    # its label, the second is counted as (other).
    m = agent.metrics()
    assert metric(m, "buildcache_scope_requests_total", scope="release") > 0, m
    assert metric(m, "buildcache_scope_requests_total", scope="(other)") > 0, m
    assert metric(m, "buildcache_scope_requests_total", scope="team-a") == 0, m


def trusted_namespaces(cp):
    rendered = get(cp, "configmap", "buildcache-shared-config")["data"]["agent.yaml"]
    identity = yaml.safe_load(rendered).get("identity") or {}
    return (identity.get("trustedWriters") or {}).get("namespaces") or []


def test_namespace_label_changes_reach_the_agents_promptly(cp, rendered):
    """The operator watches Namespaces: labelling one into trustedWriters.namespaceSelector (or
    creating one with the label) shows in the agents' rendered configuration within a bounded
    wait, far below the 10-minute resync; removing the label takes it out again."""
    assert trusted_namespaces(cp) == ["release"]
    cp.kubectl("label", "namespace", "team-a", "buildcache.io/trust=release")
    wait_for("team-a trusted", lambda: trusted_namespaces(cp) == ["release", "team-a"],
             timeout=90)
    apply(cp, {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "release-2", "labels": {"buildcache.io/trust": "release"}}})
    wait_for("release-2 trusted",
             lambda: trusted_namespaces(cp) == ["release", "release-2", "team-a"], timeout=90)
    # Other label changes of a namespace do not matter; the one that does, again.
    cp.kubectl("label", "namespace", "team-a", "unrelated=yes")
    cp.kubectl("label", "namespace", "team-a", "buildcache.io/trust-")
    cp.kubectl("label", "namespace", "release-2", "buildcache.io/trust=other", "--overwrite")
    wait_for("team-a and release-2 untrusted", lambda: trusted_namespaces(cp) == ["release"],
             timeout=90)


def test_turning_identity_off_removes_the_agents_rights(cp, rendered):
    apply(cp, shared_cache({"namespaceSelector": {}}))
    wait_for("status.identity off", lambda: get(cp, "buildcache", "shared")["status"].get(
        "identity") == "off")
    wait_for("ClusterRoleBinding deleted", lambda: get(
        cp, "clusterrolebinding", "buildcache-agent-ci-system-shared", ns=None) is None)
    assert not can_i(cp, "list", "pods")
    assert "identity" not in get(cp, "configmap", "buildcache-shared-config")["data"]["agent.yaml"]


def test_identity_objects_are_removed_with_the_buildcache(cp, operator):
    apply(cp, shared_cache(IDENTITY_ACCESS))
    wait_for("ClusterRoleBinding", lambda: get(
        cp, "clusterrolebinding", "buildcache-agent-ci-system-shared", ns=None))
    cp.kubectl("delete", "buildcache", "shared", "-n", NS, "--wait=false")
    # Cluster-scoped, so no owner reference can collect it: the finalizer deletes it.
    wait_for("ClusterRoleBinding deleted", lambda: get(
        cp, "clusterrolebinding", "buildcache-agent-ci-system-shared", ns=None) is None)
    wait_for("BuildCache gone", lambda: get(cp, "buildcache", "shared") is None)
