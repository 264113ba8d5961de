"""Private upstreams: the real agent with pip and npm against a local registry that wants
credentials (tests/harness/private_registry.py).

- Without credentials the registry answers 401; the agent answers 502 naming the 401 and what
  to configure, and pip and npm fail with it.
- With `<section>.auth` (a Bearer token file, or username and password files) pip and npm
  install; the credential reaches the registry's origin and never the CDN its wheel downloads
  redirect to.
- The token file is replaced the way the kubelet updates a Secret volume (a new directory, the
  "..data" symlink swapped): the next fetch carries the new token, with no restart.
- Hostile: the registry's 401 page echoes the Authorization header it got. Nothing the agent
  sends a client (bodies, headers), its /metrics and its log ever contain the credential, and
  `--check-config` masks credentials written into an upstream URL.
"""

import os
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import BIN_DIR
from harness import upstreams
from harness.private_registry import PrivateRegistry

CLIENT_TIMEOUT = 300
TOKEN = "tok-3f9a1c7e5b2d4a60"
TOKEN_2 = "tok-rotated-8e41d07c"
USER, PASSWORD = "ci-reader", "pw-5c2e9b71"


@pytest.fixture
def registry():
    with PrivateRegistry() as reg:
        yield reg


class SecretDir:
    """A directory laid out as the kubelet lays out a Secret volume: every key a symlink through
    "..data", which points at a timestamped directory and is swapped on update."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.path.mkdir()
        self.generation = 0

    def publish(self, data):
        self.generation += 1
        version = self.path / f"..v{self.generation}"
        version.mkdir()
        for key, value in data.items():
            (version / key).write_text(value + "\n")
            (version / key).chmod(0o400)
        tmp = self.path / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, self.path / "..data")
        for key in data:
            link = self.path / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")

    def file(self, key):
        return str(self.path / key)


def write_config(tmp_path, registry, auth=""):
    """An agent configuration with pypi and npm on the private registry; auth is the YAML of each
    section's auth mapping (indented under the section), or ""."""
    config = tmp_path / "agent.yaml"
    config.write_text(f"pypi:\n  upstream: {registry.pypi_index}\n{auth}"
                      f"npm:\n  upstream: {registry.npm_registry}\n{auth}")
    return config


def bearer_auth(secret):
    return f"  auth:\n    tokenFile: {secret.file('token')}\n"


def client_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "UV_")) and not k.lower().startswith("npm_config_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PIP_NO_CACHE_DIR="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def pip_install(agent, target, package):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--index-url", f"{agent.url}/pypi/simple/",
         "--target", str(target), package],
        capture_output=True, text=True, env=client_env(), timeout=CLIENT_TIMEOUT, check=False)
    return out.returncode, out.stdout + out.stderr


def npm_install(agent, project, package):
    project.mkdir(parents=True, exist_ok=True)
    (project / "package.json").write_text('{"name": "private-test", "version": "1.0.0"}')
    npmrc = project / "npmrc"
    npmrc.write_text(f"registry={agent.url}/npm/\ncache={project / 'cache'}\n")
    env = client_env()
    env.update(npm_config_userconfig=str(npmrc), npm_config_update_notifier="false",
               npm_config_fund="false", npm_config_audit="false", npm_config_loglevel="warn",
               npm_config_fetch_retries="0")
    out = subprocess.run([upstreams.tool("npm"), "install", package], cwd=project, env=env,
                         capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False)
    return out.returncode, out.stdout + out.stderr


def raw_get(agent, path):
    """(status, headers as text, body) of one GET, whatever the status."""
    try:
        with urllib.request.urlopen(agent.url + path, timeout=60) as resp:
            return resp.status, str(resp.headers), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, str(e.headers), e.read().decode(errors="replace")


def log_text(agent):
    return "\n".join(str(line) for line in agent.logs)


def assert_nowhere(agent, *secrets):
    """No credential in /metrics or in the agent's log."""
    _, metrics, _ = agent.get("/metrics")
    logs = log_text(agent)
    for secret in secrets:
        assert secret not in metrics.decode()
        assert secret not in logs, "the log contains a credential"


def test_without_credentials_clients_get_a_clear_error(start_agent, tmp_path, registry):
    registry.want_bearer(TOKEN)
    agent = start_agent(config=write_config(tmp_path, registry))
    status, _, body = raw_get(agent, "/pypi/simple/bc-private-pkg/")
    assert status == 502, body
    assert "answered 401" in body and "wants credentials" in body, body
    assert all(auth == "" for auth in registry.authorizations()), registry.seen

    code, text = pip_install(agent, tmp_path / "site", "bc-private-pkg")
    assert code != 0, text
    code, text = npm_install(agent, tmp_path / "project", "bc-private-pkg")
    assert code != 0, text
    assert "502" in text, text


def test_pip_and_npm_with_a_bearer_token_that_rotates(start_agent, tmp_path, registry):
    secret = SecretDir(tmp_path / "secret")
    secret.publish({"token": TOKEN})
    registry.want_bearer(TOKEN)
    agent = start_agent(config=write_config(tmp_path, registry, bearer_auth(secret)))

    code, text = pip_install(agent, tmp_path / "site", "bc-private-pkg")
    assert code == 0, text
    check = subprocess.run([sys.executable, "-c", "import bc_private_pkg; print(bc_private_pkg.VALUE)"],
                           env={**client_env(), "PYTHONPATH": str(tmp_path / "site")},
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.stdout.strip() == "private", check.stdout + check.stderr
    assert registry.authorizations("/simple/") == [f"Bearer {TOKEN}"]
    assert registry.authorizations("/files/") == [f"Bearer {TOKEN}"]
    # The wheel came through the CDN the registry redirected to, without the credential.
    assert [auth for path, auth in registry.cdn_seen if path.startswith("/blob/")] == [""]

    code, text = npm_install(agent, tmp_path / "project", "bc-private-pkg")
    assert code == 0, text
    assert (tmp_path / "project" / "node_modules" / "bc-private-pkg" / "index.js").is_file()
    assert set(registry.authorizations("/npm/")) == {f"Bearer {TOKEN}"}

    # The Secret rotates: the next fetch carries the new token, no restart.
    secret.publish({"token": TOKEN_2})
    registry.want_bearer(TOKEN_2)
    code, text = pip_install(agent, tmp_path / "site2", "bc-private-other")
    assert code == 0, text
    assert registry.authorizations("/simple/bc-private-other") == [f"Bearer {TOKEN_2}"]
    code, text = npm_install(agent, tmp_path / "project2", "bc-private-other")
    assert code == 0, text
    assert set(registry.authorizations("/npm/bc-private-other")) == {f"Bearer {TOKEN_2}"}
    agent.wait_for_log("upstream credential reloaded")
    assert agent.proc.poll() is None
    assert_nowhere(agent, TOKEN, TOKEN_2)


def test_basic_credentials_from_username_and_password_files(start_agent, tmp_path, registry):
    secret = SecretDir(tmp_path / "secret")
    secret.publish({"username": USER, "password": PASSWORD})
    registry.want_basic(USER, PASSWORD)
    auth = (f"  auth:\n    usernameFile: {secret.file('username')}\n"
            f"    passwordFile: {secret.file('password')}\n")
    agent = start_agent(config=write_config(tmp_path, registry, auth))
    code, text = pip_install(agent, tmp_path / "site", "bc-private-pkg")
    assert code == 0, text
    code, text = npm_install(agent, tmp_path / "project", "bc-private-pkg")
    assert code == 0, text
    assert all(auth.startswith("Basic ") for auth in registry.authorizations())
    assert_nowhere(agent, PASSWORD)


def test_an_upstream_echoing_the_credential_does_not_leak_it(start_agent, tmp_path, registry):
    """The registry wants another token than the agent sends, and its 401 page and headers
    reflect the one it got: the agent's answers carry neither."""
    secret = SecretDir(tmp_path / "secret")
    secret.publish({"token": TOKEN})
    registry.want_bearer("some-other-token")
    agent = start_agent(config=write_config(tmp_path, registry, bearer_auth(secret)))
    paths = ["/pypi/simple/bc-private-pkg/", "/npm/bc-private-pkg",
             "/npm/bc-private-pkg/-/bc-private-pkg-1.0.0.tgz"]
    for path in paths:
        status, headers, body = raw_get(agent, path)
        assert status in (502, 404), (path, status, body)
        assert TOKEN not in body and TOKEN not in headers, (path, headers, body)
        assert "WWW-Authenticate" not in headers, headers
    assert f"Bearer {TOKEN}" in registry.authorizations()  # it was sent, and echoed back
    for path in ("/metrics", "/healthz", "/readyz"):
        _, headers, body = raw_get(agent, path)
        assert TOKEN not in body and TOKEN not in headers
    assert_nowhere(agent, TOKEN)


def test_check_config_masks_credentials_in_upstream_urls(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("pypi:\n  upstream: ftp://reader:hunter2-9f3@index.example.invalid/simple/\n"
                      "npm:\n  upstream: https://npm.example.invalid/\n"
                      "  auth:\n    tokenFile: /t\n    usernameFile: /u\n")
    out = subprocess.run([str(BIN_DIR / "buildcache-agent"), "--config", str(config),
                          "--data-dir", str(tmp_path / "data"), "--check-config"],
                         capture_output=True, text=True, timeout=60, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "hunter2-9f3" not in text, text
    assert "ftp://***@index.example.invalid/simple/" in text, text
    assert "npm.auth: tokenFile (bearer) and usernameFile/passwordFile (basic) exclude each other" \
        in text, text
    assert "npm.auth: usernameFile and passwordFile go together" in text, text
