"""One wheel build per sdist and platform in a cluster: two or three real agents on network-namespace
hosts, peers of each other, each with the same builder, and a fixture index on the host side.

- A client on host 1 downloads an sdist and the sdist's owner builds it; host 2's pip, with an
  empty pip cache and no upload step anywhere, installs the built wheel, and a client on host 2
  that downloads the sdist anyway starts no second build (its agent finds the owners' wheel).
- Real pip clients on all three hosts download the same sdist at the same moment. The sdist's
  rendezvous owner builds it once (the others offer the build to it over the peer protocol and
  join), every agent then lists the wheel and pip on every host downloads it.
- A wheel built after a node pulled a project's wheel-house list (a node that owns neither the
  list nor the build, and did not ask for it) becomes visible there within a bounded wait: the
  node asks the list's owners again once its copy is older than pypi.wheelListTtl.
- Attack: a caller on the peer port (admitted as a member) offers builds of an sdist by a digest
  the upstream index does not list for it, and of a file it does not list at all. Both are
  refused (NOT_FOUND), counted, and nothing is fetched or built.

Needs root (network namespaces) and bubblewrap, like the other netns and build tests.
"""

import concurrent.futures
import json
import shutil
import time

import grpc  # scripts/setup installs grpcio
import pytest

from conftest import metric
from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent
from harness.netns import NetnsCluster
from harness.rendezvous import owners
from test_pypi import FixtureIndex, client_env
from test_pypi_builds import (BUILD_TIMEOUT, BUILDER_PYTHON, backend_wheels,  # noqa: F401
                              make_sdist)
from test_replication_netns import _field

JSON_ACCEPT = {"Accept": "application/vnd.pypi.simple.v1+json"}


def agent_config(node, data_dir, index, peers, copies):
    return (f"listen: {node.address}:{HTTP_PORT}\n"
            f"store: {{dataDir: {data_dir}, maxSize: 2Gi}}\n"
            "upstreamClient: {attempts: 1}\n"
            f"pypi:\n  upstream: {index.url}\n  metadataTtl: 0s\n  wheelListTtl: 1s\n"
            f"  builders:\n    - name: debian-py311\n      python: {BUILDER_PYTHON}\n"
            "  buildDeadline: 5m\n"
            "replication:\n"
            f"  listen: {node.address}:{PEER_PORT}\n"
            f"  copies: {copies}\n"
            f"  peers: [{', '.join(peers)}]\n"
            "  hydrate: {enabled: false}\n")


@pytest.fixture
def cluster(tmp_path, backend_wheels):  # noqa: F811 (the imported fixture)
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed: run scripts/setup")
    stack = []

    def start(n, copies, host_is_member=False):
        net = NetnsCluster(n).__enter__()
        stack.append(net.close)
        index = FixtureIndex(net.host_address)
        stack.append(index.close)
        index.files.update(backend_wheels)
        peers = [f"{node.address}:{PEER_PORT}" for node in net.nodes]
        if host_is_member:
            # The bridge's host side as a member (nothing serves there): the test calls the peer
            # port from it as an agent of the cluster would.
            peers.append(f"{net.host_address}:{PEER_PORT}")
        agents = []
        for i, node in enumerate(net.nodes):
            data = tmp_path / f"node{i}" / "data"
            data.parent.mkdir()
            agents.append(NetAgent(net, i, data,
                                   agent_config(node, data, index, peers, copies)))
            stack.append(agents[-1].stop)
        for agent in agents:
            agent.wait_for_log("pypi builder ready")
        return net, index, agents, peers

    try:
        yield start
    finally:
        for close in reversed(stack):
            close()


def pip(net, host, *args):
    """pip of the builder's Python on host (0-based), with no pip cache or configuration."""
    env = client_env({"PIP_TRUSTED_HOST": " ".join(n.address for n in net.nodes)})
    out = net.run(host, [BUILDER_PYTHON, "-m", "pip", *args], env=env, timeout=600)
    return out.returncode, out.stdout + out.stderr


def download_sdist(net, host, agent, project, version, dest):
    return pip(net, host, "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
               "--index-url", f"{agent.url}/pypi/simple/", "-d", dest, f"{project}=={version}")


def page_files(agent, project):
    status, body, _ = agent.request("GET", f"/pypi/simple/{project}/", headers=JSON_ACCEPT)
    assert status == 200, body
    return [f["filename"] for f in json.loads(body)["files"]]


def builds(agent):
    status, body, _ = agent.get("/pypi/builds/")
    assert status == 200, body
    return json.loads(body)["builds"]


def wait_until(what, fn, timeout):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def built_wheel(agent, project):
    return next((f for f in page_files(agent, project) if f.endswith(".whl")), None)


def test_wheel_built_on_one_host_is_installed_on_another_without_a_build(cluster, tmp_path):
    net, index, (one, two), peers = cluster(2, copies=2)
    index.files["cbuilt"] = [make_sdist(tmp_path, "cbuilt", "1.0")]

    # Host 1: a client downloads the sdist (no build of its own); the sdist's owner (host 1's
    # agent, or host 2's when it owns the sdist: one build per sdist in the cluster) builds it.
    builder = (one, two)[peers.index(owners("pypi/files/cbuilt/cbuilt-1.0.tar.gz", peers, 2)[0])]
    code, text = download_sdist(net, 0, one, "cbuilt", "1.0", tmp_path / "dl1")
    assert code == 0, text
    done = builder.wait_for_log("pypi build succeeded", timeout=BUILD_TIMEOUT)
    wheel = done["wheel"]
    assert wheel.startswith("cbuilt-1.0-cp311-cp311-linux_"), done
    # The owner pushes it to host 1 when host 1 asked.
    wait_until("the wheel on host 1", lambda: wheel in page_files(one, "cbuilt"), 60)

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

    # A client on host 2 that downloads the sdist anyway starts no build there.
    code, text = download_sdist(net, 1, two, "cbuilt", "1.0", tmp_path / "dl2")
    assert code == 0, text
    assert metric(two.metrics(), "buildcache_pypi_built_wheels_served_total") == 1
    started = [metric(a.metrics(), "buildcache_pypi_builds_total", outcome="started")
               for a in (one, two)]
    assert sum(started) == 1, started
    assert sum(len(builds(a)) for a in (one, two)) == 1


def test_three_nodes_downloading_one_sdist_at_once_build_it_once(cluster, tmp_path):
    net, index, agents, peers = cluster(3, copies=2)
    index.files["cdedup"] = [make_sdist(tmp_path, "cdedup", "1.0")]
    owner = peers.index(owners("pypi/files/cdedup/cdedup-1.0.tar.gz", peers, 2)[0])

    # All three hosts' clients download the sdist at once (each compiles nothing: download only).
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(
            lambda i: download_sdist(net, i, agents[i], "cdedup", "1.0", tmp_path / f"dl{i}"),
            range(3)))
    for code, text in results:
        assert code == 0, text

    done = agents[owner].wait_for_log("pypi build succeeded", timeout=BUILD_TIMEOUT)
    wheel = done["wheel"]
    assert wheel.startswith("cdedup-1.0-cp311-cp311-linux_"), done
    # The wheel reaches every node (the owner pushes it to those that asked), bounded.
    for agent in agents:
        wait_until(f"{wheel} listed on {agent.url}", lambda a=agent: wheel in page_files(
            a, "cdedup"), 60)

    # Exactly one build ran in the cluster, on the owner.
    started = [metric(a.metrics(), "buildcache_pypi_builds_total", outcome="started")
               for a in agents]
    assert sum(started) == 1 and started[owner] == 1, started
    records = [builds(a) for a in agents]
    assert sum(len(r) for r in records) == 1, records
    assert records[owner][0]["state"] == "succeeded", records
    for i, agent in enumerate(agents):
        if i != owner:
            assert any(line.get("msg") == "pypi build offered" for line in agent.logs), i

    # Every node serves the wheel: pip on each host downloads it, builds nothing.
    for i, agent in enumerate(agents):
        code, text = pip(net, i, "download", "--no-deps", "--only-binary", ":all:",
                         "--index-url", f"{agent.url}/pypi/simple/", "-d", tmp_path / f"w{i}",
                         "cdedup==1.0")
        assert code == 0 and wheel in text, text
    served = sum(metric(a.metrics(), "buildcache_pypi_built_wheels_served_total") for a in agents)
    assert served == 3, served
    assert sum(metric(a.metrics(), "buildcache_pypi_builds_total", outcome="started")
               for a in agents) == 1


def test_wheel_built_later_becomes_visible_on_a_node_that_owns_nothing_of_it(cluster, tmp_path):
    net, index, agents, peers = cluster(3, copies=2)
    watcher = 2  # the node that pulled the list once and is told nothing
    # A project whose list the watcher does not own and whose sdists it does not own either.
    for n in range(1000):
        project = f"cfresh{n}"
        list_owners = owners(f"pypi/wheelhouse-index/{project}", peers, 2)
        v1 = owners(f"pypi/files/{project}/{project}-1.0.tar.gz", peers, 2)[0]
        v2 = owners(f"pypi/files/{project}/{project}-2.0.tar.gz", peers, 2)[0]
        if peers[watcher] not in list_owners and peers[watcher] not in (v1, v2):
            break
    index.files[project] = [make_sdist(tmp_path, project, "1.0")]
    builder1 = peers.index(v1)

    # Version 1.0 is built (a client on its owner downloads the sdist) ...
    code, text = download_sdist(net, builder1, agents[builder1], project, "1.0", tmp_path / "d1")
    assert code == 0, text
    first = agents[builder1].wait_for_log("pypi build succeeded", timeout=BUILD_TIMEOUT)["wheel"]
    # ... and the watcher pulls the project's list from its owners.
    wait_until("the list on the watcher", lambda: first in page_files(agents[watcher], project), 60)

    # Version 2.0 is published and built on its owner; the watcher is not told.
    index.files[project].append(make_sdist(tmp_path / "v2", project, "2.0"))
    builder2 = peers.index(v2)
    code, text = download_sdist(net, builder2, agents[builder2], project, "2.0", tmp_path / "d2")
    assert code == 0, text
    second = wait_until(
        "the second build", lambda: next((line["wheel"] for line in agents[builder2].logs
                                          if line.get("msg") == "pypi build succeeded"
                                          and line.get("wheel", "").startswith(
                                              f"{project}-2.0")), None), BUILD_TIMEOUT)
    # Within the TTL (1 s) and a bounded wait, the watcher lists it too.
    wait_until(f"{second} on the watcher",
               lambda: second in page_files(agents[watcher], project), 30)
    assert builds(agents[watcher]) == []


def _build_call(address, project, filename, sha256_raw):
    """Peer/Build as a caller on the peer port; the raw BuildResponse, or raises grpc.RpcError."""
    user_agent = ('pip/23.0.1 {"cpu":"x86_64","distro":{"libc":{"lib":"glibc","version":"2.36"}},'
                  '"implementation":{"name":"CPython","version":"3.11.2"},"python":"3.11.2",'
                  '"system":{"name":"Linux","release":"6.1"}}')
    request = (_field(1, project.encode()) + _field(2, filename.encode())
               + _field(3, _field(1, sha256_raw)) + _field(4, user_agent.encode())
               + _field(5, b"10.0.0.9:8081"))
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/buildcache.peer.v1.Peer/Build",
                                   request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        return call(request, timeout=60)


def test_forged_build_offers_are_refused_and_build_nothing(cluster, tmp_path):
    net, index, agents, peers = cluster(1, copies=1, host_is_member=True)
    agent = agents[0]
    index.files["cvictim"] = [make_sdist(tmp_path, "cvictim", "1.0")]
    forged = bytes(range(32))  # a digest nobody has
    for project, filename in (("cvictim", "cvictim-1.0.tar.gz"),   # listed, another digest
                              ("cvictim", "cvictim-6.6.tar.gz"),   # not listed at all
                              ("cnobody", "cnobody-1.0.tar.gz")):  # no such project
        with pytest.raises(grpc.RpcError) as refused:
            _build_call(agent.peer, project, filename, forged)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND, refused.value
    # A malformed offer (a path for a file name) is refused as such.
    with pytest.raises(grpc.RpcError) as refused:
        _build_call(agent.peer, "cvictim", "../../etc/passwd.tar.gz", forged)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value

    m = agent.metrics()
    assert metric(m, "buildcache_peer_calls_refused_total", call="Build", reason="bad_request") == 4
    assert metric(m, "buildcache_pypi_builds_total", outcome="started") == 0
    assert builds(agent) == []
    assert not [p for p in index.requests if p.startswith("/files/cvictim")], index.requests
    assert not any(line.get("msg") == "pypi build queued" for line in agent.logs)
