"""The PyPI front end of the real agent with real clients.

pip and uv install through the agent into fresh virtual environments (no client caches), an
sdist with a C extension is compiled through it. The wheel house takes anonymous uploads
(`twine upload`), so it never lets one stand in for an upstream release: a wheel built from an
upstream sdist is refused, and against a fixture index on loopback, a tenant's build-tagged
wheel of an upstream release never reaches pip, a conflicting upload is a 409, and with the wheel
house off nothing is accepted or listed.

The upstream index is the machine's own pip configuration (`pip config list`), or pip's default
when none is configured; no index host name is written here.
"""

import base64
import hashlib
import http.client
import http.server
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import pytest

from conftest import metric
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


# Wheels the index gives no PEP 658 metadata for (uv then reads the metadata out of the wheel
# with HEAD and Range requests), large enough that a second whole download shows.
RANGE_REQUIREMENTS = """\
babel==2.15.0
pytz==2024.1
"""


def wheel_sizes(agent, requirements):
    """{filename: size} of the py3-none-any wheels the agent's pages list for the pins."""
    sizes = {}
    for line in requirements.split():
        name, version = line.split("==")
        page = project_page(agent, name.lower())
        wheels = [f for f in page["files"]
                  if f["filename"].endswith("-py3-none-any.whl")
                  or f["filename"].endswith("-py2.py3-none-any.whl")]
        wheels = [f for f in wheels if f["filename"].split("-")[1] == version]
        assert len(wheels) == 1, (name, [f["filename"] for f in wheels])
        assert not wheels[0].get("core-metadata"), "this test needs wheels without PEP 658 metadata"
        sizes[wheels[0]["filename"]] = wheels[0]["size"]
    return sizes


def served_bytes(agent):
    return metric(agent.metrics(), "buildcache_served_bytes_total", frontend="pypi")


def test_uv_reads_wheel_metadata_with_ranges_instead_of_downloading_twice(agent, tools, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(RANGE_REQUIREMENTS)
    sizes = wheel_sizes(agent, RANGE_REQUIREMENTS)
    total = sum(sizes.values())
    assert total > 5_000_000, sizes

    # Stored files announce ranges and answer one with 206.
    page = project_page(agent, "pytz")
    wheel = next(f for f in page["files"] if f["filename"] in sizes)
    path = urllib.parse.urlsplit(
        urllib.parse.urljoin(f"{agent.url}/pypi/simple/pytz/", wheel["url"])).path
    status, headers, body = raw_get(agent, path, {"Range": "bytes=-22"})
    assert status in (200, 206)  # the first request may stream the fetch whole
    status, headers, body = raw_get(agent, path, {"Range": "bytes=-22"})
    assert status == 206 and headers["accept-ranges"] == "bytes", headers
    assert headers["content-range"] == f"bytes {wheel['size'] - 22}-{wheel['size'] - 1}/" \
                                       f"{wheel['size']}"
    assert body[:4] == b"PK\x05\x06", "the zip's end-of-central-directory record"

    before = served_bytes(agent)
    uv_venv = tmp_path / "uv-venv"
    run([tools["uv"], "venv", "-q", "--python", sys.executable, uv_venv])
    run([tools["uv"], "pip", "install", "--no-cache", "--python", uv_venv / "bin" / "python",
         "--index-url", index_url(agent), "-r", requirements])
    run([uv_venv / "bin" / "python", "-c", "import babel, pytz"])
    served = served_bytes(agent) - before
    # Each wheel once, plus pages and the few ranges uv reads the metadata with; answering the
    # ranges with whole bodies made uv download every wheel twice (2 x total).
    assert total <= served < 1.25 * total, (served, sizes)


def test_revalidations_and_redirects_are_not_rejections(agent, tools, tmp_path):
    # Healthy traffic: pip building an sdist in build isolation (its own pip run for the build
    # requirements), then uv installing twice with one cache; uv's second run revalidates every
    # page it holds (If-None-Match, answered 304). Nothing of it may count as rejected.
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("Typing_Extensions==4.12.2\nsix==1.16.0\n")
    bin_dir = new_venv(tmp_path / "pip-venv")
    run([bin_dir / "python", "-m", "pip", "install", "--index-url", index_url(agent),
         "--no-binary", "six", "-r", requirements])
    run([bin_dir / "python", "-c", "import six, typing_extensions"])
    env = client_env({"UV_CACHE_DIR": str(tmp_path / "uv-cache")})
    del env["UV_NO_CACHE"]
    for n in range(2):
        venv = tmp_path / f"uv-venv-{n}"
        run([tools["uv"], "venv", "-q", "--python", sys.executable, venv], env=env)
        if n == 1:
            first = agent.metrics()
        run([tools["uv"], "pip", "install", "--python", venv / "bin" / "python",
             "--index-url", index_url(agent), "-r", requirements], env=env)
        run([venv / "bin" / "python", "-c", "import six, typing_extensions"])
    second = agent.metrics()

    def delta(result):
        return (metric(second, "buildcache_requests_total", frontend="pypi", result=result)
                - metric(first, "buildcache_requests_total", frontend="pypi", result=result))

    counts = {r: delta(r) for r in ("hit", "miss", "redirect", "rejected", "error")}
    # The revalidations are hits: uv's second run asked for both pages again.
    assert counts["hit"] >= 2, counts
    assert counts["rejected"] == 0 and counts["error"] == 0, counts
    m = agent.metrics()
    assert metric(m, "buildcache_requests_total", frontend="pypi", result="rejected") == 0

    # A name that is not normalised is redirected to its normalised page: a redirect, not a
    # rejection either.
    status, headers, _ = raw_get(agent, "/pypi/simple/Typing_Extensions/")
    assert status == 301, headers
    m = agent.metrics()
    assert metric(m, "buildcache_requests_total", frontend="pypi", result="redirect") == 1
    assert metric(m, "buildcache_requests_total", frontend="pypi", result="rejected") == 0


def test_sdist_with_c_extension_is_compiled(agent, tmp_path):
    bin_dir = new_venv(tmp_path / "venv")
    _, text = run([bin_dir / "python", "-m", "pip", "install", "--no-cache-dir",
                   "--index-url", index_url(agent), "--no-binary", C_PROJECT,
                   f"{C_PROJECT}=={C_VERSION}"])
    assert f"Building wheel for {C_PROJECT}" in text, text
    _, text = run([bin_dir / "python", "-c",
                   f"import {C_PROJECT}._{C_PROJECT} as m; print(m.__file__)"])
    assert text.strip().endswith(".so"), text


def test_wheel_built_from_an_upstream_sdist_is_not_taken_from_anonymous_uploads(
        agent, tools, tmp_path):
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

    # ... and uploads it to the agent with twine. The upstream has this release, so an uploaded
    # wheel could displace its files (pip prefers wheels, and build tags): the upload is refused
    # and nothing is stored or listed, until uploads come from trusted writers.
    start = len(agent.logs)
    code, text = run([tools["twine"], "upload", "--non-interactive", "--disable-progress-bar",
                      "--repository-url", f"{agent.url}/pypi/", "-u", "ci", "-p", "unused",
                      *built], check=False)
    assert code != 0 and "403" in text, text
    rejected = agent.wait_for_log("pypi upload rejected", start=start)
    assert "is on the upstream index" in rejected["error"], rejected
    page = project_page(agent, C_PROJECT)
    assert not [f for f in page["files"] if "/wheelhouse/" in f["url"]], page["files"]
    assert raw_get(agent, f"/pypi/wheelhouse/{C_PROJECT}/{built[0].name}")[0] == 404


# ---- the wheel house against a fixture index on loopback -------------------------------------


def make_wheel(directory, name, version, build=None, origin="upstream"):
    """A minimal valid pure-Python wheel; `origin` is written into the package."""
    tag = "py3-none-any"
    filename = f"{name}-{version}{'-' + build if build else ''}-{tag}.whl"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"ORIGIN = {origin!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                          f"Tag: {tag}\n" + (f"Build: {build}\n" if build else "")).encode(),
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n" for path, data in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    path = pathlib.Path(directory) / filename
    path.write_bytes(buf.getvalue())
    return path


class FixtureIndex:
    """A PEP 503 index on loopback serving the wheels in .files ({project: [paths]}); every
    request path is recorded in .requests."""

    def __init__(self, address="127.0.0.1"):
        self.files = {}
        self.requests = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (the http.server interface)
                index.requests.append(self.path)
                parts = self.path.strip("/").split("/")
                body, ctype = None, "text/html"
                if len(parts) == 2 and parts[0] == "simple" and parts[1] in index.files:
                    links = "".join(
                        f'<a href="../../files/{p.name}#sha256='
                        f'{hashlib.sha256(p.read_bytes()).hexdigest()}">{p.name}</a><br/>\n'
                        for p in index.files[parts[1]])
                    body = f"<!DOCTYPE html><html><body>{links}</body></html>".encode()
                elif len(parts) == 2 and parts[0] == "files":
                    found = [p for ps in index.files.values() for p in ps if p.name == parts[1]]
                    if found:
                        body, ctype = found[0].read_bytes(), "application/octet-stream"
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://{address}:{self.server.server_address[1]}/simple/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fixture_index():
    index = FixtureIndex()
    yield index
    index.close()


def wheel_house_agent(start_agent, tmp_path, index, extra=""):
    config = tmp_path / "agent.yaml"
    config.write_text(f"pypi:\n  upstream: {index.url}\n  metadataTtl: 0s\n{extra}")
    return start_agent(config=config)


def twine_upload(tools, agent, wheel):
    return run([tools["twine"], "upload", "--non-interactive", "--disable-progress-bar",
                "--repository-url", f"{agent.url}/pypi/", "-u", "tenant", "-p", "x", wheel],
               check=False)


def pip_download(agent, tmp_path, requirement):
    """The one file the real pip downloads for `requirement` through the agent."""
    dest = pathlib.Path(tmp_path) / ("dl-" + hashlib.sha1(requirement.encode()).hexdigest()[:8])
    shutil.rmtree(dest, ignore_errors=True)
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-d", dest,
         "--index-url", index_url(agent), requirement])
    [got] = list(dest.iterdir())
    return got


def test_pip_gets_the_upstream_release_not_a_tenants_build_tagged_upload(
        start_agent, tools, tmp_path, fixture_index):
    upstream_dir, tenant_dir = tmp_path / "upstream", tmp_path / "tenant"
    upstream_dir.mkdir()
    tenant_dir.mkdir()
    fixture_index.files["foo"] = [make_wheel(upstream_dir, "foo", "1.0")]
    agent = wheel_house_agent(start_agent, tmp_path, fixture_index, "  wheelHouse: true\n")

    # The attack: a build-tagged wheel of a release the upstream has (a build tag wins pip's
    # choice under an exact pin).
    evil = make_wheel(tenant_dir, "foo", "1.0", build="1", origin="tenant")
    start = len(agent.logs)
    code, text = twine_upload(tools, agent, evil)
    assert code != 0 and "403" in text, text
    agent.wait_for_log("pypi upload rejected", start=start)
    assert not [e for e in agent.logs[start:] if e.get("msg") == "pypi wheel stored"]
    assert raw_get(agent, f"/pypi/wheelhouse/foo/{evil.name}")[0] == 404
    got = pip_download(agent, tmp_path, "foo==1.0")
    assert got.name == "foo-1.0-py3-none-any.whl"
    assert got.read_bytes() == fixture_index.files["foo"][0].read_bytes()

    # A version the upstream does not have is the wheel house's to serve (so the test above could
    # have failed) ...
    mine = make_wheel(tenant_dir, "foo", "2.0", build="1", origin="tenant")
    code, text = twine_upload(tools, agent, mine)
    assert code == 0, text
    assert pip_download(agent, tmp_path, "foo==2.0").read_bytes() == mine.read_bytes()
    # ... until the upstream publishes that version: then the upstream's file is what pip gets.
    fixture_index.files["foo"].append(make_wheel(upstream_dir, "foo", "2.0"))
    got = pip_download(agent, tmp_path, "foo==2.0")
    assert got.name == "foo-2.0-py3-none-any.whl"
    assert got.read_bytes() == fixture_index.files["foo"][1].read_bytes()
    page = project_page(agent, "foo")
    assert not [f for f in page["files"] if "/wheelhouse/" in f["url"]], page["files"]
    assert raw_get(agent, f"/pypi/wheelhouse/foo/{mine.name}")[0] == 404


def test_conflicting_upload_is_409_and_the_first_copy_stays(start_agent, tools, tmp_path,
                                                            fixture_index):
    fixture_index.files["foo"] = [make_wheel(tmp_path, "foo", "1.0")]
    agent = wheel_house_agent(start_agent, tmp_path, fixture_index, "  wheelHouse: true\n")
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = make_wheel(first_dir, "foo", "3.0", origin="first")
    second = make_wheel(second_dir, "foo", "3.0", origin="second")  # same name, other bytes
    assert twine_upload(tools, agent, first)[0] == 0
    assert twine_upload(tools, agent, first)[0] == 0  # the same file again: a no-op
    start = len(agent.logs)
    code, text = twine_upload(tools, agent, second)
    assert code != 0 and "409" in text, text
    logged = agent.wait_for_log("pypi upload conflict", start=start)
    assert logged["filename"] == first.name
    assert pip_download(agent, tmp_path, "foo==3.0").read_bytes() == first.read_bytes()


def test_wheel_house_off_refuses_uploads_and_lists_nothing(start_agent, tools, tmp_path,
                                                          fixture_index):
    fixture_index.files["foo"] = [make_wheel(tmp_path, "foo", "1.0")]
    agent = wheel_house_agent(start_agent, tmp_path, fixture_index, "  wheelHouse: false\n")
    wheel_dir = tmp_path / "w"
    wheel_dir.mkdir()
    code, text = twine_upload(tools, agent, make_wheel(wheel_dir, "foo", "9.0"))
    assert code != 0 and "403" in text, text
    agent.wait_for_log("pypi upload refused")
    page = project_page(agent, "foo")
    assert [f["filename"] for f in page["files"]] == ["foo-1.0-py3-none-any.whl"]
    assert raw_get(agent, "/pypi/simple/foo/")[0] == 200
    assert raw_get(agent, "/pypi/wheelhouse/foo/foo-9.0-py3-none-any.whl")[0] == 404


def test_wheel_directories_do_not_follow_symbolic_links(start_agent, tmp_path, fixture_index):
    fixture_index.files["foo"] = [make_wheel(tmp_path, "foo", "1.0")]
    outside, wheels = tmp_path / "outside", tmp_path / "pip-cache" / "wheels"
    outside.mkdir()
    (wheels / "ab" / "cd").mkdir(parents=True)
    secret = outside / "shadow"
    secret.write_bytes(b"PK\x03\x04 a file only root may read")
    (wheels / "ab" / "cd" / "foo-7.0-py3-none-any.whl").symlink_to(secret)
    elsewhere = make_wheel(outside, "foo", "8.0", origin="elsewhere")
    (wheels / "ab" / "cd" / elsewhere.name).symlink_to(elsewhere)
    (wheels / "linked-dir").symlink_to(outside, target_is_directory=True)
    real = make_wheel(wheels / "ab", "foo", "6.0", origin="cache")
    agent = wheel_house_agent(start_agent, tmp_path, fixture_index,
                              f"  wheelHouse: true\n  wheelDirectories: [{tmp_path / 'pip-cache'}]\n")
    done = agent.wait_for_log("pypi wheel scan done")
    assert done["added"] == 1 and done["failed"] == 3, done
    skipped = [e for e in agent.logs if e.get("msg") == "pypi wheel skipped"]
    assert len(skipped) == 3 and all("symbolic link" in e["error"] for e in skipped), skipped
    page = project_page(agent, "foo")
    assert sorted(f["filename"] for f in page["files"]) == [
        "foo-1.0-py3-none-any.whl", real.name]
    for name in ("foo-7.0-py3-none-any.whl", elsewhere.name):
        assert raw_get(agent, f"/pypi/wheelhouse/foo/{name}")[0] == 404
