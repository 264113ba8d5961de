#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver and, optionally,
kube-controller-manager, started the way controller-runtime's envtest starts them.

    with ControlPlane(workdir) as cp:
        cp.kubectl("get", "--raw", "/readyz")
        status, body = cp.request("GET", "/api/v1/namespaces")

Certificates come from the openssl CLI (a throwaway CA, a serving certificate for localhost and
127.0.0.1, an admin client certificate in group system:masters, a service-account signing key).
The binaries are the pinned ones scripts/build-test-tools builds. Everything the control plane
writes lives in one directory that is removed, and every process group it started is killed, when
the context exits, on SIGTERM, at interpreter exit, and (through PR_SET_PDEATHSIG) even when the
Python process is killed outright.

CLI, for demos: `python3 tests/harness/controlplane.py up --dir D` starts it, prints
`KUBECONFIG=D/kubeconfig` and runs until interrupted.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import ctypes
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

__all__ = ["ControlPlane", "ControlPlaneError", "MissingBinariesError", "tools_bin_dir", "find_binaries"]

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD_HINT = "run scripts/build-test-tools (it builds them into ~/.cache/buildcache/tools)"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # never routed: the API server only allocates from it
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: the range's first address
DEFAULT_TIMEOUT = float(os.environ.get("BUILDCACHE_CONTROLPLANE_TIMEOUT", "120"))
# Set to 1 to keep the directory (logs, etcd data, certificates) after stop, for debugging.
KEEP = os.environ.get("BUILDCACHE_CONTROLPLANE_KEEP", "") not in ("", "0")


class ControlPlaneError(RuntimeError):
    """The control plane could not be started (the message carries the tail of each component's log)."""


class MissingBinariesError(ControlPlaneError):
    """A binary is not built yet."""


def tools_bin_dir() -> pathlib.Path:
    """Where scripts/build-test-tools links the binaries: $BUILDCACHE_TOOLS_BIN, else
    ${BUILDCACHE_TOOLS_DIR:-~/.cache/buildcache/tools}/bin."""
    if os.environ.get("BUILDCACHE_TOOLS_BIN"):
        return pathlib.Path(os.environ["BUILDCACHE_TOOLS_BIN"])
    root = os.environ.get("BUILDCACHE_TOOLS_DIR") or os.path.expanduser("~/.cache/buildcache/tools")
    return pathlib.Path(root) / "bin"


def find_binaries(names=("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")) -> dict[str, pathlib.Path]:
    """Returns {name: path} from tools_bin_dir(), or raises MissingBinariesError naming what is missing.
    The machine's PATH is not searched on purpose: tests run against the pinned versions only."""
    bin_dir = tools_bin_dir()
    found, missing = {}, []
    for name in names:
        path = bin_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path
        else:
            missing.append(name)
    if missing:
        raise MissingBinariesError(f"missing {', '.join(missing)} in {bin_dir}: {BUILD_HINT}")
    return found


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the same race envtest accepts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{proc.stderr.strip()}")


def make_pki(pki: pathlib.Path, extra_ips: tuple[str, ...] = (), service_account_key: str = "rsa") -> None:
    """Writes ca.{crt,key}, serving.{crt,key}, admin.{crt,key} and sa.{key,pub} into pki. The
    serving certificate is for localhost, 127.0.0.1 and extra_ips. service_account_key: "rsa" (a
    2048-bit key: RS256 tokens) or "ec" (a P-256 key: ES256 tokens)."""
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=buildcache-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki)
    leaves = {
        "serving": ("/CN=kube-apiserver",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1" + "".join(f",IP:{ip}" for ip in extra_ips)
                    + "\nextendedKeyUsage=serverAuth\n"),
        "admin": ("/O=system:masters/CN=buildcache-test-admin", "extendedKeyUsage=clientAuth\n"),
    }
    for name, (subject, ext) in leaves.items():
        (pki / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" + ext)
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki)
    # Service-account tokens are signed with RS256 by default, the algorithm every Kubernetes client
    # expects; kube-apiserver signs with ES256 when the key is an EC P-256 key.
    if service_account_key == "ec":
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key", cwd=pki)
    elif service_account_key == "rsa":
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=pki)
    else:
        raise ControlPlaneError(f"service_account_key must be 'rsa' or 'ec', not {service_account_key!r}")
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child must not load anything
except (OSError, AttributeError):
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    """Runs in the child before exec: die with the parent even if it is SIGKILLed."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _tail(path: pathlib.Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty log)"


class _Process:
    def __init__(self, name: str, argv: list[str], log: pathlib.Path, env: dict[str, str]):
        self.name, self.argv, self.log = name, argv, log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True, preexec_fn=_set_pdeathsig)
        self.pgid = self.popen.pid  # start_new_session: the child leads its own group

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (the leader or anything it forked) is killed outright.
        self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass


# Control planes that are up, for the SIGTERM and exit handlers.
_LIVE: "set[ControlPlane]" = set()
_HANDLERS_INSTALLED = False


def _stop_all() -> None:
    for cp in list(_LIVE):
        cp.stop()


def _on_sigterm(signum, frame):  # noqa: ARG001
    _stop_all()
    # Then die of the signal, as the process would have without us.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_stop_all)
    # SIGINT already raises KeyboardInterrupt, which unwinds through __exit__. SIGTERM and SIGHUP
    # would end the process without any cleanup, so they stop the control planes first; a handler
    # the program installed itself is left alone.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _on_sigterm)


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on free loopback ports.

    workdir: the directory to put everything in (certificates, etcd data, logs, kubeconfig). It is
    created if needed and must be empty; it is removed on stop if this object created it, else
    emptied (unless keep, or BUILDCACHE_CONTROLPLANE_KEEP=1). None: a fresh temporary directory.
    controller_manager: also run kube-controller-manager (namespace deletion, garbage collection).
    node_address: for real nodes (tests/harness/kubecluster.py): the API server also listens on
    this address (the nodes' bridge), publishes it as the `kubernetes` Service's endpoint, has a
    serving certificate for it and for that Service's IP, reaches kubelets by InternalIP, and
    gives pods service-account tokens (ServiceAccount admission on).
    service_account_key: "rsa" (default; RS256 tokens) or "ec" (a P-256 key: ES256 tokens) for
    --service-account-signing-key-file (pki/sa.key, public half pki/sa.pub).
    """

    def __init__(self, workdir: str | os.PathLike | None = None, *, controller_manager: bool = False,
                 timeout: float = DEFAULT_TIMEOUT, extra_apiserver_args: tuple[str, ...] = (),
                 keep: bool = KEEP, node_address: str | None = None,
                 service_account_key: str = "rsa"):
        self._workdir_arg = workdir
        self.service_account_key = service_account_key
        self.node_address = node_address
        self.controller_manager = controller_manager
        self.timeout = timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.keep = keep
        self.dir: pathlib.Path | None = None
        self._created_dir = False
        self._procs: list[_Process] = []
        self._lock = threading.RLock()
        self._stopped = True
        self._cancel = threading.Event()
        self.binaries: dict[str, pathlib.Path] = {}
        self.etcd_url = self.url = ""
        self.port = 0

    # ---- paths -----------------------------------------------------------------------------
    @property
    def pki(self) -> pathlib.Path:
        return self.dir / "pki"

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.dir / "kubeconfig"

    @property
    def ca_file(self) -> pathlib.Path:
        return self.pki / "ca.crt"

    @property
    def logs(self) -> pathlib.Path:
        return self.dir / "logs"

    @property
    def bin_dir(self) -> pathlib.Path:
        return self.binaries["kubectl"].parent

    # ---- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "ControlPlane":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "ControlPlane":
        names = ["etcd", "kube-apiserver", "kubectl"] + (["kube-controller-manager"] if self.controller_manager else [])
        self.binaries = find_binaries(names)
        if shutil.which("openssl") is None:
            raise ControlPlaneError("openssl is not installed (scripts/setup installs it)")
        self._prepare_dir()
        _install_handlers()
        self._stopped = False
        _LIVE.add(self)
        try:
            make_pki(self.pki, (self.node_address, KUBERNETES_SERVICE_IP) if self.node_address else (),
                     self.service_account_key)
            self.logs.mkdir()
            # A port can be taken between choosing and binding it: try again with new ones.
            for attempt in range(3):
                try:
                    self._start_processes(attempt)
                    break
                except ControlPlaneError as err:
                    if attempt == 2 or "address already in use" not in str(err):
                        raise
                    self._stop_processes()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_dir(self) -> None:
        if self._workdir_arg is None:
            self.dir = pathlib.Path(tempfile.mkdtemp(prefix="buildcache-controlplane-"))
            self._created_dir = True
            return
        self.dir = pathlib.Path(self._workdir_arg).resolve()
        if self.dir.exists():
            if any(self.dir.iterdir()):
                raise ControlPlaneError(f"{self.dir} is not empty")
            self._created_dir = False
        else:
            self.dir.mkdir(parents=True)
            self._created_dir = True

    def _start_processes(self, attempt: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        suffix = f".{attempt}" if attempt else ""

        # etcd: one member on loopback, no fsync (test data is thrown away).
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        etcd_data = self.dir / f"etcd{suffix}"
        self._spawn("etcd", [
            str(self.binaries["etcd"]), "--name=buildcache-test", f"--data-dir={etcd_data}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=buildcache-test={peer_url}", "--initial-cluster-state=new",
            "--unsafe-no-fsync=true", "--log-level=warn",
        ], env, suffix)
        self._wait_until("etcd", lambda: self._get_plain(f"{self.etcd_url}/health") == 200)

        # kube-apiserver: the flags envtest uses.
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        pki = self.pki
        if self.node_address:
            # Every address (loopback for the tests, the bridge for the nodes); lease: the
            # `kubernetes` Service points at node_address; pods get service-account tokens.
            address_args = ["--bind-address=0.0.0.0", f"--advertise-address={self.node_address}",
                            "--endpoint-reconciler-type=lease",
                            "--kubelet-preferred-address-types=InternalIP",
                            # Webhooks and aggregated APIs are called at a pod IP (routed to the
                            # node), not at a cluster IP the host has no kube-proxy for.
                            "--enable-aggregator-routing=true"]
        else:
            address_args = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                            "--disable-admission-plugins=ServiceAccount",
                            # No kubelet answers for 127.0.0.1: don't publish it as the
                            # `kubernetes` Service's endpoint.
                            "--endpoint-reconciler-type=none"]
        self._spawn("kube-apiserver", [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers={self.etcd_url}",
            *address_args, f"--secure-port={self.port}",
            f"--cert-dir={self.dir / f'apiserver-certs{suffix}'}",
            f"--tls-cert-file={pki / 'serving.crt'}", f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            *self.extra_apiserver_args,
        ], env, suffix)
        self.write_kubeconfig(self.kubeconfig)
        self._wait_until("kube-apiserver", lambda: self.request("GET", "/readyz", timeout=5)[0] == 200)

        if self.controller_manager:
            kcm_port = free_port()
            self._spawn("kube-controller-manager", [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                # The API server has no front proxy, so there is no request-header CA to look up.
                "--authentication-skip-lookup=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1", f"--secure-port={kcm_port}",
                f"--cert-dir={self.dir / f'kcm-certs{suffix}'}",
                f"--tls-cert-file={pki / 'serving.crt'}", f"--tls-private-key-file={pki / 'serving.key'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            ], env, suffix)
            self._wait_until("kube-controller-manager",
                             lambda: self.request("GET", "/healthz", timeout=5,
                                                  base=f"https://127.0.0.1:{kcm_port}")[0] == 200)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], suffix: str) -> None:
        self._procs.append(_Process(name, argv, self.logs / f"{name}{suffix}.log", env))

    def cancel(self) -> None:
        """Makes a start() in progress (in another thread or a signal handler) give up soon."""
        self._cancel.set()

    def _wait_until(self, what: str, ready) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            if self._cancel.is_set():
                raise ControlPlaneError(f"cancelled while waiting for {what}")
            for p in self._procs:
                if not p.alive():
                    raise ControlPlaneError(
                        f"{p.name} exited with status {p.popen.returncode} while waiting for {what}\n"
                        + self.describe())
            try:
                if ready():
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{what} was not ready within {self.timeout:.0f}s\n" + self.describe())
            time.sleep(0.25)

    def describe(self) -> str:
        """The command and the tail of the log of every component started, for error messages."""
        parts = []
        for p in self._procs:
            state = "running" if p.alive() else f"exited {p.popen.returncode}"
            parts.append(f"--- {p.name} ({state}), last lines of its log:\n{_tail(p.log)}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Kills every process group started and removes the directory. Safe to call repeatedly."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stop_processes()
            _LIVE.discard(self)
            if self.dir is not None and not self.keep:
                if self._created_dir:
                    shutil.rmtree(self.dir, ignore_errors=True)
                else:
                    for entry in list(self.dir.iterdir()):
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink(missing_ok=True)

    def _stop_processes(self) -> None:
        # Reverse order: the controller manager and API server go before the etcd they depend on.
        for p in reversed(self._procs):
            p.stop(grace=10)
        self._procs.clear()

    @property
    def pids(self) -> list[int]:
        return [p.popen.pid for p in self._procs]

    def check_alive(self) -> None:
        """Raises ControlPlaneError if a component has exited."""
        for p in self._procs:
            if not p.alive():
                raise ControlPlaneError(f"{p.name} exited with status {p.popen.returncode}\n" + self.describe())

    # ---- clients -----------------------------------------------------------------------------
    def write_kubeconfig(self, path: pathlib.Path) -> None:
        """A self-contained kubeconfig (certificates inline) for the admin user."""
        def b64(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "buildcache-test", "cluster": {
                "server": self.url, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": "buildcache-test", "context": {"cluster": "buildcache-test", "user": "admin"}}],
            "current-context": "buildcache-test",
        }
        # JSON is YAML, and every kubeconfig reader accepts it.
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG set and the pinned binaries first on PATH."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs the pinned kubectl against this control plane; raises with its output if check fails."""
        argv = [str(self.binaries["kubectl"]), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=self.env())
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def apply_crd(self, path: str | os.PathLike, name: str = "buildcaches.buildcache.io",
                  timeout: float = 60) -> None:
        """Applies a CRD (server-side) and waits until it is Established. Not `kubectl wait`:
        that fails outright, instead of waiting, while a just-created CRD has no conditions yet
        (seen on a loaded machine)."""
        self.kubectl("apply", "--server-side", "-f", str(path))
        deadline = time.monotonic() + timeout
        while True:
            proc = self.kubectl("get", "crd", name, "-o", "json", check=False)
            if proc.returncode == 0:
                conditions = json.loads(proc.stdout).get("status", {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in conditions):
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.2)

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def request(self, method: str, path: str, body=None, *, timeout: float = 30, base: str | None = None,
                content_type: str = "application/json") -> tuple[int, object]:
        """An admin request to the API server: returns (status, decoded JSON or text)."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request((base or self.url) + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        # No proxy: loopback only, whatever the environment says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self.ssl_context()))
        try:
            with opener.open(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    @staticmethod
    def _get_plain(url: str) -> int:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5) as resp:
            return resp.status


# ---- CLI -------------------------------------------------------------------------------------
def _cmd_up(args) -> int:
    stop = threading.Event()
    cp = ControlPlane(args.dir, controller_manager=not args.no_controller_manager, timeout=args.timeout)

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()
        cp.cancel()

    # Installed before starting, so an interrupt during start-up also ends in a clean stop.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        cp.start()
        print(f"KUBECONFIG={cp.kubeconfig}", flush=True)
        print(f"[controlplane] API server {cp.url} is ready; binaries in {cp.bin_dir}; "
              "Ctrl-C (or SIGTERM) stops it and removes its directory", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            cp.check_alive()
        return 0
    except ControlPlaneError as err:
        if stop.is_set():
            return 130
        print(f"[controlplane] error: {err}", file=sys.stderr)
        return 1
    finally:
        cp.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a control plane, print KUBECONFIG=..., run until interrupted")
    up.add_argument("--dir", required=True, help="directory for its files (created; must be empty)")
    up.add_argument("--no-controller-manager", action="store_true", help="run only etcd and kube-apiserver")
    up.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    return _cmd_up(args)


if __name__ == "__main__":
    sys.exit(main())
