"""Upstream artifacts and metadata (crates, sparse-index files and their records) are committed
without an fsync of each object (issue 16): the store syncs them in groups (a periodic syncfs,
and always before a clean stop). What a crash leaves must be whole and correct, or absent and
fetched again, never wrong bytes.

The real cargo client fetches a crate with its dependencies through the real agent from the
sparse index this machine's cargo uses. A process crash (kill -9 right after) loses nothing. A
machine crash before the group sync may lose the bytes of objects whose index entries are on
disk: that is simulated by damaging blob files (truncated, emptied, zeroed at the same size,
removed) while the agent is down. After the restart cargo, which checks every crate against the
index's checksum, must get the same crates as before, and the agent must serve no damaged byte.
"""

import hashlib

from harness import upstreams
from harness.powerloss import damage

from conftest import Agent, metric
from test_cargo import cargo, client_env, downloaded_crates, new_project, raw_get, run, use_agent

CRATES = ("serde_json", "serde", "itoa", "ryu")


def start(data, config):
    return Agent(data, config=config)


def fetch(agent, tmp_path, name):
    """`cargo fetch` of the test project through the agent with an empty CARGO_HOME; returns
    {crate file name: sha256} of what cargo downloaded (and checked against the index)."""
    project = new_project(tmp_path / name)
    use_agent(project, agent)
    home = tmp_path / f"{name}-home"
    run([cargo(), "fetch"], client_env(home), project)
    files = sorted(home.glob("registry/cache/*/*.crate"))
    assert {f.name.rsplit("-", 1)[0] for f in files} >= set(CRATES), downloaded_crates(home)
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def blob_files(data):
    return sorted(p for p in (data / "blobs").glob("*/*") if p.is_file())


def crate_paths(crates):
    """The agent's download path of each crate file `name-version.crate`."""
    paths = []
    for filename in crates:
        name, version = filename[: -len(".crate")].rsplit("-", 1)
        paths.append(f"/cargo/api/v1/crates/{name}/{version}/download")
    return paths


def upstream_fetches(agent):
    m = agent.metrics()
    return sum(metric(m, "buildcache_upstream_requests_total", frontend="cargo", outcome=o)
               for o in ("ok", "not_modified", "not_found", "error"))


def test_kill9_after_a_cold_fetch_loses_nothing(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(f"cargo:\n  upstream: sparse+{upstreams.cargo_index()}\n")
    data = tmp_path / "data"
    agent = start(data, config)
    before = fetch(agent, tmp_path, "cold")
    agent.kill9()

    restarted = start(data, config)
    try:
        for path in crate_paths(before):
            status, _, body = raw_get(restarted, path)
            assert status == 200, (path, status)
            assert hashlib.sha256(body).hexdigest() in before.values(), path
        # Crates come from the store, not the upstream (index files may be revalidated).
        m = restarted.metrics()
        assert metric(m, "buildcache_upstream_requests_total", frontend="cargo",
                      outcome="ok") == 0
        assert fetch(restarted, tmp_path, "after") == before
    finally:
        restarted.stop()


def test_unsynced_objects_lost_in_a_machine_crash_are_fetched_again_never_served_wrong(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(f"cargo:\n  upstream: sparse+{upstreams.cargo_index()}\n")
    data = tmp_path / "data"
    agent = start(data, config)
    before = fetch(agent, tmp_path, "cold")
    agent.kill9()

    # What a power loss may leave of files whose data was not written back yet: every other
    # blob (crates, index files and their records alike) is damaged.
    files = blob_files(data)
    assert len(files) >= 2 * len(CRATES), files
    damaged = 0
    for n, path in enumerate(files):
        if n % 2:
            continue
        damage(path, n // 2)
        damaged += 1

    restarted = start(data, config)
    try:
        # Every crate the agent serves is the one cargo checked before, damaged or not.
        for path in crate_paths(before):
            status, _, body = raw_get(restarted, path)
            assert status == 200, (path, status)
            assert hashlib.sha256(body).hexdigest() in before.values(), path
        # The real client, which checks each crate against the index's checksum, gets the same.
        assert fetch(restarted, tmp_path, "after") == before
        # The damaged copies were dropped and fetched again.
        m = restarted.metrics()
        assert upstream_fetches(restarted) > 0
        assert metric(m, "buildcache_store_corrupt_blobs_total") > 0
    finally:
        restarted.stop()
