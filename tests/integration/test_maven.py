"""The Maven front end of the real agent with the real mvn client.

`mvn -B dependency:resolve` of a tiny POM with a couple of dependencies runs with a settings.xml
whose <mirror> (mirrorOf "*") is the agent, and a fresh local repository; then again with
another fresh local repository, and everything (plugins included) comes from the agent.

The upstream repository is the one Maven itself uses on this machine: `mvn help:evaluate` of
the first remote repository of the effective (super-)POM, after the machine's settings and
mirrors are applied. No repository host name is written here.
"""

import hashlib
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from harness import upstreams

from conftest import metric

POM = """\
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.buildcache.test</groupId>
  <artifactId>maven-client-test</artifactId>
  <version>1.0.0</version>
  <packaging>jar</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.commons</groupId>
      <artifactId>commons-text</artifactId>
      <version>1.12.0</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>2.0.13</version>
    </dependency>
  </dependencies>
</project>
"""
# commons-lang3 comes in through commons-text.
EXPECTED_JARS = (
    "org/apache/commons/commons-text/1.12.0/commons-text-1.12.0.jar",
    "org/slf4j/slf4j-api/2.0.13/slf4j-api-2.0.13.jar",
)
TRANSITIVE_GROUP = "org/apache/commons/commons-lang3"
CLIENT_TIMEOUT = 900
EMPTY_SETTINGS = "<settings/>\n"


def mvn():
    path = shutil.which("mvn")
    if path is None:
        pytest.fail("mvn is not installed (scripts/setup installs it)")
    return path


def client_env():
    env = {k: v for k, v in os.environ.items() if k not in ("MAVEN_OPTS", "MAVEN_ARGS")}
    env["MAVEN_OPTS"] = "-Dstyle.color=never"
    return env


def run(cmd, cwd, check=True):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                         env=client_env(), timeout=CLIENT_TIMEOUT)
    text = out.stdout + out.stderr
    if check:
        assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{text[-8000:]}"
    return out.returncode, text


@pytest.fixture(scope="module")
def upstream():
    """The repository Maven resolves from on this machine (its settings and mirrors applied)."""
    return upstreams.maven_repository()


def start_maven_agent(start_agent, tmp_path, upstream, data_dir=None):
    config = tmp_path / "agent.yaml"
    config.write_text(f"maven:\n  upstream: {upstream}\n")
    return start_agent(data_dir=data_dir, config=config)


@pytest.fixture
def agent(start_agent, tmp_path, upstream):
    return start_maven_agent(start_agent, tmp_path, upstream)


def write_settings(path, agent):
    path.write_text(f"""\
<settings>
  <mirrors>
    <mirror>
      <id>buildcache</id>
      <mirrorOf>*</mirrorOf>
      <url>{agent.url}/maven/</url>
    </mirror>
  </mirrors>
</settings>
""")
    return path


def resolve(project, settings, global_settings, repo):
    return run([mvn(), "-B", "-s", settings, "-gs", global_settings,
                f"-Dmaven.repo.local={repo}", "dependency:resolve"], cwd=project)[1]


def raw_get(agent, path):
    try:
        with urllib.request.urlopen(agent.url + path, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_mvn_dependency_resolve_through_the_agent(agent, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pom.xml").write_text(POM)
    settings = write_settings(tmp_path / "settings.xml", agent)
    global_settings = tmp_path / "global-settings.xml"
    global_settings.write_text(EMPTY_SETTINGS)

    # First run: an empty local repository; plugins and dependencies come through the agent.
    repo1 = tmp_path / "repo1"
    text = resolve(project, settings, global_settings, repo1)
    assert f"Downloaded from buildcache: {agent.url}/maven/" in text, text[-4000:]
    remote = set(re.findall(r"Download(?:ing|ed) from ([\w.-]+):", text))
    assert remote == {"buildcache"}, remote
    for jar in EXPECTED_JARS:
        assert (repo1 / jar).is_file(), jar
    assert list((repo1 / TRANSITIVE_GROUP).glob("*/*.jar")), "the transitive dependency"

    before = agent.metrics()
    upstream_before = metric(before, "buildcache_upstream_requests_total", frontend="maven")
    assert upstream_before > 0
    assert metric(before, "buildcache_upstream_verify_failures_total", frontend="maven") == 0

    # Second run: another empty local repository; everything from the agent's store.
    repo2 = tmp_path / "repo2"
    text = resolve(project, settings, global_settings, repo2)
    for jar in EXPECTED_JARS:
        assert (repo2 / jar).read_bytes() == (repo1 / jar).read_bytes(), jar
    after = agent.metrics()
    assert metric(after, "buildcache_upstream_requests_total", frontend="maven") == \
        upstream_before
    assert metric(after, "buildcache_served_bytes_total", frontend="maven", source="local") > \
        metric(before, "buildcache_served_bytes_total", frontend="maven", source="local")

    # The checksum file Maven checked is the upstream's, and the jar is served from the store.
    jar = EXPECTED_JARS[1]
    status, headers, body = raw_get(agent, f"/maven/{jar}")
    assert status == 200 and headers["X-Buildcache-Source"] == "local"
    status, _, sha1 = raw_get(agent, f"/maven/{jar}.sha1")
    assert status == 200 and re.fullmatch(rb"[0-9a-f]{40}", sha1), sha1
    assert hashlib.sha1(body).hexdigest().encode() == sha1


def test_repository_layout_over_http(agent):
    status, headers, body = raw_get(agent, "/maven/org/slf4j/slf4j-api/maven-metadata.xml")
    assert status == 200 and b"<artifactId>slf4j-api</artifactId>" in body, body[:200]
    status, _, sha1 = raw_get(agent, "/maven/org/slf4j/slf4j-api/maven-metadata.xml.sha1")
    assert status == 200 and sha1 == hashlib.sha1(body).hexdigest().encode()
    for bad in ("/maven/org/slf4j/slf4j-api/2.0.13/..%2f..%2fx.jar",
                "/maven/org/slf4j/slf4j-api/2.0.13/other-2.0.13.jar",
                "/maven/org/slf4j/slf4j-api/2.0.13/.slf4j-api-2.0.13.jar",
                "/maven/slf4j-api/2.0.13/slf4j-api-2.0.13.jar"):
        assert raw_get(agent, bad)[0] == 400, bad
    assert raw_get(agent, "/maven/org/slf4j/slf4j-api/0.0.0-none/slf4j-api-0.0.0-none.jar")[0] \
        == 404
    req = urllib.request.Request(f"{agent.url}/maven/org/x/y/1.0/y-1.0.jar", data=b"x",
                                 method="PUT")
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("a PUT was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405
