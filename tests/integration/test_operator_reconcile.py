"""The real buildcache-operator against a real kube-apiserver, etcd and kube-controller-manager.

The control plane runs the controller manager (garbage collector, DaemonSet controller) but no
kubelet, so agent pods stay Pending; a hand-made Node gives the DaemonSet something to count.
Tests run in file order and share one operator (watching namespace ci-system); the leader-election
tests start two more, with --leader-elect, watching namespace le-test.
"""

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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.controlplane import ControlPlane, ControlPlaneError  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
OPERATOR = BIN_DIR / "buildcache-operator"
CRD = REPO / "crds" / "buildcache.io_buildcaches.yaml"
AGENT_IMAGE = "buildcache-agent:it"
NS = "ci-system"
LE_NS = "le-test"


def wait_for(what, fn, timeout=60.0, interval=0.25):
    """Polls fn until it returns a truthy value, which is returned; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except AssertionError as err:  # kubectl failures while objects come and go
            last = err
        if last and not isinstance(last, AssertionError):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last})", pytrace=False)


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


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("cp"), controller_manager=True)
    try:
        plane.start()
    except ControlPlaneError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        plane.apply_crd(CRD)
        plane.kubectl("create", "namespace", NS)
        plane.kubectl("create", "namespace", LE_NS)
        # A node for the DaemonSet controller to schedule agents on (no kubelet runs it).
        plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "labels": {"buildcache.io/ci": "true"}}}))
        yield plane
    finally:
        plane.stop()


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
         ("service", "buildcache-ci-peers"), ("configmap", "buildcache-ci-config")]


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
    assert {v["name"] for v in pod["volumes"]} == {"config", "data", "dir-gobuild"}
    # Applied by the operator's field manager.
    managers = {m["manager"] for m in ds["metadata"]["managedFields"]}
    assert "buildcache-operator" in managers, managers


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
