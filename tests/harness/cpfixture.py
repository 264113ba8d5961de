"""The control-plane set-up every Kubernetes integration test shares, in one place.

    @pytest.fixture(scope="module")
    def cp(tmp_path_factory):
        with running_control_plane(tmp_path_factory.mktemp("cp"), crd=CRD,
                                   namespaces=("ci-system",)) as plane:
            plane.kubectl("label", ...)  # what only this module needs
            yield plane

or, when the module needs nothing more, `cp = control_plane_fixture(crd=CRD, namespaces=(NS,))`.

A ControlPlane that cannot start (a missing binary, a component that dies) fails the test with
the harness's own message (which says how to build what is missing), without a traceback; the
control plane is stopped on every exit, including a failure while it is being populated.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from harness import polling
from harness.controlplane import ControlPlane, ControlPlaneError

__all__ = ["running_control_plane", "control_plane_fixture", "wait_for"]


@contextlib.contextmanager
def running_control_plane(workdir, *, crd=None, namespaces=(), objects=(), **plane_args):
    """Starts ControlPlane(workdir, **plane_args) and yields it after installing crd (a path, if
    given), creating namespaces and applying objects (manifests as dicts, in order). A
    ControlPlaneError while starting becomes pytest.fail with its message."""
    plane = ControlPlane(workdir, **plane_args)
    try:
        plane.start()
    except ControlPlaneError as err:  # MissingBinariesError included: it says how to build them
        message = str(err)
    else:
        message = None
    if message:  # outside the except block: the report shows the message, not a chained trace
        pytest.fail(message, pytrace=False)
    try:
        if crd is not None:
            plane.apply_crd(crd)
        for ns in namespaces:
            plane.kubectl("create", "namespace", ns)
        for manifest in objects:
            plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        yield plane
    finally:
        plane.stop()


def control_plane_fixture(*, scope="module", crd=None, namespaces=(), objects=(), **plane_args):
    """A pytest fixture (assign it to a module-level name, e.g. `cp`) that yields a
    running_control_plane in a fresh temporary directory, shared per `scope`."""

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory):
        with running_control_plane(tmp_path_factory.mktemp("cp"), crd=crd, namespaces=namespaces,
                                   objects=objects, **plane_args) as plane:
            yield plane

    return fixture


def wait_for(what, fn, timeout=60.0, interval=0.25):
    """Polls fn until it returns a truthy value, which is returned; fails the test on timeout.
    kubectl failures (AssertionError) while objects come and go count as not yet."""
    try:
        return polling.wait_for(what, fn, timeout, interval, tolerate=(AssertionError,))
    except TimeoutError as err:
        pytest.fail(str(err), pytrace=False)
