"""What serving a large stored packument costs the real agent in memory (issue 11, item 7).

A hostile tenant's attacks, against a real agent on loopback with a local fixture registry
(a 16 MiB packument, about the size of a popular package's full document):

- N clients ask for the packument and then stop reading. Each used to pin its own copy of the
  document (and of the parsed JSON while it was rendered); the agent's RSS must stay within a
  bound above its baseline while they hang on, and come back near the baseline after they leave.
- Requests that vary the Host header. The render cache used to be keyed by it, so every new Host
  forced a parse and render of the whole document and kept another rendered copy; the agent's
  RSS must not grow with the number of Host values, and every answer must still name the Host
  its client used.

Memory is read from /proc/<pid>/status (VmRSS); the test asserts bounds, not times.
"""

import http.server
import json
import socket
import threading
import urllib.request

import pytest

MIB = 1 << 20
PACKUMENT_BYTES = 16 * MIB
SLOW_READERS = 20
HOSTS = 40
# The bounds: the shared rewritten copy is in the baseline; each response may hold its own
# bounded buffers (tens of KiB) and thread, nothing the size of the document.
SLOW_READERS_BOUND = 48 * MIB
SETTLED_BOUND = 24 * MIB
HOST_FLOOD_BOUND = 24 * MIB


def big_packument(base):
    """A packument of about PACKUMENT_BYTES with a tarball per version."""
    versions = {}
    filler = "x" * 2000
    i = 0
    size = 0
    while size < PACKUMENT_BYTES:
        v = f"1.0.{i}"
        versions[v] = {
            "name": "big", "version": v, "description": filler,
            "dist": {"tarball": f"{base}/big/-/big-{v}.tgz",
                     "integrity": "sha512-" + "A" * 86 + "=="},
        }
        size += len(filler) + 200
        i += 1
    return json.dumps({"name": "big", "dist-tags": {"latest": v}, "versions": versions}).encode()


@pytest.fixture(scope="module")
def registry():
    holder = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path != "/big":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = holder["body"]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_port}"
    holder["body"] = big_packument(base)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base + "/"
    server.shutdown()
    server.server_close()


def rss(agent):
    with open(f"/proc/{agent.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def get(agent, host=None):
    headers = {"Host": host} if host else {}
    req = urllib.request.Request(agent.url + "/npm/big", headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status, resp.read()


@pytest.fixture
def agent(start_agent, tmp_path, registry):
    config = tmp_path / "agent.yaml"
    config.write_text(f"npm:\n  upstream: {registry}\n")
    a = start_agent(config=config)
    # Cold (streamed from the upstream), then stored: both answers are the same document.
    status, cold = get(a)
    assert status == 200
    status, warm = get(a)
    assert status == 200 and warm == cold
    doc = json.loads(warm)
    assert doc["versions"]["1.0.0"]["dist"]["tarball"] == f"{a.url}/npm/big/-/big-1.0.0.tgz"
    return a


def open_slow_reader(agent, host):
    """Asks for the packument, reads the start of the answer, then stops reading."""
    addr, port = agent.address.rsplit(":", 1)
    s = socket.create_connection((addr, int(port)), timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET /npm/big HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "the agent closed the connection"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return s


def test_slow_readers_of_a_large_packument_do_not_pin_copies_of_it(agent):
    baseline = rss(agent)
    readers = [open_slow_reader(agent, f"reader{i}.example:8080") for i in range(SLOW_READERS)]
    try:
        # Every handler is now blocked mid-body on a client that does not read.
        during = max(rss(agent) for _ in range(20))
        print(f"slow readers: baseline {baseline / MIB:.1f} MiB, during {during / MIB:.1f} MiB")
        assert during - baseline < SLOW_READERS_BOUND, (
            f"{SLOW_READERS} slow readers took the agent from {baseline / MIB:.0f} MiB to "
            f"{during / MIB:.0f} MiB")
    finally:
        for s in readers:
            s.close()
    # The agent notices the closed connections when it writes next; a normal request proves it
    # still serves, and the memory is back near the baseline.
    status, _ = get(agent)
    assert status == 200
    after = rss(agent)
    for _ in range(50):
        if after - baseline < SETTLED_BOUND:
            break
        get(agent)
        after = rss(agent)
    print(f"slow readers gone: {after / MIB:.1f} MiB")
    assert after - baseline < SETTLED_BOUND, (
        f"after the slow readers left the agent stayed at {after / MIB:.0f} MiB "
        f"(baseline {baseline / MIB:.0f} MiB)")


def test_varying_the_host_header_does_not_grow_memory(agent):
    baseline = rss(agent)
    for i in range(HOSTS):
        host = f"h{i}.example:{1000 + i}"
        status, body = get(agent, host)
        assert status == 200
        # Each answer still names the address its client used (checked without a full parse).
        assert f'"http://{host}/npm/big/-/big-1.0.0.tgz"'.encode() in body
    grown = rss(agent) - baseline
    print(f"{HOSTS} Host values: baseline {baseline / MIB:.1f} MiB, grown {grown / MIB:.1f} MiB")
    assert grown < HOST_FLOOD_BOUND, (
        f"{HOSTS} Host values grew the agent by {grown / MIB:.0f} MiB")
