"""buildcache-agent on a host of a NetnsCluster (tests/harness/netns.py): started inside the
host's network namespace with a configuration file, its JSON log lines collected in .logs.
Used by the multi-node tests, the benchmarks and the demo (through tests/harness/cluster.py)."""

import os
import pathlib
import signal
import subprocess
import urllib.error
import urllib.request

from harness.jsonlog import JsonLog
from harness.metrics import parse_metrics

HTTP_PORT = 8080
PEER_PORT = 8081
BIN_DIR = pathlib.Path(os.environ.get(
    "BUILDCACHE_BIN_DIR", pathlib.Path(__file__).resolve().parents[2] / "build" / "bin"))


class NetAgent:
    """buildcache-agent inside node index of a NetnsCluster; JSON log lines in .logs."""

    def __init__(self, net, index, data_dir, config, binary=None, config_path=None):
        self.net, self.index = net, index
        self.binary = pathlib.Path(binary) if binary else BIN_DIR / "buildcache-agent"
        self.node = net.nodes[index]
        self.data_dir = pathlib.Path(data_dir)
        self.config_path = pathlib.Path(config_path or self.data_dir.parent / f"agent{index}.yaml")
        self.config_path.write_text(config)
        self.url = f"http://{self.node.address}:{HTTP_PORT}"
        self.peer = f"{self.node.address}:{PEER_PORT}"
        self.start()

    def start(self):
        self.proc = self.net.popen(self.index, [str(self.binary), "--config",
                                                str(self.config_path)],
                                   stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self._log = JsonLog(self.proc)
        self.logs = self._log.logs
        self.wait_for_log("peer server listening")
        self.wait_for_log("listening")

    def wait_for_log(self, msg, timeout=30):
        return self._log.wait_for(msg, timeout)

    def request(self, method, path, data=None, timeout=60, headers=None):
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers or {})
        # The host reaches every namespace over the bridge; no proxy applies.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get(self, path, timeout=60):
        return self.request("GET", path, timeout=timeout)

    def metrics(self):
        return parse_metrics(self.get("/metrics")[1].decode())

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(20)
        self._log.join()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.join()
