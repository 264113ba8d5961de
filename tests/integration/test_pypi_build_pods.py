"""Wheel builds in builder pods, the agent's side, against a real kube-apiserver and etcd: the
agent (pypi.builders with an image, pypi.buildPods) creates a WheelBuild for a build, and this
test plays the operator and the builder pod. It sees the WheelBuild appear, checks its spec, and
runs the contract's one-line bootstrap with this machine's python3 and the three environment
variables the operator sets from the spec; the agent's build script then downloads the sdist and
its build requirements through the agent, builds with real pip, and uploads the wheel and the
log. The wheel is listed with its provenance and a second pip install gets it. A WheelBuild the
operator marks Failed fails the build with its message.

Identity is on with anonymous access off: the build's index reads work only with its one-time
token (Basic, user wheelbuild), which writes nothing and dies with the build; the token appears
in no log line, metric or build log.

The WheelBuild CRD is the operator's (crds/buildcache.io_wheelbuilds.yaml) when the tree has it,
else a minimal one with the same names (before the operator's branch is merged).
"""

import base64
import hashlib
import json
import os
import pathlib
import platform
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import REPO
from harness.cpfixture import running_control_plane, wait_for
from test_pypi import FixtureIndex, client_env, run
from test_pypi_builds import BUILDER_PYTHON, BUILD_TIMEOUT, backend_wheels, make_sdist  # noqa: F401

NS = "ci"
BUILDCACHE = "bc"
CALLER_TOKEN = "ci-" + secrets.token_hex(16)
WHEELBUILDS = f"/apis/buildcache.io/v1alpha1/namespaces/{NS}/wheelbuilds"
# The operator's command, from the contract: the agent owns the script, the pod only fetches it.
BOOTSTRAP = ("import os,urllib.request as u;e=os.environ;exec(u.urlopen(u.Request("
             "e['BUILDCACHE_AGENT_URL']+'/pypi/builds/'+e['BUILDCACHE_BUILD_ID']+'/script',"
             "headers={'Authorization':'Bearer '+e['BUILDCACHE_BUILD_TOKEN']}),timeout=60).read())")

MINIMAL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "wheelbuilds.buildcache.io"},
    "spec": {"group": "buildcache.io", "scope": "Namespaced",
             "names": {"kind": "WheelBuild", "listKind": "WheelBuildList", "plural": "wheelbuilds",
                       "singular": "wheelbuild", "shortNames": ["wb"]},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                           "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {
                               "type": "object",
                               "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    crd = REPO / "crds" / "buildcache.io_wheelbuilds.yaml"
    if not crd.exists():
        crd = tmp_path_factory.mktemp("crd") / "wheelbuilds.json"
        crd.write_text(json.dumps(MINIMAL_CRD))
    with running_control_plane(tmp_path_factory.mktemp("cp"), namespaces=(NS,)) as plane:
        plane.apply_crd(crd, name="wheelbuilds.buildcache.io")
        yield plane


@pytest.fixture
def index(backend_wheels):  # noqa: F811
    fixture = FixtureIndex()
    fixture.files.update(backend_wheels)
    yield fixture
    fixture.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def this_platform():
    """The builder platform of this machine's python3 (it plays the builder image)."""
    out = subprocess.run([BUILDER_PYTHON, "-c", "import platform,sys;"
                          "print('%d.%d' % sys.version_info[:2], platform.libc_ver()[1],"
                          " platform.machine())"], capture_output=True, text=True, check=True)
    python, libc, cpu = out.stdout.split()
    return python, ".".join(libc.split(".")[:2]), cpu


@pytest.fixture
def pod_agent(cp, start_agent, tmp_path, index):
    python, libc, cpu = this_platform()
    port = free_port()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - {{token: \"{CALLER_TOKEN}\", scope: ci, name: ci-token}}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "logLevel: debug\n"
        f"identity: {{tokensFile: {tokens}, anonymous: none, kubernetes: {{kubeconfig: {cp.kubeconfig}}}}}\n"
        f"pypi:\n  upstream: {index.url}\n  metadataTtl: 0s\n"
        "  builders:\n  - name: py-pod\n    image: example.org/ci/python\n"
        f"    platform: {{python: \"{python}\", libcVersion: \"{libc}\", cpu: {cpu}}}\n"
        "  buildDeadline: 5m\n"
        f"  buildPods: {{namespace: $BC_TEST_NS, buildCache: {BUILDCACHE}, "
        "agentUrl: \"http://$(BC_TEST_ADDRESS)\"}\n")
    agent = start_agent(config=config, args=["--listen", f"127.0.0.1:{port}"],
                        env={"BC_TEST_NS": NS, "BC_TEST_ADDRESS": f"127.0.0.1:{port}"})
    assert agent.address == f"127.0.0.1:{port}", agent.address
    agent.wait_for_log("pypi build pods")
    return agent


def request(agent, method, path, *, token=None, basic=None, data=None):
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
    req = urllib.request.Request(agent.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def caller_index(agent):
    return f"http://ci:{CALLER_TOKEN}@{agent.address}/pypi/simple/"


def client(tmp_path, name):
    run([BUILDER_PYTHON, "-m", "venv", "--system-site-packages", tmp_path / name])
    return tmp_path / name / "bin"


def pip_install(agent, venv, requirement):
    return run([venv / "python", "-m", "pip", "install", "--no-cache-dir", "--no-build-isolation",
                "--index-url", caller_index(agent), requirement])


def await_wheelbuild(cp, project):
    def find():
        status, body = cp.request("GET", WHEELBUILDS)
        assert status == 200, body
        for item in body["items"]:
            if item["spec"]["sdist"]["project"] == project:
                return item
        return None
    return wait_for(f"a WheelBuild for {project}", find, timeout=120)


def builds(agent):
    status, body = request(agent, "GET", "/pypi/builds/", token=CALLER_TOKEN)
    assert status == 200, body
    return json.loads(body)["builds"]


def run_pod(wb, tmp_path):
    """The builder pod: the bootstrap with the operator's environment, nothing else."""
    home = tmp_path / "pod-home"
    home.mkdir()
    spec = wb["spec"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home),
           "BUILDCACHE_AGENT_URL": spec["agentURL"], "BUILDCACHE_BUILD_ID": spec["buildId"],
           "BUILDCACHE_BUILD_TOKEN": spec["uploadToken"], "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(["python3", "-c", BOOTSTRAP], env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT)


def assert_no_token_leaked(agent, token, build_id):
    assert token not in "\n".join(json.dumps(e) for e in agent.logs), "a token in the agent's log"
    status, metrics = request(agent, "GET", "/metrics", token=CALLER_TOKEN)
    assert status == 200 and token.encode() not in metrics
    status, log = request(agent, "GET", f"/pypi/builds/{build_id}/log", token=CALLER_TOKEN)
    assert status == 200 and token.encode() not in log, log


def test_the_pod_runs_the_agents_script_and_its_wheel_is_listed(cp, pod_agent, tmp_path, index):
    sdist = make_sdist(tmp_path, "cpod", "1.0")
    index.files["cpod"] = [sdist]
    python, _, _ = this_platform()
    # The first client compiles for itself; its sdist download starts the agent's build.
    _, text = pip_install(pod_agent, client(tmp_path, "first"), "cpod==1.0")
    assert "Building wheel for cpod" in text, text

    wb = await_wheelbuild(cp, "cpod")
    spec = wb["spec"]
    build_id, token = spec["buildId"], spec["uploadToken"]
    assert wb["metadata"]["name"] == f"{BUILDCACHE}-{build_id}"
    assert wb["metadata"]["labels"]["buildcache.io/buildcache"] == BUILDCACHE
    assert spec["buildCache"] == BUILDCACHE and spec["builder"] == "py-pod", spec
    assert spec["sdist"] == {"project": "cpod", "version": "1.0", "filename": sdist.name,
                             "sha256": hashlib.sha256(sdist.read_bytes()).hexdigest()}, spec
    assert spec["agentURL"] == pod_agent.url
    assert 60 <= spec["deadlineSeconds"] <= 300, spec
    [running] = builds(pod_agent)
    assert running["state"] == "running" and running["id"] == build_id, running

    # While it runs, the token reads the index (anonymous access is off) and writes nothing.
    assert request(pod_agent, "GET", "/pypi/simple/cpod/")[0] == 401
    assert request(pod_agent, "GET", "/pypi/simple/cpod/", basic="wheelbuild:" + token)[0] == 200
    assert request(pod_agent, "POST", "/pypi/", basic="wheelbuild:" + token, data=b"x")[0] == 403
    assert request(pod_agent, "GET", f"/pypi/builds/{build_id}/script")[0] == 401
    assert request(pod_agent, "GET", f"/pypi/builds/{build_id}/script", token=CALLER_TOKEN)[0] == 401

    pod = run_pod(wb, tmp_path)
    assert pod.returncode == 0, pod.stdout + pod.stderr
    done = pod_agent.wait_for_log("pypi build succeeded", timeout=BUILD_TIMEOUT)
    wheel = done["wheel"]
    tag = "cp" + python.replace(".", "")
    assert wheel.startswith(f"cpod-1.0-{tag}-{tag}-linux_"), done
    [build] = builds(pod_agent)
    assert build["state"] == "succeeded" and build["builder"] == "py-pod", build
    status, log = request(pod_agent, "GET", f"/pypi/builds/{build_id}/log", token=CALLER_TOKEN)
    assert b"downloading build requirements from the agent's index" in log, log
    assert b"[buildcache] stored " + wheel.encode() in log, log

    # Listed with its provenance; the WheelBuild is gone; the token is spent.
    status, page = request(pod_agent, "GET", "/pypi/simple/cpod/", token=CALLER_TOKEN)
    assert wheel.encode() in page, page
    assert done["builder"] == "py-pod (example.org/ci/python)", done
    assert done["built_from"] == spec["sdist"]["sha256"], done
    wait_for("the WheelBuild deleted",
             lambda: cp.request("GET", f"{WHEELBUILDS}/{wb['metadata']['name']}")[0] == 404)
    assert request(pod_agent, "GET", f"/pypi/builds/{build_id}/script", token=token)[0] == 410
    assert request(pod_agent, "PUT", f"/pypi/builds/{build_id}/log", token=token,
                   data=b"replay")[0] == 410
    assert request(pod_agent, "GET", "/pypi/simple/cpod/", basic="wheelbuild:" + token)[0] == 401

    # The second client, with an empty pip cache, downloads that wheel and builds nothing.
    second = client(tmp_path, "second")
    _, text = pip_install(pod_agent, second, "cpod==1.0")
    assert wheel in text and "Building wheel" not in text, text
    _, text = run([second / "python", "-c", "import cpod; print(cpod.answer())"])
    assert text.strip() == "42", text
    assert_no_token_leaked(pod_agent, token, build_id)


def test_a_wheelbuild_the_operator_fails_fails_the_build_with_its_message(cp, pod_agent, tmp_path,
                                                                         index):
    index.files["cpodfail"] = [make_sdist(tmp_path, "cpodfail", "1.0")]
    pip_install(pod_agent, client(tmp_path, "first"), "cpodfail==1.0")
    wb = await_wheelbuild(cp, "cpodfail")
    name = wb["metadata"]["name"]
    message = "ErrImagePull: example.org/ci/python: not found"
    status, body = cp.request("PATCH", f"{WHEELBUILDS}/{name}/status",
                              {"status": {"phase": "Failed", "message": message}},
                              content_type="application/merge-patch+json")
    assert status == 200, body
    failed = pod_agent.wait_for_log("pypi build failed", timeout=120)
    assert message in failed["error"], failed
    [build] = builds(pod_agent)
    assert build["state"] == "failed" and message in build["error"], build
    status, log = request(pod_agent, "GET", f"/pypi/builds/{build['id']}/log", token=CALLER_TOKEN)
    assert message.encode() in log, log
    wait_for("the WheelBuild deleted", lambda: cp.request("GET", f"{WHEELBUILDS}/{name}")[0] == 404)
    # The failure is remembered: the next download starts no new WheelBuild.
    pip_install(pod_agent, client(tmp_path, "second"), "cpodfail==1.0")
    status, body = cp.request("GET", WHEELBUILDS)
    assert [i for i in body["items"] if i["spec"]["sdist"]["project"] == "cpodfail"] == []
    assert_no_token_leaked(pod_agent, wb["spec"]["uploadToken"], build["id"])
