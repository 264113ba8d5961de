"""Directory caches replicated between real agents on separate network hosts (network namespaces).

Each agent runs in its own namespace with its own store and its own node directory (`directories:`
in its configuration) and reaches the others over the real gRPC peer protocol. A file a "pod"
writes into one node's directory must appear byte-identical in the others', and a new node must
pull the hot set (hydrate) before its /readyz says ready. Needs root (CAP_NET_ADMIN).
"""

import hashlib
import os
import time
import urllib.error
import urllib.request

import pytest

from harness.netns import NetnsCluster

from conftest import metric
from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent


def dir_config(net, index, data_dir, cache_dir, peers, hydrate=True):
    node = net.nodes[index]
    return "\n".join([
        f"listen: {node.address}:{HTTP_PORT}",
        "logLevel: debug",
        f"store: {{dataDir: {data_dir}, maxSize: 1Gi}}",
        "replication:",
        f"  listen: {node.address}:{PEER_PORT}",
        "  peerTimeout: 2s",
        "  peers: [" + ", ".join(peers) + "]",
        f"  hydrate: {{enabled: {'true' if hydrate else 'false'}, maxTime: 60s, maxSize: 1Gi}}",
        "directories:",
        f"  - {{name: gobuild, path: {cache_dir}, maxSize: 256Mi, settle: 200ms}}",
    ]) + "\n"


def write_file(path, data, mode=0o644):
    """Writes like a build tool: into a temporary name, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def wait_for_file(path, data, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes() == data:
            return
        time.sleep(0.1)
    got = path.read_bytes()[:64] if path.exists() else None
    raise AssertionError(f"{path} never held the expected {len(data)} bytes (has {got!r})")


def readyz(agent):
    try:
        with urllib.request.urlopen(agent.url + "/readyz", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.fixture
def net4():
    with NetnsCluster(4) as net:
        yield net


def test_file_written_on_one_node_appears_on_the_others_and_a_new_node_hydrates(net4, tmp_path):
    net = net4
    first3 = [f"{n.address}:{PEER_PORT}" for n in net.nodes[:3]]
    # A, B and C list D from the start (as the agents' headless Service lists a pod before it is
    # ready): peer calls are taken from members' addresses only, and D hydrates from them.
    all4 = [f"{n.address}:{PEER_PORT}" for n in net.nodes]
    agents = []
    try:
        dirs = []
        for i in range(3):
            data = tmp_path / f"node{i}" / "data"
            cache = tmp_path / f"node{i}" / "gobuild"
            data.parent.mkdir()
            dirs.append(cache)
            agents.append(NetAgent(net, i, data, dir_config(net, i, data, cache, all4)))

        body = hashlib.sha256(b"gobuild").digest() * (3 * 1024 * 1024 // 32 + 7)
        rel = "ab/abcdef0123456789-d"
        write_file(dirs[0] / rel, body, 0o640)
        for d in dirs[1:]:
            wait_for_file(d / rel, body)
            # The entry's mode plus read for everyone (pods of any uid read pulled files).
            assert (d / rel).stat().st_mode & 0o777 == 0o644
            # Nothing but the file: no temporary leftovers, and the writer's .tmp never copied.
            assert sorted(p.name for p in d.rglob("*") if p.is_file()) == [rel.split("/")[1]]
        for a in agents[1:]:
            m = a.metrics()
            assert metric(m, "buildcache_dircache_pulled_files_total", directory="gobuild") == 1
            assert metric(m, "buildcache_dircache_pulled_bytes_total",
                          directory="gobuild") == len(body)
        m = agents[0].metrics()
        assert metric(m, "buildcache_dircache_indexed_files_total", directory="gobuild") == 1
        assert metric(m, "buildcache_dircache_bytes", directory="gobuild") == len(body)

        # A new node D: knows A, B and C; must hold the file when /readyz first says ready.
        data = tmp_path / "node3" / "data"
        cache = tmp_path / "node3" / "gobuild"
        data.parent.mkdir()
        d = NetAgent(net, 3, data, dir_config(net, 3, data, cache, first3))
        agents.append(d)
        statuses = []
        for _ in range(1200):  # bounded: hydration's maxTime is 60 s
            status = readyz(d)
            statuses.append(status)
            if status == 200:
                present = (cache / rel).exists() and (cache / rel).read_bytes() == body
                assert present, "ready before the hot set was hydrated"
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"never ready: {statuses[-5:]}")
        done = d.wait_for_log("hydration finished", timeout=5)
        assert done["files"] == 1 and done["bytes"] == len(body), done
        m = d.metrics()
        assert metric(m, "buildcache_dircache_hydration_bytes") == len(body)
        assert metric(m, "buildcache_dircache_hydration_target_bytes") == len(body)
        assert metric(m, "buildcache_dircache_hydrating") == 0
    finally:
        for a in reversed(agents):
            a.stop()


def wait_metric(agent, name, want, timeout=60, **labels):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = metric(agent.metrics(), name, **labels)
        if got == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name}{labels} never became {want} (is {got})")


def test_local_deletion_is_not_pulled_back_and_conflicts_are_left_alone(tmp_path):
    with NetnsCluster(2) as net:
        peers = [f"{n.address}:{PEER_PORT}" for n in net.nodes]
        agents, dirs = [], []
        try:
            for i in range(2):
                data = tmp_path / f"node{i}" / "data"
                cache = tmp_path / f"node{i}" / "pip"
                data.parent.mkdir()
                dirs.append(cache)
                agents.append(NetAgent(net, i, data, dir_config(net, i, data, cache, peers,
                                                                hydrate=False)))
            a, b = agents
            shared = b"wheel bytes " * 10000
            write_file(dirs[0] / "wheels/shared.whl", shared)
            wait_for_file(dirs[1] / "wheels/shared.whl", shared)

            # A pod on B deletes its copy; once B has noticed, a marker written on A reaching B
            # proves a later sync round ran, which must not have brought the file back.
            (dirs[1] / "wheels/shared.whl").unlink()
            wait_metric(b, "buildcache_dircache_files", 0, directory="gobuild")
            write_file(dirs[0] / "wheels/marker.whl", b"marker")
            wait_for_file(dirs[1] / "wheels/marker.whl", b"marker")
            assert not (dirs[1] / "wheels/shared.whl").exists()
            assert (dirs[0] / "wheels/shared.whl").read_bytes() == shared  # A keeps its own

            # The same path with different content on both nodes: each keeps its own.
            write_file(dirs[0] / "same.bin", b"from a")
            write_file(dirs[1] / "same.bin", b"from b")
            wait_metric(a, "buildcache_dircache_conflicts_total", 1, directory="gobuild")
            wait_metric(b, "buildcache_dircache_conflicts_total", 1, directory="gobuild")
            assert (dirs[0] / "same.bin").read_bytes() == b"from a"
            assert (dirs[1] / "same.bin").read_bytes() == b"from b"
        finally:
            for agent in reversed(agents):
                agent.stop()
