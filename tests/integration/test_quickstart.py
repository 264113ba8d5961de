"""docs/quickstart.md, run against a real control plane: every `sh` block, in order, with the real
helm, kubectl and kubectl-buildcache, and the files the page names.

What a cluster would do on its own between the steps, the test does, and says so:
- No kubelet runs here, so the operator Deployment's pod never starts: after `helm install` the
  test runs the real operator binary with the flags of the chart's Deployment and a token of the
  chart's ServiceAccount, as that pod would.
- The API server reaches the webhook the way it reaches any Service: through the Service's
  endpoints (`--enable-aggregator-routing`), which the test publishes for the operator's address
  as the endpoint controller would for the pod (kube-controller-manager is not started, so that
  controller does not empty them again: no pod matches the Service here).
The assertions check what the page promises: the operator is installed, the BuildCache is
reconciled, the annotated pod got the environment variables, and `kubectl buildcache status`
shows the BuildCache.
"""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.cpfixture import running_control_plane  # noqa: E402
from harness.docblocks import parse_blocks  # noqa: E402
from harness.jsonlog import JsonLog  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "quickstart.md"
AGENTS_NS = "buildcache-agents"
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", ROOT / "build" / "bin")).resolve()
RELEASE_NS = "buildcache-system"


def wait_for(what, fn, timeout=60.0, interval=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}", pytrace=False)


def host_address():
    """An address of this machine that is not loopback (Endpoints may not name loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, only a route is chosen
        address = s.getsockname()[0]
    if address.startswith("127."):
        pytest.fail("this machine has no non-loopback IPv4 address for the webhook endpoint")
    return address


class Operator:
    def __init__(self, args):
        self.proc = subprocess.Popen([str(BIN_DIR / "buildcache-operator"), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self._log = JsonLog(self.proc)
        self.logged = self._log.logged

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def cp(tmp_path):
    # The cluster's one node (no kubelet runs it).
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}
    with running_control_plane(tmp_path / "cp", controller_manager=False,
                               extra_apiserver_args=("--enable-aggregator-routing=true",),
                               objects=(node,)) as plane:
        yield plane


def start_operator_as_the_deployment(cp, work):
    """The chart's Deployment, run here: its flags, its ServiceAccount's token."""
    deployment = json.loads(cp.kubectl("get", "deployment", "-n", RELEASE_NS, "-o", "json",
                                       "-l", "app.kubernetes.io/component=operator").stdout)
    pod = deployment["items"][0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    token = cp.kubectl("create", "token", pod["serviceAccountName"], "-n", RELEASE_NS).stdout.strip()
    kubeconfig = work / "operator-kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cp.url,
                                                "certificate-authority": str(cp.ca_file)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u",
                                               "namespace": RELEASE_NS}}],
        "current-context": "c"}))
    webhook_port = next(p["containerPort"] for p in container["ports"]
                        if p.get("name") == "webhook")
    args = [a for a in container.get("args", [])
            if not a.startswith(("--metrics-addr", "--webhook-listen", "--kubeconfig"))]
    operator = Operator([*args, "--kubeconfig", str(kubeconfig), "--metrics-addr=127.0.0.1:0",
                         f"--webhook-listen=0.0.0.0:{webhook_port}"])
    wait_for("the operator's webhook server", lambda: operator.logged("tls server listening"))
    # What the endpoint controller publishes once the operator pod is ready.
    service = json.loads(cp.kubectl("get", "service", "-n", RELEASE_NS, "-o", "json").stdout)
    webhook_service = next(s for s in service["items"] if s["metadata"]["name"].endswith("webhook"))
    name = webhook_service["metadata"]["name"]
    target = webhook_service["spec"]["ports"][0]
    cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-operator", "namespace": RELEASE_NS,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [host_address()], "conditions": {"ready": True}}],
        "ports": [{"port": webhook_port, "name": target.get("name", "https"),
                   "protocol": "TCP"}]}))
    # The operator writes the webhook's CA bundle; until then the API server cannot call it.
    wait_for("the webhook's caBundle", lambda: all(
        w["clientConfig"].get("caBundle") for w in json.loads(cp.kubectl(
            "get", "mutatingwebhookconfigurations", "-o", "json").stdout)["items"][0]["webhooks"]))
    return operator


def test_quickstart_runs_as_written(cp, tmp_path):
    for tool in ("buildcache-operator", "kubectl-buildcache"):
        if not (BIN_DIR / tool).exists():
            pytest.fail(f"{BIN_DIR / tool} is missing: build first", pytrace=False)
    blocks = parse_blocks(PAGE)
    runnable = [b for b in blocks if b.runnable]
    assert len(runnable) >= 5, "the quickstart lost its steps"
    # The reader's working directory: a checkout (charts/, examples/) and the files the page names.
    work = tmp_path / "reader"
    work.mkdir()
    for name in ("charts", "examples", "crds"):
        (work / name).symlink_to(ROOT / name)
    for block in blocks:
        if block.file and block.skip is None:
            (work / block.file).write_text(block.text)
    env = {**cp.env(), "PATH": f"{BIN_DIR}{os.pathsep}{cp.env()['PATH']}",
           "HOME": str(tmp_path / "home")}
    helm_dir = pathlib.Path.home() / ".cache" / "buildcache" / "tools" / "bin"
    env["PATH"] = f"{helm_dir}{os.pathsep}{env['PATH']}"
    operator = None
    outputs = []
    try:
        for block in runnable:
            out = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block.text], cwd=work,
                                 env=env, capture_output=True, text=True, timeout=300, check=False)
            assert out.returncode == 0, (f"quickstart.md:{block.line} failed:\n{block.text}\n"
                                         f"{out.stdout[-4000:]}{out.stderr[-4000:]}")
            outputs.append((block, out.stdout))
            if "helm install" in block.text:
                operator = start_operator_as_the_deployment(cp, tmp_path)
            if "kubectl apply -f examples/buildcache.yaml" in block.text:
                wait_for("the BuildCache's DaemonSet", lambda: cp.kubectl(
                    "get", "daemonset", "buildcache-ci", "-n", AGENTS_NS,
                    check=False).returncode == 0)
        by_text = {b.text: text for b, text in outputs}
        env_names = next(t for b, t in by_text.items() if "jsonpath" in b).split()
        for name in ("PIP_INDEX_URL", "GOPROXY", "npm_config_registry", "CCACHE_REMOTE_STORAGE",
                     "PIP_CACHE_DIR", "GOCACHE"):
            assert name in env_names, f"the webhook did not add {name}: {env_names}"
        status = next(t for b, t in by_text.items() if "buildcache status" in b)
        # One namespace asked: the table starts with the name, then Ready and the max size.
        assert re.search(r"^ci\s+(True|False)\s+\S+\s+100Gi\b", status, re.M), status
        # The example resource the page applies is the one in the repository, accepted as is.
        example = yaml.safe_load((ROOT / "examples" / "buildcache.yaml").read_text())
        stored = json.loads(cp.kubectl("get", "buildcache", "ci", "-n", AGENTS_NS, "-o",
                                       "json").stdout)
        # Agents and CI pods in different namespaces; the agents' peer port is authenticated and
        # the NetworkPolicy the example asks for exists.
        assert example["metadata"]["namespace"] == AGENTS_NS
        pod = json.loads(cp.kubectl("get", "pod", "build", "-n", "ci", "-o", "json").stdout)
        assert pod["metadata"]["namespace"] != AGENTS_NS
        for kind, name in (("secret", "buildcache-ci-peer-tls"),
                           ("networkpolicy", "buildcache-ci")):
            wait_for(f"{kind} {name}", lambda: cp.kubectl(
                "get", kind, name, "-n", AGENTS_NS, check=False).returncode == 0)
        for eco, settings in example["spec"]["ecosystems"].items():
            for key, value in settings.items():
                assert stored["spec"]["ecosystems"][eco][key] == value, (eco, key)
    finally:
        if operator:
            operator.stop()
        shutil.rmtree(work, ignore_errors=True)
