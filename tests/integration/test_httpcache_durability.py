"""Build-cache PUTs (/cache/...) are answered once indexed, without an fsync of each object
(issue 16): what a crash can leave behind is whole and correct or absent, never wrong bytes.

A process crash (kill -9 right after acknowledged PUTs) must lose nothing. A machine crash can
lose the bytes of objects whose files were not synced yet although their index entries were: that
is simulated by damaging the blob files of some acknowledged objects while the agent is down
(truncated, emptied, zeroed in place at the same size, removed) before the restart."""

import concurrent.futures
import hashlib
import os
import random
import urllib.error

from conftest import Agent


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
        size = path.stat().st_size
        kind = n % 4
        if kind == 0:
            os.truncate(path, size // 2)
        elif kind == 1:
            os.truncate(path, 0)
        elif kind == 2:
            with open(path, "r+b") as f:  # same size, the tail never reached the disk
                f.seek(size // 3)
                f.write(b"\0" * (size - size // 3))
        else:
            path.unlink()
        damaged[key] = kind

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
