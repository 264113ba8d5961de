"""The operator's Kubernetes client (operator/kube) against a real kube-apiserver and etcd.

The cases are C++ (operator/kube/kube_integration_test.cc, built as tests/kube_integration_test
next to BUILDCACHE_BIN_DIR); this file starts the control plane and runs each case as one pytest
test with KUBECONFIG and BUILDCACHE_ETCD_URL set. The API server serves podtemplates without its
watch cache, so the C++ cases can make a watch's resourceVersion expire by compacting etcd.
"""

import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.controlplane import ControlPlane, ControlPlaneError  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
BINARY = BIN_DIR.parent / "tests" / "kube_integration_test"
APISERVER_ARGS = ("--watch-cache-sizes=podtemplates#0",)


def list_cases():
    """The gtest names in the binary ("Suite.Case"), or a placeholder that fails when missing."""
    if not BINARY.exists():
        return ["<binary missing>"]
    out = subprocess.run([str(BINARY), "--gtest_list_tests"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    cases, suite = [], ""
    for line in out.splitlines():
        if not line.strip() or line.startswith("Running main"):
            continue
        if not line.startswith(" "):
            suite = line.strip()
        else:
            cases.append(suite + line.strip().split()[0])
    return cases


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("cp"), extra_apiserver_args=APISERVER_ARGS)
    try:
        plane.start()
    except ControlPlaneError as err:  # MissingBinariesError included: it says how to build them
        message = str(err)
    else:
        message = None
    if message:
        pytest.fail(message, pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.mark.parametrize("case", list_cases())
def test_kube_client(cp, case):
    if case == "<binary missing>":
        pytest.fail(f"{BINARY} is missing: build the kube_integration_test target", pytrace=False)
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "BUILDCACHE_ETCD_URL": cp.etcd_url}
    proc = subprocess.run([str(BINARY), f"--gtest_filter={case}", "--gtest_color=no"],
                          capture_output=True, text=True, timeout=300, env=env)
    # The gtest report first, then the library's JSON log lines (stderr), for a failing case.
    assert proc.returncode == 0, \
        f"{case} failed:\n{proc.stdout}\n--- log ---\n{proc.stderr[-6000:]}"
    assert "[  PASSED  ] 1 test" in proc.stdout, proc.stdout
