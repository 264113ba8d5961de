"""Shared fixtures for integration tests: start the real buildcache-agent binary on loopback."""

import os
import pathlib
import signal
import subprocess
import sys
import urllib.request

import pytest

# tests/ on the path: `from harness import ...` (the control plane, netns hosts, upstreams).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.jsonlog import JsonLog  # noqa: E402
from harness.metrics import metric, parse_metrics  # noqa: E402,F401  (tests import them from here)

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))


class Agent:
    """A running buildcache-agent process; its stderr JSON log lines are collected in .logs."""

    def __init__(self, data_dir, args=(), config=None, env=None):
        self.data_dir = pathlib.Path(data_dir)
        binary = BIN_DIR / "buildcache-agent"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: build first (scripts/test builds it)")
        cmd = [str(binary), "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)]
        if config:
            cmd[1:1] = ["--config", str(config)]
        cmd += list(args)
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, **(env or {})}, start_new_session=True)
        self._log = JsonLog(self.proc)
        self.logs = self._log.logs
        line = self.wait_for_log("listening", timeout=30)
        self.address = line["address"]
        self.url = f"http://{self.address}"

    def wait_for_log(self, msg, timeout=30, start=0):
        """Returns the first log entry with this msg (after index start), waiting up to timeout."""
        return self._log.wait_for(msg, timeout, start)

    def get(self, path, headers=None):
        req = urllib.request.Request(self.url + path, headers=headers or {})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)

    def put(self, path, data, headers=None):
        req = urllib.request.Request(self.url + path, data=data, method="PUT",
                                     headers=headers or {})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()

    def metrics(self):
        """Parses /metrics into {(name, frozenset(labels.items())): value}."""
        _, body, _ = self.get("/metrics")
        return parse_metrics(body.decode())

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.join()
        return self.proc.returncode

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.join()


@pytest.fixture
def start_agent(tmp_path):
    agents = []

    def start(data_dir=None, args=(), config=None, env=None):
        agent = Agent(data_dir or tmp_path / f"data{len(agents)}", args, config, env)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


@pytest.fixture
def agent(start_agent):
    return start_agent()
