"""Private upstreams through the real operator and a real kube-apiserver (and controller manager):
spec.ecosystems.<name>.upstreamSecretRef.

- The API server refuses an upstream URL with credentials in it (they would land in the agents'
  ConfigMap) and an unknown reference type.
- A reference to a Secret that does not exist yet: the agents' DaemonSet is applied all the same,
  with the Secret as an optional, read-only, 0400 volume and only the files' paths in the agent
  configuration; status has UpstreamCredentials=False (SecretNotFound, naming the Secret) and a
  Warning event says the same. Once the Secret exists (with its keys), the condition turns True.
- The Secret's values (raw and base64) appear in no ConfigMap, DaemonSet, BuildCache (status
  included), Event or operator log line.
- A rotated value does not roll the agents (they re-read the mounted file); a reference to another
  Secret does (the config hash changes).
"""

import base64
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from harness.cpfixture import control_plane_fixture, wait_for  # noqa: E402
from test_operator_reconcile import CRD, Operator  # noqa: E402

NS = "ci-system"
TOKEN = "pypi-token-4b1f8e2a9c"
PASSWORD = "npm-password-d70c53e1"
TOKEN_ROTATED = "pypi-token-rotated-61aa"
# The controller requeues a BuildCache with a missing Secret after 30 s.
CONDITION_TIMEOUT = 150

cp = control_plane_fixture(controller_manager=True, crd=CRD, namespaces=(NS,), objects=(
    {"apiVersion": "v1", "kind": "Node",
     "metadata": {"name": "node-a", "labels": {"buildcache.io/ci": "true"}}},))


@pytest.fixture(scope="module")
def operator(cp):
    op = Operator(cp.kubeconfig, "--namespace", NS)
    yield op
    op.stop()


def apply(cp, obj, check=True):
    return cp.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(obj), check=check)


def get(cp, kind, name):
    proc = cp.kubectl("get", kind, name, "-n", NS, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def buildcache(name, ecosystems):
    return {"apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
            "metadata": {"name": name},
            "spec": {"nodeSelector": {"buildcache.io/ci": "true"},
                     "storage": {"maxSize": "10Gi"}, "ecosystems": ecosystems}}


def condition(bc, type_):
    for c in (bc or {}).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None


def secret(name, **data):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": data}


def config_hash(ds):
    return ds["spec"]["template"]["metadata"]["annotations"]["buildcache.io/config-hash"]


def test_credentials_in_an_upstream_url_and_unknown_types_are_refused(cp, operator):
    with_userinfo = buildcache("userinfo", {"pypi": {
        "upstream": f"https://reader:{TOKEN}@pypi.example.internal/simple/"}})
    out = apply(cp, with_userinfo, check=False)
    assert out.returncode != 0
    assert "upstream must not carry credentials" in out.stderr, out.stderr
    bad_type = buildcache("badtype", {"npm": {
        "upstream": "https://npm.example.internal/",
        "upstreamSecretRef": {"name": "npm-creds", "type": "token"}}})
    out = apply(cp, bad_type, check=False)
    assert out.returncode != 0
    assert 'Unsupported value: "token"' in out.stderr, out.stderr


def test_secret_is_mounted_reported_and_never_copied(cp, operator):
    apply(cp, buildcache("private", {
        "pypi": {"upstream": "https://pypi.example.internal/simple/",
                 "upstreamSecretRef": {"name": "pypi-token", "type": "bearer"}},
        "npm": {"upstream": "https://npm.example.internal/",
                "upstreamSecretRef": {"name": "npm-creds", "type": "basic"}}}))

    # Missing: a condition and a Warning event, and the agents are applied all the same.
    bc = wait_for("UpstreamCredentials False", lambda: (b := get(cp, "buildcache", "private"))
                  and (c := condition(b, "UpstreamCredentials")) and c["status"] == "False" and b)
    message = condition(bc, "UpstreamCredentials")["message"]
    assert condition(bc, "UpstreamCredentials")["reason"] == "SecretNotFound"
    assert "Secret ci-system/pypi-token not found" in message, message
    assert "Secret ci-system/npm-creds not found" in message, message

    def warning():
        events = json.loads(cp.kubectl("get", "events.events.k8s.io", "-n", NS, "-o",
                                       "json").stdout)["items"]
        return [e for e in events if e.get("reason") == "SecretNotFound"
                and e.get("type") == "Warning" and e["regarding"]["name"] == "private"]
    assert "pypi-token" in wait_for("SecretNotFound event", warning)[0]["note"]

    ds = wait_for("DaemonSet", lambda: get(cp, "daemonset", "buildcache-private"))
    pod = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["upstream-pypi"]["secret"] == {
        "secretName": "pypi-token", "defaultMode": 0o400, "optional": True,
        "items": [{"key": "token", "path": "token"}]}
    assert volumes["upstream-npm"]["secret"]["items"] == [
        {"key": "username", "path": "username"}, {"key": "password", "path": "password"}]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["upstream-npm"] == {"name": "upstream-npm", "readOnly": True,
                                      "mountPath": "/var/run/buildcache/upstream/npm"}
    config = get(cp, "configmap", "buildcache-private-config")["data"]["agent.yaml"]
    assert "tokenFile: /var/run/buildcache/upstream/pypi/token" in config, config
    assert "usernameFile: /var/run/buildcache/upstream/npm/username" in config, config
    hash_before = config_hash(ds)

    # The Secrets appear: the condition turns True (the controller looks again soon).
    apply(cp, secret("pypi-token", token=TOKEN))
    apply(cp, secret("npm-creds", username="ci-reader", password=PASSWORD))
    wait_for("UpstreamCredentials True",
             lambda: (c := condition(get(cp, "buildcache", "private"), "UpstreamCredentials"))
             and c["status"] == "True" and c["reason"] == "SecretsFound",
             timeout=CONDITION_TIMEOUT)

    # A rotated value: nothing to roll (the agents re-read the file), also after a reconcile
    # (an annotation change makes one).
    apply(cp, secret("pypi-token", token=TOKEN_ROTATED))

    def reconciles():
        return sum(1 for e in list(operator.logs)
                   if e.get("msg") == "reconciled" and e.get("key") == f"{NS}/private")
    before = reconciles()
    cp.kubectl("annotate", "-n", NS, "buildcache", "private", "test/poke=1")
    wait_for("a reconcile after the rotation", lambda: reconciles() > before)
    assert config_hash(get(cp, "daemonset", "buildcache-private")) == hash_before

    # Nothing the operator writes or logs carries a value.
    values = [TOKEN, PASSWORD, TOKEN_ROTATED]
    values += [base64.b64encode(v.encode()).decode() for v in values]
    dumps = {
        "configmaps": cp.kubectl("get", "configmaps", "-n", NS, "-o", "json").stdout,
        "daemonsets": cp.kubectl("get", "daemonsets", "-n", NS, "-o", "json").stdout,
        "buildcaches": cp.kubectl("get", "buildcaches", "-n", NS, "-o", "json").stdout,
        "events": cp.kubectl("get", "events.events.k8s.io", "-n", NS, "-o", "json").stdout,
        "core events": cp.kubectl("get", "events", "-n", NS, "-o", "json").stdout,
        "operator log": "\n".join(json.dumps(e) for e in operator.logs),
    }
    _, dumps["operator metrics"] = operator.get("/metrics")
    for where, text in dumps.items():
        for value in values:
            assert value not in text, f"{where} contains a credential"

    # Another Secret named: the agents roll onto it.
    bc = get(cp, "buildcache", "private")
    bc["spec"]["ecosystems"]["pypi"]["upstreamSecretRef"]["name"] = "pypi-token-2"
    apply(cp, {"apiVersion": bc["apiVersion"], "kind": bc["kind"],
               "metadata": {"name": "private"}, "spec": bc["spec"]})
    wait_for("config hash changed",
             lambda: config_hash(get(cp, "daemonset", "buildcache-private")) != hash_before)
