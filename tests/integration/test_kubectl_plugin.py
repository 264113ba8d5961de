"""The kubectl plugin (kubectl-buildcache) run through the real kubectl against a real
kube-apiserver and etcd (tests/harness/controlplane.py).

BuildCaches are applied with kubectl and their status is written through the status subresource,
as the operator writes it. `kubectl buildcache env` is compared with what the admission webhook
(tests/webhook_e2e_server, next to BUILDCACHE_BIN_DIR, registered through a
MutatingWebhookConfiguration) puts into a pod the API server stores.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.controlplane import free_port  # noqa: E402
from harness.cpfixture import running_control_plane  # noqa: E402
from harness.webhook import loopback_webhook_configuration, namespaces_except  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
PLUGIN = BIN_DIR / "kubectl-buildcache"
WEBHOOK_SERVER = BIN_DIR.parent / "tests" / "webhook_e2e_server"
CRD = REPO / "crds" / "buildcache.io_buildcaches.yaml"
WEBHOOK_NS = "buildcache-system"
CONFIG = "buildcache-plugin-e2e"

CI = {
    "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
    "metadata": {"name": "ci", "namespace": "ci-system"},
    "spec": {
        "storage": {"maxSize": "200Gi"},
        "ecosystems": {
            "pypi": {"upstream": "https://pypi.example.internal/simple"},
            "goproxy": {"upstream": "https://goproxy.example.internal"},
            "npm": {"upstream": "https://npm.example.internal"},
            "httpcache": {"maxObjectSize": "512Mi"},
        },
        "directories": [
            {"name": "gobuild", "mountPath": "/root/.cache/go-build", "maxSize": "50Gi"},
            {"name": "pip", "mountPath": "/root/.cache/pip", "maxSize": "20Gi"},
        ],
    },
}
CI_STATUS = {
    "observedGeneration": 1,
    "conditions": [{"type": "Ready", "status": "True", "reason": "AllAgentsReady",
                    "message": "3 of 3 agents ready",
                    "lastTransitionTime": "2026-11-28T10:00:00Z"}],
    "nodes": {"desired": 3, "ready": 3},
    "hitRatio": "0.94",
    "ecosystems": [{"name": "goproxy", "hitRatio": "0.8", "lookups": 50},
                   {"name": "pypi", "hitRatio": "0.97", "lookups": 200}],
    "identity": "podAddress+token;anonymous=read",
    "topNamespaces": [{"name": "release", "savedBytes": 44236358451, "hitRatio": "0.97",
                       "lookups": 183220},
                      {"name": "(anonymous)", "savedBytes": 2048, "hitRatio": "0.5",
                       "lookups": 4}],
}
COLD = {
    "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
    "metadata": {"name": "cold", "namespace": "team-a"},
    "spec": {"storage": {"maxSize": "10Gi"}, "ecosystems": {"httpcache": {}}},
}
COLD_STATUS = {
    "conditions": [{"type": "Ready", "status": "False", "reason": "AgentsNotReady",
                    "message": "1 of 2 agents ready",
                    "lastTransitionTime": "2026-11-28T10:00:00Z"}],
    "nodes": {"desired": 2, "ready": 1},
}


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    for binary in (PLUGIN, WEBHOOK_SERVER):
        if not binary.exists():
            pytest.fail(f"{binary} is missing: build it first", pytrace=False)
    with running_control_plane(tmp_path_factory.mktemp("cp"), crd=CRD,
                               namespaces=(WEBHOOK_NS, "ci-system", "team-a")) as plane:
        for cache, status in ((CI, CI_STATUS), (COLD, COLD_STATUS)):
            plane.kubectl("apply", "-f", "-", input=json.dumps(cache))
            plane.kubectl("patch", "buildcache", cache["metadata"]["name"], "-n",
                          cache["metadata"]["namespace"], "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status}))
        yield plane


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A PATH directory holding the plugin, as `kubectl krew` or a package would install it."""
    directory = tmp_path_factory.mktemp("plugins")
    (directory / "kubectl-buildcache").symlink_to(PLUGIN)
    return directory


def kubectl_buildcache(cp, plugin_path, *args, env=None):
    """`kubectl buildcache ARGS`: kubectl finds the plugin on PATH and runs it."""
    environment = {**cp.env(), "PATH": f"{plugin_path}{os.pathsep}{os.environ.get('PATH', '')}",
                   **(env or {})}
    return subprocess.run([str(cp.binaries["kubectl"]), "buildcache", *args],
                          capture_output=True, text=True, timeout=60, env=environment)


def test_kubectl_lists_the_plugin(cp, plugin_path):
    proc = subprocess.run([str(cp.binaries["kubectl"]), "plugin", "list"], capture_output=True,
                          text=True, timeout=60,
                          env={**cp.env(), "PATH": f"{plugin_path}{os.pathsep}/usr/bin:/bin"})
    assert str(plugin_path / "kubectl-buildcache") in proc.stdout, proc.stdout + proc.stderr


def test_status_table_over_all_namespaces(cp, plugin_path):
    proc = kubectl_buildcache(cp, plugin_path, "status", "-A")
    assert proc.returncode == 0, proc.stderr
    caches, top = proc.stdout.split("\n\n")
    # The caller namespaces the caches saved the most for (status.topNamespaces), after a blank
    # line.
    assert [re.split(r"\s{2,}", line) for line in top.splitlines()] == [
        ["CACHE", "CALLER NAMESPACE", "SAVED", "HIT RATIO", "LOOKUPS"],
        ["ci-system/ci", "release", "41.2GiB", "0.97", "183220"],
        ["ci-system/ci", "(anonymous)", "2.0KiB", "0.5", "4"]]
    lines = caches.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["NAMESPACE", "NAME", "READY", "NODES", "MAX SIZE",
                                             "HIT RATIO", "ECOSYSTEMS", "IDENTITY", "AGE"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert [r[:8] for r in rows] == [
        ["ci-system", "ci", "True", "3/3", "200Gi", "0.94", "goproxy=0.8,pypi=0.97",
         "podAddress+token;anonymous=read"],
        ["team-a", "cold", "False", "1/2", "10Gi", "<none>", "<none>", "<none>"],
    ]
    for row in rows:
        assert re.fullmatch(r"\d+[smhdy]", row[8]), row
    # Columns line up: every row starts its fields where the header does.
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S", lines[0].replace("MAX SIZE", "MAX_SIZE")
                                             .replace("HIT RATIO", "HIT_RATIO"))]
    for line in lines[1:]:
        assert all(line[s - 1] == " " and line[s] != " " for s in starts[1:]), line


def test_status_of_one_cache_as_json(cp, plugin_path):
    proc = kubectl_buildcache(cp, plugin_path, "status", "ci", "-n", "ci-system", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    [item] = json.loads(proc.stdout)["items"]
    stored = json.loads(cp.kubectl("get", "buildcache", "ci", "-n", "ci-system", "-o",
                                   "json").stdout)
    assert item == {
        "namespace": "ci-system", "name": "ci", "ready": "True", "readyReason": "AllAgentsReady",
        "nodes": {"ready": 3, "desired": 3}, "maxSize": "200Gi", "hitRatio": "0.94",
        "ecosystems": CI_STATUS["ecosystems"], "identity": CI_STATUS["identity"],
        "topNamespaces": CI_STATUS["topNamespaces"],
        "creationTimestamp": stored["metadata"]["creationTimestamp"],
    }


def test_status_uses_the_namespace_flag_and_the_contexts_default(cp, plugin_path):
    proc = kubectl_buildcache(cp, plugin_path, "status", "-n", "team-a")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["NAME", "cold"]
    proc = kubectl_buildcache(cp, plugin_path, "status")  # the context names no namespace
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "No BuildCaches found in namespace default.\n"


def dotenv(text):
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return [(name, value) for name, value in pairs]


def create_pod(cp, name, annotations):
    manifest = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "ci-system", "annotations": annotations},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]}}
    return json.loads(cp.kubectl("create", "-f", "-", "-o", "json",
                                 input=json.dumps(manifest)).stdout)


@pytest.fixture(scope="module")
def webhook(cp):
    port = free_port()
    cp.kubectl("create", "-f", "-", input=json.dumps(loopback_webhook_configuration(
        CONFIG, port, namespaces_except("kube-system", WEBHOOK_NS))))
    proc = subprocess.Popen([str(WEBHOOK_SERVER), WEBHOOK_NS, CONFIG, f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=cp.env())
    log = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    try:
        assert proc.stdout.readline(), "webhook server exited:\n" + "".join(log)
        # The API server picks the configuration up asynchronously: probe until a pod is mutated.
        deadline = time.monotonic() + 60
        while True:
            name = "probe-" + uuid.uuid4().hex[:8]
            pod = create_pod(cp, name, {"buildcache.io/cache": "ci"})
            cp.kubectl("delete", "pod", "-n", "ci-system", name, "--wait=false")
            if pod["spec"]["containers"][0].get("env"):
                break
            assert time.monotonic() < deadline, "webhook never mutated a pod:\n" + "".join(log)
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.parametrize("use", [None, "goproxy,gobuild", "pypi, npm ,pip,httpcache"])
def test_env_equals_what_the_webhook_gives_a_pod(cp, plugin_path, webhook, use):
    annotations = {"buildcache.io/cache": "ci"}
    args = ["env", "ci", "-n", "ci-system", "--format", "dotenv"]
    if use is not None:
        annotations["buildcache.io/use"] = use
        args += ["--use", use]
    pod = create_pod(cp, "env-" + uuid.uuid4().hex[:8], annotations)
    from_webhook = [(e["name"], e["value"]) for e in pod["spec"]["containers"][0]["env"]]
    assert from_webhook
    proc = kubectl_buildcache(cp, plugin_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert dotenv(proc.stdout) == from_webhook  # same variables, values and order
    assert proc.stdout.startswith(
        "# BuildCache ci-system/ci: agent http://buildcache-ci.ci-system.svc\n")


def test_shell_format_evaluates_to_the_same_environment(cp, plugin_path):
    dot = kubectl_buildcache(cp, plugin_path, "env", "ci", "-n", "ci-system", "--format",
                             "dotenv")
    shell = kubectl_buildcache(cp, plugin_path, "env", "ci", "-n", "ci-system")
    assert dot.returncode == 0 and shell.returncode == 0, dot.stderr + shell.stderr
    names = [name for name, _ in dotenv(dot.stdout)]
    script = shell.stdout + "".join(f'printf "%s=%s\\n" {n} "${n}"\n' for n in names)
    evaluated = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                               timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout == "".join(f"{n}={v}\n" for n, v in dotenv(dot.stdout))


def test_github_format_is_name_value_lines(cp, plugin_path):
    proc = kubectl_buildcache(cp, plugin_path, "env", "ci", "-n", "ci-system", "--format",
                              "github", "--use", "goproxy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "GOPROXY=http://buildcache-ci.ci-system.svc/gomod\n"


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_buildcache_is_an_error(cp, plugin_path):
    assert_one_line_error(kubectl_buildcache(cp, plugin_path, "status", "nope", "-n", "team-a"),
                          'BuildCache "nope" in namespace "team-a" not found')
    assert_one_line_error(kubectl_buildcache(cp, plugin_path, "env", "nope", "-n", "ci-system"),
                          'BuildCache "nope" in namespace "ci-system" not found')


def test_a_cache_the_buildcache_does_not_offer_is_an_error(cp, plugin_path):
    assert_one_line_error(
        kubectl_buildcache(cp, plugin_path, "env", "ci", "-n", "ci-system", "--use", "pypi,maven"),
        '"maven"', "offers only pypi,goproxy,npm,httpcache,gobuild,pip")


def test_bad_flags_are_usage_errors(cp, plugin_path):
    proc = kubectl_buildcache(cp, plugin_path, "status", "-o", "yaml")
    assert_one_line_error(proc, "table or json")
    assert proc.returncode == 2


def test_no_kubeconfig_is_an_error(cp, plugin_path, tmp_path):
    proc = kubectl_buildcache(cp, plugin_path, "status",
                              env={"KUBECONFIG": str(tmp_path / "missing"),
                                   "HOME": str(tmp_path)})
    assert_one_line_error(proc, "kubeconfig")


def test_unreachable_api_server_is_an_error(cp, plugin_path, tmp_path):
    config = json.loads(cp.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    # kubectl hands its arguments to the plugin unchanged, --kubeconfig included.
    proc = kubectl_buildcache(cp, plugin_path, "status", "-A", "--kubeconfig", str(path))
    assert_one_line_error(proc, "unreachable", config["clusters"][0]["cluster"]["server"])
