"""Go's build cache across nodes: host 1 builds through its agent; host 2, with empty caches,
builds through its own agent (peered with host 1) and compiles nothing. Hosts are network
namespaces on one bridge (tests/harness/netns.py); needs root."""

import pytest

from conftest import metric
from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent
from harness.netns import NetnsCluster
from test_gocacheprog import GO, PROG, compiles, go_env, stats, write_module


def agent_config(net, index, data_dir, peers):
    node = net.nodes[index]
    return "\n".join([
        f"listen: {node.address}:{HTTP_PORT}",
        f"store: {{dataDir: {data_dir}, maxSize: 2Gi}}",
        "replication:",
        f"  listen: {node.address}:{PEER_PORT}",
        "  copies: 2",
        "  peerTimeout: 2s",
        "  hydrate: {enabled: false}",
        "  peers: [" + ", ".join(peers) + "]",
    ]) + "\n"


@pytest.fixture
def two_hosts(tmp_path):
    net = NetnsCluster(2).__enter__()
    agents = []
    try:
        peers = [f"{node.address}:{PEER_PORT}" for node in net.nodes]
        for i in range(2):
            data = tmp_path / f"node{i}" / "data"
            data.parent.mkdir()
            agents.append(NetAgent(net, i, data, agent_config(net, i, data, peers)))
        yield net, agents
    finally:
        for agent in agents:
            agent.stop()
        net.__exit__(None, None, None)


def test_host_2_gets_host_1s_build_through_its_own_agent(two_hosts, tmp_path):
    if not GO or not PROG.exists():
        pytest.fail("needs go and a built buildcache-gocacheprog")
    net, agents = two_hosts
    root = tmp_path / "mod"
    want = write_module(root)
    outs = []
    for host in (0, 1):
        args = [f"--agent={agents[host].url}", f"--dir={tmp_path / f'dir{host}'}", "--stats"]
        env = go_env(tmp_path, args, f"host{host}")
        res = net.run(host, [GO, "build", "-x", "-o", str(tmp_path / f"bin{host}"), "."],
                      cwd=root, env=env, timeout=600)
        assert res.returncode == 0, res.stderr[-4000:]
        outs.append(res.stderr)
        ran = net.run(host, [str(tmp_path / f"bin{host}")])
        assert ran.stdout.strip() == want
    s1, s2 = stats(outs[0]), stats(outs[1])
    assert s1["uploads"] > 0 and s1["remote_hits"] == 0, s1
    assert compiles(outs[1]) == [], compiles(outs[1])
    assert s2["remote_hits"] > 0, s2
    # Host 2's client only ever talked to host 2's agent, which served every hit.
    m2 = agents[1].metrics()
    assert metric(m2, "buildcache_requests_total", frontend="httpcache", result="hit") >= \
        s2["remote_hits"]
