"""Scoped reads with replication, between two real agents on separate network hosts.

A caller that is not a trusted writer reads its own scope first (`scope/<ns>/httpcache/<key>`),
then the trusted scope. With replication on, a local miss of the own-scope key asks the key's
owners before the trusted key is read, so without a cache of those misses every untrusted read
of a trusted entry costs a peer round trip. This measures that with the reader's
buildcache_peer_requests_total{outcome="miss"} (replication.scopeMissTtl 0: asked every time,
the behaviour before the cache; the default: asked once per TTL), and performs the attack the
cache must not open: an untrusted writer's entry wins for that writer only, on every agent, and
is never hidden from it by a remembered miss on an agent it reaches.

Two agents, copies 2 (each owns every key, so every write is pushed to the other and every
local miss asks the other). Identity from a tokens file: a trusted writer and two pull-request
scopes. Needs root (CAP_NET_ADMIN), like every netns test.
"""

import time

import pytest

from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent
from harness.netns import NetnsCluster

from conftest import metric

TOKENS = {"release": "release-token-0123456789", "pr-a": "pr-a-token-0123456789abc",
          "pr-b": "pr-b-token-0123456789abc"}


def as_(scope):
    return {"Authorization": f"Bearer {TOKENS[scope]}"} if scope else {}


def wait_for(what, fn, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)


@pytest.fixture
def pair(tmp_path):
    """start(scope_miss_ttl) -> two agents that are each other's peers (copies 2)."""
    stack = []

    def start(scope_miss_ttl=None):
        net = NetnsCluster(2).__enter__()
        stack.append(net)
        tokens = tmp_path / "tokens.yaml"
        tokens.write_text("tokens:\n" + "".join(
            f'  - {{token: "{t}", scope: {s}, trustedWriter: {str(s == "release").lower()}}}\n'
            for s, t in TOKENS.items()))
        peers = ", ".join(f"{n.address}:{PEER_PORT}" for n in net.nodes)
        agents = []
        for i, node in enumerate(net.nodes):
            data = tmp_path / f"node{i}" / "data"
            data.parent.mkdir(exist_ok=True)
            config = (f"listen: {node.address}:{HTTP_PORT}\n"
                      f"store: {{dataDir: {data}, maxSize: 1Gi}}\n"
                      f"identity: {{tokensFile: {tokens}}}\n"
                      "replication:\n"
                      f"  listen: {node.address}:{PEER_PORT}\n"
                      "  copies: 2\n"
                      f"  peers: [{peers}]\n"
                      "  hydrate: {enabled: false}\n")
            if scope_miss_ttl is not None:
                config += f"  scopeMissTtl: {scope_miss_ttl}\n"
            agents.append(NetAgent(net, i, data, config))
            stack.append(agents[-1])
        return agents

    yield start
    for thing in reversed(stack):
        if isinstance(thing, NetAgent):
            thing.stop()
        else:
            thing.close()


def put(agent, path, body, scope):
    status, _, _ = agent.request("PUT", path, data=body, headers=as_(scope))
    assert status // 100 == 2, (path, scope, status)


def get(agent, path, scope):
    status, body, _ = agent.request("GET", path, headers=as_(scope))
    return status, body


def pushed(agent):
    return metric(agent.metrics(), "buildcache_peer_push_queue") == 0


def peer_misses(agent):
    return metric(agent.metrics(), "buildcache_peer_requests_total", outcome="miss")


@pytest.mark.parametrize("ttl,asks", [("0s", 10), (None, 1)], ids=["no-miss-cache", "default"])
def test_untrusted_reads_of_a_trusted_entry_ask_the_peer_once_per_ttl(pair, ttl, asks):
    writer_agent, reader_agent = pair(ttl)
    put(writer_agent, "/cache/shared/obj", b"trusted bytes", "release")
    wait_for("the push to the other owner", lambda: pushed(writer_agent))
    # The trusted entry is local on the reader's agent (pushed): a trusted read asks no peer.
    before = peer_misses(reader_agent)
    assert get(reader_agent, "/cache/shared/obj", "release") == (200, b"trusted bytes")
    assert peer_misses(reader_agent) == before
    for _ in range(10):
        assert get(reader_agent, "/cache/shared/obj", "pr-a") == (200, b"trusted bytes")
    # Each ask is for pr-a's own-scope key, which no agent holds.
    assert peer_misses(reader_agent) - before == asks


def test_an_untrusted_writers_entry_wins_for_that_writer_only(pair):
    a, b = pair()
    put(a, "/cache/x", b"trusted", "release")
    # pr-b reads on b first: its own-scope miss is now remembered there.
    assert get(b, "/cache/x", "pr-b") == (200, b"trusted")
    # pr-a and pr-b write the same key through a: each into its own scope, pushed to b.
    put(a, "/cache/x", b"from pr-a", "pr-a")
    put(a, "/cache/x", b"from pr-b", "pr-b")
    wait_for("the pushes to the other owner", lambda: pushed(a))
    for agent in (a, b):
        assert get(agent, "/cache/x", "pr-a") == (200, b"from pr-a")
        # The remembered miss does not hide pr-b's pushed entry from pr-b: the local lookup
        # comes first.
        assert get(agent, "/cache/x", "pr-b") == (200, b"from pr-b")
        assert get(agent, "/cache/x", "release") == (200, b"trusted")
        assert get(agent, "/cache/x", None) == (200, b"trusted")  # anonymous
    # A write through the reader's own agent ends its remembered miss at once.
    assert get(b, "/cache/y", "pr-a")[0] == 404
    put(b, "/cache/y", b"pr-a's y", "pr-a")
    assert get(b, "/cache/y", "pr-a") == (200, b"pr-a's y")
    assert get(b, "/cache/y", "pr-b")[0] == 404
    assert get(a, "/cache/y", "release")[0] == 404  # nothing reached the trusted scope


def test_attribution_counts_each_scope_on_each_agent(pair):
    a, b = pair()
    put(a, "/cache/z", b"12345", "release")
    wait_for("the push to the other owner", lambda: pushed(a))
    for agent in (a, b):
        assert get(agent, "/cache/z", "pr-a") == (200, b"12345")
        assert get(agent, "/cache/none", "pr-b")[0] == 404
    for agent in (a, b):
        m = agent.metrics()
        assert metric(m, "buildcache_scope_requests_total", scope="pr-a", result="hit") == 1
        assert metric(m, "buildcache_scope_bytes_total", scope="pr-a", result="hit") == 5
        assert metric(m, "buildcache_scope_requests_total", scope="pr-b", result="miss") == 1
        # The trusted writer's PUT is no lookup.
        assert metric(m, "buildcache_scope_requests_total", scope="release") == 0
