"""Build-cache PUTs (/cache/...) are answered once indexed, without an fsync of each object
(issue 16): what a crash can leave behind is whole and correct or absent, never wrong bytes.

A process crash (kill -9 right after acknowledged PUTs) must lose nothing. A machine crash can
lose the bytes of objects whose files were not synced yet although their index entries were: that
is simulated by damaging the blob files of some acknowledged objects while the agent is down
(truncated, emptied, zeroed in place at the same size, removed) before the restart."""

import concurrent.futures
import hashlib
import random
import socket
import threading
import time
import urllib.error

from conftest import Agent
from harness.powerloss import damage


def upload_all(agent, objects):
    def put(item):
        key, body = item
        status, _ = agent.put(key, body)
        return key, status

    acknowledged = {}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for key, status in pool.map(put, objects.items()):
            if status == 201:
                acknowledged[key] = objects[key]
    return acknowledged


def get_or_absent(agent, key):
    try:
        status, body, _ = agent.get(key)
        return status, body
    except urllib.error.HTTPError as err:
        return err.code, None


def blob_path(data, body):
    digest = hashlib.sha256(body).hexdigest()
    return data / "blobs" / digest[:2] / digest


def test_kill9_right_after_acknowledged_puts_loses_nothing(tmp_path):
    data = tmp_path / "data"
    agent = Agent(data)
    rng = random.Random(16)
    objects = {f"/cache/ccache/{i:03d}": rng.randbytes(rng.choice([200, 9000, 70000]))
               for i in range(120)}
    acknowledged = upload_all(agent, objects)
    agent.kill9()
    assert len(acknowledged) == len(objects)

    restarted = Agent(data)
    try:
        for key, body in acknowledged.items():
            status, got = get_or_absent(restarted, key)
            assert status == 200 and got == body, key
    finally:
        restarted.stop()


def test_unsynced_objects_lost_in_a_machine_crash_are_absent_never_wrong(tmp_path):
    data = tmp_path / "data"
    agent = Agent(data)
    rng = random.Random(61)
    objects = {f"/cache/ccache/{i:03d}": rng.randbytes(rng.choice([300, 12000, 90000]))
               for i in range(80)}
    acknowledged = upload_all(agent, objects)
    agent.kill9()
    assert len(acknowledged) == len(objects)

    # What a power loss may leave of files whose data was not written back yet.
    keys = sorted(acknowledged)
    damaged = {}
    for n, key in enumerate(keys[:40]):
        path = blob_path(data, acknowledged[key])
        assert path.exists(), path
        damaged[key] = damage(path, n)

    restarted = Agent(data)
    try:
        for key in keys:
            status, got = get_or_absent(restarted, key)
            if key in damaged:
                assert status == 404, (key, damaged[key], status)
            else:
                assert status == 200 and got == acknowledged[key], key
        # Absent, not stuck: a client uploading the object again is served it afterwards.
        again = keys[2]
        assert restarted.put(again, acknowledged[again])[0] == 201
        assert get_or_absent(restarted, again) == (200, acknowledged[again])
    finally:
        restarted.stop()


def ccache_put(sock, host, key, body, send_all=True):
    """A PUT as ccache's HTTP client sends it on its keep-alive connection: head and body in
    two writes (Nagle on). With send_all=False only the first half of the body is sent."""
    sock.sendall(f"PUT {key} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode())
    sock.sendall(body if send_all else body[:len(body) // 2])


def read_status(sock, buf):
    """Reads one response (Content-Length framed); returns (status, bytes after it)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(v) for n, _, v in (ln.partition(":") for ln in lines[1:])
                   if n.strip().lower() == "content-length"), 0)
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return int(lines[0].split()[1]), buf[length:]


def test_kill9_during_keepalive_puts_leaves_no_torn_object(tmp_path):
    """kill -9 while ccache-style PUTs are in flight on keep-alive connections (one with half of
    its body sent): after the restart every acknowledged object is served whole, the half-sent
    one and anything unacknowledged is absent or whole, and the unfinished write is cleared."""
    data = tmp_path / "data"
    agent = Agent(data)
    host, port = agent.address.rsplit(":", 1)
    rng = random.Random(1616)
    objects = {f"/cache/ccache/{c}/{i:03d}": rng.randbytes(rng.choice([300, 2400, 70000]))
               for c in range(3) for i in range(40)}
    torn_key, torn_body = "/cache/ccache/torn/000", rng.randbytes(400_000)
    acknowledged = {}
    lock = threading.Lock()

    def client(c):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            buf = b""
            for key in sorted(k for k in objects if k.startswith(f"/cache/ccache/{c}/")):
                try:
                    sock.sendall(f"GET {key} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                    _, buf = read_status(sock, buf)  # a miss, as ccache's lookup first
                    ccache_put(sock, host, key, objects[key])
                    status, buf = read_status(sock, buf)
                except (ConnectionError, OSError):
                    return  # the agent was killed
                if status == 201:
                    with lock:
                        acknowledged[key] = objects[key]

    torn = socket.create_connection((host, int(port)), timeout=30)
    try:
        ccache_put(torn, host, torn_key, torn_body, send_all=False)
        # The agent has started writing the half-sent body before it is killed.
        deadline = time.monotonic() + 30
        while not any((data / "tmp").iterdir()):
            assert time.monotonic() < deadline, "the half-sent PUT never reached the store"
            time.sleep(0.05)
        threads = [threading.Thread(target=client, args=(c,)) for c in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        agent.kill9()
        for t in threads:
            t.join(30)
    finally:
        torn.close()
    assert len(acknowledged) >= 30

    restarted = Agent(data)
    try:
        reconciled = restarted.wait_for_log("store reconciled")
        assert reconciled.get("temp_files_removed", 0) >= 1, reconciled
        for key, body in objects.items():
            status, got = get_or_absent(restarted, key)
            if key in acknowledged:
                assert status == 200 and got == body, key
            else:
                assert status == 404 or (status == 200 and got == body), (key, status)
        assert get_or_absent(restarted, torn_key) == (404, None)
        assert not any((data / "tmp").iterdir())
    finally:
        restarted.stop()
