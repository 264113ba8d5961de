"""Issue 11 items 5 and 6 against the real buildcache-agent: writers that announce much and send
little, and clients that hold connections, must not empty the store, block other writers, starve
other clients or make the probes fail. Several clients on one machine are played by binding
different 127.0.0.0/8 source addresses (all local on Linux)."""

import http.client
import os
import select
import socket
import threading

import pytest

from conftest import metric

MIB = 1 << 20


def request(host, port, method, path, body=None, source="127.0.0.2", timeout=30):
    """One request on a fresh connection from `source`; (status, headers, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def host_port(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def read_head(sock):
    """Reads until the end of a response's header block (or close); returns the bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def wait_for_metric(agent, name, at_least, attempts=500):
    """Polls /metrics (bounded) until the gauge reaches at_least; returns its last value."""
    value = 0
    for _ in range(attempts):
        value = metric(agent.metrics(), name)
        if value >= at_least:
            break
    return value


def read_response(sock):
    """Reads until the peer closes or the header block and body arrived; returns the bytes."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return data
        if not chunk:
            return data
        data += chunk


def test_trickling_puts_neither_empty_the_store_nor_hold_other_writers(tmp_path, start_agent):
    """Four PUTs announcing 16 MiB each and trickling a byte at a time (the attack of item 5):
    before the fix each reserved its whole announced size, evicting everything and answering every
    other writer 507 while they trickled. Now they reserve what they sent, end with 408 at the
    body deadline, store nothing, and another tenant's writes succeed meanwhile."""
    config = tmp_path / "agent.yaml"
    config.write_text("store:\n  maxSize: 40Mi\n"
                      "httpcache:\n  maxObjectSize: 16Mi\n"
                      "server:\n  bodyTimeout: 4s\n  idleTimeout: 30s\n")
    agent = start_agent(config=config)
    host, port = host_port(agent.address)
    victims = {f"/cache/victim/{i}": os.urandom(MIB) for i in range(34)}
    for path, data in victims.items():
        assert request(host, port, "PUT", path, data)[0] // 100 == 2
    stored_before = metric(agent.metrics(), "buildcache_store_bytes")
    assert stored_before == 34 * MIB

    socks = []
    for i in range(4):
        s = socket.create_connection((host, port), timeout=30)
        s.sendall(f"PUT /cache/attack/{i} HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Length: {16 * MIB}\r\n\r\n".encode() + b"a")
        socks.append(s)
    answers = [None] * 4
    stop = threading.Event()

    def trickle(i):
        # A byte a second, bounded: the agent must end it first (bodyTimeout 4s).
        s = socks[i]
        s.settimeout(1)
        for _ in range(30):
            try:
                got = s.recv(65536)
            except socket.timeout:
                got = None
            if got is not None:
                s.settimeout(10)
                answers[i] = got + read_response(s)
                return
            if stop.is_set():
                return
            try:
                s.sendall(b"a")
            except OSError:
                s.settimeout(10)
                answers[i] = read_response(s)
                return

    threads = [threading.Thread(target=trickle, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        # Another tenant writes while the four trickle: 5 MiB fits next to the victims.
        tenant = {f"/cache/tenant/{i}": os.urandom(MIB) for i in range(5)}
        for path, data in tenant.items():
            status = request(host, port, "PUT", path, data)[0]
            assert status // 100 == 2, (path, status)
    finally:
        for t in threads:
            t.join(60)
        stop.set()
        for s in socks:
            s.close()
    # Nothing was evicted for the announcements, nothing of the attack stored.
    for path, data in {**victims, **tenant}.items():
        assert request(host, port, "GET", path)[2] == data, path
    for i, answer in enumerate(answers):
        assert answer is not None and answer.startswith(b"HTTP/1.1 408 "), (i, answer)
    for i in range(4):
        assert request(host, port, "GET", f"/cache/attack/{i}")[0] == 404
    m = agent.metrics()
    assert metric(m, "buildcache_store_bytes") == 39 * MIB
    assert metric(m, "buildcache_store_evictions_total") == 0


def test_one_client_cannot_exceed_its_in_flight_share(tmp_path, start_agent):
    """A client's uploads together may hold store.maxInFlightPerClient; beyond it they get 507
    and nothing is stored, while another client's upload of the same size goes in."""
    config = tmp_path / "agent.yaml"
    config.write_text("store:\n  maxSize: 64Mi\n  maxInFlightPerClient: 6Mi\n"
                      "httpcache:\n  maxObjectSize: 16Mi\n")
    agent = start_agent(config=config)
    host, port = host_port(agent.address)
    # An announcement beyond the share fails at once, before any byte is read.
    status, _, _ = request(host, port, "PUT", "/cache/big", os.urandom(8 * MIB), source="127.0.0.3")
    assert status == 507
    # Two uploads of 4 MiB from one client in flight at once: the second is cut off at the share.
    s = socket.create_connection((host, port), source_address=("127.0.0.3", 0), timeout=30)
    s.sendall(f"PUT /cache/first HTTP/1.1\r\nHost: x\r\nContent-Length: {4 * MIB}\r\n\r\n".encode()
              + os.urandom(4 * MIB - 1))
    assert wait_for_metric(agent, "buildcache_store_reserved_bytes", 4 * MIB - 1) == 4 * MIB - 1
    status, _, _ = request(host, port, "PUT", "/cache/second", os.urandom(4 * MIB),
                           source="127.0.0.3")
    assert status == 507
    # Another client is not affected by the first one's share.
    assert request(host, port, "PUT", "/cache/other", os.urandom(4 * MIB))[0] // 100 == 2
    s.sendall(b"z")
    assert read_head(s).startswith(b"HTTP/1.1 2")
    s.close()
    assert request(host, port, "GET", "/cache/second")[0] == 404
    assert request(host, port, "GET", "/cache/first")[0] == 200


def test_hostile_connections_leave_other_clients_and_probes_served(tmp_path, start_agent):
    """Item 6: a client opens far more connections than its share (and holds them idle). The
    excess gets 429 with Retry-After; another client is still served; /healthz and /readyz answer
    on the probe listener, even to the hostile client's own address."""
    config = tmp_path / "agent.yaml"
    config.write_text("server:\n  maxConnections: 64\n  maxConnectionsPerClient: 16\n"
                      "  idleTimeout: 60s\n  probeListen: 127.0.0.1:0\n")
    agent = start_agent(config=config)
    host, port = host_port(agent.address)
    probe_host, probe_port = host_port(agent.wait_for_log("listening")["probe_address"])
    held, refused = [], []
    try:
        for _ in range(200):
            s = socket.create_connection((host, port), source_address=("127.0.0.1", 0), timeout=10)
            held.append(s)
        # The server accepts in order: once another client's request is answered, every hostile
        # connection was accepted or refused, and the refusals were sent.
        assert request(host, port, "GET", "/healthz")[0] == 200
        accepted = 0
        for s in held:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                refused.append(read_head(s))
                continue
            # Accepted: it is served, then held idle (keep-alive).
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if read_head(s).startswith(b"HTTP/1.1 200 "):
                accepted += 1
        assert accepted == 16
        assert len(refused) == 200 - 16
        for answer in refused:
            assert answer.startswith(b"HTTP/1.1 429 "), answer
            assert b"\r\nRetry-After: 1\r\n" in answer, answer
        # Another client: served, while the hostile one holds its share.
        for i in range(20):
            status, _, _ = request(host, port, "PUT", f"/cache/ok/{i}", b"x" * 100)
            assert status // 100 == 2
            assert request(host, port, "GET", f"/cache/ok/{i}")[2] == b"x" * 100
        # The probes, from any address, including the hostile one's.
        for source in ("127.0.0.1", "127.0.0.2"):
            assert request(probe_host, probe_port, "GET", "/healthz", source=source)[0] == 200
            assert request(probe_host, probe_port, "GET", "/readyz", source=source)[0] == 200
        # The probe listener serves nothing else.
        assert request(probe_host, probe_port, "GET", "/cache/ok/1")[0] == 404
    finally:
        for s in held:
            s.close()


@pytest.mark.parametrize("yaml_text, expected", [
    ("server:\n  maxConnectionsPerClient: -1\n", "server.maxConnectionsPerClient"),
    ("server:\n  bodyTimeout: -1s\n", "server.bodyTimeout"),
    ("server:\n  minBodyRate: fast\n", "server.minBodyRate"),
    ("server:\n  probeListen: nowhere\n", "server.probeListen"),
    ("store:\n  maxSize: 1Gi\n  maxInFlightPerClient: 2Gi\n", "store.maxInFlightPerClient"),
    ("store:\n  maxSize: 1Gi\n  maxInFlightPerWriter: 2Gi\n", "store.maxInFlightPerWriter"),
])
def test_bad_limit_settings_stop_the_agent_naming_the_key(tmp_path, yaml_text, expected):
    import subprocess

    from conftest import BIN_DIR
    config = tmp_path / "agent.yaml"
    config.write_text(yaml_text)
    out = subprocess.run([str(BIN_DIR / "buildcache-agent"), "--config", str(config),
                          "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2, out
    assert expected in out.stderr, out.stderr
