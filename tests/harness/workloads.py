"""The pip and Go workloads of the benchmarks and the demo, runnable on any network host.

Each run starts from nothing on the client side (a fresh virtual environment and pip cache, a
fresh GOMODCACHE and GOCACHE), so the only thing that can be warm is the agent. `prefix` runs the
client inside a network namespace (["ip", "netns", "exec", NAME]); [] runs it here.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

TIMEOUT = 1800

PIP_REQUIREMENTS = """\
six==1.16.0
idna==3.7
packaging==24.1
attrs==23.2.0
typing_extensions==4.12.2
certifi==2024.7.4
charset-normalizer==3.3.2
urllib3==2.2.2
requests==2.32.3
bitarray==2.3.0
"""
PIP_IMPORTS = "import six, idna, packaging, attrs, typing_extensions, requests, bitarray"
# A release older than this interpreter: no compatible wheel upstream, so pip builds the sdist.
PIP_C_PROJECT = "bitarray"

GO_MOD = """\
module example.com/buildcachebench

go 1.21

require (
\tgithub.com/BurntSushi/toml v1.4.0
\tgithub.com/google/uuid v1.6.0
\tgithub.com/gorilla/mux v1.8.1
\tgithub.com/pkg/errors v0.9.1
\tgithub.com/prometheus/client_golang v1.19.1
\tgithub.com/sirupsen/logrus v1.9.3
\tgithub.com/spf13/cobra v1.8.1
\tgithub.com/stretchr/testify v1.9.0
\tgo.uber.org/zap v1.27.0
\tgolang.org/x/sync v0.7.0
\tgolang.org/x/text v0.16.0
)
"""

GO_MAIN = """\
package main

import (
\t"fmt"
\t"os"

\t"github.com/BurntSushi/toml"
\t"github.com/google/uuid"
\t"github.com/gorilla/mux"
\t"github.com/pkg/errors"
\t"github.com/prometheus/client_golang/prometheus"
\t"github.com/sirupsen/logrus"
\t"github.com/spf13/cobra"
\t"github.com/stretchr/testify/assert"
\t"go.uber.org/zap"
\t"golang.org/x/sync/errgroup"
\t"golang.org/x/text/cases"
\t"golang.org/x/text/language"
)

type config struct{ Name string }

func main() {
\tvar c config
\tif _, err := toml.Decode(`Name = "cache"`, &c); err != nil {
\t\tpanic(err)
\t}
\tcounter := prometheus.NewCounter(prometheus.CounterOpts{Name: "demo_total", Help: "demo"})
\tcounter.Inc()
\tvar g errgroup.Group
\tg.Go(func() error { return errors.Wrap(nil, "never") })
\t_ = g.Wait()
\t_ = mux.NewRouter()
\tlogrus.SetLevel(logrus.WarnLevel)
\t_ = zap.NewNop()
\tcmd := &cobra.Command{Use: "demo", Run: func(*cobra.Command, []string) {
\t\tfmt.Println(cases.Title(language.English).String(c.Name), len(uuid.NewString()),
\t\t\tassert.ObjectsAreEqual(1, 1))
\t}}
\tif err := cmd.Execute(); err != nil {
\t\tos.Exit(1)
\t}
}
"""


class WorkloadError(RuntimeError):
    pass


def timed(cmd, env=None, cwd=None, prefix=()):
    """Runs cmd (after prefix); returns (seconds, combined output); raises with the output."""
    start = time.monotonic()
    out = subprocess.run([*prefix, *[str(c) for c in cmd]], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=TIMEOUT, check=False)
    secs = time.monotonic() - start
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise WorkloadError(f"{' '.join(str(c) for c in cmd)} failed ({out.returncode}):\n"
                            f"{text[-6000:]}")
    return secs, text


def pip_env():
    """None of the machine's pip settings (find-links, index) leak into the workload."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TWINE_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def pip_install(work, index_url, prefix=(), python=sys.executable, requirements=PIP_REQUIREMENTS,
                imports=PIP_IMPORTS, sdists=(PIP_C_PROJECT,), cache=None):
    """A fresh venv and pip cache (or the pip cache dir `cache`, kept from an earlier install),
    then `pip install -r` of requirements through index_url (timed).
    Returns (seconds, the projects of sdists pip compiled (empty: none), pip cache dir)."""
    work = pathlib.Path(work)
    work.mkdir(parents=True)
    reqs = work / "requirements.txt"
    reqs.write_text(requirements)
    env = pip_env()
    timed([python, "-m", "venv", work / "venv"], env=env)
    py = work / "venv" / "bin" / "python"
    cache = cache or work / "pip-cache"
    host = index_url.split("/")[2]
    secs, text = timed([py, "-m", "pip", "install", "--cache-dir", cache, "--index-url", index_url,
                        "--trusted-host", host, "-r", reqs], env=env, prefix=prefix)
    timed([py, "-c", imports], env=env)
    return secs, tuple(p for p in sdists if f"Building wheel for {p}" in text), cache


def built_wheel(cache):
    """The wheel pip built from the C project's sdist, from its cache."""
    wheels = sorted(pathlib.Path(cache).glob(f"wheels/**/{PIP_C_PROJECT}-*.whl"))
    if not wheels:
        raise WorkloadError(f"no built {PIP_C_PROJECT} wheel in {cache}")
    return wheels[0]


def upload_wheel(wheel, agent_url, prefix=()):
    """Publishes a wheel to the agent's wheel house with twine (the legacy upload API)."""
    timed([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
           "--repository-url", f"{agent_url}/pypi/", "-u", "ci", "-p", "unused", wheel],
          env=pip_env(), prefix=prefix)


def go_env(work, goproxy, gosumdb):
    work = pathlib.Path(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(GOENV="off", GOPROXY=goproxy, GOSUMDB=gosumdb, GONOSUMDB="", GOPRIVATE="",
               GONOPROXY="", GOINSECURE="", GOFLAGS="-mod=mod -modcacherw", GOTOOLCHAIN="local",
               GOPATH=str(work / "gopath"), GOMODCACHE=str(work / "modcache"),
               GOCACHE=str(work / "gocache"), HOME=str(work))
    return env


def go_download_build(work, goproxy, gosumdb, prefix=(), build=True):
    """A fresh project, GOMODCACHE and GOCACHE; times the download of every module the build
    needs (`go mod download` + `go list -deps`) and the build separately.
    Returns (download seconds, build seconds or None)."""
    work = pathlib.Path(work)
    project = work / "project"
    project.mkdir(parents=True)
    (project / "go.mod").write_text(GO_MOD)
    (project / "main.go").write_text(GO_MAIN)
    env = go_env(work, goproxy, gosumdb)
    download, _ = timed(["go", "mod", "download"], env=env, cwd=project, prefix=prefix)
    listed, _ = timed(["go", "list", "-deps", "."], env=env, cwd=project, prefix=prefix)
    if not build:
        return download + listed, None
    secs, _ = timed(["go", "build", "-o", str(work / "demo"), "."], env=env, cwd=project,
                    prefix=prefix)
    timed([work / "demo"])
    return download + listed, secs
