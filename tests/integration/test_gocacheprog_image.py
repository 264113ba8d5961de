"""buildcache-gocacheprog in CI images without the Debian libraries the agent links.

The real go command runs with GOCACHEPROG inside a mount namespace whose root holds only a Go
toolchain from this machine (bind-mounted read-only; Go's own binaries are static and
CGO_ENABLED=0), the gocacheprog binary, /dev/null, /etc/resolv.conf and a module: no /lib, no
/usr/lib, no libc. That "image" runs on one network-namespace host; the agent runs on another and
is named by a DNS name (as the webhook names the node-local Service) that a DNS server on the
bridge answers, so the static binary's own name look-up is exercised too. The musl check runs the
binary in a musl root (musl's loader and nothing else) beside a dynamically linked musl program
that proves the root is one."""

import json
import os
import shutil
import socket
import struct
import subprocess
import threading

import pytest

from harness.netagent import HTTP_PORT, PEER_PORT, NetAgent
from harness.netns import NetnsCluster
from test_gocacheprog import GO, PACKAGES, PROG, compiles, stats, write_module

AGENT_NAME = "buildcache-go.ci-system.svc"
SEARCH = "cluster.test"  # the name is completed through the search list, as in a pod
MUSL_LOADER = "/lib/ld-musl-x86_64.so.1"


def goroot():
    return subprocess.run([GO, "env", "GOROOT"], capture_output=True, text=True,
                          check=True).stdout.strip()


class DnsServer:
    """A UDP DNS server on (address, 53) answering A queries for `names` (name -> IPv4) and
    NXDOMAIN for everything else; records the names asked."""

    def __init__(self, address, names):
        self.names = names
        self.asked = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                query, client = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            labels, i = [], 12
            while i < len(query) and query[i]:
                labels.append(query[i + 1:i + 1 + query[i]].decode("ascii", "replace"))
                i += 1 + query[i]
            question = query[12:i + 5]
            qtype = struct.unpack(">H", query[i + 1:i + 3])[0] if i + 3 <= len(query) else 0
            name = ".".join(labels).lower()
            self.asked.append((name, qtype))
            address = self.names.get(name)
            if address is None:
                flags, answers = 0x8183, b""  # NXDOMAIN
            elif qtype != 1:
                flags, answers = 0x8180, b""  # the name exists, no record of that type
            else:
                flags = 0x8180
                answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton(
                    address)
            header = query[:2] + struct.pack(">HHHHH", flags, 1, 1 if answers else 0, 0, 0)
            self.sock.sendto(header + question + answers, client)

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def hosts(tmp_path):
    if not GO or not PROG.exists():
        pytest.fail("needs go and a built buildcache-gocacheprog")
    net = NetnsCluster(2).__enter__()
    agent = dns = None
    try:
        data = tmp_path / "agent" / "data"
        data.parent.mkdir()
        node = net.nodes[0]
        agent = NetAgent(net, 0, data, "\n".join([
            f"listen: {node.address}:{HTTP_PORT}",
            f"store: {{dataDir: {data}, maxSize: 2Gi}}",
            "replication:",
            f"  listen: {node.address}:{PEER_PORT}",
            "  hydrate: {enabled: false}",
            f"  peers: [{node.address}:{PEER_PORT}]",
        ]) + "\n")
        dns = DnsServer(net.host_address, {f"{AGENT_NAME}.{SEARCH}": node.address})
        yield net, agent, dns
    finally:
        if agent:
            agent.stop()
        if dns:
            dns.close()
        net.__exit__(None, None, None)


def make_root(root, net, module_src):
    """The image: empty directories, the binary, resolv.conf and the module; GOROOT and /dev/null
    are bind-mounted by run_in_root."""
    for d in ("go", "dev", "tmp", "home", "etc", "bin", "src"):
        (root / d).mkdir(parents=True)
    (root / "dev" / "null").touch()
    shutil.copy(PROG, root / "bin" / "buildcache-gocacheprog")
    (root / "etc" / "resolv.conf").write_text(
        f"nameserver {net.host_address}\nsearch {SEARCH}\noptions ndots:5 timeout:2 attempts:2\n")
    shutil.copytree(module_src, root / "src", dirs_exist_ok=True)


def run_in_root(net, host, root, argv, env):
    """Runs argv with `root` as / in a new mount namespace on netns host `host`; the mounts vanish
    with the namespace when the process ends."""
    # The host's tools run before the chroot, by absolute path (argv's environment is the
    # image's, whose PATH names only the image's directories).
    mount, chroot = shutil.which("mount"), shutil.which("chroot")
    script = (f"set -e; {mount} --make-rprivate /; "
              f"{mount} --bind -o ro {goroot()} {root}/go; "
              f"{mount} --bind /dev/null {root}/dev/null; "
              f"exec {chroot} {root} \"$@\"")
    return net.run(host, [shutil.which("unshare"), "--mount", "--", shutil.which("sh"), "-c",
                          script, "sh", *argv], env=env, timeout=900)


def image_env(tag, token=None):
    return {"PATH": "/go/bin:/bin", "HOME": "/home", "TMPDIR": "/tmp", "GOROOT": "/go",
            "GOCACHE": f"/tmp/gocache-{tag}", "GOPATH": "/tmp/gopath", "GOPROXY": "off",
            "GOTOOLCHAIN": "local", "GOENV": "off", "GOFLAGS": "", "CGO_ENABLED": "0",
            "GOTELEMETRY": "off",
            "GOCACHEPROG": f"/bin/buildcache-gocacheprog --agent=http://{AGENT_NAME}:{HTTP_PORT} "
                           f"--dir=/tmp/prog-{tag} --stats"}


def test_go_build_in_a_root_without_libraries_shares_its_cache(hosts, tmp_path):
    net, agent, dns = hosts
    module_src = tmp_path / "mod"
    want = write_module(module_src)
    root = tmp_path / "root"
    make_root(root, net, module_src)
    # The image has no shared libraries at all: nothing for a dynamic binary to load.
    assert sorted(p.name for p in root.iterdir()) == ["bin", "dev", "etc", "go", "home", "src",
                                                       "tmp"]
    for libdir in ("lib", "lib64", "usr"):
        assert not (root / libdir).exists()
    logs = []
    for tag in ("1", "2"):  # the second build has empty GOCACHE and local dir, as on a new pod
        res = run_in_root(net, 1, root, ["/go/bin/go", "build", "-C", "/src", "-x", "-o",
                                         f"/tmp/app-{tag}", "."], image_env(tag))
        assert res.returncode == 0, res.stderr[-4000:]
        ran = run_in_root(net, 1, root, [f"/tmp/app-{tag}"], {})
        assert ran.stdout.strip() == want, ran.stderr
        logs.append(res.stderr)
    s1, s2 = stats(logs[0]), stats(logs[1])
    assert s1["uploads"] == s1["puts"] > 0 and s1["remote_hits"] == 0, s1
    assert len(compiles(logs[0])) >= PACKAGES + 1
    assert compiles(logs[1]) == [] and s2["remote_hits"] > 0, (s2, compiles(logs[1]))
    # The agent was found by name, through the image's resolv.conf and its search list.
    assert (f"{AGENT_NAME}.{SEARCH}", 1) in dns.asked, dns.asked


def test_unresolvable_agent_name_never_fails_the_build(hosts, tmp_path):
    net, agent, dns = hosts
    module_src = tmp_path / "mod"
    want = write_module(module_src)
    root = tmp_path / "root"
    make_root(root, net, module_src)
    env = image_env("nx")
    env["GOCACHEPROG"] = env["GOCACHEPROG"].replace(AGENT_NAME, "no-such-agent.ci-system.svc")
    res = run_in_root(net, 1, root, ["/go/bin/go", "build", "-C", "/src", "-o", "/tmp/app", "."],
                      env)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stderr.count("agent unreachable") == 1, res.stderr[-2000:]
    assert "cannot resolve no-such-agent.ci-system.svc" in res.stderr
    assert run_in_root(net, 1, root, ["/tmp/app"], {}).stdout.strip() == want


def test_binary_needs_no_libc_and_runs_in_a_musl_root(tmp_path):
    """`file` and ldd call the binary static; in a root whose only libc is musl's (its loader, as
    in an Alpine image) a dynamically linked musl program runs, and so does gocacheprog (the
    handshake and close, local only)."""
    musl_gcc = shutil.which("musl-gcc")
    if not musl_gcc or not os.path.exists(MUSL_LOADER):
        pytest.fail("musl-tools is missing (scripts/setup installs it)")
    described = subprocess.run(["file", "-L", str(PROG)], capture_output=True, text=True,
                               check=True).stdout
    assert "statically linked" in described and "interpreter" not in described, described
    ldd = subprocess.run(["ldd", str(PROG)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    root = tmp_path / "musl"
    (root / "lib").mkdir(parents=True)
    shutil.copy(MUSL_LOADER, root / "lib" / os.path.basename(MUSL_LOADER))
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("musl root"); return 0; }\n')
    subprocess.run([musl_gcc, "-o", str(root / "hello"), str(src)], check=True)
    hello_described = subprocess.run(["file", str(root / "hello")], capture_output=True,
                                     text=True, check=True).stdout
    assert "dynamically linked" in hello_described and "ld-musl" in hello_described

    def enter():
        os.chroot(root)
        os.chdir("/")

    hello = subprocess.run(["/hello"], capture_output=True, text=True, timeout=30, env={},
                           preexec_fn=enter)
    assert hello.stdout == "musl root\n", hello.stderr
    shutil.copy(PROG, root / "prog")
    res = subprocess.run(["/prog", "--dir=/c"], input='{"ID":1,"Command":"close"}\n',
                         capture_output=True, text=True, timeout=30, env={}, preexec_fn=enter)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[0])["KnownCommands"] == ["get", "put", "close"]
    assert res.stdout.splitlines()[1] == '{"ID":1}', res.stdout
