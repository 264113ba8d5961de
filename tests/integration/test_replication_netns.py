"""Peer replication between real agents on separate network hosts (Linux network namespaces).

Each agent runs in its own namespace with its own data directory and reaches the others over a
bridge (tests/harness/netns.py). The upstream is a fixture Maven repository served on the host
side of the bridge that counts requests per path and remembers which agent (by source address)
made them, so "the upstream sees each artifact once per cluster" is asserted exactly. Needs root
(CAP_NET_ADMIN), like every netns test.
"""

import base64
import hashlib
import json
import http.server
import os
import pathlib
import socketserver
import subprocess
import threading
import time

import pytest

from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent
from harness.netns import NetnsCluster
from harness.rendezvous import owners

from conftest import metric


# -- the fixture upstream --------------------------------------------------------------------------

class Upstream:
    """A Maven repository on the bridge: files, request counts and requesting addresses."""

    def __init__(self, address):
        self.files = {}
        self.redirects = {}  # path -> Location of a 302
        self.slow = {}  # path -> (chunk size, seconds between chunks)
        self.requests = {}
        self.clients = {}
        self.sent = {}  # path -> body bytes sent by the last response
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                with upstream.cond:
                    upstream.requests[path] = upstream.requests.get(path, 0) + 1
                    upstream.clients.setdefault(path, []).append(self.client_address[0])
                    upstream.cond.notify_all()
                    body = upstream.files.get(path)
                    slow = upstream.slow.get(path)
                    location = upstream.redirects.get(path)
                if location is not None:
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step, pause = slow or (len(body) or 1, 0)
                try:
                    for off in range(0, len(body), step):
                        self.wfile.write(body[off:off + step])
                        self.wfile.flush()
                        with upstream.cond:
                            upstream.sent[path] = off + len(body[off:off + step])
                            upstream.cond.notify_all()
                        if pause:
                            time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

            def server_bind(self):
                # HTTPServer.server_bind looks the host name up (getfqdn), which can hang for
                # seconds without DNS; the address is all that is needed.
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

        self.server = Server((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}/repo/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add_jar(self, path, body):
        with self.lock:
            self.files["/repo/" + path] = body
            self.files["/repo/" + path + ".sha1"] = hashlib.sha1(body).hexdigest().encode()

    def count(self, path):
        with self.lock:
            return self.requests.get("/repo/" + path, 0)

    def who(self, path):
        with self.lock:
            return list(self.clients.get("/repo/" + path, []))

    def wait_sent(self, path, at_least, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.sent.get("/repo/" + path, 0) < at_least:
                left = deadline - time.monotonic()
                assert left > 0, f"upstream never sent {at_least} bytes of {path}"
                self.cond.wait(left)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# -- agents inside namespaces ----------------------------------------------------------------------

def agent_config(net, index, data_dir, upstream, copies, peers=None, peers_file=None, tls=None,
                 peer_timeout="1s", npm=False, admin_token_file=None):
    node = net.nodes[index]
    lines = [
        f"listen: {node.address}:{HTTP_PORT}",
        "logLevel: debug",
        f"store: {{dataDir: {data_dir}, maxSize: 2Gi, verifyReads: changed}}",
        f"maven: {{upstream: {upstream.url}}}",
        *([f"npm: {{upstream: {upstream.url}}}"] if npm else []),
        "upstreamClient: {attempts: 1}",
        "replication:",
        f"  listen: {node.address}:{PEER_PORT}",
        f"  copies: {copies}",
        f"  peerTimeout: {peer_timeout}",
        "  hydrate: {enabled: false}",
    ]
    if peers is not None:
        lines.append("  peers: [" + ", ".join(peers) + "]")
    if peers_file is not None:
        lines.append(f"  peersFile: {peers_file}")
    if tls is not None:
        lines.append(f"  tls: {{certFile: {tls[0]}, keyFile: {tls[1]}, caFile: {tls[2]}}}")
    if admin_token_file is not None:
        lines.append(f"admin: {{tokenFile: {admin_token_file}}}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def cluster(tmp_path):
    """Starts n agents (all peers of each other) on a fresh bridge; yields (net, up, agents)."""
    stack = []

    def start(n=3, copies=2, use_peers_file=False, tls=None, setup=None, host_is_member=False,
              npm=False, admin_token_file=None):
        net = NetnsCluster(n).__enter__()
        stack.append(net)
        if setup:
            setup(net)
        up = Upstream(net.host_address)
        stack.append(up)
        peers = [f"{node.address}:{PEER_PORT}" for node in net.nodes]
        if host_is_member:
            # The bridge's host side is listed as a member (nothing serves there): a test client
            # calling from it plays an agent of the same cluster, admitted by its address.
            peers.append(f"{net.host_address}:{PEER_PORT}")
        peers_file = None
        if use_peers_file:
            peers_file = tmp_path / "peers"
            peers_file.write_text("# the cluster\n" + "\n".join(peers) + "\n")
        agents = []
        for i in range(n):
            data = tmp_path / f"node{i}" / "data"
            data.parent.mkdir()
            config = agent_config(net, i, data, up, copies,
                                  peers=None if use_peers_file else peers,
                                  peers_file=peers_file, tls=tls(i) if tls else None, npm=npm,
                                  admin_token_file=admin_token_file)
            agents.append(NetAgent(net, i, data, config))
            stack.append(agents[-1])
        return net, up, agents

    yield start
    for thing in reversed(stack):
        if isinstance(thing, NetAgent):
            thing.stop()
        elif isinstance(thing, Upstream):
            thing.close()
        else:
            thing.close()


def jar(name, size=200_000):
    path = f"io/buildcache/{name}/1.0/{name}-1.0.jar"
    body = hashlib.sha256(name.encode()).digest() * (size // 32)
    return path, body


def key_of(path):
    return "maven/files/" + path


def peer_names(agents):
    return [a.peer for a in agents]


# -- scenarios -------------------------------------------------------------------------------------

def test_artifact_fetched_upstream_once_is_a_peer_hit_elsewhere(cluster):
    net, up, agents = cluster(3, copies=2)
    path, body = jar("once")
    up.add_jar(path, body)
    for a in agents:
        status, got, headers = a.get("/maven/" + path)
        assert status == 200 and got == body, (a.peer, status, got[:200])
    # One upstream request per file for the whole cluster, made by the artifact's first owner.
    assert up.count(path) == 1
    assert up.count(path + ".sha1") == 1
    first = owners(key_of(path), peer_names(agents), 2)[0]
    assert up.who(path) == [first.split(":")[0]]
    # Every agent that is not the first owner got it from a peer (pulled, or pushed to the
    # second owner), and the one that is no owner asked a peer for it.
    for a in agents:
        m = a.metrics()
        if a.peer != first:
            assert metric(m, "buildcache_peer_bytes_total", direction="in") >= len(body), a.peer
        if a.peer not in owners(key_of(path), peer_names(agents), 2):
            assert metric(m, "buildcache_peer_requests_total", outcome="hit") >= 1, a.peer
        assert metric(m, "buildcache_peer_members") == 3
        assert metric(m, "buildcache_peer_members_live") == 3
    # And it is served locally afterwards, even with the upstream gone.
    up.files.clear()
    for a in agents:
        status, got, headers = a.get("/maven/" + path)
        assert status == 200 and got == body


def test_three_cold_nodes_asking_at_once_cause_one_upstream_request(cluster):
    net, up, agents = cluster(3, copies=2)
    path, body = jar("stampede", size=2_000_000)
    up.add_jar(path, body)
    up.slow["/repo/" + path] = (64 * 1024, 0.01)  # keeps the fetch in flight while others ask
    results = [None] * len(agents)

    def fetch(i):
        results[i] = agents[i].get("/maven/" + path, timeout=120)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(agents))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for i, r in enumerate(results):
        assert r is not None and r[0] == 200 and r[1] == body, (i, r and r[0])
    assert up.count(path) == 1
    # A checksum file has no digest of its own, and owners fetch for peers only what they can
    # verify: each agent that finds none in the cluster fetches it itself.
    assert 1 <= up.count(path + ".sha1") <= len(agents)


def test_httpcache_put_on_one_agent_is_readable_on_the_others(cluster):
    net, up, agents = cluster(3, copies=2)
    blob = os.urandom(300_000)
    status, _, _ = agents[0].request("PUT", "/cache/ccache/ab/cdef0123", data=blob)
    assert status in (200, 201, 204)
    # Pushes to the other owners are asynchronous (the PUT does not wait for peers): wait until
    # agent 0 reports them stored. Until then a reader that asks only the owners may miss.
    others = [o for o in owners("httpcache/ccache/ab/cdef0123", peer_names(agents), 2)
              if o != agents[0].peer]
    wait_pushed(agents[0], len(others))
    for a in agents[1:]:
        status, got, _ = a.get("/cache/ccache/ab/cdef0123")
        assert status == 200 and got == blob, a.peer
    # Unknown keys stay misses everywhere (asking peers does not invent objects).
    assert agents[2].get("/cache/ccache/ab/none")[0] == 404


def test_build_cache_hit_pulled_from_a_peer_says_so(cluster):
    """Issue 11 item 16: a /cache/ read that the agent answers by pulling from a peer carries
    X-Buildcache-Source: peer and counts as served from a peer, not as a local hit."""
    net, up, agents = cluster(3, copies=2)
    names = peer_names(agents)
    # A key whose owners are agents 0 and 1, so agent 2 holds no copy and must pull it.
    n = 0
    while set(owners(f"httpcache/ccache/ab/item{n}", names, 2)) != set(names[:2]):
        n += 1
    key = f"ccache/ab/item{n}"
    blob = os.urandom(200_000)
    assert agents[0].request("PUT", "/cache/" + key, data=blob)[0] in (200, 201, 204)
    wait_pushed(agents[0], 1)
    status, got, headers = agents[2].get("/cache/" + key)
    assert status == 200 and got == blob
    assert headers.get("X-Buildcache-Source") == "peer", headers
    m = agents[2].metrics()
    assert metric(m, "buildcache_served_bytes_total", frontend="httpcache",
                  source="peer") == len(blob)


def wait_pushed(agent, stored, timeout=30):
    """Waits (bounded) until agent has no pushes pending and `stored` pushes were stored."""
    deadline = time.monotonic() + timeout
    while True:
        m = agent.metrics()
        if (metric(m, "buildcache_peer_push_queue") == 0
                and metric(m, "buildcache_peer_pushes_total", outcome="stored") >= stored):
            return
        assert time.monotonic() < deadline, f"pushes never completed: {m}"
        time.sleep(0.05)


def test_a_deleted_poisoned_object_comes_back_until_an_authenticated_purge_on_every_agent(
        cluster, tmp_path):
    token = "purge-token-" + os.urandom(8).hex()
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    net, up, agents = cluster(2, copies=2, admin_token_file=token_file)
    path, key = "/cache/ccache/ab/poisoned", "httpcache%2Fccache%2Fab%2Fpoisoned"
    poison = b"poisoned build output " * 1000
    assert agents[0].request("PUT", path, data=poison)[0] in (200, 201, 204)
    wait_pushed(agents[0], 1)
    for a in agents:
        assert a.get(path)[:2] == (200, poison), a.peer

    # The hole: a DELETE removes only the local copy, and the next GET pulls it back from the
    # other owner.
    assert agents[1].request("DELETE", path)[0] in (200, 204)
    assert agents[1].get(path)[:2] == (200, poison)

    # Without the token, or with a wrong one, nothing is removed anywhere.
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + token}):
        for a in agents:
            status, body, _ = a.request("POST", "/admin/purge?key=" + key, data=b"",
                                        headers=headers)
            assert status in (401, 403), (headers, status, body)
            assert token.encode() not in body
    for a in agents:
        assert not any(token in json.dumps(line) for line in a.logs)
    for a in agents:
        assert a.get(path)[:2] == (200, poison), a.peer

    # The purge on every agent removes every copy: a GET then misses everywhere.
    for a in agents:
        status, body, _ = a.request("POST", "/admin/purge?key=" + key, data=b"",
                                    headers={"Authorization": "Bearer " + token})
        assert status == 200, body
        assert json.loads(body) == {"key": "httpcache/ccache/ab/poisoned", "removed": True}
    for a in agents:
        assert a.get(path)[0] == 404, a.peer
    assert agents[1].get(path)[0] == 404


def test_peers_file_membership(cluster):
    net, up, agents = cluster(2, copies=2, use_peers_file=True)
    blob = os.urandom(50_000)
    assert agents[1].request("PUT", "/cache/k/file-peers", data=blob)[0] in (200, 201, 204)
    status, got, _ = agents[0].get("/cache/k/file-peers")
    assert status == 200 and got == blob
    assert metric(agents[0].metrics(), "buildcache_peer_members") == 2


def find_blob_files(data_dir, digest_hex):
    return [p for p in pathlib.Path(data_dir).rglob(digest_hex) if p.is_file()]


# -- a hostile peer for the negative test: announces the right digest, sends other bytes --------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num, payload):
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _fields(buf):
    """Length-delimited fields of a protobuf message: {number: payload} (the last one wins)."""
    out, i = {}, 0
    while i < len(buf):
        tag, i = _read_varint(buf, i)
        if tag & 7 == 2:
            n, i = _read_varint(buf, i)
            out[tag >> 3] = buf[i:i + n]
            i += n
        elif tag & 7 == 0:
            _, i = _read_varint(buf, i)
        else:
            raise ValueError("unexpected wire type")
    return out


def _read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


class HostilePeer:
    """A gRPC server speaking peer.v1.Peer/Get that serves corrupted copies of its objects."""

    def __init__(self, address):
        import grpc  # scripts/setup installs grpcio; only this negative test needs it
        from concurrent import futures
        self.objects = {}  # store key -> the good bytes (whose digest is announced)
        self.gets = []

        def get(request, context):
            key = _fields(_fields(request).get(1, b"")).get(1, b"").decode()
            self.gets.append(key)
            good = self.objects.get(key)
            if good is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "no such key")
            bad = bytes([good[0] ^ 0xFF]) + good[1:]
            info = (_varint(1 << 3) + _varint(1) + _field(2, _field(1, hashlib.sha256(good)
                                                                     .digest()))
                    + _varint(3 << 3) + _varint(len(good)))
            yield _field(1, info) + _field(2, bad)

        handler = grpc.method_handlers_generic_handler(
            "buildcache.peer.v1.Peer", {"Get": grpc.unary_stream_rpc_method_handler(get)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"{address}:0")
        self.address = f"{address}:{self.port}"
        self.server.start()

    def close(self):
        self.server.stop(0)


def test_corrupt_bytes_from_a_peer_are_rejected(tmp_path):
    with NetnsCluster(2) as net:
        up = Upstream(net.host_address)
        hostile = HostilePeer(net.host_address)
        honest = reader = None
        try:
            a, r = net.nodes[0], net.nodes[1]
            peer_a, peer_r = f"{a.address}:{PEER_PORT}", f"{r.address}:{PEER_PORT}"
            members = [peer_a, peer_r, hostile.address]
            # A blob the reader asks the hostile peer for first, then the honest agent.
            while True:
                blob = os.urandom(100_000)
                digest = hashlib.sha256(blob).hexdigest()
                if owners("httpcache/cas/" + digest, members, 2) == [hostile.address, peer_a]:
                    break
            hostile.objects["httpcache/cas/" + digest] = blob
            (tmp_path / "a").mkdir()
            (tmp_path / "r").mkdir()
            # The honest agent pushes nowhere: its only member is the reader's address on a port
            # nothing listens on, which admits the reader's calls (peer calls are taken from
            # members' addresses only). The reader knows both.
            honest = NetAgent(net, 0, tmp_path / "a" / "data",
                              agent_config(net, 0, tmp_path / "a" / "data", up, 2,
                                           peers=[f"{r.address}:1"]))
            reader = NetAgent(net, 1, tmp_path / "r" / "data",
                              agent_config(net, 1, tmp_path / "r" / "data", up, 2,
                                           peers=[peer_a, hostile.address]))
            assert honest.request("PUT", f"/cas/{digest}", data=blob)[0] in (200, 201, 204)
            status, got, _ = reader.get(f"/cas/{digest}")
            assert status == 200 and got == blob  # the honest owner's copy, verified
            assert hostile.gets == ["httpcache/cas/" + digest]  # the hostile one was asked first
            m = reader.metrics()
            assert metric(m, "buildcache_peer_corrupt_total", peer=net.host_address) == 1
            assert metric(m, "buildcache_peer_requests_total", outcome="hit") == 1

            # An object only the hostile peer has: rejected, nothing stored, a miss.
            while True:
                blob2 = os.urandom(50_000)
                digest2 = hashlib.sha256(blob2).hexdigest()
                if owners("httpcache/cas/" + digest2, members, 2)[0] == hostile.address:
                    break
            hostile.objects["httpcache/cas/" + digest2] = blob2
            status, _, _ = reader.get(f"/cas/{digest2}")
            assert status == 404
            assert metric(reader.metrics(), "buildcache_peer_corrupt_total",
                          peer=net.host_address) == 2
            assert not find_blob_files(reader.data_dir, digest2)
            assert not list(reader.data_dir.rglob("tmp/*"))
        finally:
            for agent in (honest, reader):
                if agent:
                    agent.stop()
            hostile.close()
            up.close()


def _call_stream(address, method, request):
    import grpc  # scripts/setup installs grpcio
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_stream("/buildcache.peer.v1.Peer/" + method,
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        return b"".join(_fields(chunk).get(2, b"") for chunk in call(request, timeout=30))


def _fetch(address, key, url, sha1=None, frontend="maven"):
    """Calls Peer/Fetch as a client that is not an agent would; returns the body or raises
    grpc.RpcError. sha1: the expected digest (raw bytes), or none at all."""
    request = _field(1, frontend.encode()) + _field(2, key.encode()) + _field(3, url.encode())
    if sha1 is not None:
        request += _field(4, _field(1, b"sha1") + _field(2, sha1))
    return _call_stream(address, "Fetch", request)


def _get(address, key):
    """Peer/Get of a store key; the body, or raises grpc.RpcError."""
    return _call_stream(address, "Get", _field(1, _field(1, key.encode())))


def _put(address, key, body):
    """Peer/Put of `body` under `key`, announcing the body's own SHA-256 (what the store checks).
    Returns the raw PutResponse, or raises grpc.RpcError."""
    import grpc
    info = _field(2, _field(1, hashlib.sha256(body).digest())) + _varint(3 << 3) + \
        _varint(len(body))
    first = _field(1, key.encode()) + _field(2, info) + _field(3, body)
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_unary("/buildcache.peer.v1.Peer/Put",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        return call(iter([first]), timeout=30)


def test_a_peer_cannot_make_an_agent_fetch_internal_urls(cluster):
    import grpc
    net, up, agents = cluster(1, copies=1, host_is_member=True)
    # A service the agent can reach that is not its upstream (another port on the same host).
    internal = Upstream(net.host_address)
    try:
        internal.files["/repo/secret"] = b"token"
        path, body = jar("allowed")
        up.add_jar(path, body)
        up.redirects["/repo/elsewhere.jar"] = internal.url + "secret"
        # The configured upstream is fetched for a peer.
        sha1 = hashlib.sha1(body).digest()
        assert _fetch(agents[0].peer, key_of(path), up.url + path, sha1) == body
        # An internal URL is refused before anything is sent, directly or through a redirect.
        for key, url in (("maven/files/x/secret", internal.url + "secret"),
                         ("maven/files/elsewhere.jar", up.url + "elsewhere.jar")):
            with pytest.raises(grpc.RpcError) as refused:
                _fetch(agents[0].peer, key, url, sha1)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
            assert "internal address" in refused.value.details()
        assert internal.requests == {}
        assert up.count("elsewhere.jar") == 1  # the redirect was followed no further
    finally:
        internal.close()


# -- hostile callers on the peer port (issue 11) ---------------------------------------------------

TRUE_METADATA = (b"<metadata><groupId>io.buildcache</groupId><artifactId>lib</artifactId>"
                 b"<versioning><latest>1.0</latest><release>1.0</release></versioning></metadata>")


def _metadata_record(body):
    """The record MetadataCache keeps beside a document: fresh, 200, naming the body's digest."""
    return (f"buildcache-metadata 1\nstatus 200\nfetched-at-ms {int(time.time() * 1000)}\n"
            f"body-sha256 {hashlib.sha256(body).hexdigest()}\ncontent-type text/xml\n"
            f"etag \"evil\"\nlast-modified \n").encode()


def test_a_caller_that_is_no_member_can_neither_write_nor_read(cluster):
    """The review's attack: Peer/Put of a jar, its checksum and a maven-metadata.xml whose
    <latest> is 6.6.6 (with a fresh record, so a 304 would keep it). From an address that is no
    member's, every call is refused, nothing is stored, and clients get the upstream's files."""
    import grpc
    net, up, agents = cluster(2, copies=2)
    path, body = jar("lib")
    up.add_jar(path, body)
    meta = "io/buildcache/lib/maven-metadata.xml"
    up.files["/repo/" + meta] = TRUE_METADATA
    evil_meta = TRUE_METADATA.replace(b"1.0", b"6.6.6")
    evil_jar = b"evil" * 5000
    plants = [("maven/meta/" + meta, evil_meta), ("maven/meta/" + meta + "#meta",
                                                   _metadata_record(evil_meta)),
              (key_of(path), evil_jar),
              (key_of(path) + ".sha1", hashlib.sha1(evil_jar).hexdigest().encode())]
    for a in agents:
        for key, data in plants:
            with pytest.raises(grpc.RpcError) as refused:
                _put(a.peer, key, data)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
        with pytest.raises(grpc.RpcError) as refused:
            _fetch(a.peer, key_of(path), up.url + path, hashlib.sha1(body).digest())
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as refused:
            _get(a.peer, key_of(path))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        m = a.metrics()
        assert metric(m, "buildcache_peer_calls_refused_total", call="Put",
                      reason="not_member") == len(plants)
        assert metric(m, "buildcache_peer_calls_refused_total", call="Fetch",
                      reason="not_member") == 1
        assert metric(m, "buildcache_peer_calls_refused_total", call="Get",
                      reason="not_member") == 1
        assert any(line.get("msg") == "peer call refused" and
                   line.get("caller", "").find(net.host_address) >= 0 for line in a.logs)
    assert up.count(path) == 0  # nothing was fetched for the caller
    for a in agents:
        status, got, _ = a.get("/maven/" + meta)
        assert status == 200 and got == TRUE_METADATA, (a.peer, got[:200])
        status, got, _ = a.get("/maven/" + path)
        assert status == 200 and got == body, (a.peer, status)
        status, got, _ = a.get("/maven/" + path + ".sha1")
        assert status == 200 and got.decode().strip() == hashlib.sha1(body).hexdigest()


def test_an_artifact_a_member_plants_is_never_served(cluster):
    """A member's Put is taken (verified against the digest it announces), but a front end
    serves an artifact only when this agent's own hash matches the index's digest (Maven: SHA-1
    from the upstream's .sha1): the planted jar is counted, dropped and fetched again."""
    net, up, agents = cluster(2, copies=2, host_is_member=True)
    path, body = jar("planted")
    up.add_jar(path, body)
    evil = b"6.6.6" * 40_000
    for a in agents:
        response = _put(a.peer, key_of(path), evil)
        assert _fields(response) == {} and response[:2] == b"\x08\x01", response  # stored
    for a in agents:
        status, got, headers = a.get("/maven/" + path)
        assert status == 200 and got == body, (a.peer, status, got[:100])
    mismatches = sum(metric(a.metrics(), "buildcache_artifact_stored_mismatch_total",
                            frontend="maven") for a in agents)
    assert mismatches >= 1
    assert any(line.get("msg") == "stored artifact does not match its index; fetching it again"
               for a in agents for line in a.logs)
    # Both copies are the upstream's now: served with the upstream gone.
    up.files.clear()
    for a in agents:
        status, got, _ = a.get("/maven/" + path)
        assert status == 200 and got == body


def test_an_npm_tarball_a_member_plants_is_never_served(cluster):
    """The same for npm, whose index gives SHA-512 (not the store's SHA-256): a member's Put of
    other bytes under the tarball's key is not served; the client gets the registry's tarball."""
    net, up, agents = cluster(1, copies=1, host_is_member=True, npm=True)
    agent = agents[0]
    body = hashlib.sha512(b"left-pad").digest() * 800
    sha512 = hashlib.sha512(body).digest()
    up.files["/repo/left-pad/-/left-pad-1.3.0.tgz"] = body
    up.files["/repo/left-pad"] = json.dumps({
        "name": "left-pad", "dist-tags": {"latest": "1.3.0"},
        "versions": {"1.3.0": {"name": "left-pad", "version": "1.3.0", "dist": {
            "tarball": up.url + "left-pad/-/left-pad-1.3.0.tgz",
            "integrity": "sha512-" + base64.b64encode(sha512).decode(),
            "shasum": hashlib.sha1(body).hexdigest()}}}}).encode()
    key = "npm/tarball/left-pad/left-pad-1.3.0.tgz/" + sha512[:16].hex()
    response = _put(agent.peer, key, b"evil tarball" * 2000)
    assert response[:2] == b"\x08\x01", response  # taken: a member's Put
    status, got, headers = agent.get("/npm/left-pad/-/left-pad-1.3.0.tgz")
    assert status == 200 and got == body, (status, got[:100])
    assert headers.get("X-Buildcache-Source") != "local"
    assert metric(agent.metrics(), "buildcache_artifact_stored_mismatch_total",
                  frontend="npm") == 1
    assert up.count("left-pad/-/left-pad-1.3.0.tgz") == 1


def test_a_member_fetch_cannot_choose_key_url_or_labels(cluster):
    """Peer/Fetch with the key of one artifact and the URL of another, with no expected digest,
    and with 100 made-up front-end labels: all refused, nothing fetched or stored, /metrics
    unchanged."""
    import grpc
    net, up, agents = cluster(1, copies=1, host_is_member=True)
    agent = agents[0]
    lib, lib_body = jar("lib")
    other, other_body = jar("other")
    up.add_jar(lib, lib_body)
    up.add_jar(other, other_body)
    other_sha1 = hashlib.sha1(other_body).digest()
    with pytest.raises(grpc.RpcError) as refused:
        _fetch(agent.peer, key_of(lib), up.url + other, other_sha1)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    with pytest.raises(grpc.RpcError) as refused:
        _fetch(agent.peer, key_of(lib), up.url + other)  # no expected digest
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value
    assert up.count(other) == 0
    m = agent.metrics()
    assert metric(m, "buildcache_peer_calls_refused_total", call="Fetch",
                  reason="bad_request") == 1
    assert metric(m, "buildcache_peer_calls_refused_total", call="Fetch",
                  reason="unverifiable") == 1

    def scrape():
        status, text, _ = agent.get("/metrics")
        assert status == 200
        return text.decode().splitlines()

    with pytest.raises(grpc.RpcError):
        _fetch(agent.peer, key_of(other), up.url + other, other_sha1, frontend="label-first")
    before = scrape()
    for i in range(100):
        with pytest.raises(grpc.RpcError) as refused:
            _fetch(agent.peer, key_of(other), up.url + other, other_sha1, frontend=f"label-{i}")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape()
    assert len(after) == len(before), set(after) - set(before)
    assert not [line for line in after if "label-" in line]
    assert up.count(other) == 0
    # The honest request for lib: served, and lib holds lib.
    status, got, _ = agent.get("/maven/" + lib)
    assert status == 200 and got == lib_body


def test_owner_killed_mid_transfer_leaves_no_partial_files_and_clients_succeed(cluster):
    net, up, agents = cluster(3, copies=3)
    members = peer_names(agents)
    # An artifact whose first owner is agent 0 and which agent 2 is asked for.
    n = 0
    while True:
        path, body = jar(f"killed{n}", size=4_000_000)
        order = owners(key_of(path), members, 3)
        if order[0] == agents[0].peer and order[1] == agents[1].peer:
            break
        n += 1
    up.add_jar(path, body)
    up.slow["/repo/" + path] = (64 * 1024, 0.02)
    result = {}

    def fetch():
        result["r"] = agents[2].get("/maven/" + path, timeout=180)

    t = threading.Thread(target=fetch)
    t.start()
    up.wait_sent(path, 1_000_000)  # the owner is fetching it for agent 2 right now
    agents[0].kill9()
    t.join(240)
    status, got, headers = result["r"]
    assert status == 200 and got == body
    # Agent 2 went on without the dead owner: the next owner or the upstream, no byte twice.
    assert up.count(path) in (2, 3)
    # The killed owner left at most a temporary file, which its restart removes.
    agents[0].start()
    assert not list((agents[0].data_dir).rglob("tmp/*"))
    status, got, _ = agents[0].get("/maven/" + path)
    assert status == 200 and got == body


def test_owner_killed_mid_stream_the_next_owner_serves(cluster):
    net, up, agents = cluster(3, copies=2)
    members = peer_names(agents)
    # A blob owned by agents 0 and 1 (in that order), written on 0 and so pushed to 1 only.
    while True:
        blob = os.urandom(16 << 20)
        digest = hashlib.sha256(blob).hexdigest()
        if owners("httpcache/cas/" + digest, members, 2) == [agents[0].peer, agents[1].peer]:
            break
    assert agents[0].request("PUT", f"/cas/{digest}", data=blob, timeout=120)[0] in (200, 201,
                                                                                     204)
    wait_pushed(agents[0], 1)
    net.limit_rate(0, "40mbit")  # about 4 s for the blob: agent 0 dies while sending it
    result = {}

    def fetch():
        result["r"] = agents[2].get(f"/cas/{digest}", timeout=180)

    t = threading.Thread(target=fetch)
    t.start()
    deadline = time.monotonic() + 60
    while True:
        received = metric(agents[2].metrics(), "buildcache_peer_bytes_total", direction="in")
        if received > 0:
            break
        assert time.monotonic() < deadline, "agent 2 never started pulling from agent 0"
        time.sleep(0.02)
    agents[0].kill9()
    t.join(240)
    assert received < len(blob)  # the kill came mid-stream
    status, got, _ = result["r"]
    assert status == 200 and got == blob
    m = agents[2].metrics()
    assert metric(m, "buildcache_peer_requests_total", outcome="error") >= 1
    assert metric(m, "buildcache_peer_requests_total", outcome="hit") == 1
    # The broken pull left nothing behind once the pull is over (the client can be answered,
    # verified, while the pull is still committing the object).
    deadline = time.monotonic() + 30
    while list(agents[2].data_dir.rglob("tmp/*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(agents[2].data_dir.rglob("tmp/*"))


def test_link_down_degrades_to_upstream_and_heals(cluster):
    net, up, agents = cluster(3, copies=2)
    members = peer_names(agents)

    def owned_by_2_then_0(prefix):
        n = 0
        while True:
            path, body = jar(f"{prefix}{n}")
            if owners(key_of(path), members, 2) == [agents[2].peer, agents[0].peer]:
                return path, body
            n += 1

    net.link_down(2)
    path, body = owned_by_2_then_0("cut")
    up.add_jar(path, body)
    status, got, _ = agents[0].get("/maven/" + path, timeout=120)
    assert status == 200 and got == body  # the owner is unreachable: agent 0 went upstream
    assert up.who(path) == [agents[0].node.address]
    assert metric(agents[0].metrics(), "buildcache_peer_requests_total", outcome="error") >= 1
    net.link_up(2)
    # Healed: a later artifact owned by agent 2 is fetched by agent 2 again. Agent 0 retries a
    # down peer after a backoff, so a bounded number of fresh artifacts is tried.
    for attempt in range(60):
        path, body = owned_by_2_then_0(f"heal{attempt}-")
        up.add_jar(path, body)
        status, got, _ = agents[0].get("/maven/" + path, timeout=120)
        assert status == 200 and got == body
        if up.who(path) == [agents[2].node.address]:
            break
        time.sleep(0.5)
    else:
        pytest.fail("agent 0 never used agent 2 again after the link came back")
    assert metric(agents[0].metrics(), "buildcache_peer_members_live") == 3


def make_certs(directory, addresses):
    """A CA, one certificate per address (IP SAN), and a rogue certificate from another CA."""
    d = pathlib.Path(directory)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    for ca in ("ca", "rogue-ca"):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}")
    for i, address in enumerate(addresses):
        for ca in ("ca", "rogue-ca"):
            name = f"{ca}-node{i}"
            (d / f"{name}.ext").write_text(f"subjectAltName=IP:{address}\n"
                                          "extendedKeyUsage=serverAuth,clientAuth\n")
            run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=node{i}")
            run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return d


def test_mtls_peers_without_the_right_certificate_are_refused(cluster, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()

    def tls(i):
        # Agent 2 has a certificate from another CA (and trusts only that CA).
        ca = "rogue-ca" if i == 2 else "ca"
        return (certs / f"{ca}-node{i}.crt", certs / f"{ca}-node{i}.key", certs / f"{ca}.crt")

    # Addresses are known once the namespaces exist.
    net, up, agents = cluster(3, copies=3, tls=tls, setup=lambda net: make_certs(
        certs, [node.address for node in net.nodes]))
    blob = os.urandom(40_000)
    assert agents[0].request("PUT", "/cache/tls/obj", data=blob)[0] in (200, 201, 204)
    status, got, _ = agents[1].get("/cache/tls/obj")
    assert status == 200 and got == blob  # mutual TLS between agents of the same CA works
    # Pushed or pulled, the bytes came from agent 0 over TLS.
    assert metric(agents[1].metrics(), "buildcache_peer_bytes_total", direction="in") >= len(blob)
    status, _, _ = agents[2].get("/cache/tls/obj")
    assert status == 404  # the rogue agent is refused by both others
    m = agents[2].metrics()
    assert metric(m, "buildcache_peer_requests_total", outcome="hit") == 0
    assert metric(m, "buildcache_peer_requests_total", outcome="error") >= 1
    # And nothing the rogue pushes is accepted.
    assert agents[2].request("PUT", "/cache/tls/rogue", data=b"x" * 1000)[0] in (200, 201, 204)
    assert agents[0].get("/cache/tls/rogue")[0] == 404
    assert agents[1].get("/cache/tls/rogue")[0] == 404
    assert agents[0].wait_for_log("peer server listening").get("tls") is True
