"""The real buildcache-operator against a real kube-apiserver, etcd and kube-controller-manager.

The control plane runs the controller manager (garbage collector, DaemonSet controller) but no
kubelet, so agent pods stay Pending; a hand-made Node gives the DaemonSet something to count.
Tests run in file order and share one operator (watching namespace ci-system); the leader-election
tests start two more, with --leader-elect, watching namespace le-test.
"""

import base64
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.cpfixture import control_plane_fixture, wait_for  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
OPERATOR = BIN_DIR / "buildcache-operator"
CRD = REPO / "crds" / "buildcache.io_buildcaches.yaml"
AGENT_IMAGE = "buildcache-agent:it"
NS = "ci-system"
LE_NS = "le-test"


class Operator:
    """A running buildcache-operator; its JSON log lines are collected in .logs."""

    def __init__(self, kubeconfig, *args):
        if not OPERATOR.exists():
            pytest.fail(f"{OPERATOR} is missing: build the buildcache-operator target", pytrace=False)
        self.logs = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [str(OPERATOR), "--kubeconfig", str(kubeconfig), "--agent-image", AGENT_IMAGE,
             "--metrics-addr", "127.0.0.1:0", "--log-level", "debug", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = "http://" + self.wait_log("metrics listening")["address"]

    def _read(self):
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"msg": "<raw>", "line": line}
            with self._cond:
                self.logs.append(entry)
                self._cond.notify_all()

    def wait_log(self, msg, timeout=30.0, **fields):
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            if exited:
                self._reader.join(5)  # the lines it wrote before exiting
            with self._cond:
                for entry in self.logs:
                    if entry.get("msg") == msg and all(entry.get(k) == v for k, v in fields.items()):
                        return entry
                left = deadline - time.monotonic()
                if left <= 0 or exited:
                    pytest.fail(f"operator never logged {msg!r}; log tail:\n{self.log_tail()}",
                                pytrace=False)
                self._cond.wait(min(left, 0.5))

    def log_tail(self, n=40):
        return "\n".join(json.dumps(e) for e in self.logs[-n:])

    def get(self, path):
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metric(self, name, **labels):
        """The sample's value, or 0 when absent."""
        _, text = self.get("/metrics")
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# A node for the DaemonSet controller to schedule agents on (no kubelet runs it).
cp = control_plane_fixture(controller_manager=True, crd=CRD, namespaces=(NS, LE_NS), objects=(
    {"apiVersion": "v1", "kind": "Node",
     "metadata": {"name": "node-a", "labels": {"buildcache.io/ci": "true"}}},))


@pytest.fixture(scope="module")
def operator(cp):
    op = Operator(cp.kubeconfig, "--namespace", NS)
    yield op
    op.stop()


def get(cp, kind, name, ns=NS):
    proc = cp.kubectl("get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields",
                      check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def buildcache(name, upstream="https://pypi.invalid.test/simple/", **spec):
    return {
        "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"buildcache.io/ci": "true"},
                 "storage": {"maxSize": "10Gi", "reclaimPolicy": "Delete"},
                 "ecosystems": {"pypi": {"upstream": upstream}, "httpcache": {}},
                 "directories": [{"name": "gobuild", "mountPath": "/root/.cache/go-build",
                                  "maxSize": "5Gi"}],
                 **spec}}


def apply(cp, obj, ns=NS):
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))


def config_hash(ds):
    return ds["spec"]["template"]["metadata"]["annotations"]["buildcache.io/config-hash"]


def condition(bc, type_):
    for c in (bc or {}).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None


OWNED = [("daemonset", "buildcache-ci"), ("service", "buildcache-ci"),
         ("service", "buildcache-ci-peers"), ("configmap", "buildcache-ci-config"),
         ("secret", "buildcache-ci-admin")]


def test_buildcache_gets_its_objects_with_owner_references(cp, operator):
    apply(cp, buildcache("ci"))
    bc = wait_for("finalizer", lambda: (b := get(cp, "buildcache", "ci")) and
                  "buildcache.io/cleanup" in b["metadata"].get("finalizers", []) and b)
    for kind, name in OWNED:
        obj = wait_for(f"{kind} {name}", lambda: get(cp, kind, name))
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == \
            [("BuildCache", "ci", bc["metadata"]["uid"], True)], refs
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "buildcache-operator"
    svc = get(cp, "service", "buildcache-ci")
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    assert get(cp, "service", "buildcache-ci-peers")["spec"]["clusterIP"] == "None"
    cm = get(cp, "configmap", "buildcache-ci-config")
    assert "upstream: https://pypi.invalid.test/simple/" in cm["data"]["agent.yaml"]
    ds = get(cp, "daemonset", "buildcache-ci")
    pod = ds["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == AGENT_IMAGE
    assert pod["nodeSelector"] == {"buildcache.io/ci": "true"}
    # peer-tls: the agents' certificate Secret (spec.replication.mutualTLS defaults to true);
    # admin: the admin token Secret (POST /admin/purge).
    assert {v["name"] for v in pod["volumes"]} == {"config", "data", "dir-gobuild", "peer-tls",
                                                    "admin"}
    [admin] = [v for v in pod["volumes"] if v["name"] == "admin"]
    assert admin["secret"] == {"secretName": "buildcache-ci-admin", "defaultMode": 0o400}
    token = base64.b64decode(wait_for("admin Secret", lambda: get(cp, "secret",
                                                                  "buildcache-ci-admin"))
                             ["data"]["token"])
    assert len(token) == 64
    assert "tokenFile: /etc/buildcache-admin/token" in cm["data"]["agent.yaml"]
    # Applied by the operator's field manager.
    managers = {m["manager"] for m in ds["metadata"]["managedFields"]}
    assert "buildcache-operator" in managers, managers


def secret_files(cp, name, tmp_path):
    """The Secret's data written to files in tmp_path/name/; returns that directory."""
    secret = get(cp, "secret", name)
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    for key, value in secret["data"].items():
        (d / key).write_bytes(base64.b64decode(value))
    return d


def openssl(*args, cwd):
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)


def test_peer_certificates_are_issued_mounted_and_rendered(cp, operator, tmp_path):
    bc = get(cp, "buildcache", "ci")
    ca = wait_for("peer CA Secret", lambda: get(cp, "secret", "buildcache-ci-peer-ca"))
    tls = wait_for("agent certificate Secret", lambda: get(cp, "secret", "buildcache-ci-peer-tls"))
    for obj in (ca, tls):
        assert [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [bc["metadata"]["uid"]]
    assert tls["type"] == "kubernetes.io/tls"
    assert sorted(tls["data"]) == ["ca.crt", "tls.crt", "tls.key"]  # no CA key where pods mount
    assert "ca.key" in ca["data"]
    d = secret_files(cp, "buildcache-ci-peer-tls", tmp_path)
    # The leaf verifies against the bundle, for both ends of mutual TLS, under the peers name.
    for purpose in ("sslserver", "sslclient"):
        proc = openssl("verify", "-CAfile", "ca.crt", "-purpose", purpose, "-verify_hostname",
                       f"buildcache-ci-peers.{NS}.svc", "tls.crt", cwd=d)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    ds = get(cp, "daemonset", "buildcache-ci")
    pod = ds["spec"]["template"]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "peer-tls"]
    assert volume["secret"]["secretName"] == "buildcache-ci-peer-tls"
    [mount] = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "peer-tls"]
    assert mount["readOnly"] is True
    assert pod["metadata"]["annotations"]["buildcache.io/peer-tls-hash"]
    config = yaml.safe_load(get(cp, "configmap", "buildcache-ci-config")["data"]["agent.yaml"])
    assert config["replication"]["tls"] == {
        "certFile": mount["mountPath"] + "/tls.crt", "keyFile": mount["mountPath"] + "/tls.key",
        "caFile": mount["mountPath"] + "/ca.crt", "serverName": f"buildcache-ci-peers.{NS}.svc"}


def test_ca_rotation_keeps_the_old_ca_in_the_bundle_until_the_agents_rolled(cp, operator,
                                                                            tmp_path):
    apply(cp, buildcache("rot"))
    wait_for("agent certificate Secret", lambda: get(cp, "secret", "buildcache-rot-peer-tls"))
    hash_before = wait_for("template hash", lambda: (d := get(cp, "daemonset", "buildcache-rot"))
                           and d["spec"]["template"]["metadata"]["annotations"]
                           .get("buildcache.io/peer-tls-hash"))
    # A CA ten days from expiry (inside the 30-day renewal window) with a leaf it signed, as the
    # operator would hold them late in the CA's life.
    d = tmp_path / "old"
    d.mkdir()
    name = f"buildcache-rot-peers.{NS}.svc"
    assert openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "10", "-subj",
                   "/CN=old-ca", cwd=d).returncode == 0
    (d / "leaf.ext").write_text(f"subjectAltName=DNS:{name}\n"
                                "extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n")
    assert openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={name}",
                   cwd=d).returncode == 0
    assert openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                   "-CAcreateserial", "-out", "leaf.crt", "-days", "9", "-extfile", "leaf.ext",
                   cwd=d).returncode == 0
    b64 = {f: base64.b64encode((d / f).read_bytes()).decode()
           for f in ("ca.crt", "ca.key", "leaf.crt", "leaf.key")}
    cp.kubectl("patch", "secret", "buildcache-rot-peer-ca", "-n", NS, "--type=merge", "-p",
               json.dumps({"data": {"ca.crt": b64["ca.crt"], "ca.key": b64["ca.key"]}}))
    cp.kubectl("patch", "secret", "buildcache-rot-peer-tls", "-n", NS, "--type=merge", "-p",
               json.dumps({"data": {"ca.crt": b64["ca.crt"], "tls.crt": b64["leaf.crt"],
                                    "tls.key": b64["leaf.key"]}}))
    # Secrets are not watched: a change of the BuildCache makes the operator look again.
    cp.kubectl("label", "buildcache", "rot", "-n", NS, "rotate=now", "--overwrite")
    old_ca = (d / "ca.crt").read_text()

    def bundle_has_two():
        s = get(cp, "secret", "buildcache-rot-peer-tls")
        bundle = base64.b64decode(s["data"]["ca.crt"]).decode()
        return bundle.count("BEGIN CERTIFICATE") == 2 and s
    s = wait_for("a bundle with the new and the old CA", bundle_has_two)
    bundle = base64.b64decode(s["data"]["ca.crt"]).decode()
    assert old_ca.strip() in bundle  # the old CA is still trusted...
    assert not bundle.startswith(old_ca.strip())  # ...after the new one
    ca = get(cp, "secret", "buildcache-rot-peer-ca")
    assert base64.b64decode(ca["data"]["ca-previous.crt"]).decode().strip() == old_ca.strip()
    # The template rolls to the new bundle.
    wait_for("template rolls", lambda: get(cp, "daemonset", "buildcache-rot")["spec"]["template"]
             ["metadata"]["annotations"]["buildcache.io/peer-tls-hash"] != hash_before)
    # Once the DaemonSet controller reports every agent updated, the leaf is reissued by the new
    # CA, and the old CA stays in the bundle (agents still presenting the old leaf are trusted).
    def reissued():
        s = get(cp, "secret", "buildcache-rot-peer-tls")
        return base64.b64decode(s["data"]["tls.crt"]) != (d / "leaf.crt").read_bytes() and s
    s = wait_for("leaf from the new CA", reissued, timeout=90)
    new = tmp_path / "new"
    new.mkdir()
    (new / "bundle.crt").write_bytes(base64.b64decode(s["data"]["ca.crt"]))
    (new / "tls.crt").write_bytes(base64.b64decode(s["data"]["tls.crt"]))
    (new / "newca.crt").write_text(bundle.replace(old_ca.strip(), "").strip() + "\n")
    proc = openssl("verify", "-CAfile", "newca.crt", "tls.crt", cwd=new)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert old_ca.strip() in (new / "bundle.crt").read_text()


def test_a_tenant_pod_with_the_agents_labels_is_not_a_member(cp, operator):
    """Membership (the peers Service's DNS, the hit-ratio scrape) and the node-local Service come
    from EndpointSlices, which list only pods of the Service's namespace. A tenant in its own
    namespace copying the agents' labels stays out; a pod in the agents' namespace does not, which
    is why CI pods must not run there (docs/quickstart.md)."""
    apply(cp, buildcache("member"))
    svc = wait_for("peers Service", lambda: get(cp, "service", "buildcache-member-peers"))
    labels = svc["spec"]["selector"]
    cp.kubectl("create", "namespace", "tenant")
    # Something other than the DaemonSet controls the in-namespace pod, so it is not adopted.
    cm = get(cp, "configmap", "buildcache-member-config")
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": cm["metadata"]["name"],
             "uid": cm["metadata"]["uid"], "controller": True}

    def pod(name, ns, ip, owners=None):
        meta = {"name": name, "namespace": ns, "labels": labels}
        if owners:
            meta["ownerReferences"] = owners
        cp.kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]}}))
        # No kubelet: give the pod the address a kubelet would report.
        cp.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p",
                   json.dumps({"status": {"phase": "Running", "podIP": ip,
                                          "podIPs": [{"ip": ip}]}}))

    pod("tenant-copy", "tenant", "10.244.9.66")
    pod("same-ns-copy", NS, "10.244.9.10", [owner])

    def addresses(service, ns):
        slices = json.loads(cp.kubectl(
            "get", "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={service}",
            "-o", "json").stdout)["items"]
        return {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}

    # The in-namespace pod shows that the slices are being filled...
    wait_for("the in-namespace pod in the peers' slices",
             lambda: "10.244.9.10" in addresses("buildcache-member-peers", NS))
    wait_for("the in-namespace pod in the local Service's slices",
             lambda: "10.244.9.10" in addresses("buildcache-member", NS))
    # ...and the tenant's copy is in none of them, in either namespace.
    for service in ("buildcache-member-peers", "buildcache-member"):
        assert "10.244.9.66" not in addresses(service, NS)
        assert addresses(service, "tenant") == set()
    cp.kubectl("delete", "pod", "same-ns-copy", "-n", NS, "--wait=false")


def test_status_reports_conditions_nodes_and_observed_generation(cp, operator):
    def settled():
        bc, ds = get(cp, "buildcache", "ci"), get(cp, "daemonset", "buildcache-ci")
        st = (bc or {}).get("status", {})
        if st.get("observedGeneration") != bc["metadata"]["generation"]:
            return None
        # nodes follows the DaemonSet controller's count (no kubelet: nothing becomes ready).
        desired = ds.get("status", {}).get("desiredNumberScheduled", 0)
        if desired != 1 or st.get("nodes", {}).get("desired") != desired:
            return None
        return bc
    bc = wait_for("status with nodes.desired == 1", settled)
    assert bc["status"]["nodes"] == {"desired": 1, "ready": 0}
    assert condition(bc, "Ready")["status"] == "False"
    assert condition(bc, "Ready")["reason"] == "AgentsNotReady"
    assert condition(bc, "Degraded")["status"] == "False"
    assert condition(bc, "Progressing") is not None
    assert condition(bc, "Ready")["observedGeneration"] == bc["metadata"]["generation"]


def test_manual_edit_of_the_daemonset_is_corrected(cp, operator):
    cp.kubectl("patch", "daemonset", "buildcache-ci", "-n", NS, "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "tampered:1"}]))
    wait_for("image restored", lambda: get(cp, "daemonset", "buildcache-ci")
             ["spec"]["template"]["spec"]["containers"][0]["image"] == AGENT_IMAGE)


def test_manual_edit_of_the_configmap_and_service_is_corrected(cp, operator):
    cp.kubectl("patch", "configmap", "buildcache-ci-config", "-n", NS, "--type=merge", "-p",
               json.dumps({"data": {"agent.yaml": "listen: 0.0.0.0:1\n"}}))
    cp.kubectl("patch", "service", "buildcache-ci", "-n", NS, "--type=merge", "-p",
               json.dumps({"spec": {"internalTrafficPolicy": "Cluster"}}))
    wait_for("config restored", lambda: "pypi.invalid.test" in get(
        cp, "configmap", "buildcache-ci-config")["data"]["agent.yaml"])
    wait_for("traffic policy restored", lambda: get(cp, "service", "buildcache-ci")
             ["spec"]["internalTrafficPolicy"] == "Local")


def test_spec_change_updates_config_and_rolls_the_template(cp, operator):
    before = config_hash(get(cp, "daemonset", "buildcache-ci"))
    apply(cp, buildcache("ci", upstream="https://pypi2.invalid.test/simple/"))
    ds = wait_for("new config hash", lambda: (d := get(cp, "daemonset", "buildcache-ci")) and
                  config_hash(d) != before and d)
    assert "pypi2.invalid.test" in get(cp, "configmap", "buildcache-ci-config")["data"]["agent.yaml"]
    assert ds["metadata"]["generation"] >= 2
    wait_for("observedGeneration follows", lambda: (b := get(cp, "buildcache", "ci"))
             ["status"].get("observedGeneration") == b["metadata"]["generation"])


def test_spec_the_api_server_refuses_in_an_agent_object_is_reported(cp, operator):
    # The CRD accepts any nodeSelector key, but a pod template's must be a label key.
    apply(cp, buildcache("bad", nodeSelector={"not a label key!": "x"}))
    bc = wait_for("Degraded=True", lambda: (b := get(cp, "buildcache", "bad")) and
                  (condition(b, "Degraded") or {}).get("status") == "True" and b)
    assert condition(bc, "Degraded")["reason"] == "ObjectRejected"
    assert condition(bc, "Ready")["status"] == "False"
    assert bc["status"]["observedGeneration"] == bc["metadata"]["generation"]
    events = json.loads(cp.kubectl("get", "events.events.k8s.io", "-n", NS, "-o", "json").stdout)
    assert any(e.get("reason") == "ObjectRejected" and e["regarding"]["name"] == "bad"
               for e in events["items"]), [e.get("reason") for e in events["items"]]
    cp.kubectl("delete", "buildcache", "bad", "-n", NS, "--wait=false")


def degraded(cp, name, reason):
    """Waits for Degraded=True with this reason on BuildCache `name`; returns the BuildCache."""
    return wait_for(f"{name}: Degraded {reason}", lambda: (b := get(cp, "buildcache", name)) and
                    (condition(b, "Degraded") or {}).get("reason") == reason and b)


def test_overlapping_host_paths_leave_the_later_buildcache_without_agents(cp, operator):
    # Two agents on one node directory delete each other's in-flight files: a second BuildCache
    # whose hostPath lies inside (or equals) another's gets a condition and no DaemonSet.
    apply(cp, buildcache("first", storage={"maxSize": "10Gi",
                                           "hostPath": "/var/lib/buildcache/shared"}))
    wait_for("first's DaemonSet", lambda: get(cp, "daemonset", "buildcache-first"))
    apply(cp, buildcache("second", storage={"maxSize": "10Gi",
                                            "hostPath": "/var/lib/buildcache//shared/inner/"}))
    bc = degraded(cp, "second", "HostPathConflict")
    assert f"{NS}/first" in condition(bc, "Degraded")["message"], bc["status"]
    assert condition(bc, "Ready")["status"] == "False"
    assert get(cp, "daemonset", "buildcache-second") is None
    assert get(cp, "configmap", "buildcache-second-config") is None
    # The first keeps running; once it is gone the directory is free and the second one runs.
    assert (condition(get(cp, "buildcache", "first"), "Degraded") or {}).get("status") != "True"
    cp.kubectl("delete", "buildcache", "first", "-n", NS, "--wait=false")
    wait_for("second's DaemonSet", lambda: get(cp, "daemonset", "buildcache-second"))
    cp.kubectl("delete", "buildcache", "second", "-n", NS, "--wait=false")
    wait_for("second gone", lambda: get(cp, "buildcache", "second") is None)


def test_image_hostpath_and_sumdb_outside_the_operator_policy_are_refused(cp, operator):
    # A spec author may not pick what runs as root on the nodes, nor where it writes.
    apply(cp, buildcache("rootkit", agent={"image": "attacker.example/rootkit:1"}))
    bc = degraded(cp, "rootkit", "NotAllowed")
    assert "attacker.example/rootkit:1" in condition(bc, "Degraded")["message"]
    apply(cp, buildcache("etc", storage={"maxSize": "10Gi", "hostPath": "/etc/kubernetes"}))
    bc = degraded(cp, "etc", "NotAllowed")
    assert "beneath /var/lib/buildcache" in condition(bc, "Degraded")["message"]
    # Go modules are verified by default; with no database named anywhere, nothing runs.
    apply(cp, buildcache("gomods", ecosystems={"goproxy": {"upstream": "https://go.invalid.test"}}))
    bc = degraded(cp, "gomods", "SumdbNotNamed")
    assert bc["spec"]["ecosystems"]["goproxy"]["sumdb"] is True  # the CRD's default
    for name in ("rootkit", "etc", "gomods"):
        assert get(cp, "daemonset", f"buildcache-{name}") is None, name
        cp.kubectl("delete", "buildcache", name, "-n", NS, "--wait=false")


def test_delete_runs_the_finalizer_and_removes_owned_objects(cp, operator):
    cp.kubectl("delete", "buildcache", "ci", "-n", NS, "--wait=false")
    wait_for("BuildCache gone", lambda: get(cp, "buildcache", "ci") is None)
    for kind, name in OWNED:
        wait_for(f"{kind} {name} gone", lambda: get(cp, kind, name) is None)
    events = json.loads(cp.kubectl("get", "events.events.k8s.io", "-n", NS, "-o", "json").stdout)
    reasons = {e.get("reason") for e in events["items"] if e["regarding"]["name"] == "ci"}
    assert {"CleanedUp", "DataNotReclaimed"} <= reasons, reasons


def test_metrics_and_probes(cp, operator):
    assert operator.get("/healthz")[0] == 200
    assert operator.get("/readyz")[0] == 200
    assert operator.metric("buildcache_operator_reconciles_total", result="success") > 0
    assert operator.metric("buildcache_operator_reconciles_total", result="invalid") > 0
    _, text = operator.get("/metrics")
    for family in ("buildcache_operator_reconcile_duration_seconds_count",
                   "buildcache_operator_workqueue_depth", "buildcache_operator_leader 1"):
        assert family in text, text
    # docs/metrics.md's operator table lists exactly what the operator exports (the webhook's
    # families only appear with --webhook-listen, which this operator runs without).
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    _, sep, operator_part = (REPO / "docs" / "metrics.md").read_text().partition(
        "\n## The operator\n")
    assert sep, "docs/metrics.md has no '## The operator' section"
    documented = set(re.findall(r"^\| `(buildcache_[a-z_]+)` \|", operator_part, flags=re.M))
    webhook = {f for f in documented if f.startswith("buildcache_webhook_")}
    assert webhook, "docs/metrics.md lists no webhook families"
    assert exported == documented - webhook, {"undocumented": exported - documented,
                                              "not exported": documented - webhook - exported}


def test_sigterm_stops_the_operator_cleanly(cp, operator):
    assert operator.stop(signal.SIGTERM) == 0
    operator.wait_log("stopped")


def test_only_the_leader_reconciles_and_a_standby_takes_over(cp):
    args = ("--namespace", LE_NS, "--leader-elect", "--leader-election-namespace", LE_NS,
            "--leader-election-lease-seconds", "6")
    ops = [Operator(cp.kubeconfig, *args), Operator(cp.kubeconfig, *args)]
    try:
        leaders = wait_for("one leader", lambda: [o for o in ops
                                                  if o.metric("buildcache_operator_leader") == 1]
                           or None, timeout=30)
        assert len(leaders) == 1
        leader, standby = leaders[0], next(o for o in ops if o is not leaders[0])
        apply(cp, buildcache("ci"), ns=LE_NS)
        before = config_hash(wait_for("DaemonSet", lambda: get(cp, "daemonset", "buildcache-ci",
                                                              ns=LE_NS)))
        # The DaemonSet is applied during the reconcile; the counter moves when it has finished.
        wait_for("the leader's reconcile counted", lambda: leader.metric(
            "buildcache_operator_reconciles_total", result="success") > 0, timeout=30)
        time.sleep(2)  # give a misbehaving standby the chance to reconcile
        assert standby.metric("buildcache_operator_leader") == 0
        assert standby.metric("buildcache_operator_reconciles_total", result="success") == 0
        assert standby.get("/readyz")[0] == 200

        leader.stop(signal.SIGKILL)  # no lease release: the standby waits for it to expire
        apply(cp, buildcache("ci", upstream="https://pypi3.invalid.test/simple/"), ns=LE_NS)
        wait_for("standby reconciles the change", lambda: config_hash(
            get(cp, "daemonset", "buildcache-ci", ns=LE_NS)) != before, timeout=60)
        assert standby.metric("buildcache_operator_leader") == 1
        wait_for("the new leader's reconcile counted", lambda: standby.metric(
            "buildcache_operator_reconciles_total", result="success") > 0, timeout=30)
        assert standby.stop(signal.SIGTERM) == 0
    finally:
        for o in ops:
            o.stop(signal.SIGKILL)
