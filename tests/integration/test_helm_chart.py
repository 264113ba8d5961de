"""The Helm chart (charts/buildcache) with the real helm, against a real kube-apiserver.

Rendering tests run `helm lint` and `helm template` with several value sets and check the objects.
Cluster tests, in file order, share one control plane (etcd, kube-apiserver with RBAC,
kube-controller-manager for garbage collection; no kubelet, so pods stay Pending):

1. `helm install`, and the objects it made;
2. the real buildcache-operator, run here with a token of the chart's ServiceAccount, reconciles a
   BuildCache completely (so the chart's RBAC grants enough), and requests outside that RBAC are
   refused (so it does not grant too much);
3. `helm upgrade` changes a value and keeps what the operator wrote (certificate, caBundle);
4. `helm uninstall` leaves none of the chart's objects; the CRD only when crds.keep is on.
"""

import base64
import http.client
import json
import os
import pathlib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.controlplane import tools_bin_dir  # noqa: E402
from harness.cpfixture import control_plane_fixture, wait_for  # noqa: E402
from harness.jsonlog import JsonLog  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "buildcache"
CRD_FILES = ["buildcache.io_buildcaches.yaml", "buildcache.io_wheelbuilds.yaml"]
REPO_CRD = REPO / "crds" / CRD_FILES[0]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
OPERATOR = BIN_DIR / "buildcache-operator"
HELM = tools_bin_dir() / "helm"

RELEASE = "bc"
NS = "buildcache-system"
FULL = "bc-buildcache"  # the chart's name prefix for release "bc"
SA = FULL
CI_NS = "ci-system"
# The cluster tests install with the operator's rights on agent objects narrowed to these
# namespaces (a Role and RoleBinding in each), and prove both that this is enough and that
# everything outside is forbidden.
MANAGED = [CI_NS, NS]
INSTALL_VALUES = ["--set", "rbac.buildCacheNamespaces={" + ",".join(MANAGED) + "}"]
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory):
    """Helm's cache, config and data in a throwaway directory, not the user's."""
    home = tmp_path_factory.mktemp("helm-home")
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}


def helm(env, *args, check=True):
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run scripts/build-test-tools", pytrace=False)
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def render(env, *args):
    """The chart rendered for release RELEASE in NS: a list of objects."""
    out = helm(env, "template", RELEASE, str(CHART), "--namespace", NS, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and
             (name is None or o["metadata"]["name"] == name)]
    return found


def one(objects, kind, name=None):
    found = find(objects, kind, name)
    assert len(found) == 1, f"want one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


# ---- rendering ------------------------------------------------------------------------------


def test_lint_is_clean_in_strict_mode(helm_env):
    for values in ([], ["--set", "webhook.enabled=false"], ["--set", "sample.enabled=true"],
                   ["--set", "crds.install=false", "--set", "metrics.serviceMonitor.enabled=true"]):
        proc = helm(helm_env, "lint", "--strict", str(CHART), *values)
        assert "0 chart(s) failed" in proc.stdout, proc.stdout


def test_chart_crd_is_the_repository_crd():
    # Helm reads only files inside the chart, so the chart carries copies; they must not drift.
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == CRD_FILES
    for name in CRD_FILES:
        repo, chart = REPO / "crds" / name, CHART / "files" / "crds" / name
        assert chart.read_bytes() == repo.read_bytes(), f"{chart} differs from {repo}: cp {repo} {chart}"


def test_rendered_crd_is_the_repository_crd_plus_labels_and_keep_policy(helm_env):
    objects = render(helm_env)
    for name in CRD_FILES:
        want = yaml.safe_load((REPO / "crds" / name).read_text())
        crd = one(objects, "CustomResourceDefinition", want["metadata"]["name"])
        assert crd["spec"] == want["spec"]  # the schema survives Helm's YAML round trip unchanged
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert crd["metadata"]["labels"]["app.kubernetes.io/component"] == "crd"

    for crd in find(render(helm_env, "--set", "crds.keep=false"), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
    assert find(render(helm_env, "--set", "crds.install=false"), "CustomResourceDefinition") == []


def test_defaults_render_the_operator_rbac_and_webhook(helm_env):
    objects = render(helm_env)
    assert {o["kind"] for o in objects} == {
        "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
        "RoleBinding", "Deployment", "Service", "Secret", "Lease", "MutatingWebhookConfiguration",
        "ConfigMap"}
    for o in objects:
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, o["metadata"]
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", o["metadata"]

    deploy = one(objects, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SA
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = container(objects)
    assert c["image"] == f"buildcache/operator:{APP_VERSION}"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    args = c["args"]
    for arg in (f"--agent-image=buildcache/agent:{APP_VERSION}",
                "--allowed-agent-images=buildcache/agent", "--host-path-root=/var/lib/buildcache",
                "--leader-elect=true",
                f"--leader-election-namespace={NS}", f"--leader-election-id={FULL}-operator",
                "--metrics-addr=0.0.0.0:8080", "--webhook-listen=0.0.0.0:9443",
                f"--webhook-service={FULL}-webhook", f"--webhook-configuration={FULL}",
                f"--webhook-secret={FULL}-webhook-tls"):
        assert arg in args, args
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "webhook": 9443}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}

    svc = one(objects, "Service", f"{FULL}-webhook")
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "webhook",
                                     "protocol": "TCP"}]
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]

    mwc = one(objects, "MutatingWebhookConfiguration", FULL)
    [hook] = mwc["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "NoneOnDryRun"  # Events, never on dry runs
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"]["service"] == {"name": f"{FULL}-webhook", "namespace": NS,
                                               "path": "/mutate-pods", "port": 443}
    assert "caBundle" not in hook["clientConfig"]  # the operator owns it
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NS, "kube-system"]}]
    assert "buildcache.io/cache" in hook["matchConditions"][0]["expression"]

    lease = one(objects, "Lease", f"{FULL}-operator")
    assert "spec" not in lease  # the operator's to write
    secret = one(objects, "Secret", f"{FULL}-webhook-tls")
    assert "data" not in secret  # anything set here would be reset by every upgrade
    assert find(objects, "BuildCache") == []


def test_dashboard_configmap_carries_every_dashboard_file(helm_env):
    files = sorted((CHART / "dashboards").glob("*.json")) if (CHART / "dashboards").is_dir() else []
    maps = find(render(helm_env), "ConfigMap", f"{FULL}-dashboards")
    if not files:
        assert maps == []  # nothing to ship yet: nothing rendered
        return
    [cm] = maps
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert sorted(cm["data"]) == [f.name for f in files]
    for f in files:
        assert json.loads(cm["data"][f.name]) == json.loads(f.read_text())
    assert find(render(helm_env, "--set", "dashboard.enabled=false"), "ConfigMap") == []


def test_webhook_off_renders_no_webhook_and_grants_no_webhook_rights(helm_env):
    objects = render(helm_env, "--set", "webhook.enabled=false")
    assert find(objects, "MutatingWebhookConfiguration") == []
    assert find(objects, "Secret") == []
    assert find(objects, "Service", f"{FULL}-webhook") == []
    assert not [a for a in container(objects)["args"] if a.startswith("--webhook")]
    assert [p["name"] for p in container(objects)["ports"]] == ["metrics"]
    rules = one(objects, "ClusterRole", f"{FULL}-operator")["rules"] + one(objects, "Role")["rules"]
    resources = {r for rule in rules for r in rule["resources"]}
    assert "mutatingwebhookconfigurations" not in resources
    # Secrets only for the agents' peer certificates, which do not depend on the webhook.
    assert not [r for r in one(objects, "Role")["rules"] if "secrets" in r["resources"]]


def test_network_policy_admits_the_webhook_port_only_from_the_api_server(helm_env):
    assert find(render(helm_env), "NetworkPolicy") == []  # off by default
    # Enabled without saying where the API server calls from: refused, not an unreachable webhook.
    proc = helm(helm_env, "template", RELEASE, str(CHART), "--set", "networkPolicy.enabled=true",
                check=False)
    assert proc.returncode != 0 and "networkPolicy.apiServer" in proc.stderr, proc.stderr
    objects = render(helm_env, "--set", "networkPolicy.enabled=true", "--set-json",
                     'networkPolicy.apiServer=[{"ipBlock":{"cidr":"10.0.0.10/32"}}]', "--set-json",
                     'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":'
                     '{"kubernetes.io/metadata.name":"monitoring"}}}]')
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == \
        one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    webhook_rule, metrics_rule = policy["spec"]["ingress"]
    assert webhook_rule == {"ports": [{"protocol": "TCP", "port": 9443}],
                            "from": [{"ipBlock": {"cidr": "10.0.0.10/32"}}]}
    assert metrics_rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert metrics_rule["from"][0]["namespaceSelector"]["matchLabels"] == \
        {"kubernetes.io/metadata.name": "monitoring"}
    # Without the webhook, only the metrics port is open.
    objects = render(helm_env, "--set", "networkPolicy.enabled=true", "--set", "webhook.enabled=false")
    [rule] = one(objects, "NetworkPolicy")["spec"]["ingress"]
    assert rule == {"ports": [{"protocol": "TCP", "port": 8080}]}


def test_monitors_render_only_when_the_cluster_serves_their_api(helm_env):
    on = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true"]
    without_api = render(helm_env, *on)
    assert find(without_api, "ServiceMonitor") == [] and find(without_api, "PodMonitor") == []
    assert find(without_api, "PrometheusRule") == []

    objects = render(helm_env, *on, "--set", "metrics.serviceMonitor.labels.release=prom",
                     "--api-versions", "monitoring.coreos.com/v1")
    sm = one(objects, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    metrics_svc = one(objects, "Service", f"{FULL}-operator-metrics")
    assert all(metrics_svc["metadata"]["labels"].get(k) == v
               for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["endpoints"][0]["port"] == metrics_svc["spec"]["ports"][0]["name"]
    pm = one(objects, "PodMonitor")
    # The labels the operator puts on agent pods (operator/testdata goldens).
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "buildcache-agent",
        "app.kubernetes.io/managed-by": "buildcache-operator"}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    rules_dir = CHART / "rules"
    if rules_dir.is_dir() and list(rules_dir.glob("*.yaml")):
        groups = [g for f in sorted(rules_dir.glob("*.yaml"))
                  for g in yaml.safe_load(f.read_text())["groups"]]
        assert one(objects, "PrometheusRule")["spec"]["groups"] == groups


def test_sample_buildcache_is_optional(helm_env, tmp_path):
    # Helm merges maps into the defaults; null removes a default key.
    values = tmp_path / "sample.yaml"
    values.write_text(yaml.safe_dump({"sample": {"enabled": True, "name": "demo", "spec": {
        "storage": {"maxSize": "1Gi"}, "ecosystems": {"pypi": None, "httpcache": {}},
        "directories": None}}}))
    bc = one(render(helm_env, "-f", str(values)), "BuildCache", "demo")
    assert bc["apiVersion"] == "buildcache.io/v1alpha1"
    assert bc["metadata"]["namespace"] == NS
    assert bc["spec"] == {"storage": {"maxSize": "1Gi"}, "ecosystems": {"httpcache": {}}}


@pytest.mark.parametrize("args, error", [
    (["--set", "operator.replicas=two"], "/operator/replicas"),
    (["--set-string", "webhook.timeoutSeconds=5"], "/webhook/timeoutSeconds"),
    (["--set", "webhook.timeoutSeconds=60"], "/webhook/timeoutSeconds"),
    (["--set", "webhook.failurePolicy=Sometimes"], "/webhook/failurePolicy"),
    (["--set-string", "crds.keep=yes"], "/crds/keep"),
    (["--set", "operator.logLevel=loud"], "/operator/logLevel"),
    (["--set", "operator.replicaCount=2"], "replicaCount"),  # a typo is not silently ignored
    (["--set-json", 'operator.nodeSelector={"zone":1}'], "/operator/nodeSelector/zone"),
    (["--set", "sample.name=Not_A_Name"], "/sample/name"),
])
def test_schema_rejects_wrong_values(helm_env, args, error):
    proc = helm(helm_env, "template", RELEASE, str(CHART), *args, check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert "schema" in proc.stderr and error in proc.stderr, proc.stderr


def test_several_replicas_without_leader_election_are_refused(helm_env):
    proc = helm(helm_env, "template", RELEASE, str(CHART), "--set",
                "operator.leaderElection.enabled=false", check=False)
    assert proc.returncode != 0 and "leaderElection" in proc.stderr, proc.stderr
    objects = render(helm_env, "--set", "operator.leaderElection.enabled=false",
                     "--set", "operator.replicas=1")
    assert "--leader-elect=false" in container(objects)["args"]
    assert find(objects, "Lease") == []
    assert not [r for r in one(objects, "Role")["rules"] if "leases" in r["resources"]]


def test_scheduling_and_selector_values_reach_the_objects(helm_env, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "operator": {"nodeSelector": {"pool": "system"},
                     "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                     "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                         {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}},
                     "imagePullSecrets": ["regcred"], "extraArgs": ["--workers=4"],
                     "image": {"repository": "registry.example.internal/bc/operator", "tag": "1.2.3"}},
        "agent": {"image": {"repository": "registry.example.internal/bc/agent"}},
        "webhook": {"namespaceSelector": {
            "matchLabels": {"ci": "true"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["build"]}]}}}))
    objects = render(helm_env, "-f", str(values))
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert "podAntiAffinity" in pod["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    c = container(objects)
    assert c["image"] == "registry.example.internal/bc/operator:1.2.3"
    assert f"--agent-image=registry.example.internal/bc/agent:{APP_VERSION}" in c["args"]
    assert c["args"][-1] == "--workers=4"
    selector = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]
    assert selector == {"matchLabels": {"ci": "true"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["build"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NS, "kube-system"]}]}


def test_buildcache_namespaces_move_the_agent_rights_into_roles(helm_env):
    default_rules = one(render(helm_env), "ClusterRole", f"{FULL}-operator")["rules"]
    assert [r for r in default_rules if "daemonsets" in r["resources"]], default_rules
    objects = render(helm_env, "--set", "rbac.buildCacheNamespaces={team-a,team-b}",
                     "--set", "agent.allowedImages={registry.example.internal/bc/agent}",
                     "--set", "agent.hostPathRoot=/srv/buildcache",
                     "--set", "agent.goSumdbName=sum.example.internal")
    agent_objects = {"daemonsets", "services", "configmaps", "secrets", "networkpolicies",
                     "serviceaccounts", "pods", "rolebindings"}
    cluster_rules = one(objects, "ClusterRole", f"{FULL}-operator")["rules"]
    for rule in cluster_rules:
        assert not agent_objects & set(rule["resources"]), rule
    roles = {o["metadata"]["namespace"]: o for o in find(objects, "Role", f"{FULL}-operator-agents")}
    assert set(roles) == {"team-a", "team-b"}
    for ns, role in roles.items():
        assert {r for rule in role["rules"] for r in rule["resources"]} == agent_objects
        binding = one([o for o in objects if o["metadata"].get("namespace") == ns],
                      "RoleBinding", f"{FULL}-operator-agents")
        assert binding["roleRef"]["name"] == f"{FULL}-operator-agents"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]
    args = container(objects)["args"]
    for arg in ("--buildcache-namespaces=team-a,team-b",
                "--allowed-agent-images=registry.example.internal/bc/agent",
                "--host-path-root=/srv/buildcache", "--go-sumdb-name=sum.example.internal"):
        assert arg in args, args


def test_rbac_has_no_wildcards_and_cannot_enumerate_secrets(helm_env):
    objects = render(helm_env)
    cluster_rules = one(objects, "ClusterRole", f"{FULL}-operator")["rules"]
    for rule in cluster_rules + one(objects, "Role")["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert "escalate" not in rule["verbs"], rule
        # bind on the agents' ClusterRoles only (caller identity: operator/controllers/
        # agent_identity; wheel builds: operator/controllers/wheel_build_pod).
        if "bind" in rule["verbs"]:
            assert rule == {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                            "resourceNames": [f"{FULL}-agent", f"{FULL}-agent-wheelbuilds"],
                            "verbs": ["bind"]}, rule
    # Pods (builder pods, and reading agent pods) only with the other agent objects: in the
    # BuildCache namespaces' Roles when rbac.buildCacheNamespaces is set.
    [pods] = [r for r in cluster_rules if "pods" in r["resources"]]
    assert pods["resources"] == ["pods"] and "update" not in pods["verbs"], pods
    narrowed = render(helm_env, "--set", "rbac.buildCacheNamespaces={team-a}")
    assert not [r for r in one(narrowed, "ClusterRole", f"{FULL}-operator")["rules"]
                if "pods" in r["resources"]]
    # The agents' wheel-build role: WheelBuilds and nothing else.
    assert one(objects, "ClusterRole", f"{FULL}-agent-wheelbuilds")["rules"] == [
        {"apiGroups": ["buildcache.io"], "resources": ["wheelbuilds"],
         "verbs": ["create", "get", "list", "watch", "delete"]}]
    # The agents' ClusterRole: their node's pods (list/watch), the issuer's keys and the
    # TokenReview fallback, nothing else.
    agent = one(objects, "ClusterRole", f"{FULL}-agent")
    assert agent["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"nonResourceURLs": ["/.well-known/openid-configuration", "/openid/v1/jwks"],
         "verbs": ["get"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
         "verbs": ["create"]}]
    # The per-BuildCache peer certificates (operator/controllers/peer_tls) live in each
    # BuildCache's namespace: secrets by name, never list or watch (no enumerating them).
    [peer_secrets] = [r for r in cluster_rules if "secrets" in r["resources"]]
    assert sorted(peer_secrets["verbs"]) == ["create", "delete", "get", "patch"]
    [mwc_rule] = [r for r in cluster_rules if "mutatingwebhookconfigurations" in r["resources"]]
    assert mwc_rule["resourceNames"] == [FULL]
    [secret_rule] = [r for r in one(objects, "Role")["rules"] if "secrets" in r["resources"]]
    assert secret_rule["resourceNames"] == [f"{FULL}-webhook-tls"]
    assert "create" not in secret_rule["verbs"] and "list" not in secret_rule["verbs"]


# ---- on a real API server -------------------------------------------------------------------


# A node for the DaemonSet controller to count (no kubelet runs on it).
cp = control_plane_fixture(controller_manager=True, namespaces=(CI_NS,), objects=(
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}},))


def kget(cp, kind, name, ns=None):
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    proc = cp.kubectl(*args, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def chart_objects(cp):
    """Every object labelled as this release's, namespaced or not: "kind/name" strings."""
    sel = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/managed-by=Helm"
    names = cp.kubectl("get", "-A", "-l", sel, "-o", "name",
                       "serviceaccounts,secrets,configmaps,services,deployments,replicasets,pods,"
                       "leases,roles,rolebindings,clusterroles,clusterrolebindings,"
                       "mutatingwebhookconfigurations,customresourcedefinitions").stdout.split()
    if kget(cp, "crd", "buildcaches.buildcache.io"):
        names += cp.kubectl("get", "buildcaches", "-A", "-l", sel, "-o", "name").stdout.split()
    return sorted(names)


def install(cp, env, *values, action="install"):
    values = (*INSTALL_VALUES, *values) if action == "install" else values
    return helm(env, action, RELEASE, str(CHART), "--namespace", NS, "--create-namespace",
                "--kubeconfig", str(cp.kubeconfig), *values)


def test_install_creates_the_chart_objects(cp, helm_env):
    # Monitors asked for on a cluster without the Prometheus operator: skipped, and NOTES says so.
    notes = install(cp, helm_env, "--set", "metrics.serviceMonitor.enabled=true").stdout
    assert "no monitoring.coreos.com/v1 API" in notes, notes
    crd = wait_for("CRD established", lambda: (c := kget(cp, "crd", "buildcaches.buildcache.io"))
                   and any(x["type"] == "Established" and x["status"] == "True"
                           for x in c.get("status", {}).get("conditions", [])) and c)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"]["versions"] == yaml.safe_load(REPO_CRD.read_text())["spec"]["versions"]
    deploy = kget(cp, "deployment", f"{FULL}-operator", NS)
    assert deploy["spec"]["replicas"] == 2
    assert kget(cp, "serviceaccount", SA, NS)
    assert kget(cp, "clusterrolebinding", f"{FULL}-operator")["subjects"] == [
        {"kind": "ServiceAccount", "name": SA, "namespace": NS}]
    assert kget(cp, "rolebinding", f"{FULL}-operator", NS)
    assert kget(cp, "lease", f"{FULL}-operator", NS)
    assert kget(cp, "service", f"{FULL}-webhook", NS)["spec"]["ports"][0]["port"] == 443
    mwc = kget(cp, "mutatingwebhookconfiguration", FULL)
    assert mwc["webhooks"][0]["failurePolicy"] == "Ignore"
    assert not mwc["webhooks"][0]["clientConfig"].get("caBundle")
    # The API server compiled the CEL match condition (it would have refused the object).
    assert mwc["webhooks"][0]["matchConditions"][0]["name"] == "has-buildcache-annotation"
    status = json.loads(helm(helm_env, "status", RELEASE, "-n", NS, "-o", "json",
                             "--kubeconfig", str(cp.kubeconfig)).stdout)
    assert status["info"]["status"] == "deployed"


def sa_kubeconfig(cp, path, token):
    cfg = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "cp", "cluster": {
               "server": cp.url, "certificate-authority-data":
                   base64.b64encode(cp.ca_file.read_bytes()).decode()}}],
           "users": [{"name": "sa", "user": {"token": token}}],
           "contexts": [{"name": "sa", "context": {"cluster": "cp", "user": "sa", "namespace": NS}}],
           "current-context": "sa"}
    path.write_text(json.dumps(cfg))
    return path


class Operator:
    """The real buildcache-operator; its JSON log lines are collected in .logs."""

    def __init__(self, kubeconfig, *args):
        if not OPERATOR.exists():
            pytest.fail(f"{OPERATOR} is missing: build the buildcache-operator target",
                        pytrace=False)
        self.proc = subprocess.Popen(
            [str(OPERATOR), "--kubeconfig", str(kubeconfig), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._log = JsonLog(self.proc)
        self.logs = self._log.logs
        self.logged = self._log.logged

    def denied(self):
        """Log lines that report a refused request."""
        return [e for e in list(self.logs) if "forbidden" in json.dumps(e).lower() or
                " 403" in json.dumps(e)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.join()
        return self.proc.returncode


@pytest.fixture(scope="module")
def sa_token(cp):
    return cp.kubectl("create", "token", SA, "-n", NS, "--duration=2h").stdout.strip()


@pytest.fixture(scope="module")
def operator(cp, sa_token, helm_env, tmp_path_factory):
    """The operator with the flags the chart's Deployment passes, but the ServiceAccount's token."""
    kubeconfig = sa_kubeconfig(cp, tmp_path_factory.mktemp("sa") / "kubeconfig", sa_token)
    args = [a for a in container(render(helm_env, *INSTALL_VALUES))["args"]
            if not a.startswith(("--metrics-addr", "--webhook-listen"))]
    op = Operator(kubeconfig, *args, "--metrics-addr=127.0.0.1:0",
                  "--webhook-listen=127.0.0.1:0", "--log-level=debug")
    yield op
    op.stop()


def buildcache(name):
    return {"apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
            "metadata": {"name": name, "namespace": CI_NS},
            "spec": {"storage": {"maxSize": "10Gi"},
                     "ecosystems": {"pypi": {"upstream": "https://pypi.example.internal/simple"}},
                     "directories": [{"name": "pip", "mountPath": "/root/.cache/pip",
                                      "maxSize": "1Gi"}],
                     "access": {"namespaceSelector": {"matchLabels": {"team": "ci"}}}}}


def condition(obj, type_):
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None


def test_operator_with_the_chart_rbac_reconciles_completely(cp, operator):
    # The webhook side: the operator filled the chart's empty Secret and the caBundle.
    secret = wait_for("webhook certificate in the chart's Secret", lambda: (
        s := kget(cp, "secret", f"{FULL}-webhook-tls", NS)) and s.get("data", {}).get("tls.crt")
        and s)
    assert secret["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE  # still Helm's
    wait_for("caBundle", lambda: kget(cp, "mutatingwebhookconfiguration", FULL)
             ["webhooks"][0]["clientConfig"].get("caBundle") == secret["data"]["ca.crt"])
    # Leader election on the chart's Lease.
    lease = wait_for("lease held", lambda: (l := kget(cp, "lease", f"{FULL}-operator", NS))
                     and l.get("spec", {}).get("holderIdentity") and l)
    assert lease["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    cp.kubectl("apply", "-f", "-", input=json.dumps(buildcache("ci")))
    for kind, name in [("daemonset", "buildcache-ci"), ("service", "buildcache-ci"),
                       ("service", "buildcache-ci-peers"), ("configmap", "buildcache-ci-config")]:
        obj = wait_for(f"{kind} {name}", lambda: kget(cp, kind, name, CI_NS))
        assert obj["metadata"]["ownerReferences"][0]["name"] == "ci"
    bc = wait_for("status written", lambda: (b := kget(cp, "buildcache", "ci", CI_NS)) and
                  b.get("status", {}).get("observedGeneration") == b["metadata"]["generation"]
                  and b)
    assert "buildcache.io/cleanup" in bc["metadata"]["finalizers"]
    assert condition(bc, "Degraded")["status"] == "False", bc["status"]
    assert condition(bc, "Ready") is not None
    wait_for("an event on the BuildCache", lambda: [
        e for e in json.loads(cp.kubectl("get", "events.events.k8s.io", "-n", CI_NS, "-o",
                                         "json").stdout)["items"]
        if e.get("regarding", {}).get("name") == "ci"])
    assert operator.denied() == [], operator.denied()[:5]
    assert operator.proc.poll() is None


def admit(operator, ca_pem, pod_ns, cache):
    """POSTs an AdmissionReview for a new pod to the operator's webhook; returns the response."""
    address = operator.logged("tls server listening")[0]["address"]
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.check_hostname = False  # verified below: the Service name the API server would dial
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-" + pod_ns, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": pod_ns, "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "build", "namespace": pod_ns, "annotations": {"buildcache.io/cache": cache}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    conn.request("POST", "/mutate-pods", json.dumps(review),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    sans = [v for k, v in conn.sock.getpeercert()["subjectAltName"] if k == "DNS"]
    conn.close()
    assert resp.status == 200
    assert f"{FULL}-webhook.{NS}.svc" in sans, sans
    return body["response"]


def test_webhook_under_the_chart_rbac_reads_caches_and_namespaces(cp, operator):
    ca_pem = base64.b64decode(kget(cp, "secret", f"{FULL}-webhook-tls", NS)["data"]["ca.crt"])
    # A pod in another namespace may use the BuildCache only if that namespace matches its access
    # selector (team=ci): the webhook reads the BuildCache and the Namespace with the chart's rights.
    cp.kubectl("create", "namespace", "team-a")
    cp.kubectl("label", "namespace", "team-a", "team=ci")
    cp.kubectl("create", "namespace", "other-team")
    allowed = admit(operator, ca_pem.decode(), "team-a", f"{CI_NS}/ci")
    assert allowed["allowed"] is True
    patch = json.loads(base64.b64decode(allowed["patch"]))
    assert "PIP_INDEX_URL" in json.dumps(patch), patch
    refused = admit(operator, ca_pem.decode(), "other-team", f"{CI_NS}/ci")
    assert refused["allowed"] is True and "patch" not in refused, refused  # fail open, unchanged
    assert "is not allowed to use BuildCache" in " ".join(refused.get("warnings", [])), refused
    wait_for("NamespaceNotAllowed event", lambda: [
        e for e in json.loads(cp.kubectl("get", "events.events.k8s.io", "-n", CI_NS, "-o",
                                         "json").stdout)["items"]
        if e.get("reason") == "NamespaceNotAllowed"])
    assert operator.denied() == [], operator.denied()[:5]


def test_buildcache_outside_the_managed_namespaces_is_refused(cp, operator):
    # A spec author in a namespace the chart did not list tries to make the operator write agent
    # objects there: the operator refuses without trying (no forbidden request) and says why.
    cp.kubectl("create", "namespace", "elsewhere")
    bc = buildcache("stray")
    bc["metadata"]["namespace"] = "elsewhere"
    cp.kubectl("apply", "-f", "-", input=json.dumps(bc))
    got = wait_for("NamespaceNotManaged", lambda: (b := kget(cp, "buildcache", "stray", "elsewhere"))
                   and (condition(b, "Degraded") or {}).get("reason") == "NamespaceNotManaged"
                   and b)
    assert CI_NS in condition(got, "Degraded")["message"]
    assert kget(cp, "daemonset", "buildcache-stray", "elsewhere") is None
    assert kget(cp, "configmap", "buildcache-stray-config", "elsewhere") is None
    assert operator.denied() == [], operator.denied()[:5]
    cp.kubectl("delete", "buildcache", "stray", "-n", "elsewhere", "--wait=false")


def can_i(cp, *args):
    proc = cp.kubectl("auth", "can-i", f"--as=system:serviceaccount:{NS}:{SA}", *args,
                      check=False)
    assert proc.stdout.strip() in ("yes", "no"), f"kubectl auth can-i {args}: {proc.stderr}"
    return proc.stdout.strip()


def test_actions_outside_the_chart_rbac_are_forbidden(cp, sa_token, operator):
    allowed = [("patch", "daemonsets", "-n", CI_NS), ("delete", "configmaps", "-n", NS),
               ("create", "events.events.k8s.io", "-n", CI_NS),
               ("update", f"leases/{FULL}-operator", "-n", NS),
               ("update", f"secrets/{FULL}-webhook-tls", "-n", NS),
               ("update", f"mutatingwebhookconfigurations/{FULL}"),
               ("create", "clusterrolebindings"), ("bind", f"clusterroles/{FULL}-agent"),
               ("create", "pods", "-n", CI_NS), ("delete", "pods", "-n", CI_NS),
               ("create", "rolebindings", "-n", CI_NS),
               ("bind", f"clusterroles/{FULL}-agent-wheelbuilds"),
               ("watch", "wheelbuilds.buildcache.io", "-n", CI_NS),
               ("patch", "wheelbuilds.buildcache.io", "--subresource=status", "-n", CI_NS)]
    for args in allowed:
        assert can_i(cp, *args) == "yes", args
    # Secrets by name for the peer certificates (operator/controllers/peer_tls); never list/watch.
    forbidden = [("delete", "namespaces"), ("list", "secrets", "-n", CI_NS),
                 ("list", "secrets", "-n", NS), ("watch", "secrets", "-n", CI_NS),
                 ("update", "secrets/other", "-n", NS), ("get", "pods", "-n", "kube-system"),
                 ("create", "pods", "-n", "kube-system"), ("update", "pods", "-n", CI_NS),
                 ("create", "rolebindings", "-n", "kube-system"),
                 ("create", "wheelbuilds.buildcache.io", "-n", CI_NS),
                 ("update", "daemonsets", "-n", CI_NS),
                 ("update", "mutatingwebhookconfigurations/someone-elses"),
                 ("update", "leases/someone-elses", "-n", NS),
                 ("bind", "clusterroles/cluster-admin"), ("escalate", "clusterroles"),
                 ("delete", "buildcaches", "-n", CI_NS),
                 ("update", "customresourcedefinitions"),
                 ("patch", "daemonsets", "-n", "kube-system"), ("list", "daemonsets", "-A"),
                 ("patch", "configmaps", "-n", "kube-system"), ("create", "services", "-n", "default"),
                 ("delete", "configmaps", "-n", "other-team"),
                 ("get", "secrets/anything", "-n", "kube-system"),
                 ("patch", "networkpolicies", "-n", "kube-system")]
    for args in forbidden:
        assert can_i(cp, *args) == "no", args

    # And real requests with the token, not just the authorizer's opinion.
    ctx = ssl.create_default_context(cafile=str(cp.ca_file))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))

    def call(method, path):
        req = urllib.request.Request(cp.url + path, method=method,
                                     headers={"Authorization": f"Bearer {sa_token}"})
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    def call_json(method, path, body):
        req = urllib.request.Request(cp.url + path, method=method, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {sa_token}",
                                              "Content-Type": "application/json"})
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    assert call("GET", f"/apis/apps/v1/namespaces/{CI_NS}/daemonsets") == 200
    # Agent objects only in the namespaces where BuildCaches may live (rbac.buildCacheNamespaces).
    assert call("GET", "/apis/apps/v1/daemonsets") == 403
    assert call("GET", "/apis/apps/v1/namespaces/kube-system/daemonsets") == 403
    assert call("PATCH", "/api/v1/namespaces/kube-system/configmaps/kube-proxy") == 403
    assert call("DELETE", "/api/v1/namespaces/default/services/kubernetes") == 403
    assert call("GET", "/api/v1/namespaces/kube-system/secrets") == 403
    assert call("DELETE", f"/api/v1/namespaces/{CI_NS}") == 403
    assert call("GET", f"/api/v1/namespaces/{NS}/secrets") == 403
    # It may create ClusterRoleBindings (caller identity binds each BuildCache's agents), but
    # binding anything beyond the agents' ClusterRole is refused by RBAC's escalation check.
    assert call_json("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "bc-escalation-attempt"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]}) == 403
    assert kget(cp, "clusterrolebinding", "bc-escalation-attempt", None) is None
    assert kget(cp, "namespace", CI_NS)["status"]["phase"] == "Active"


def test_upgrade_changes_values_and_keeps_what_the_operator_wrote(cp, helm_env, operator):
    before = kget(cp, "secret", f"{FULL}-webhook-tls", NS)["data"]
    bundle = kget(cp, "mutatingwebhookconfiguration", FULL)["webhooks"][0]["clientConfig"]["caBundle"]
    install(cp, helm_env, "--reuse-values", "--set", "operator.replicas=3",
            "--set", "webhook.timeoutSeconds=7", "--set", "sample.enabled=true",
            action="upgrade")
    assert kget(cp, "deployment", f"{FULL}-operator", NS)["spec"]["replicas"] == 3
    hook = kget(cp, "mutatingwebhookconfiguration", FULL)["webhooks"][0]
    assert hook["timeoutSeconds"] == 7
    assert hook["clientConfig"]["caBundle"] == bundle
    assert kget(cp, "secret", f"{FULL}-webhook-tls", NS)["data"] == before
    # The sample (the CRD exists now) is reconciled by the operator.
    assert kget(cp, "buildcache", "ci", NS)
    wait_for("sample's DaemonSet", lambda: kget(cp, "daemonset", "buildcache-ci", NS))
    status = json.loads(helm(helm_env, "status", RELEASE, "-n", NS, "-o", "json",
                             "--kubeconfig", str(cp.kubeconfig)).stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"


def test_uninstall_leaves_no_orphans_and_keeps_the_crd(cp, helm_env, operator):
    # As docs/install.md says: BuildCaches go first, while the operator runs its finalizer.
    install(cp, helm_env, "--reuse-values", "--set", "sample.enabled=false", action="upgrade")
    cp.kubectl("delete", "buildcache", "ci", "-n", CI_NS, "--wait=true", "--timeout=60s")
    wait_for("sample gone", lambda: kget(cp, "buildcache", "ci", NS) is None)
    for ns in (NS, CI_NS):
        wait_for(f"agent objects in {ns} gone", lambda: cp.kubectl(
            "get", "daemonsets,services,configmaps", "-n", ns, "-o", "name",
            "-l", "app.kubernetes.io/managed-by=buildcache-operator").stdout.strip() == "")
    assert operator.denied() == [], operator.denied()[:5]
    assert operator.stop() == 0

    assert chart_objects(cp) != []
    helm(helm_env, "uninstall", RELEASE, "-n", NS, "--kubeconfig", str(cp.kubeconfig))
    left = wait_for("only the kept CRDs left", lambda: (
        objs := chart_objects(cp)) == ["customresourcedefinition.apiextensions.k8s.io/"
                                       "buildcaches.buildcache.io",
                                       "customresourcedefinition.apiextensions.k8s.io/"
                                       "wheelbuilds.buildcache.io"] and objs, timeout=60)
    assert left
    # The operator's objects are the chart's too: no Secret, Lease or webhook survives.
    assert kget(cp, "secret", f"{FULL}-webhook-tls", NS) is None
    assert kget(cp, "lease", f"{FULL}-operator", NS) is None
    assert kget(cp, "mutatingwebhookconfiguration", FULL) is None


def test_reinstall_adopts_the_kept_crd_and_keep_false_deletes_it(cp, helm_env):
    # The kept CRD still names this release, so the same release name can adopt it again.
    install(cp, helm_env, "--set", "crds.keep=false")
    assert kget(cp, "crd", "buildcaches.buildcache.io")["metadata"]["annotations"][
        "meta.helm.sh/release-name"] == RELEASE
    # Uninstall decides by the release's manifest. (Adoption merges into the live object, so the
    # old keep annotation stays visible there until the next upgrade removes it.)
    manifest = helm(helm_env, "get", "manifest", RELEASE, "-n", NS,
                    "--kubeconfig", str(cp.kubeconfig)).stdout
    crds = [o for o in yaml.safe_load_all(manifest) if o and o["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 2
    for crd in crds:
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})
    helm(helm_env, "uninstall", RELEASE, "-n", NS, "--kubeconfig", str(cp.kubeconfig))
    wait_for("CRD deleted", lambda: kget(cp, "crd", "buildcaches.buildcache.io") is None)
    wait_for("nothing left", lambda: chart_objects(cp) == [] or None)
