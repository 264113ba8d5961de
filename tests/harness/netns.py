"""Separate network hosts on one machine: a Linux bridge and N network namespaces.

    with NetnsCluster(3) as net:
        node = net.nodes[0]                 # .name, .address ("10.x.y.1"), .veth
        proc = net.popen(0, ["buildcache-agent", ...])
        net.run(1, ["curl", ...])
        net.link_down(2); ...; net.link_up(2)
        net.limit_rate(1, "50mbit")         # slow what node 2 sends

Each cluster gets random, unique names (bridge "bcb<id>", namespaces "bc-<id>-<i>", host-side
veths "bcv<id><i>") and its own 10.<a>.<b>.0/24 subnet, so parallel ctest runs do not collide. The
host side owns 10.<a>.<b>.254 on the bridge, so servers on the host (fixture upstreams) are
reachable from every namespace. Everything is deleted on exit, also when the body raised or
setup failed half-way. Requires root (CAP_NET_ADMIN).
"""

import os
import random
import secrets
import subprocess

_MAX_NODES = 200


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Node:
    def __init__(self, name, address, veth):
        self.name = name        # network namespace name
        self.address = address  # IPv4 address on the bridge
        self.veth = veth        # host-side veth name (link_down/link_up act on it)

    def __repr__(self):
        return f"Node({self.name}, {self.address})"


class NetnsCluster:
    def __init__(self, count):
        if not 1 <= count <= _MAX_NODES:
            raise ValueError(f"count must be 1..{_MAX_NODES}, got {count}")
        self.count = count
        self.id = secrets.token_hex(3)  # 6 hex chars: keeps interface names under 15 bytes
        self.bridge = f"bcb{self.id}"
        # 10.64.0.0/10 .. 10.127: leave the low 10.x ranges that the machine may route.
        rng = random.Random(secrets.randbits(64))
        self.subnet = f"10.{rng.randint(64, 127)}.{rng.randint(0, 255)}"
        self.host_address = f"{self.subnet}.254"
        self.nodes = []
        self._procs = []

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self):
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _create(self):
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, self.count + 1):
            name = f"bc-{self.id}-{i}"
            veth = f"bcv{self.id}{i}"
            peer = f"bcp{self.id}{i}"
            node = Node(name, f"{self.subnet}.{i}", veth)
            _ip("netns", "add", name)
            self.nodes.append(node)
            _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", name)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", peer, "name", "eth0")
            _ip("-n", name, "addr", "add", f"{node.address}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "route", "add", "default", "via", self.host_address)

    def close(self):
        """Kills processes started through popen, deletes namespaces, veths and the bridge."""
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        self._procs = []
        for node in self.nodes:
            # Deleting the host side of a veth deletes its peer inside the namespace too.
            _ip("link", "del", node.veth, check=False)
            _ip("netns", "del", node.name, check=False)
        self.nodes = []
        _ip("link", "del", self.bridge, check=False)

    # -- running things inside ----------------------------------------------------------------

    def _node(self, index):
        return self.nodes[index]

    # Servers started inside a namespace should bind numeric addresses and avoid name look-ups
    # (Python's http.server calls getfqdn): a namespace has no route to the machine's resolver.

    def exec_prefix(self, index):
        return ["ip", "netns", "exec", self._node(index).name]

    def run(self, index, cmd, **kwargs):
        """subprocess.run of cmd inside node index (0-based); returns the CompletedProcess."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(self.exec_prefix(index) + list(cmd), **kwargs)

    def popen(self, index, cmd, **kwargs):
        """subprocess.Popen of cmd inside node index, in its own session; killed on close()."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.exec_prefix(index) + list(cmd), **kwargs)
        self._procs.append(proc)
        return proc

    # -- faults ----------------------------------------------------------------------------

    def link_down(self, index):
        _ip("link", "set", self._node(index).veth, "down")

    def link_up(self, index):
        _ip("link", "set", self._node(index).veth, "up")

    def limit_rate(self, index, rate="50mbit"):
        """Caps what node index sends (tc tbf on its eth0), e.g. to keep a transfer in flight."""
        subprocess.run(self.exec_prefix(index) + ["tc", "qdisc", "replace", "dev", "eth0", "root",
                                                  "tbf", "rate", rate, "burst", "64kb",
                                                  "latency", "500ms"],
                       check=True, capture_output=True, text=True)
