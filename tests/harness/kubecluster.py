"""A real Kubernetes cluster on this machine: kubelets, containerd and pods on two (or more)
nodes, each node a network namespace plus a mount namespace of its own.

    with KubeCluster(work, nodes=2) as kc:
        kc.import_image(archive, ref)      # into every node's containerd, no registry
        kc.kubectl("apply", "-f", ...)     # the admin kubeconfig (kc.cp is the ControlPlane)
        kc.node_names                      # ["node-1", "node-2"]

What runs (docs/real-cluster.md has the facts behind each choice and the measured times):
- On the host: etcd, kube-apiserver (also listening on the nodes' bridge address, so the
  `kubernetes` Service leads there), kube-controller-manager, kube-scheduler, and CoreDNS on the
  bridge address, published as the kube-dns Service (10.0.0.10) through a selectorless Service
  and an EndpointSlice.
- Per node (network namespace from harness.netns, on one bridge): a holder process that owns the
  node's mount namespace, where the node's own directories are bind-mounted over /var/lib and
  /var/log and a fresh tmpfs over /run (containerd, the kubelet and the CNI plugins write fixed
  paths there); containerd, kubelet and kube-proxy run inside both namespaces (nsenter). Every
  process of a node, containers and shims included, lives under the node's cgroup
  /bckube-<id>-<i> in every v1 hierarchy, which is how stop() finds and kills them all.
- Pods get addresses from a CNI bridge on each node (pod CIDR 10.<p>.<i>.0/24); every node and
  the host route the other nodes' pod CIDRs over the bridge; pod traffic leaving the cluster is
  masqueraded on its node and then by harness.cluster.Masquerade on the host.

Crashes: a state file in STATE_ROOT (names of the namespaces, bridge, nftables table, cgroups, and
the kernel settings the kubelet changes, with their values before) is written before anything is
created; start() first tears down what any dead owner's state file lists, so a killed run leaves
nothing behind for the next one. Needs root.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time

if __name__ == "__main__":  # run as a script: tests/ is where `harness` is
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from harness import nodeimages, polling  # noqa: E402
from harness.cluster import Masquerade  # noqa: E402
from harness.controlplane import (  # noqa: E402
    _PR_SET_PDEATHSIG, _PRCTL, ControlPlane, find_binaries, free_port)
from harness.netns import NetnsCluster  # noqa: E402

STATE_ROOT = pathlib.Path(os.environ.get("BUILDCACHE_KUBECLUSTER_STATE",
                                          "/run/buildcache-kubecluster"))
CGROUP_FS = pathlib.Path("/sys/fs/cgroup")
CLUSTER_DNS_IP = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
# Global kernel settings the kubelet changes at start (it has no option to leave them alone,
# except refusing to start): restored on stop.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
NODE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler", "coredns")


class KubeClusterError(RuntimeError):
    pass


def _run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise KubeClusterError(f"{' '.join(argv)} exited {proc.returncode}: "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _hierarchies() -> list[pathlib.Path]:
    """The mounted cgroup hierarchies (v1 controllers, name=systemd, the v2 `unified`)."""
    found = []
    for line in pathlib.Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2") and fields[1].startswith(str(CGROUP_FS) + "/"):
            found.append(pathlib.Path(fields[1]))
    return found


def _cgroup_pids(name: str) -> set[int]:
    pids = set()
    for h in _hierarchies():
        root = h / name
        if root.is_dir():
            for procs in root.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
    return pids


def kill_cgroup_tree(name: str, rounds: int = 50) -> None:
    """SIGKILLs every process under cgroup `name` (all hierarchies) until none is left, then
    removes the cgroups deepest first."""
    for _ in range(rounds):
        pids = _cgroup_pids(name)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    for h in _hierarchies():
        root = h / name
        if not root.is_dir():
            continue
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            root.rmdir()
        except OSError:
            pass


def make_cgroup(name: str) -> None:
    """Creates cgroup `name` and `name`/system in every hierarchy."""
    for h in _hierarchies():
        for sub in ("", "system"):
            d = h / name / sub
            d.mkdir(exist_ok=True)
            if h.name == "cpuset":  # a new cpuset has no CPUs until given its parent's
                for key in ("cpuset.cpus", "cpuset.mems"):
                    (d / key).write_text((d.parent / key).read_text())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def teardown(state: dict) -> None:
    """Removes what a state file lists: processes and cgroups of every node, the netns, veths,
    bridge and NAT table, the sysctls back to their old values, and the node directories."""
    for cg in state.get("cgroups", []):
        kill_cgroup_tree(cg)
    for ns in state.get("netns", []):
        _run(["ip", "netns", "del", ns], check=False)
    for link in [*state.get("veths", []), state.get("bridge")]:
        if link:
            _run(["ip", "link", "del", link], check=False)
    if state.get("nft_table"):
        _run(["nft", "delete", "table", "ip", state["nft_table"]], check=False)
    for key, value in state.get("sysctls", {}).items():
        try:
            (pathlib.Path("/proc/sys") / key).write_text(value)
        except OSError:
            pass
    for d in state.get("dirs", []):
        shutil.rmtree(d, ignore_errors=True)


def cleanup_leftovers() -> list[str]:
    """Tears down every cluster whose owning process is gone; returns their ids."""
    cleaned = []
    if not STATE_ROOT.is_dir():
        return cleaned
    for path in sorted(STATE_ROOT.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if _pid_alive(state.get("owner", 0)) and state.get("owner") != os.getpid():
            continue
        teardown(state)
        path.unlink(missing_ok=True)
        cleaned.append(state.get("id", path.stem))
    return cleaned


def _join_cgroups(dirs: list[str]) -> None:
    """Runs in the child before exec: into the cluster's cgroups (so a later clean-up finds it
    and all it forks), and dies with the harness (PR_SET_PDEATHSIG)."""
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


class _Proc:
    """A process in its own session and in the cgroup `cgroup` (under system/) of every
    hierarchy, output into a log file."""

    def __init__(self, name: str, argv: list[str], log: pathlib.Path, cgroup: str,
                 env: dict | None = None):
        self.name, self.log = name, log
        dirs = [str(h / cgroup / "system") for h in _hierarchies()]
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          env=env, preexec_fn=lambda: _join_cgroups(dirs))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# The holder makes the node's private mounts, then sleeps. Everything of the node is started in
# its namespaces (nsenter -t HOLDER -m -n).
HOLDER_SCRIPT = r"""
set -e
mount --bind "$NODE_DIR/var-lib" /var/lib
mount --bind "$NODE_DIR/var-log" /var/log
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/lock /var/lib/cni/net.d
touch "$NODE_DIR/holder.ready"
exec sleep 2147483647
"""


class Node:
    def __init__(self, cluster: "KubeCluster", index: int):
        self.cluster = cluster
        self.index = index  # 0-based
        self.name = f"node-{index + 1}"
        self.dir = cluster.work / self.name
        self.netns = cluster.net.nodes[index]
        self.address = self.netns.address
        self.pod_cidr = f"{cluster.pod_prefix}.{index + 1}.0/24"
        self.cgroup = f"bckube-{cluster.id}-{index + 1}"
        self.holder: _Proc | None = None
        self.procs: dict[str, _Proc] = {}

    # -- namespaces ------------------------------------------------------------------------
    def enter(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *argv]

    def run(self, argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        return _run(self.enter(argv), check=check, **kw)

    def start_holder(self) -> None:
        for sub in ("var-lib", "var-log", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        make_cgroup(self.cgroup)
        self.holder = _Proc("holder", [
            "nsenter", f"--net=/run/netns/{self.netns.name}", "--", "unshare", "--mount",
            "--propagation", "private", "--", "sh", "-c", HOLDER_SCRIPT],
            self.dir / "logs" / "holder.log", self.cgroup,
            env={**os.environ, "NODE_DIR": str(self.dir)})
        wait_for(f"{self.name}'s mount namespace", lambda: (self.dir / "holder.ready").exists()
                 or (not self.holder.alive() and _fail(f"holder exited: {self.holder.tail()}")),
                 30)

    def network(self) -> None:
        """Forwarding, routes to the other nodes' pods, masquerade for pods leaving the cluster."""
        for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
            self.run(["sh", "-c", f"echo 1 > /proc/sys/{key}"], check=False)
        for other in self.cluster.nodes:
            if other is not self:
                self.run(["ip", "route", "add", other.pod_cidr, "via", other.address])
        rules = ("table ip bcpods {\n  chain post { type nat hook postrouting priority 100; "
                 f"ip saddr {self.pod_cidr} ip daddr != {self.cluster.cluster_cidr} "
                 "oifname \"eth0\" masquerade; }\n}\n")
        self.run(["nft", "-f", "-"], input=rules)

    # -- components --------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str]) -> _Proc:
        proc = _Proc(name, self.enter(argv), self.dir / "logs" / f"{name}.log", self.cgroup)
        self.procs[name] = proc
        return proc

    def write_configs(self) -> None:
        d = self.dir
        cp = self.cluster.cp
        # The nodes reach the API server at the bridge address (loopback is the node's own).
        kubeconfig = json.loads(cp.kubeconfig.read_text())
        kubeconfig["clusters"][0]["cluster"]["server"] = \
            f"https://{self.cluster.net.host_address}:{cp.port}"
        (d / "kubeconfig").write_text(json.dumps(kubeconfig))
        (d / "kubeconfig").chmod(0o600)
        (d / "containerd.toml").write_text(f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.cluster.pause_ref}"
  # Root here lacks CAP_SYS_RESOURCE: lowering oom_score_adj fails and so would every sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/var/lib/cni/net.d"
""")
        (d / "var-lib" / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        (d / "var-lib" / "cni" / "net.d" / "10-bridge.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "buildcache-pods",
            "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": self.pod_cidr}]],
                                  "routes": [{"dst": "0.0.0.0/0"}]}},
                        {"type": "portmap", "capabilities": {"portMappings": True}}]}))
        (d / "kubelet.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            # cgroup v1 hybrid, no systemd: the cgroupfs driver, v1 allowed, a root of our own.
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "cgroupRoot": f"/{self.cgroup}",
            "failSwapOn": False,
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(cp.ca_file)}},
            "authorization": {"mode": "AlwaysAllow"},
            "address": self.address, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "clusterDNS": [CLUSTER_DNS_IP], "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "/etc/resolv.conf",
            # The disk is shared with everything else on the machine: never evict for it.
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "nodeStatusReportFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
        }))
        (d / "kube-proxy.yaml").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(d / "kubeconfig")},
            "hostnameOverride": self.name, "mode": "iptables",
            "clusterCIDR": self.cluster.cluster_cidr,
            # A pod calling a Service whose endpoint is on the same bridge gets the reply through
            # the node (not straight over the bridge) only if the call was masqueraded.
            "iptables": {"masqueradeAll": True},
            # Leave the machine-wide conntrack table size alone.
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
            "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256",
            "nodePortAddresses": ["primary"],
        }))

    def start_containerd(self) -> None:
        self.spawn("containerd", ["containerd", "--config", str(self.dir / "containerd.toml")])
        sock = pathlib.Path(f"/proc/{self.holder.pid}/root/run/containerd/containerd.sock")
        wait_for(f"containerd on {self.name}",
                 lambda: sock.exists() or self.check_alive("containerd"), 60)

    def start_kubelet(self) -> None:
        b = self.cluster.binaries
        self.spawn("kubelet", [str(b["kubelet"]), f"--config={self.dir / 'kubelet.yaml'}",
                               f"--kubeconfig={self.dir / 'kubeconfig'}",
                               f"--hostname-override={self.name}", f"--node-ip={self.address}",
                               f"--node-labels={self.cluster.node_labels}", "--v=1"])

    def start_kube_proxy(self) -> None:
        b = self.cluster.binaries
        self.spawn("kube-proxy", [str(b["kube-proxy"]),
                                  f"--config={self.dir / 'kube-proxy.yaml'}", "--v=1"])

    def check_alive(self, name: str) -> bool:
        """Raises if component `name` of this node has exited; else False (for wait_for)."""
        proc = self.procs[name]
        if not proc.alive():
            raise KubeClusterError(f"{name} on {self.name} exited: {proc.tail()}")
        return False

    def ctr(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["ctr", "-a", "/run/containerd/containerd.sock", "-n", "k8s.io", *args],
                        **kw)

    def import_image(self, archive: pathlib.Path, ref: str) -> None:
        """Imports an OCI archive into the node's containerd (the kubelet's `k8s.io` namespace)
        and names it ref: `ctr import` names an image by its index's io.containerd.image.name,
        else by org.opencontainers.image.ref.name verbatim, which the kubelet does not find when
        it lacks a domain (it looks for the normalized name), so such an image is tagged ref."""
        self.ctr("images", "import", str(archive), timeout=300)
        names = self.ctr("images", "ls", "-q").stdout.split()
        if ref not in names:
            with tarfile.open(archive) as tar:
                index = json.load(tar.extractfile("index.json"))
            imported = [m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                        for m in index.get("manifests", [])]
            for name in imported:
                if name in names:
                    self.ctr("images", "tag", "--force", name, ref)
            names = self.ctr("images", "ls", "-q").stdout.split()
        if ref not in names:
            raise KubeClusterError(f"{ref} not in {self.name}'s containerd after importing "
                                   f"{archive}: {names}")

    def stop(self) -> None:
        for name in ("kube-proxy", "kubelet", "containerd"):
            if name in self.procs:
                self.procs.pop(name).stop(grace=10)
        kill_cgroup_tree(self.cgroup)
        self.holder = None


def _fail(msg: str):
    raise KubeClusterError(msg)


def wait_for(what: str, fn, timeout: float, interval: float = 0.25):
    return polling.wait_for(what, fn, timeout, interval, error=KubeClusterError)


def check_host() -> dict[str, pathlib.Path]:
    """Raises KubeClusterError naming what this machine lacks for a real-node cluster (root,
    the node binaries, containerd, runc, the CNI plugins); returns the node binaries' paths."""
    if os.geteuid() != 0:
        raise KubeClusterError("a real-node cluster needs root (namespaces, mounts, cgroups)")
    binaries = find_binaries(NODE_BINARIES + ("kubectl",))
    for tool in ("containerd", "ctr", "runc", "nsenter", "unshare", "nft"):
        if shutil.which(tool) is None:
            raise KubeClusterError(f"{tool} is not installed (scripts/setup installs it)")
    if not pathlib.Path("/usr/lib/cni/bridge").exists():
        raise KubeClusterError("CNI plugins missing in /usr/lib/cni "
                               "(scripts/setup installs containernetworking-plugins)")
    return binaries


class KubeCluster:
    """The control plane, CoreDNS, the scheduler and `nodes` real nodes; see the module doc."""

    def __init__(self, work: pathlib.Path, nodes: int = 2,
                 node_labels: str = "buildcache.io/ci=true", timeout: float = 180):
        self.work = pathlib.Path(work)
        self.count = nodes
        self.node_labels = node_labels
        self.timeout = timeout
        self.id = secrets.token_hex(3)
        rng = random.Random(secrets.randbits(64))
        self.pod_prefix = f"10.{rng.randint(128, 191)}"
        self.cluster_cidr = f"{self.pod_prefix}.0.0/16"
        self.pause_ref = ""
        self.binaries: dict[str, pathlib.Path] = {}
        self.net: NetnsCluster | None = None
        self.masq: Masquerade | None = None
        self.cp: ControlPlane | None = None
        self.nodes: list[Node] = []
        self.host_procs: dict[str, _Proc] = {}
        self.state_file = STATE_ROOT / f"{self.id}.json"
        self.state: dict = {}

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    # -- state for crash clean-up -----------------------------------------------------------
    def save_state(self) -> None:
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.rename(self.state_file)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "KubeCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.binaries = check_host()
        cleanup_leftovers()
        # A normal interpreter exit stops it too; a kill leaves it to the next start's clean-up.
        atexit.register(self.stop)
        self.work.mkdir(parents=True, exist_ok=True)
        self.state = {"id": self.id, "owner": os.getpid(), "dirs": [],
                      "sysctls": {k: (pathlib.Path("/proc/sys") / k).read_text()
                                  for k in KUBELET_SYSCTLS}}
        self.save_state()
        self.net = NetnsCluster(self.count)
        self.state.update(bridge=self.net.bridge,
                          netns=[f"bc-{self.net.id}-{i}" for i in range(1, self.count + 1)],
                          veths=[f"bcv{self.net.id}{i}" for i in range(1, self.count + 1)],
                          cgroups=[f"bckube-{self.id}-{i}" for i in range(1, self.count + 1)]
                          + [f"bckube-{self.id}-host"])
        self.save_state()
        self.net.__enter__()
        self.masq = Masquerade(self.net)
        self.state["nft_table"] = self.masq.table
        self.save_state()
        self.masq.__enter__()

        self.state["dirs"].append(str(self.work / "cp"))
        self.save_state()
        self.cp = ControlPlane(self.work / "cp", controller_manager=True,
                               node_address=self.net.host_address)
        self.cp.start()
        self.pause_ref, pause = nodeimages.pause_image(self.work / "images")
        self.nodes = [Node(self, i) for i in range(self.count)]
        for node in self.nodes:
            self.state["dirs"].append(str(node.dir))
            node.start_holder()
            node.network()
            # The host reaches pods (the API server calls webhooks at pod IPs): routes over the
            # bridge, gone with it.
            _run(["ip", "route", "add", node.pod_cidr, "via", node.address])
        self.save_state()
        self.start_scheduler()
        self.start_dns()
        for node in self.nodes:
            node.write_configs()
            node.start_containerd()
            node.import_image(pause, self.pause_ref)
            node.start_kubelet()
            node.start_kube_proxy()
        self.wait_nodes_ready()

    def _host_proc(self, name: str, argv: list[str]) -> None:
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        cgroup = f"bckube-{self.id}-host"
        make_cgroup(cgroup)
        self.host_procs[name] = _Proc(name, argv, logs / f"{name}.log", cgroup)

    def start_scheduler(self) -> None:
        kc = str(self.cp.kubeconfig)
        self._host_proc("kube-scheduler", [
            str(self.binaries["kube-scheduler"]), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
        ])

    def start_dns(self) -> None:
        """CoreDNS on the host's bridge address, published as the kube-dns Service."""
        kc = str(self.cp.kubeconfig)
        host = self.net.host_address
        ready_port = free_port()
        (self.work / "Corefile").write_text(f""".:53 {{
    bind {host}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kc} buildcache-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 5
    loop
}}
""")
        self._host_proc("coredns", [str(self.binaries["coredns"]), "-conf",
                                    str(self.work / "Corefile")])
        self.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "kube-dns", "namespace": "kube-system",
                          "labels": {"k8s-app": "kube-dns"}},
             "spec": {"clusterIP": CLUSTER_DNS_IP,
                      "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "kube-dns-host", "namespace": "kube-system",
                          "labels": {"kubernetes.io/service-name": "kube-dns"}},
             "addressType": "IPv4",
             "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                       {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
             "endpoints": [{"addresses": [host], "conditions": {"ready": True}}]}]}))

        def dns_ready():
            if not self.host_procs["coredns"].alive():
                raise KubeClusterError(f"coredns exited: {self.host_procs['coredns'].tail()}")
            return _run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{ready_port}/ready"],
                        check=False).returncode == 0
        wait_for("CoreDNS", dns_ready, 60)

    def wait_nodes_ready(self) -> None:
        def ready():
            for node in self.nodes:
                for name in ("containerd", "kubelet", "kube-proxy"):
                    node.check_alive(name)
            out = self.kubectl("get", "nodes", "-o", "json", check=False)
            if out.returncode != 0:
                return False
            items = json.loads(out.stdout)["items"]
            done = {i["metadata"]["name"] for i in items
                    if any(c["type"] == "Ready" and c["status"] == "True"
                           for c in i["status"].get("conditions", []))}
            return done >= set(self.node_names)
        wait_for("every node Ready", ready, self.timeout, interval=1)

    def import_image(self, archive: pathlib.Path, ref: str) -> None:
        for node in self.nodes:
            node.import_image(archive, ref)

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.cp.kubectl(*args, **kw)

    def describe(self) -> str:
        """The last lines of every component's log, for failure messages."""
        parts = []
        for p in self.host_procs.values():
            parts.append(f"--- {p.name}:\n{p.tail()}")
        for node in self.nodes:
            for p in node.procs.values():
                parts.append(f"--- {node.name} {p.name}:\n{p.tail()}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stops everything and removes what start() created. Safe to call repeatedly."""
        atexit.unregister(self.stop)
        for node in self.nodes:
            node.stop()
        for p in self.host_procs.values():
            p.stop()
        self.host_procs = {}
        if self.cp is not None:
            self.cp.stop()
        if self.masq is not None:
            self.masq.__exit__(None, None, None)
        if self.net is not None:
            self.net.close()
        if self.state:
            teardown(self.state)
            self.state_file.unlink(missing_ok=True)
            self.state = {}
        self.nodes = []


def main(argv=None) -> int:
    """`python3 tests/harness/kubecluster.py up --dir D [--nodes N]`: starts a cluster, prints
    KUBECONFIG=..., runs until SIGINT or SIGTERM, then stops it."""
    import argparse  # pylint: disable=import-outside-toplevel
    parser = argparse.ArgumentParser(description="a real-node Kubernetes cluster (root)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--dir", required=True, type=pathlib.Path)
    up.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args(argv)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.append(1))
    with KubeCluster(args.dir, nodes=args.nodes) as kc:
        print(f"KUBECONFIG={kc.cp.kubeconfig}", flush=True)
        while not stop:
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
