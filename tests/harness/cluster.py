"""buildcache agents on separate network hosts, able to reach the real upstream registries.

    with NetnsCluster(3) as net, Masquerade(net), AgentCluster(net, work, config, binary) as agents:
        agents.url(0)            # "http://10.x.y.1:8080"
        agents.metrics(1)        # parsed /metrics of node 2
        agents.run(1, ["pip", ...], env=...)   # a client on node 2

Each agent runs inside its own network namespace (tests/harness/netns.py) on port 8080 with its
own data directory, serves peers on port 8081 and knows the others from a static peer list (the
operator's rendered configuration uses the headless Service's DNS name instead; there is no
cluster DNS here). Masquerade gives the namespaces a route to the machine's own network through
nftables NAT, so agents (and clients) reach the registries the machine's clients are configured
for. Used by the demo (scripts/demo) and bench/peer_warm.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request

HTTP_PORT = 8080
PEER_PORT = 8081


class ClusterError(RuntimeError):
    pass


def _nft(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, check=check)


class Masquerade:
    """NAT from a NetnsCluster's subnet to the machine's other interfaces (nftables, table per
    cluster, removed on exit). Turns on IPv4 forwarding, which it leaves on."""

    def __init__(self, net):
        self.net = net
        self.table = f"bcnat{secrets.token_hex(3)}"

    def __enter__(self) -> "Masquerade":
        pathlib.Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        rules = (f"table ip {self.table} {{\n"
                 f"  chain post {{ type nat hook postrouting priority 100; "
                 f"ip saddr {self.net.subnet}.0/24 oifname != \"{self.net.bridge}\" masquerade; }}\n"
                 f"}}\n")
        out = _nft("-f", "-", stdin=rules, check=False)
        if out.returncode != 0:
            raise ClusterError(f"nft could not add the NAT table (scripts/setup installs nftables): "
                               f"{out.stderr.strip()}")
        return self

    def __exit__(self, *exc) -> None:
        _nft("delete", "table", "ip", self.table, check=False)


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text format -> {(name, sorted label pairs): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric_sum(metrics: dict, name: str, **labels: str) -> float:
    """Sum of every sample of name whose labels include the given ones."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in metrics.items() if n == name and want <= set(lbls))


class AgentCluster:
    """One buildcache-agent per node of a NetnsCluster, all peers of each other."""

    def __init__(self, net, work: pathlib.Path, base_config: dict, binary: pathlib.Path,
                 copies: int = 2, nodes: list[int] | None = None):
        self.net = net
        self.work = pathlib.Path(work)
        self.base_config = base_config
        self.binary = pathlib.Path(binary)
        self.copies = copies
        self.indices = nodes if nodes is not None else list(range(len(net.nodes)))
        self.procs: dict[int, subprocess.Popen] = {}

    def __enter__(self) -> "AgentCluster":
        try:
            for i in self.indices:
                self.start(i)
            for i in self.indices:
                self.wait_ready(i)
        except BaseException:
            self.stop_all()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def address(self, i: int) -> str:
        return self.net.nodes[i].address

    def url(self, i: int) -> str:
        return f"http://{self.address(i)}:{HTTP_PORT}"

    def config_path(self, i: int) -> pathlib.Path:
        return self.work / f"node{i + 1}" / "agent.yaml"

    def log_path(self, i: int) -> pathlib.Path:
        return self.work / f"node{i + 1}" / "agent.log"

    def start(self, i: int) -> None:
        node_dir = self.work / f"node{i + 1}"
        (node_dir / "data").mkdir(parents=True, exist_ok=True)
        config = json.loads(json.dumps(self.base_config))  # a deep copy
        config["listen"] = f"0.0.0.0:{HTTP_PORT}"
        config.setdefault("store", {})["dataDir"] = str(node_dir / "data")
        # Static peers: there is no cluster DNS for the headless Service here.
        replication = {k: v for k, v in config.get("replication", {}).items()
                       if k not in ("dns", "peersFile")}
        replication.update(listen=f"0.0.0.0:{PEER_PORT}", advertise=f"{self.address(i)}:{PEER_PORT}",
                           copies=replication.get("copies", self.copies),
                           peers=[f"{self.address(j)}:{PEER_PORT}" for j in self.indices])
        config["replication"] = replication
        for d in config.get("directories", []):
            d["path"] = str(node_dir / "directories" / d["name"])
            pathlib.Path(d["path"]).mkdir(parents=True, exist_ok=True)
        # JSON is YAML: the agent's loader reads it like any other configuration file.
        self.config_path(i).write_text(json.dumps(config, indent=2) + "\n")
        log = open(self.log_path(i), "w")  # pylint: disable=consider-using-with
        self.procs[i] = self.net.popen(i, [str(self.binary), "--config", str(self.config_path(i))],
                                       stdout=subprocess.DEVNULL, stderr=log)
        log.close()

    def wait_ready(self, i: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                raise ClusterError(f"agent on node {i + 1} exited:\n{self.log_tail(i)}")
            if self.get(i, "/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise ClusterError(f"agent on node {i + 1} not ready after {timeout}s:\n{self.log_tail(i)}")

    def log_tail(self, i: int, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path(i).read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def logs(self, i: int) -> list[dict]:
        out = []
        for line in self.log_path(i).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def get(self, i: int, path: str) -> tuple[int, bytes]:
        # The host reaches every namespace over the bridge; no proxy applies.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.url(i) + path, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def metrics(self, i: int) -> dict:
        status, body = self.get(i, "/metrics")
        if status != 200:
            raise ClusterError(f"agent on node {i + 1}: /metrics answered {status}")
        return parse_metrics(body.decode())

    def run(self, i: int, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        return self.net.run(i, cmd, **kwargs)

    def stop(self, i: int) -> None:
        proc = self.procs.pop(i, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, 15)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.stop(i)
