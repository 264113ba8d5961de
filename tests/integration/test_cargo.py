"""The Cargo front end of the real agent with the real cargo client.

`cargo generate-lockfile` and `cargo fetch` resolve and download a crate with a few dependencies
through the agent (a `[source]` replacement in `.cargo/config.toml`), with a fresh CARGO_HOME
each time; the second time, with another empty CARGO_HOME, everything comes from the agent.

The upstream index is the one cargo itself uses on this machine: cargo is asked (a throw-away
`cargo generate-lockfile` with its network log on) which sparse index it fetches config.json
from, so the machine's own registry configuration (`[source.crates-io] replace-with`, a
mirror, ...) is honoured and no registry host name is written here.
"""

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from harness import upstreams

from conftest import metric

# A crate with a few dependencies (serde, itoa, ryu and, through serde, more), all small.
DEPENDENCIES = 'serde_json = "=1.0.117"\n'
EXPECTED_CRATES = ("serde_json", "serde", "itoa", "ryu")
CLIENT_TIMEOUT = 600


def cargo():
    path = shutil.which("cargo")
    if path is None:
        pytest.fail("cargo is not installed (scripts/setup installs it)")
    return path


def client_env(cargo_home, extra=None):
    """cargo's environment: a fresh CARGO_HOME and none of the machine's CARGO_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARGO_")}
    env.update(CARGO_HOME=str(cargo_home), CARGO_TERM_COLOR="never", CARGO_NET_RETRY="0",
               CARGO_HTTP_TIMEOUT="120")
    env.update(extra or {})
    return env


def run(cmd, env, cwd, check=True):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=CLIENT_TIMEOUT)
    text = out.stdout + out.stderr
    if check:
        assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{text[-6000:]}"
    return text


def new_project(path, dependencies=DEPENDENCIES):
    (path / "src").mkdir(parents=True)
    (path / "src" / "lib.rs").write_text("")
    (path / "Cargo.toml").write_text(
        '[package]\nname = "buildcache-cargo-test"\nversion = "0.1.0"\nedition = "2021"\n\n'
        f"[dependencies]\n{dependencies}")
    return path


def fetched_urls(log):
    """The URLs cargo's network log says it fetched."""
    return re.findall(r"\bfetch (https?://\S+)", log)


@pytest.fixture(scope="module")
def upstream():
    """The sparse index cargo uses on this machine, as cargo itself reports it."""
    return upstreams.cargo_index()


def start_cargo_agent(start_agent, tmp_path, upstream, data_dir=None):
    config = tmp_path / "agent.yaml"
    config.write_text(f"cargo:\n  upstream: sparse+{upstream}\n")
    return start_agent(data_dir=data_dir, config=config)


@pytest.fixture
def agent(start_agent, tmp_path, upstream):
    return start_cargo_agent(start_agent, tmp_path, upstream)


def use_agent(project, agent):
    (project / ".cargo").mkdir(exist_ok=True)
    (project / ".cargo" / "config.toml").write_text(
        '[source.crates-io]\nreplace-with = "buildcache"\n\n'
        f'[source.buildcache]\nregistry = "sparse+{agent.url}/cargo/index/"\n')


def raw_get(agent, path):
    try:
        with urllib.request.urlopen(agent.url + path, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def downloaded_crates(cargo_home):
    return sorted(p.name for p in cargo_home.glob("registry/cache/*/*.crate"))


def test_cargo_fetch_through_the_agent(agent, tmp_path):
    project = new_project(tmp_path / "project")
    use_agent(project, agent)

    # First run: an empty CARGO_HOME; the agent fetches from the upstream.
    home1 = tmp_path / "home1"
    env = client_env(home1, {"CARGO_LOG": "network=debug"})
    text = run([cargo(), "generate-lockfile"], env, project)
    text += run([cargo(), "fetch"], env, project)
    urls = fetched_urls(text)
    assert urls, text[-4000:]
    assert all(u.startswith(f"{agent.url}/cargo/") for u in urls), [
        u for u in urls if not u.startswith(agent.url)]
    crates = downloaded_crates(home1)
    for name in EXPECTED_CRATES:
        assert any(re.fullmatch(rf"{name}-\d+\.\d+\.\d+\.crate", c) for c in crates), crates
    lockfile = (project / "Cargo.lock").read_text()

    before = agent.metrics()
    upstream_before = metric(before, "buildcache_upstream_requests_total", frontend="cargo")
    assert upstream_before >= len(EXPECTED_CRATES)
    assert metric(before, "buildcache_upstream_requests_total", frontend="cargo",
                  outcome="error") == 0

    # Second run: another empty CARGO_HOME, the same lockfile; all of it from the agent.
    home2 = tmp_path / "home2"
    env = client_env(home2, {"CARGO_LOG": "network=debug"})
    text = run([cargo(), "fetch", "--locked"], env, project)
    assert (project / "Cargo.lock").read_text() == lockfile
    assert downloaded_crates(home2) == crates
    assert all(u.startswith(f"{agent.url}/cargo/") for u in fetched_urls(text))
    after = agent.metrics()
    assert metric(after, "buildcache_upstream_requests_total", frontend="cargo") == upstream_before
    assert metric(after, "buildcache_served_bytes_total", frontend="cargo", source="local") > \
        metric(before, "buildcache_served_bytes_total", frontend="cargo", source="local")

    # A crate is answered from the store, verified at fetch time against the index's cksum.
    name, version = re.fullmatch(r"(.+)-(\d+\.\d+\.\d+)\.crate", crates[0]).groups()
    status, headers, body = raw_get(agent, f"/cargo/api/v1/crates/{name}/{version}/download")
    assert status == 200 and headers["X-Buildcache-Source"] == "local"
    assert body == next(home2.glob(f"registry/cache/*/{crates[0]}")).read_bytes()


def test_registry_protocol_over_http(agent):
    status, headers, body = raw_get(agent, "/cargo/index/config.json")
    assert status == 200, body
    assert body.strip() == f'{{"dl":"{agent.url}/cargo/api/v1/crates"}}'.encode()
    status, headers, body = raw_get(agent, "/cargo/index/se/rd/serde")
    assert status == 200, body
    entries = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert entries and all(e["name"] == "serde" and len(e["cksum"]) == 64 for e in entries)
    assert raw_get(agent, "/cargo/index/3/n/nonexistent-crate-buildcache-test")[0] == 400
    assert raw_get(agent, "/cargo/index/no/ne/nonexistent-crate-buildcache-test")[0] == 404
    for bad in ("/cargo/index/se/rd/Serde", "/cargo/index/se/rd/..%2fserde",
                "/cargo/api/v1/crates/serde/1.0/download",
                "/cargo/api/v1/crates/..%2fserde/1.0.0/download"):
        assert raw_get(agent, bad)[0] == 400, bad
    assert raw_get(agent, "/cargo/api/v1/crates/serde/999.0.0/download")[0] == 404
