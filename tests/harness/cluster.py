"""buildcache agents on separate network hosts, able to reach the real upstream registries.

    with NetnsCluster(3) as net, Masquerade(net), AgentCluster(net, work, config, binary) as agents:
        agents.url(0)            # "http://10.x.y.1:8080"
        agents.metrics(1)        # parsed /metrics of node 2
        net.run(1, ["pip", ...], env=...)      # a client on node 2

Each agent runs inside its own network namespace (tests/harness/netns.py) on port 8080 with its
own data directory, serves peers on port 8081 and knows the others from a static peer list (the
operator's rendered configuration uses the headless Service's DNS name instead; there is no
cluster DNS here). Masquerade gives the namespaces a route to the machine's own network through
nftables NAT, so agents (and clients) reach the registries the machine's clients are configured
for. Used by the demo (scripts/demo) and bench/peer_warm.py.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import subprocess
import time

from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent


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


class AgentCluster:
    """One buildcache-agent (harness.netagent.NetAgent) per node of a NetnsCluster, all peers of
    each other, configured from one base configuration."""

    def __init__(self, net, work: pathlib.Path, base_config: dict, binary: pathlib.Path,
                 copies: int = 2, nodes: list[int] | None = None, peers_file: bool = False):
        """nodes: the nodes started on entry (default all). peers_file: membership through a
        file every agent re-reads (a node started later joins by being added to it) instead of
        a static list of every node."""
        self.net = net
        self.work = pathlib.Path(work)
        self.base_config = base_config
        self.binary = pathlib.Path(binary)
        self.copies = copies
        self.indices = nodes if nodes is not None else list(range(len(net.nodes)))
        self.peers_file = self.work / "peers.txt" if peers_file else None
        self.agents: dict[int, NetAgent] = {}

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

    def config(self, i: int, node_dir: pathlib.Path) -> dict:
        config = json.loads(json.dumps(self.base_config))  # a deep copy
        config["listen"] = f"0.0.0.0:{HTTP_PORT}"
        config.setdefault("store", {})["dataDir"] = str(node_dir / "data")
        # Static peers or a peers file: there is no cluster DNS for the headless Service here.
        replication = {k: v for k, v in config.get("replication", {}).items()
                       if k not in ("dns", "peersFile", "peers")}
        replication.update(listen=f"0.0.0.0:{PEER_PORT}", advertise=f"{self.address(i)}:{PEER_PORT}",
                           copies=replication.get("copies", self.copies))
        if self.peers_file:
            members = {line for line in (self.peers_file.read_text().splitlines()
                                         if self.peers_file.exists() else []) if line}
            members.add(f"{self.address(i)}:{PEER_PORT}")
            # Written whole and renamed, so no agent reads a half-written list.
            tmp = self.peers_file.with_suffix(".tmp")
            tmp.write_text("".join(f"{m}\n" for m in sorted(members)))
            tmp.rename(self.peers_file)
            replication["peersFile"] = str(self.peers_file)
        else:
            replication["peers"] = [f"{self.address(j)}:{PEER_PORT}" for j in self.indices]
        config["replication"] = replication
        for d in config.get("directories", []):
            d["path"] = str(node_dir / "directories" / d["name"])
            pathlib.Path(d["path"]).mkdir(parents=True, exist_ok=True)
        return config

    def start(self, i: int) -> NetAgent:
        node_dir = self.work / f"node{i + 1}"
        (node_dir / "data").mkdir(parents=True, exist_ok=True)
        # JSON is YAML: the agent's loader reads it like any other configuration file.
        text = json.dumps(self.config(i, node_dir), indent=2) + "\n"
        self.agents[i] = NetAgent(self.net, i, node_dir / "data", text, binary=self.binary,
                                  config_path=node_dir / "agent.yaml")
        return self.agents[i]

    def wait_ready(self, i: int, timeout: float = 60) -> None:
        """Until /readyz says 200 (an agent hydrating directory caches says 503 first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.agents[i].proc.poll() is not None:
                raise ClusterError(f"agent on node {i + 1} exited: {self.agents[i].logs[-15:]}")
            if self.agents[i].get("/readyz", timeout=10)[0] == 200:
                return
            time.sleep(0.2)
        raise ClusterError(f"agent on node {i + 1} not ready after {timeout}s")

    def metrics(self, i: int) -> dict:
        return self.agents[i].metrics()

    def stop(self, i: int) -> None:
        agent = self.agents.pop(i, None)
        if agent is not None:
            agent.stop()

    def stop_all(self) -> None:
        for i in list(self.agents):
            self.stop(i)
