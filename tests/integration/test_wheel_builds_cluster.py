"""Wheel builds in builder pods end to end, on real nodes (tests/harness/kubecluster.py): the
chart's operator and CRDs, a BuildCache whose pypi builder image is the CI image (Debian's
python3, pip and gcc), and an upstream index (on the host's bridge address) that has only an sdist
with a C extension.

1. A Job on node 1 pip-installs the sdist through its agent (compiling it itself, as without the
   cache); the agent schedules a build, creates a WheelBuild, the operator runs its pod, the pod
   fetches the agent's build script, builds and uploads the wheel, and the wheel is listed with
   its provenance (the builder and its image).
2. A Job on node 2 installs with --only-binary :all:, which only the built wheel satisfies, and
   imports the extension.

Needs what test_cluster_smoke.py needs and the CI image (docs/real-cluster.md). By hand, as root:
    python3 -m pytest -q -p no:cacheprovider tests/integration/test_wheel_builds_cluster.py
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from harness import clusterflow, nodeimages  # noqa: E402
from harness.clusterflow import agent_pods, wait_for  # noqa: E402
from harness.kubecluster import KubeCluster  # noqa: E402
from test_pypi import FixtureIndex  # noqa: E402
from test_pypi_builds import backend_wheels, make_sdist  # noqa: E402,F401

NS, NAME = "ci", "wheels"
PROJECT = "cbuilt"
INSTALL = """set -e
python3 -m venv /tmp/venv
/tmp/venv/bin/pip install --disable-pip-version-check --no-cache-dir {flags} {project}==1.0
/tmp/venv/bin/python -c "import {project}; assert {project}.answer() == 42"
echo INSTALLED_OK
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, backend_wheels):  # noqa: F811 (the fixture)
    work = tmp_path_factory.mktemp("kubecluster")
    with KubeCluster(work / "cluster", nodes=2) as kc:
        index = FixtureIndex(address=kc.net.host_address)
        try:
            index.files.update(backend_wheels)
            index.files[PROJECT] = [make_sdist(work, PROJECT, "1.0")]
            clusterflow.load_images(kc, work, ci=True)
            clusterflow.helm_install(kc)
            kc.kubectl("create", "namespace", NS)
            kc.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
                "metadata": {"name": NAME, "namespace": NS},
                "spec": {"nodeSelector": {"buildcache.io/ci": "true"},
                         "agent": {"imagePullPolicy": "Never"},
                         "storage": {"maxSize": "2Gi"},
                         "ecosystems": {"pypi": {
                             "upstream": index.url, "metadataTTL": "1s", "wheelHouse": True,
                             "builders": [{"name": "py311", "image": nodeimages.CI_REF,
                                           "python": "3.11", "libcVersion": "2.36"}],
                             "buildDeadline": "10m"}},
                         "replication": {"copies": 2}}}))
            agent_pods(kc, NS, NAME, timeout=300)
            yield kc
        except BaseException:
            print(kc.describe(), file=sys.stderr)
            raise
        finally:
            index.close()


def agent_get(pod_ip: str, path: str) -> dict:
    out = subprocess.run(["curl", "-sf", "--noproxy", "*", f"http://{pod_ip}:8080{path}"],
                         capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout else {}


def builds(kc) -> list[dict]:
    found = []
    for pod in agent_pods(kc, NS, NAME).values():
        found += agent_get(pod["status"]["podIP"], "/pypi/builds/").get("builds", [])
    return found


def test_sdist_on_node_1_is_built_in_a_pod_and_node_2_installs_the_wheel(cluster):
    kc = cluster
    node1, node2 = kc.node_names[:2]
    log = clusterflow.run_job(kc, NS, "pip-node1", node1,
                              INSTALL.format(flags="", project=PROJECT),
                              {"buildcache.io/cache": NAME}, timeout=900)
    assert "INSTALLED_OK" in log, log[-3000:]

    def finished():
        done = [b for b in builds(kc) if b.get("project") == PROJECT and
                b.get("state") in ("succeeded", "failed")]
        return done[0] if done else None
    build = wait_for("the wheel build to finish", finished, 900, interval=3)
    events = json.loads(kc.kubectl("get", "events.events.k8s.io", "-n", NS, "-o", "json").stdout)
    wb_events = [(e["reason"], e.get("note", "")) for e in events["items"]
                 if e["regarding"].get("kind") == "WheelBuild"]
    print(json.dumps({"build": build, "wheelbuild_events": wb_events}), file=sys.stderr)
    assert build["state"] == "succeeded", (build, wb_events)
    # The operator ran it as a pod from the BuildCache's builder image.
    assert any(r == "PodCreated" and nodeimages.CI_REF in n for r, n in wb_events), wb_events
    # Listed, with its provenance (the builder and its image, the sdist it was built from) in the
    # agent's record of the build.
    owner = next(p for p in agent_pods(kc, NS, NAME).values()
                 if any(b.get("id") == build["id"]
                        for b in agent_get(p["status"]["podIP"], "/pypi/builds/").get("builds", [])))
    lines = [json.loads(line) for line in kc.kubectl(
        "logs", "-n", NS, owner["metadata"]["name"]).stdout.splitlines() if line.startswith("{")]
    [done] = [e for e in lines if e.get("msg") == "pypi build succeeded"]
    assert done["builder"] == f"py311 ({nodeimages.CI_REF})", done
    assert done["built_from"] == build["sdist_sha256"], done
    page = subprocess.run(["curl", "-sf", "--noproxy", "*",
                           f"http://{owner['status']['podIP']}:8080/pypi/simple/{PROJECT}/"],
                          capture_output=True, text=True, timeout=30).stdout
    assert build["wheel"] in page, page

    # Node 2: only a wheel will do, and the one there is was built by the cache.
    log = clusterflow.run_job(kc, NS, "pip-node2", node2,
                              INSTALL.format(flags="--only-binary :all:", project=PROJECT),
                              {"buildcache.io/cache": NAME}, timeout=600)
    assert "INSTALLED_OK" in log, log[-3000:]
    assert build["wheel"] in log, log[-3000:]  # pip names the file it installed
    # The agent deleted its WheelBuild when the build ended.
    assert json.loads(kc.kubectl("get", "wheelbuilds", "-n", NS, "-o", "json").stdout)["items"] == []
