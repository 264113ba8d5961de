"""The client pages run: every `sh` block in docs/clients/*.md, with the files the page names,
against a real agent whose front ends use this machine's registries.

Conventions of the pages (docs/clients/README.md says them to readers):
- `AGENT` stands for the agent's address; it is replaced with the real one.
- A fenced block whose info string has `file=PATH` is written to PATH (relative to the page's
  fresh project directory) before the page's commands run.
- Every `sh` block runs, in order, in one bash with `set -euo pipefail`, in that project
  directory, with a fresh HOME (so no client cache or configuration of the machine helps).
- A block preceded by `<!-- doc-test: skip: REASON -->` is not run; the reason is required.

After a page ran, the agent's request counter of the page's front end must have grown, so a page
whose settings do not actually send the client through the agent fails.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from conftest import BIN_DIR, metric
from harness import upstreams
from harness.docblocks import parse_blocks

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "docs" / "clients"

# page -> the front end its commands must reach; None: every block is skipped with a reason.
PAGES = {
    "pip.md": "pypi",
    "uv.md": "pypi",
    "poetry.md": "pypi",
    "go.md": "goproxy",
    "npm.md": "npm",
    "pnpm.md": "npm",
    "yarn.md": "npm",
    "cargo.md": "cargo",
    "maven.md": "maven",
    "ccache.md": "httpcache",
    "sccache.md": "httpcache",
    "gradle.md": None,
    "bazel.md": None,
    "docker-build.md": None,
    "gocacheprog.md": "httpcache",
}
PAGE_TIMEOUT = 900

def test_every_client_page_is_covered():
    pages = {p.name for p in CLIENTS.glob("*.md")} - {"README.md"}
    assert pages == set(PAGES), "add new client pages to PAGES (and old ones out of it)"
    for page, frontend in PAGES.items():
        blocks = parse_blocks(CLIENTS / page)
        runnable = [b for b in blocks if b.runnable]
        if frontend is None:
            assert not runnable and any(b.skip for b in blocks), \
                f"{page}: pages without a front end must skip every block, with a reason"
        else:
            assert runnable, f"{page}: no runnable sh block"


@pytest.fixture(scope="module")
def registries():
    proxy = upstreams.go_proxy()
    key, name, sumdb_url = upstreams.go_sumdb(proxy)
    return {
        "pypi": upstreams.pypi_index(),
        "npm": upstreams.npm_registry(),
        "goproxy": proxy,
        "sumdb_name": name,
        "sumdb_url": sumdb_url,
        "cargo": upstreams.cargo_index(),
        "maven": upstreams.maven_repository(),
    }


@pytest.fixture(scope="module")
def docs_agent(tmp_path_factory, registries):
    from conftest import Agent  # pylint: disable=import-outside-toplevel
    work = tmp_path_factory.mktemp("docs-agent")
    config = work / "agent.yaml"
    config.write_text(
        f"pypi:\n  upstream: {registries['pypi']}\n"
        f"npm:\n  upstream: {registries['npm']}\n"
        f"goproxy:\n  upstream: {registries['goproxy']}\n"
        f"  sumdb:\n    name: {registries['sumdb_name']}\n"
        f"    upstream: {registries['sumdb_url']}\n"
        f"cargo:\n  upstream: sparse+{registries['cargo']}\n"
        f"maven:\n  upstream: {registries['maven']}\n")
    agent = Agent(work / "data", config=config)
    yield agent
    agent.stop()


def page_env(home):
    """The machine's environment without any client setting, with a fresh HOME."""
    client_prefixes = ("PIP_", "UV_", "POETRY_", "GO", "npm_config_", "NPM_", "YARN_", "CARGO_",
                       "RUSTC_WRAPPER", "MAVEN_", "CCACHE_", "SCCACHE_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(client_prefixes)}
    real_home = pathlib.Path.home()
    # rustup and pyenv find their toolchains under the real HOME unless told.
    env.setdefault("RUSTUP_HOME", str(real_home / ".rustup"))
    env.setdefault("PYENV_ROOT", str(real_home / ".pyenv"))
    env.update(HOME=str(home), GOTOOLCHAIN="local", PIP_DISABLE_PIP_VERSION_CHECK="1",
               NO_COLOR="1")
    # Programs the pages name that this repository builds (buildcache-gocacheprog).
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    return env


def requests_of(agent, frontend):
    metrics = agent.metrics()
    return sum(metric(metrics, "buildcache_requests_total", frontend=frontend, result=r) or 0
               for r in ("hit", "miss", "stored", "meta", "redirect", "rejected", "error"))


@pytest.mark.parametrize("page", [p for p, f in PAGES.items() if f is not None])
def test_client_page_commands_work(page, docs_agent, tmp_path):
    address = docs_agent.url.removeprefix("http://")
    blocks = parse_blocks(CLIENTS / page)
    project = tmp_path / "project"
    home = tmp_path / "home"
    project.mkdir()
    home.mkdir()

    def substitute(text):
        return re.sub(r"\bAGENT\b", address, text)

    for block in blocks:
        if block.file and block.skip is None:
            target = project / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(substitute(block.text))
    script = "set -euo pipefail\n" + "".join(
        f"# {page}:{b.line}\n{substitute(b.text)}" for b in blocks if b.runnable)
    frontend = PAGES[page]
    before = requests_of(docs_agent, frontend)
    try:
        out = subprocess.run(["bash", "-c", script], cwd=project, env=page_env(home),
                             capture_output=True, text=True, timeout=PAGE_TIMEOUT, check=False)
        assert out.returncode == 0, (f"{page}: the page's commands failed ({out.returncode}):\n"
                                     f"{script}\n--- output ---\n{out.stdout[-6000:]}"
                                     f"{out.stderr[-6000:]}")
        after = requests_of(docs_agent, frontend)
        assert after > before, f"{page}: nothing reached the agent's {frontend} front end"
    finally:
        # Go's module cache is read-only by design.
        subprocess.run(["chmod", "-R", "u+w", str(tmp_path)], check=False)
        shutil.rmtree(tmp_path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
