"""The Kubernetes client (common/kube) and the in-process Operator (operator/app)
against a real kube-apiserver and etcd.

The cases are C++ (common/kube/kube_integration_test.cc and operator/app/
operator_integration_test.cc, built as tests/kube_integration_test and
tests/operator_integration_test next to BUILDCACHE_BIN_DIR); this file starts the control plane,
installs the BuildCache CRD, and runs each case as one pytest test with KUBECONFIG and
BUILDCACHE_ETCD_URL set. The API server serves podtemplates without its watch cache, so the C++
cases can make a watch's resourceVersion expire by compacting etcd.
"""

import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.cpfixture import control_plane_fixture  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
BINARIES = [BIN_DIR.parent / "tests" / name
            for name in ("kube_integration_test", "operator_integration_test")]
CRD = REPO / "crds" / "buildcache.io_buildcaches.yaml"
APISERVER_ARGS = ("--watch-cache-sizes=podtemplates#0",)


def list_cases():
    """(binary, "Suite.Case") for every gtest case, or (binary, placeholder) that fails when the
    binary is missing."""
    cases = []
    for binary in BINARIES:
        if not binary.exists():
            cases.append(pytest.param(binary, "<binary missing>", id=f"{binary.name}-missing"))
            continue
        out = subprocess.run([str(binary), "--gtest_list_tests"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        suite = ""
        for line in out.splitlines():
            if not line.strip() or line.startswith("Running main"):
                continue
            if not line.startswith(" "):
                suite = line.strip()
            else:
                case = suite + line.strip().split()[0]
                cases.append(pytest.param(binary, case, id=case))
    return cases


# The CRD is for operator_integration_test.
cp = control_plane_fixture(crd=CRD, extra_apiserver_args=APISERVER_ARGS)


@pytest.mark.parametrize(("binary", "case"), list_cases())
def test_kube_client(cp, binary, case):
    if case == "<binary missing>":
        pytest.fail(f"{binary} is missing: build the {binary.name} target", pytrace=False)
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "BUILDCACHE_ETCD_URL": cp.etcd_url}
    proc = subprocess.run([str(binary), f"--gtest_filter={case}", "--gtest_color=no"],
                          capture_output=True, text=True, timeout=300, env=env)
    # The gtest report first, then the library's JSON log lines (stderr), for a failing case.
    assert proc.returncode == 0, \
        f"{case} failed:\n{proc.stdout}\n--- log ---\n{proc.stderr[-6000:]}"
    assert "[  PASSED  ] 1 test" in proc.stdout, proc.stdout
