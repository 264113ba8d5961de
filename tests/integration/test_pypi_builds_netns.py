"""Wheels the agent built, across nodes: two real agents on network-namespace hosts, peers of each
other, with builders and a fixture index on the host side of the bridge.

A client on host 1 downloads an sdist and the sdist's owner builds it (one build per sdist in the
cluster: host 1's agent, or host 2's when it owns the sdist); host 2's pip, with an empty pip
cache and no upload step anywhere, installs the built wheel and no second build runs (host 2's
agent finds the wheel the owners hold before it would build). Needs root (network namespaces) and
bubblewrap, like the other netns and build tests.
"""

import json
import shutil
import time

import pytest

from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent
from harness.netns import NetnsCluster
from harness.rendezvous import owners

from conftest import metric
from test_pypi import FixtureIndex, client_env
from test_pypi_builds import (BUILD_TIMEOUT, BUILDER_PYTHON, backend_wheels,  # noqa: F401
                              make_sdist)

JSON_ACCEPT = {"Accept": "application/vnd.pypi.simple.v1+json"}


def agent_config(net, i, data_dir, index):
    node = net.nodes[i]
    peers = ", ".join(f"{n.address}:{PEER_PORT}" for n in net.nodes)
    return (f"listen: {node.address}:{HTTP_PORT}\n"
            f"store: {{dataDir: {data_dir}, maxSize: 2Gi}}\n"
            "upstreamClient: {attempts: 1}\n"
            f"pypi:\n  upstream: {index.url}\n  metadataTtl: 0s\n"
            f"  builders:\n    - name: debian-py311\n      python: {BUILDER_PYTHON}\n"
            "  buildDeadline: 5m\n"
            "replication:\n"
            f"  listen: {node.address}:{PEER_PORT}\n"
            f"  copies: {len(net.nodes)}\n"
            f"  peers: [{peers}]\n"
            "  hydrate: {enabled: false}\n")


@pytest.fixture
def two_hosts(tmp_path, backend_wheels):  # noqa: F811 (the imported fixture)
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed: run scripts/setup")
    stack = []
    try:
        net = NetnsCluster(2).__enter__()
        stack.append(net.close)
        index = FixtureIndex(net.host_address)
        stack.append(index.close)
        index.files.update(backend_wheels)
        agents = []
        for i in range(2):
            data = tmp_path / f"node{i}" / "data"
            data.parent.mkdir()
            agents.append(NetAgent(net, i, data, agent_config(net, i, data, index)))
            stack.append(agents[-1].stop)
        yield net, index, agents
    finally:
        for close in reversed(stack):
            close()


def pip(net, host, *args):
    """pip of the builder's Python, run on host (0-based), with no pip cache or configuration."""
    env = client_env({"PIP_TRUSTED_HOST": " ".join(n.address for n in net.nodes)})
    out = net.run(host, [BUILDER_PYTHON, "-m", "pip", *args], env=env, timeout=600)
    return out.returncode, out.stdout + out.stderr


def page_files(agent, project):
    status, body, _ = agent.request("GET", f"/pypi/simple/{project}/", headers=JSON_ACCEPT)
    assert status == 200, body
    return [f["filename"] for f in json.loads(body)["files"]]


def test_wheel_built_on_one_host_is_installed_on_another_without_a_build(two_hosts, tmp_path):
    net, index, (one, two) = two_hosts
    index.files["cbuilt"] = [make_sdist(tmp_path, "cbuilt", "1.0")]

    # Host 1: a client downloads the sdist (no build of its own); the sdist's owner (host 1's
    # agent, or host 2's when it owns the sdist: one build per sdist in the cluster) builds it.
    peers = [one.peer, two.peer]
    builder = (one, two)[peers.index(owners("pypi/files/cbuilt/cbuilt-1.0.tar.gz", peers, 2)[0])]
    code, text = pip(net, 0, "download", "--no-deps", "--no-binary", ":all:",
                     "--no-build-isolation", "--index-url", f"{one.url}/pypi/simple/",
                     "-d", tmp_path / "dl1", "cbuilt==1.0")
    assert code == 0, text
    done = builder.wait_for_log("pypi build succeeded", timeout=BUILD_TIMEOUT)
    wheel = done["wheel"]
    assert wheel.startswith("cbuilt-1.0-cp311-cp311-linux_"), done
    deadline = time.monotonic() + 60  # the owner pushes it to host 1 when host 1 asked
    while wheel not in page_files(one, "cbuilt"):
        assert time.monotonic() < deadline, "the wheel never reached host 1"
        time.sleep(0.5)

    # Host 2: an empty pip cache, no upload step; pip installs the wheel host 1 built.
    venv = tmp_path / "venv2"
    assert net.run(1, [BUILDER_PYTHON, "-m", "venv", venv]).returncode == 0
    out = net.run(1, [venv / "bin" / "python", "-m", "pip", "install", "--no-cache-dir",
                      "--index-url", f"{two.url}/pypi/simple/", "cbuilt==1.0"],
                  env=client_env({"PIP_TRUSTED_HOST": two.url.split("//")[1].split(":")[0]}),
                  timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert wheel in text and "Building wheel" not in text, text
    check = net.run(1, [venv / "bin" / "python", "-c", "import cbuilt; print(cbuilt.answer())"])
    assert check.stdout.strip() == "42", check

    # A client on host 2 that downloads the sdist anyway starts no build there: the agent finds
    # the wheel its peers hold first.
    code, text = pip(net, 1, "download", "--no-deps", "--no-binary", ":all:",
                     "--no-build-isolation", "--index-url", f"{two.url}/pypi/simple/",
                     "-d", tmp_path / "dl2", "cbuilt==1.0")
    assert code == 0, text
    assert metric(two.metrics(), "buildcache_pypi_built_wheels_served_total") == 1
    started = [metric(a.metrics(), "buildcache_pypi_builds_total", outcome="started")
               for a in (one, two)]
    assert sum(started) == 1, started
    records = [json.loads(a.get("/pypi/builds/")[1])["builds"] for a in (one, two)]
    assert sum(len(r) for r in records) == 1, records
