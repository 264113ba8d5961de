"""The npm front end of the real agent with the real npm client.

A project whose dependency tree is about a hundred packages, scoped @types/* packages among
them, is installed through the agent with `npm install` and a fresh npm cache; then `npm ci`
reinstalls it from the lockfile with another fresh cache, and everything comes from the agent's
store: /metrics shows hits and no upstream request. A lockfile that names the agent (npm's
`resolved` URLs) is installed again through an agent on another port.

The upstream registry is the machine's own npm configuration (`npm config get registry`); no
registry host name is written here. npm runs with its own user configuration file, so nothing
else of the machine's configuration changes what is tested.
"""

import http.client
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import metric
from harness import upstreams

# Direct dependencies whose trees add up to about a hundred packages, scoped ones included.
DEPENDENCIES = {"express": "4.19.2", "yargs": "17.7.2", "@types/express": "4.17.21"}
MIN_PACKAGES = 80
CLIENT_TIMEOUT = 600
ABBREVIATED = "application/vnd.npm.install-v1+json"


@pytest.fixture(scope="module")
def upstream():
    registry = upstreams.npm_registry()
    try:
        urllib.request.urlopen(urllib.request.Request(registry + "is-number",
                                                      headers={"Accept": ABBREVIATED}),
                               timeout=60).close()
    except (urllib.error.URLError, OSError) as e:
        pytest.fail(f"the configured npm registry is unreachable: {e}")
    return registry


def start_npm_agent(start_agent, tmp_path, upstream, data_dir=None):
    config = tmp_path / "agent.yaml"
    config.write_text(f"npm:\n  upstream: {upstream}\n")
    return start_agent(data_dir=data_dir, config=config)


@pytest.fixture
def agent(start_agent, tmp_path, upstream):
    return start_npm_agent(start_agent, tmp_path, upstream)


def registry_url(agent):
    return f"{agent.url}/npm/"


def npm_env(tmp_path, settings):
    """An environment in which npm reads only the given user configuration."""
    npmrc = tmp_path / "npmrc"
    npmrc.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    env.update(npm_config_userconfig=str(npmrc), npm_config_update_notifier="false",
               npm_config_fund="false", npm_config_loglevel="warn")
    return env


def run_npm(args, cwd, env):
    out = subprocess.run([upstreams.tool("npm"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=CLIENT_TIMEOUT, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"npm {' '.join(args)} failed ({out.returncode}):\n{text}"
    return text


def new_project(path):
    path.mkdir(parents=True)
    (path / "package.json").write_text(json.dumps({
        "name": "buildcache-npm-test", "version": "1.0.0", "private": True,
        "dependencies": DEPENDENCIES}))
    return path


def installed_packages(project):
    lock = json.loads((project / "package-lock.json").read_text())
    return {path: entry for path, entry in lock["packages"].items() if path}


def check_installed(project, env):
    packages = installed_packages(project)
    assert len(packages) >= MIN_PACKAGES, sorted(packages)
    assert any(p.startswith("node_modules/@types/") for p in packages), sorted(packages)
    for path in packages:
        assert (project / path / "package.json").is_file(), f"{path} is not installed"
    out = subprocess.run(["node", "-e", "require('express'); require('yargs');"
                          "require('./node_modules/@types/express/package.json')"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    return packages


def npm_counters(agent):
    m = agent.metrics()
    return {
        "hits": metric(m, "buildcache_requests_total", frontend="npm", result="hit"),
        "errors": metric(m, "buildcache_requests_total", frontend="npm", result="error"),
        "upstream": metric(m, "buildcache_upstream_requests_total", frontend="npm"),
        "local_bytes": metric(m, "buildcache_served_bytes_total", frontend="npm",
                              source="local"),
        "upstream_bytes": metric(m, "buildcache_served_bytes_total", frontend="npm",
                                 source="upstream"),
    }


def raw_get(agent, path, headers=None):
    """One GET: (status, lower-case headers, body)."""
    host, port = agent.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_npm_install_then_ci_from_the_lockfile_is_served_by_the_agent(agent, tmp_path):
    # The lockfile keeps integrity but no registry URLs (npm >= 9), so it names no agent port.
    # audit=true: npm asks the agent for an audit, which it declines without failing the install.
    env = npm_env(tmp_path, {"omit-lockfile-registry-resolved": "true", "audit": "true"})
    first = new_project(tmp_path / "install")
    run_npm(["install", "--registry", registry_url(agent), "--cache", tmp_path / "cache-install"],
            first, env)
    packages = check_installed(first, env)
    assert all(entry.get("integrity") for entry in packages.values()), \
        "every package is pinned by its integrity"
    lock_text = (first / "package-lock.json").read_text()
    assert agent.address not in lock_text, "the lockfile does not name the agent"
    assert '"resolved"' not in lock_text
    after_install = npm_counters(agent)
    assert after_install["upstream"] >= len(packages), after_install
    assert after_install["hits"] >= len(packages), after_install

    # Another pod: the lockfile only, a fresh npm cache.
    second = tmp_path / "ci"
    second.mkdir()
    shutil.copy(first / "package.json", second)
    shutil.copy(first / "package-lock.json", second)
    run_npm(["ci", "--registry", registry_url(agent), "--cache", tmp_path / "cache-ci"], second,
            env)
    assert installed_packages(second) == packages
    check_installed(second, env)
    after_ci = npm_counters(agent)
    delta = {k: after_ci[k] - after_install[k] for k in after_ci}
    # Every packument and tarball came from the agent's store: no upstream request at all.
    assert delta["upstream"] == 0, delta
    assert delta["upstream_bytes"] == 0, delta
    assert delta["hits"] >= len(packages), delta
    assert delta["local_bytes"] > 0, delta
    assert delta["errors"] == 0, delta


def test_npm_revalidations_are_hits_not_rejections(agent, tmp_path):
    # npm install twice with one cache: the second install revalidates every packument it holds
    # (If-None-Match, answered 304), which is a healthy hit, never a rejection.
    env = npm_env(tmp_path, {"audit": "false"})
    cache = tmp_path / "cache"
    for n in range(2):
        project = new_project(tmp_path / f"install-{n}")
        run_npm(["install", "--registry", registry_url(agent), "--cache", cache], project, env)
        check_installed(project, env)
        if n == 0:
            first = agent.metrics()
    second = agent.metrics()
    counts = {r: metric(second, "buildcache_requests_total", frontend="npm", result=r)
              - metric(first, "buildcache_requests_total", frontend="npm", result=r)
              for r in ("hit", "miss", "redirect", "rejected", "error")}
    assert counts["rejected"] == 0 and counts["error"] == 0, counts
    assert counts["hit"] >= MIN_PACKAGES, counts


def test_lockfile_with_agent_urls_installs_through_an_agent_on_another_port(
        start_agent, agent, tmp_path, upstream):
    # npm's default: `resolved` URLs in the lockfile, here the agent's (ephemeral) address.
    env = npm_env(tmp_path, {"omit-lockfile-registry-resolved": "false", "audit": "false"})
    first = new_project(tmp_path / "install")
    run_npm(["install", "--registry", registry_url(agent), "--cache", tmp_path / "cache-install"],
            first, env)
    packages = check_installed(first, env)
    resolved = [entry["resolved"] for entry in packages.values()]
    assert all(url.startswith(registry_url(agent)) for url in resolved), resolved[:5]
    assert any("/npm/@types/" in url for url in resolved), resolved

    # The same store behind a new address: the lockfile's URLs now point at nothing.
    data_dir = agent.data_dir
    agent.stop()
    moved = start_npm_agent(start_agent, tmp_path, upstream, data_dir=data_dir)
    assert moved.address != agent.address
    before = npm_counters(moved)
    # replace-registry-host=always makes npm fetch lockfile URLs from the configured registry.
    second = tmp_path / "ci"
    second.mkdir()
    shutil.copy(first / "package.json", second)
    shutil.copy(first / "package-lock.json", second)
    run_npm(["ci", "--registry", registry_url(moved), "--cache", tmp_path / "cache-ci",
             "--replace-registry-host", "always", "--fetch-retries", "0"], second, env)
    check_installed(second, env)
    after = npm_counters(moved)
    assert after["upstream"] - before["upstream"] == 0, (before, after)
    assert after["hits"] - before["hits"] >= len(packages), (before, after)


def test_registry_api_over_http(agent):
    status, headers, body = raw_get(agent, "/npm/@types%2fexpress", {"Accept": ABBREVIATED})
    assert status == 200, body
    assert headers["vary"] == "Accept"
    doc = json.loads(body)
    assert doc["name"] == "@types/express"
    tarball = doc["versions"]["4.17.21"]["dist"]["tarball"]
    assert tarball == f"{agent.url}/npm/@types/express/-/express-4.17.21.tgz", tarball
    assert all(v["dist"]["tarball"].startswith(f"{agent.url}/npm/@types/express/-/")
               for v in doc["versions"].values() if "dist" in v)
    # The other spelling of a scoped name is the same document.
    status, _, same = raw_get(agent, "/npm/@types/express", {"Accept": ABBREVIATED})
    assert status == 200 and json.loads(same) == doc

    # A tarball is verified against the packument's integrity, then served from the store.
    path = tarball[len(agent.url):]
    status, headers, first = raw_get(agent, path)
    assert status == 200 and headers["x-buildcache-source"] == "upstream"
    status, headers, again = raw_get(agent, path)
    assert status == 200 and headers["x-buildcache-source"] == "local" and again == first

    # The Host header a client used is the one tarball URLs name.
    status, _, body = raw_get(agent, "/npm/@types%2fexpress", {"Host": "cache.example.internal:80"})
    assert status == 200
    assert "http://cache.example.internal:80/npm/@types/express/-/" in body.decode()

    for bad in ("/npm/..%2f..%2fetc", "/npm/.hidden", "/npm/@types%2f..%2fx",
                "/npm/express/-/..%2fx.tgz", "/npm/node_modules"):
        assert raw_get(agent, bad)[0] == 400, bad
    assert raw_get(agent, "/npm/express/-/express-0.0.0-not-published.tgz")[0] == 404
    assert raw_get(agent, "/npm/-/ping")[0] == 200
