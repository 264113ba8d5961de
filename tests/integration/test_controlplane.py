"""The real control plane the operator's tests run against: etcd, kube-apiserver and
kube-controller-manager built by scripts/build-test-tools, started by tests/harness/controlplane.py.

Nothing here is skipped: without the binaries every test fails and says how to build them.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.controlplane import (  # noqa: E402
    ControlPlane,
    MissingBinariesError,
    find_binaries,
)
from harness.cpfixture import control_plane_fixture, running_control_plane  # noqa: E402

HARNESS = pathlib.Path(__file__).resolve().parents[1] / "harness" / "controlplane.py"
KUBERNETES_VERSION = "v1.34.4"  # the pin in scripts/build-test-tools


def require_binaries(*names):
    try:
        return find_binaries(names)
    except MissingBinariesError as err:
        message = str(err)
    pytest.fail(message, pytrace=False)


# One control plane with the controller manager, shared by the tests of this module.
cp = control_plane_fixture(controller_manager=True)


def wait_for(what, predicate, timeout=90, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def gone(cp, path):
    status, _ = cp.request("GET", path)
    return status == 404


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is as good as gone (it has released its ports and files).
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def pids_mentioning(text):
    """Processes whose command line contains text."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return [p for p in found if p != os.getpid() and pid_alive(p)]


def test_readyz_and_versions(cp):
    assert cp.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    versions = json.loads(cp.kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert versions["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_admin_is_system_masters_and_rbac_is_on(cp):
    assert cp.kubectl("auth", "can-i", "*", "*", "--all-namespaces").stdout.strip() == "yes"
    # Anyone else is subject to RBAC: an unknown user may not list secrets.
    denied = cp.kubectl("auth", "can-i", "list", "secrets", "--as=someone", check=False)
    assert denied.stdout.strip() == "no"


def test_namespace_and_configmap_round_trip(cp):
    cp.kubectl("create", "namespace", "roundtrip")
    cp.kubectl("create", "configmap", "settings", "-n", "roundtrip",
               "--from-literal=upstream=http://127.0.0.1:1/simple", "--from-literal=copies=2")
    got = json.loads(cp.kubectl("get", "configmap", "settings", "-n", "roundtrip", "-o", "json").stdout)
    assert got["data"] == {"upstream": "http://127.0.0.1:1/simple", "copies": "2"}
    # The same object through the REST API the operator's client speaks.
    status, body = cp.request("GET", "/api/v1/namespaces/roundtrip/configmaps/settings")
    assert status == 200 and body["metadata"]["uid"] == got["metadata"]["uid"]


def test_namespace_deletion_completes(cp):
    cp.kubectl("create", "namespace", "doomed")
    cp.kubectl("create", "configmap", "contents", "-n", "doomed", "--from-literal=a=b")
    cp.kubectl("delete", "namespace", "doomed", "--wait=false")
    # The namespace controller empties it and removes the kubernetes finalizer.
    wait_for("namespace doomed to be deleted", lambda: gone(cp, "/api/v1/namespaces/doomed"))


def test_dependents_of_a_deleted_owner_are_garbage_collected(cp):
    cp.kubectl("create", "namespace", "gc")
    owners = {}
    for name in ("owner", "survivor"):
        cp.kubectl("create", "configmap", name, "-n", "gc")
        owners[name] = json.loads(cp.kubectl("get", "configmap", name, "-n", "gc", "-o", "json").stdout)
    for owner, dependent in (("owner", "orphan"), ("survivor", "kept")):
        meta = owners[owner]["metadata"]
        obj = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": dependent, "namespace": "gc", "ownerReferences": [
                   {"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"], "uid": meta["uid"]}]}}
        cp.kubectl("apply", "-f", "-", input=json.dumps(obj))
    cp.kubectl("delete", "configmap", "owner", "-n", "gc")
    wait_for("the dependent of the deleted owner to be collected",
             lambda: gone(cp, "/api/v1/namespaces/gc/configmaps/orphan"))
    # The garbage collector has run by now, and left the object whose owner still exists.
    status, _ = cp.request("GET", "/api/v1/namespaces/gc/configmaps/kept")
    assert status == 200


def test_context_exit_kills_processes_and_removes_its_directory(tmp_path):
    require_binaries("etcd", "kube-apiserver", "kubectl")
    workdir = tmp_path / "plane"
    with ControlPlane(workdir) as plane:
        pids = plane.pids
        port = plane.port
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        assert plane.kubeconfig.is_file()
    assert not any(pid_alive(p) for p in pids)
    assert not workdir.exists()
    assert pids_mentioning(str(workdir)) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_missing_binaries_say_how_to_build_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BUILDCACHE_TOOLS_BIN", str(tmp_path / "empty"))
    with pytest.raises(MissingBinariesError, match="scripts/build-test-tools"):
        ControlPlane(tmp_path / "plane").start()
    assert not (tmp_path / "plane").exists()


def test_fixture_helper_fails_the_test_with_the_build_hint_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("BUILDCACHE_TOOLS_BIN", str(tmp_path / "empty"))
    with pytest.raises(pytest.fail.Exception, match="scripts/build-test-tools"):
        with running_control_plane(tmp_path / "plane", namespaces=("never",)):
            pytest.fail("the body ran without a control plane")
    assert not (tmp_path / "plane").exists()


def test_fixture_helper_populates_and_stops_the_plane(tmp_path):
    require_binaries("etcd", "kube-apiserver", "kubectl")
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-x"}}
    with running_control_plane(tmp_path / "plane", namespaces=("team-x",), objects=(node,)) as plane:
        pids = plane.pids
        assert plane.kubectl("get", "namespace", "team-x", "-o", "name").stdout.strip() == \
            "namespace/team-x"
        assert plane.kubectl("get", "node", "node-x", "-o", "name").stdout.strip() == "node/node-x"
    assert not any(pid_alive(p) for p in pids)
    assert not (tmp_path / "plane").exists()


def test_cli_up_prints_kubeconfig_and_cleans_up_on_sigterm(tmp_path):
    binaries = require_binaries("etcd", "kube-apiserver", "kubectl")
    workdir = tmp_path / "up"
    proc = subprocess.Popen([sys.executable, str(HARNESS), "up", "--dir", str(workdir), "--no-controller-manager"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until ready, or EOF if it failed
        assert line.startswith("KUBECONFIG="), f"no KUBECONFIG line; stderr:\n{proc.stderr.read()}"
        kubeconfig = line.strip().split("=", 1)[1]
        assert kubeconfig == str(workdir / "kubeconfig")
        ready = subprocess.run([str(binaries["kubectl"]), "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"],
                               capture_output=True, text=True, timeout=60)
        assert ready.stdout.strip() == "ok", ready.stderr
        children = pids_mentioning(str(workdir))
        assert len(children) >= 2  # etcd and kube-apiserver (and the CLI itself)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert pids_mentioning(str(workdir)) == []
        assert not workdir.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
