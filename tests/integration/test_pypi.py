"""The PyPI front end of the real agent with real clients.

pip and uv install through the agent into fresh virtual environments (no client caches), an
sdist with a C extension is compiled through it, and the wheel house closes the loop: a wheel
built by `pip wheel` is uploaded with `twine upload`, and the next install downloads that wheel
instead of compiling again.

The upstream index is the machine's own pip configuration (`pip config list`), or pip's default
when none is configured; no index host name is written here.
"""

import http.client
import json
import os
import pathlib
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from harness import upstreams

REQUIREMENTS = """\
six==1.16.0
idna==3.7
packaging==24.1
attrs==23.2.0
Typing_Extensions==4.12.2
"""
IMPORTS = "import six, idna, packaging, attrs, typing_extensions"

# A small project whose C extension must be compiled, in a release older than this interpreter
# (no compatible wheel upstream), so pip has to build it from the sdist.
C_PROJECT = "bitarray"
C_VERSION = "2.3.0"

CLIENT_TIMEOUT = 600
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"


def client_env(extra=None):
    """The environment for pip/uv/twine: none of the machine's client settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "TWINE_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PIP_NO_CACHE_DIR="1", UV_NO_CONFIG="1", UV_NO_CACHE="1",
               PYTHONDONTWRITEBYTECODE="1")
    env.update(extra or {})
    return env


def run(cmd, env=None, cwd=None, check=True):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                         env=env or client_env(), timeout=CLIENT_TIMEOUT)
    text = out.stdout + out.stderr
    if check:
        assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{text}"
    return out.returncode, text


def new_venv(path):
    run([sys.executable, "-m", "venv", path])
    return pathlib.Path(path) / "bin"


@pytest.fixture(scope="module")
def upstream():
    url = upstreams.pypi_index()
    project = url.rstrip("/") + "/pip/"
    try:
        urllib.request.urlopen(urllib.request.Request(project, headers={"Accept": JSON_ACCEPT}),
                               timeout=30).close()
    except (urllib.error.URLError, OSError) as e:
        pytest.fail(f"the configured package index is unreachable: {e}")
    return url


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    """uv and twine: from PATH when installed (scripts/setup), else into a tools venv."""
    found = {name: shutil.which(name) for name in ("uv", "twine")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        bin_dir = new_venv(tmp_path_factory.mktemp("tools") / "venv")
        # Installed with the machine's own pip configuration, like scripts/setup does.
        code, text = run([bin_dir / "python", "-m", "pip", "install", "-q", *missing],
                         env={**os.environ}, check=False)
        if code != 0:
            pytest.fail(f"cannot install {missing}: {text[-2000:]}")
        for name in missing:
            found[name] = str(bin_dir / name)
    return found


def start_pypi_agent(start_agent, tmp_path, upstream, data_dir=None):
    config = tmp_path / "agent.yaml"
    config.write_text(f"pypi:\n  upstream: {upstream}\n")
    return start_agent(data_dir=data_dir, config=config)


@pytest.fixture
def agent(start_agent, tmp_path, upstream):
    return start_pypi_agent(start_agent, tmp_path, upstream)


def index_url(agent):
    return f"{agent.url}/pypi/simple/"


def raw_get(agent, path, headers=None):
    """One GET without following redirects: (status, headers, body)."""
    host, port = agent.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def project_page(agent, project):
    status, headers, body = raw_get(agent, f"/pypi/simple/{project}/", {"Accept": JSON_ACCEPT})
    assert status == 200, body
    assert headers["content-type"] == JSON_ACCEPT
    return json.loads(body)


def compatible_upstream_wheels(page, version):
    """Upstream wheels of `version` this interpreter could install."""
    from pip._vendor.packaging.tags import sys_tags  # pylint: disable=import-outside-toplevel
    from pip._vendor.packaging.utils import parse_wheel_filename  # pylint: disable=import-outside-toplevel
    supported = set(sys_tags())
    out = []
    for f in page["files"]:
        name = f["filename"]
        if not name.endswith(".whl") or "/wheelhouse/" in f["url"]:
            continue
        _, wheel_version, _, tags = parse_wheel_filename(name)
        if str(wheel_version) == version and tags & supported:
            out.append(name)
    return out


def test_pages_names_and_uploads_over_http(agent):
    status, headers, body = raw_get(agent, "/pypi/simple/Typing_Extensions/")
    assert status == 301 and headers["location"] == "/pypi/simple/typing-extensions/"
    status, headers, body = raw_get(agent, "/pypi/simple/typing-extensions/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'href="../../files/typing-extensions/' in body
    host = agent.address.split(":")[0].encode()
    assert host not in body, "pages carry relative URLs only"
    page = project_page(agent, "typing-extensions")
    assert all(f["url"].startswith("../../files/typing-extensions/") for f in page["files"])
    assert all("sha256" in f["hashes"] for f in page["files"])
    for bad in ("/pypi/simple/..%2f..%2fetc/", "/pypi/files/six/..%2fsix.whl",
                "/pypi/files/six/.hidden"):
        assert raw_get(agent, bad)[0] == 400, bad
    req = urllib.request.Request(f"{agent.url}/pypi/", data=b"not a form", method="POST",
                                 headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400


def test_pip_and_uv_install_requirements(agent, tools, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(REQUIREMENTS)

    pip_bin = new_venv(tmp_path / "pip-venv")
    _, text = run([pip_bin / "python", "-m", "pip", "install", "--no-cache-dir",
                   "--index-url", index_url(agent), "-r", requirements])
    assert f"{agent.url}/pypi/files/" in text, text
    run([pip_bin / "python", "-c", IMPORTS])

    uv_venv = tmp_path / "uv-venv"
    run([tools["uv"], "venv", "-q", "--python", sys.executable, uv_venv])
    run([tools["uv"], "pip", "install", "--no-cache", "--python", uv_venv / "bin" / "python",
         "--index-url", index_url(agent), "-r", requirements])
    run([uv_venv / "bin" / "python", "-c", IMPORTS])

    # Both clients got the same files; the second time they came from the agent's store.
    page = project_page(agent, "six")
    wheel = next(f for f in page["files"] if f["filename"] == "six-1.16.0-py2.py3-none-any.whl")
    url = urllib.parse.urljoin(f"{agent.url}/pypi/simple/six/", wheel["url"])
    status, headers, _ = raw_get(agent, urllib.parse.urlsplit(url).path)
    assert status == 200 and headers["x-buildcache-source"] == "local"


def test_sdist_with_c_extension_is_compiled(agent, tmp_path):
    bin_dir = new_venv(tmp_path / "venv")
    _, text = run([bin_dir / "python", "-m", "pip", "install", "--no-cache-dir",
                   "--index-url", index_url(agent), "--no-binary", C_PROJECT,
                   f"{C_PROJECT}=={C_VERSION}"])
    assert f"Building wheel for {C_PROJECT}" in text, text
    _, text = run([bin_dir / "python", "-c",
                   f"import {C_PROJECT}._{C_PROJECT} as m; print(m.__file__)"])
    assert text.strip().endswith(".so"), text


def test_wheel_house_serves_built_wheels(start_agent, agent, tools, tmp_path, upstream):
    page = project_page(agent, C_PROJECT)
    # The scenario needs a release with no wheel for this interpreter, so pip must build one.
    assert not compatible_upstream_wheels(page, C_VERSION), (
        f"the upstream has a wheel of {C_PROJECT} {C_VERSION} for this interpreter: pick another")

    # A pod builds the wheel from the sdist ...
    builder = new_venv(tmp_path / "builder")
    wheels = tmp_path / "wheels"
    _, text = run([builder / "python", "-m", "pip", "wheel", "--no-cache-dir", "--no-deps",
                   "--index-url", index_url(agent), "--no-binary", C_PROJECT,
                   "-w", wheels, f"{C_PROJECT}=={C_VERSION}"])
    assert f"Building wheel for {C_PROJECT}" in text, text
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == 1, built

    # ... and uploads it to the agent with twine (any credentials are accepted).
    start = len(agent.logs)
    run([tools["twine"], "upload", "--non-interactive", "--disable-progress-bar",
         "--repository-url", f"{agent.url}/pypi/", "-u", "ci", "-p", "unused", *built])
    stored = agent.wait_for_log("pypi wheel stored", start=start)
    assert stored["filename"] == built[0].name

    page = project_page(agent, C_PROJECT)
    entry = next(f for f in page["files"] if f["filename"] == built[0].name)
    assert entry["url"] == f"../../wheelhouse/{C_PROJECT}/{built[0].name}"

    # The next pod downloads the wheel instead of compiling: pip ...
    consumer = new_venv(tmp_path / "consumer")
    _, text = run([consumer / "python", "-m", "pip", "install", "--no-cache-dir",
                   "--index-url", index_url(agent), f"{C_PROJECT}=={C_VERSION}"])
    assert "Building wheel" not in text, text
    assert f"/pypi/wheelhouse/{C_PROJECT}/{built[0].name}" in text, text
    run([consumer / "python", "-c", f"import {C_PROJECT}; {C_PROJECT}.bitarray('1')"])

    # ... and uv.
    uv_venv = tmp_path / "uv-consumer"
    run([tools["uv"], "venv", "-q", "--python", sys.executable, uv_venv])
    _, text = run([tools["uv"], "pip", "install", "--no-cache", "--python",
                   uv_venv / "bin" / "python", "--index-url", index_url(agent),
                   f"{C_PROJECT}=={C_VERSION}"])
    assert "Built " not in text and "Building" not in text, text

    # The wheel house survives a restart of the agent.
    data_dir = agent.data_dir
    assert agent.stop() == 0
    again = start_pypi_agent(start_agent, tmp_path, upstream, data_dir=data_dir)
    page = project_page(again, C_PROJECT)
    assert any(f["filename"] == built[0].name for f in page["files"])
