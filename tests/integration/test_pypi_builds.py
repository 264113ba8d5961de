"""Wheels the agent builds: real pip against a real agent and a fixture index on loopback.

The index carries an sdist with a C extension and no wheel. The first `pip install` compiles it
itself (it chose the sdist) while the agent builds the same sdist in the background with its
configured interpreter, in a bubblewrap sandbox without network; a second `pip install` with
an empty pip cache then downloads the agent's wheel and builds nothing. Attacks: an sdist whose
build produces a wheel of another project, and one whose build reaches for the network, are
rejected or fail, with nothing stored and the failure visible in the build list, the log and
the metrics.

Builds get their build requirements (PEP 518 `[build-system] requires`, and what the backend asks
for on top) as wheels through the agent's own index. The fixture index therefore also serves the
build backends' wheels (setuptools, wheel, flit_core), fetched once per session with pip from the
index this machine's pip is configured with.
"""

import json
import pathlib
import shutil
import tarfile

import pytest

from conftest import metric
from harness import upstreams
from test_pypi import FixtureIndex, index_url, raw_get, run

BUILDER_PYTHON = "/usr/bin/python3"  # Debian's, with setuptools and wheel (scripts/setup)
BUILD_TIMEOUT = 300

C_SOURCE = """\
#include <Python.h>
static PyObject* answer(PyObject* self, PyObject* args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&mod); }
"""


def make_sdist(directory, name, version, setup_py=None):
    """An sdist of a project with one C extension module `name`."""
    root = pathlib.Path(directory) / f"src-{name}" / f"{name}-{version}"
    root.mkdir(parents=True)
    (root / "setup.py").write_text(setup_py or (
        "from setuptools import setup, Extension\n"
        f"setup(name={name!r}, version={version!r}, "
        f"ext_modules=[Extension({name!r}, [{name + '.c'!r}])])\n"))
    (root / f"{name}.c").write_text(C_SOURCE % {"name": name})
    (root / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    path = pathlib.Path(directory) / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return path


# setuptools before 70 asks for `wheel` from get_requires_for_build_wheel: the dynamic case.
BACKENDS = ["setuptools<70", "wheel", "flit_core>=3.2,<4"]


@pytest.fixture(scope="session")
def backend_wheels(tmp_path_factory):
    """{normalized project: [wheel path]} of the build backends and their dependencies, for the
    builder's Python."""
    directory = tmp_path_factory.mktemp("backends")
    run([BUILDER_PYTHON, "-m", "pip", "download", "--disable-pip-version-check",
         "--only-binary", ":all:", "--index-url", upstreams.pypi_index(), "-d", directory]
        + BACKENDS)
    found = {}
    for path in sorted(directory.glob("*.whl")):
        found.setdefault(path.name.split("-")[0].lower().replace("_", "-"), []).append(path)
    assert {"setuptools", "wheel", "flit-core"} <= set(found), found
    return found


@pytest.fixture
def index(backend_wheels):
    fixture = FixtureIndex()
    fixture.files.update(backend_wheels)
    yield fixture
    fixture.close()


def builder_agent(start_agent, tmp_path, index):
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed: run scripts/setup")
    config = tmp_path / "agent.yaml"
    config.write_text(f"pypi:\n  upstream: {index.url}\n  metadataTtl: 0s\n"
                      f"  builders:\n    - name: debian-py311\n      python: {BUILDER_PYTHON}\n"
                      "  buildDeadline: 5m\n")
    agent = start_agent(config=config)
    agent.wait_for_log("pypi builder ready")
    return agent


def builds(agent):
    status, _, body = raw_get(agent, "/pypi/builds/")
    assert status == 200, body
    return json.loads(body)["builds"]


def new_venv(path):
    """A client: a venv of the builder's Debian interpreter that sees its setuptools and wheel, so
    pip can build the fixture sdists without fetching build requirements (the fixture index has
    none; --no-build-isolation below)."""
    run([BUILDER_PYTHON, "-m", "venv", "--system-site-packages", path])
    return pathlib.Path(path) / "bin"


def pip_install(agent, venv, requirement, check=True):
    return run([venv / "python", "-m", "pip", "install", "--no-cache-dir", "--no-build-isolation",
                "--index-url", index_url(agent), requirement], check=check)


def test_second_client_gets_the_wheel_the_agent_built(start_agent, tmp_path, index):
    index.files["cbuilt"] = [make_sdist(tmp_path, "cbuilt", "1.0")]
    agent = builder_agent(start_agent, tmp_path, index)

    # The first client compiles the sdist itself; its download starts the agent's build.
    _, text = pip_install(agent, new_venv(tmp_path / "first"), "cbuilt==1.0")
    assert "Building wheel for cbuilt" in text, text
    done = agent.wait_for_log("pypi build succeeded", timeout=BUILD_TIMEOUT)
    wheel = done["wheel"]
    assert wheel.startswith("cbuilt-1.0-cp311-cp311-linux_"), done

    [build] = builds(agent)
    assert build["state"] == "succeeded" and build["builder"] == "debian-py311", build
    status, _, log = raw_get(agent, f"/pypi/builds/{build['id']}/log")
    assert status == 200 and b"[buildcache] stored " + wheel.encode() in log, log

    # The page lists the built wheel beside the sdist (the upstream has this version).
    page = json.loads(raw_get(agent, "/pypi/simple/cbuilt/",
                              {"Accept": "application/vnd.pypi.simple.v1+json"})[2])
    assert wheel in [f["filename"] for f in page["files"]], page

    # The second client, with an empty pip cache, downloads that wheel and builds nothing.
    second = new_venv(tmp_path / "second")
    _, text = pip_install(agent, second, "cbuilt==1.0")
    assert wheel in text and "Building wheel" not in text, text
    _, text = run([second / "python", "-c", "import cbuilt; print(cbuilt.answer())"])
    assert text.strip() == "42", text

    m = agent.metrics()
    assert metric(m, "buildcache_pypi_builds_total", outcome="started") == 1
    assert metric(m, "buildcache_pypi_builds_total", outcome="succeeded") == 1
    assert metric(m, "buildcache_pypi_builds_total", outcome="failed") == 0
    assert metric(m, "buildcache_pypi_built_wheels_served_total") == 1


def test_build_producing_another_projects_wheel_is_rejected(start_agent, tmp_path, index):
    # The sdist of "victim" builds a wheel that claims to be "othername 6.6.6".
    setup_py = ("from setuptools import setup, Extension\n"
                "setup(name='othername', version='6.6.6', "
                "ext_modules=[Extension('victim', ['victim.c'])])\n")
    index.files["victim"] = [make_sdist(tmp_path, "victim", "1.0", setup_py)]
    agent = builder_agent(start_agent, tmp_path, index)

    # pip itself refuses the inconsistent sdist; its download has started the agent's build.
    pip_install(agent, new_venv(tmp_path / "client"), "victim==1.0", check=False)
    failed = agent.wait_for_log("pypi build failed", timeout=BUILD_TIMEOUT)
    assert "not a wheel of victim 1.0" in failed["error"], failed
    [build] = builds(agent)
    assert build["state"] == "failed", build
    status, _, log = raw_get(agent, f"/pypi/builds/{build['id']}/log")
    assert status == 200 and b"othername-6.6.6" in log, log

    # Nothing stored: no wheel listed or served, under either name.
    page = json.loads(raw_get(agent, "/pypi/simple/victim/",
                              {"Accept": "application/vnd.pypi.simple.v1+json"})[2])
    assert [f["filename"] for f in page["files"]] == ["victim-1.0.tar.gz"], page
    assert raw_get(agent, "/pypi/simple/othername/")[0] == 404
    built = [p.name for p in (agent.data_dir).rglob("*.whl")]
    assert built == [], built
    m = agent.metrics()
    assert metric(m, "buildcache_pypi_builds_total", outcome="failed") == 1
    assert metric(m, "buildcache_pypi_builds_total", outcome="succeeded") == 0

    # Remembered: another client's download does not start it again.
    pip_install(agent, new_venv(tmp_path / "again"), "victim==1.0", check=False)
    assert metric(agent.metrics(), "buildcache_pypi_builds_total", outcome="started") == 1


def test_build_that_reaches_for_the_network_fails(start_agent, tmp_path, index):
    # The build tries to fetch from the agent's own index over TCP (only a sandbox with no
    # network stops it: the agent is on loopback of the host).
    agent_url_file = tmp_path / "agent-url"
    setup_py = ("import urllib.request, sys\n"
                "url = open('agent-url').read().strip()\n"
                "urllib.request.urlopen(url, timeout=10).read()\n"
                "from setuptools import setup\n"
                "setup(name='netbuild', version='1.0')\n")
    sdist = make_sdist(tmp_path, "netbuild", "1.0", setup_py)
    agent = builder_agent(start_agent, tmp_path, index)
    # The sdist carries the agent's URL (known once the agent listens).
    with tarfile.open(sdist, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    agent_url_file.write_text(f"{agent.url}/pypi/simple/\n")
    with tarfile.open(sdist, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, __import__("io").BytesIO(data) if data is not None else None)
        tar.add(agent_url_file, arcname="netbuild-1.0/agent-url")
    index.files["netbuild"] = [sdist]

    pip_install(agent, new_venv(tmp_path / "client"), "netbuild==1.0", check=False)
    failed = agent.wait_for_log("pypi build failed", timeout=BUILD_TIMEOUT)
    [build] = builds(agent)
    assert build["state"] == "failed", build
    log = raw_get(agent, f"/pypi/builds/{build['id']}/log")[2]
    assert b"Connection refused" in log or b"Network is unreachable" in log, log
    assert "exit code" in failed["error"], failed


def make_pyproject_sdist(directory, name, version, pyproject, files):
    """An sdist with a pyproject.toml and `files` ({relative path: text})."""
    root = pathlib.Path(directory) / f"src-{name}" / f"{name}-{version}"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(pyproject)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    path = pathlib.Path(directory) / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return path


def build_once(agent, tmp_path, requirement, outcome="succeeded"):
    """A client downloads the sdist (pip download runs no build); waits for the agent's build."""
    run([BUILDER_PYTHON, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check",
         "--index-url", index_url(agent), "-d", tmp_path / "downloads", requirement], check=False)
    done = agent.wait_for_log(f"pypi build {outcome}", timeout=BUILD_TIMEOUT)
    [build] = [b for b in builds(agent) if b["id"] == done["id"]]
    log = raw_get(agent, f"/pypi/builds/{build['id']}/log")[2].decode()
    return done, build, log


def test_build_backend_comes_through_the_agents_index(start_agent, tmp_path, index):
    # flit_core is not installed for the builder's interpreter: only the agent's index has it.
    assert run([BUILDER_PYTHON, "-c", "import flit_core"], check=False)[0] != 0
    pyproject = ('[build-system]\nrequires = ["flit_core >=3.2,<4"]\n'
                 'build-backend = "flit_core.buildapi"\n\n'
                 '[project]\nname = "flitpkg"\nversion = "1.0"\ndescription = "x"\n')
    index.files["flitpkg"] = [make_pyproject_sdist(
        tmp_path, "flitpkg", "1.0", pyproject, {"flitpkg/__init__.py": "ANSWER = 42\n"})]
    agent = builder_agent(start_agent, tmp_path, index)

    done, build, log = build_once(agent, tmp_path, "flitpkg==1.0")
    wheel = done["wheel"]
    assert wheel.startswith("flitpkg-1.0-") and wheel.endswith("-none-any.whl"), done
    assert "downloading build requirements from the agent's index: flit_core >=3.2,<4" in log, log
    # The wheel came through the agent: it is cached there now.
    status, _, _ = raw_get(agent, f"/pypi/files/flit-core/{index.files['flit-core'][0].name}")
    assert status == 200

    # A client with an empty cache installs the built wheel without any build backend.
    venv = tmp_path / "client"
    run([BUILDER_PYTHON, "-m", "venv", venv])
    _, text = run([venv / "bin" / "python", "-m", "pip", "install", "--no-cache-dir",
                   "--index-url", index_url(agent), "flitpkg==1.0"])
    assert wheel in text and "Building wheel" not in text, text


def test_requirement_the_backend_asks_for_is_fetched_too(start_agent, tmp_path, index):
    # requires names setuptools only; setuptools<70 asks for wheel from get_requires_for_build_wheel.
    pyproject = ('[build-system]\nrequires = ["setuptools"]\n'
                 'build-backend = "setuptools.build_meta"\n')
    setup_py = "from setuptools import setup\nsetup(name='dynreq', version='1.0', py_modules=['dynreq'])\n"
    index.files["dynreq"] = [make_pyproject_sdist(
        tmp_path, "dynreq", "1.0", pyproject, {"setup.py": setup_py, "dynreq.py": "X = 1\n"})]
    agent = builder_agent(start_agent, tmp_path, index)

    done, _, log = build_once(agent, tmp_path, "dynreq==1.0")
    assert done["wheel"] == "dynreq-1.0-py3-none-any.whl", done
    assert "No matching distribution found for wheel" in log, log
    assert "building again with the requirements the backend asked for" in log, log


@pytest.mark.parametrize("requirement", ["evil @ {url}/evil-1.0-py3-none-any.whl",
                                         "--index-url={url}/simple/ setuptools"])
def test_build_requirement_pointing_elsewhere_is_refused(start_agent, tmp_path, index,
                                                         requirement):
    # The sdist's pyproject.toml points the download at another server (a direct URL, or an
    # option smuggled into pip's command line): nothing may be fetched from there.
    attacker = FixtureIndex()  # another server, that records what it is asked
    try:
        req = requirement.format(url=attacker.url.removesuffix("/simple/"))
        pyproject = f'[build-system]\nrequires = ["{req}"]\nbuild-backend = "setuptools.build_meta"\n'
        setup_py = "from setuptools import setup\nsetup(name='urlreq', version='1.0')\n"
        index.files["urlreq"] = [make_pyproject_sdist(tmp_path, "urlreq", "1.0", pyproject,
                                                      {"setup.py": setup_py})]
        agent = builder_agent(start_agent, tmp_path, index)
        done, build, log = build_once(agent, tmp_path, "urlreq==1.0", outcome="failed")
        assert attacker.requests == [], attacker.requests
        assert "refused" in done["error"], done
        assert build["state"] == "failed" and "refused" in build["error"], build
        assert "refused" in log, log
        page = json.loads(raw_get(agent, "/pypi/simple/urlreq/",
                                  {"Accept": "application/vnd.pypi.simple.v1+json"})[2])
        assert [f["filename"] for f in page["files"]] == ["urlreq-1.0.tar.gz"], page
        assert metric(agent.metrics(), "buildcache_pypi_builds_total", outcome="failed") == 1
    finally:
        attacker.close()
