"""The container images scripts/build-images assembles, unpacked and run with Debian's runc.

Each OCI layout is checked the way a registry or a container runtime would check it (every
blob's sha256 and size against its descriptor, the layer's diff_id), its layer is unpacked into a
root filesystem, and the binary runs from it in a runc container: read-only root, the image's
non-root user, the host's network namespace (so the test reaches the container's loopback
listener). The agent serves /healthz and /metrics from the container; the operator reaches a real
kube-apiserver (tests/harness/controlplane.py) over TLS with the image's OpenSSL and libraries.
"""

import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.cpfixture import control_plane_fixture  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
BUILD_IMAGES = REPO / "scripts" / "build-images"
CRD = REPO / "crds" / "buildcache.io_buildcaches.yaml"
UID = 65532
VERSION = re.search(r"project\(\s*buildcache\s+VERSION\s+([0-9.]+)",
                    (REPO / "CMakeLists.txt").read_text()).group(1)
BINARIES = {"agent": "buildcache-agent", "operator": "buildcache-operator"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run_build_images(*args, check=True):
    proc = subprocess.run([sys.executable, str(BUILD_IMAGES), "--bin-dir", str(BIN_DIR), *args],
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    if shutil.which("runc") is None:
        pytest.fail("runc is missing: run scripts/setup", pytrace=False)
    for binary in BINARIES.values():
        if not (BIN_DIR / binary).exists():
            pytest.fail(f"{BIN_DIR / binary} is missing: build it first", pytrace=False)
    out = tmp_path_factory.mktemp("images")
    proc = run_build_images("--out", str(out), "--tar")
    results = {json.loads(line)["image"]: json.loads(line) for line in proc.stdout.splitlines()}
    assert set(results) == {f"buildcache/{name}:{VERSION}" for name in BINARIES}
    return out


def read_blob(layout: pathlib.Path, descriptor: dict) -> bytes:
    """The blob a descriptor names, after checking its digest and size."""
    algorithm, hex_digest = descriptor["digest"].split(":", 1)
    assert algorithm == "sha256"
    data = (layout / "blobs" / "sha256" / hex_digest).read_bytes()
    assert sha256(data) == descriptor["digest"], f"blob {hex_digest} does not match its digest"
    assert len(data) == descriptor["size"], f"blob {hex_digest} does not match its size"
    return data


def open_image(layout: pathlib.Path, ref: str):
    """(manifest, config, [uncompressed layer tars]) of `ref`, every blob verified."""
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    matching = [m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref]
    assert len(matching) == 1, index
    manifest = json.loads(read_blob(layout, matching[0]))
    assert manifest["mediaType"] == matching[0]["mediaType"] == \
        "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(read_blob(layout, manifest["config"]))
    layers = []
    for descriptor in manifest["layers"]:
        data = read_blob(layout, descriptor)
        if descriptor["mediaType"].endswith("+gzip"):
            data = gzip.decompress(data)
        layers.append(data)
    assert config["rootfs"]["diff_ids"] == [sha256(layer) for layer in layers]
    return manifest, config, layers


def unpack(layers, rootfs: pathlib.Path) -> None:
    rootfs.mkdir()
    for layer in layers:
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            members = tar.getmembers()
            for m in members:
                parts = pathlib.PurePosixPath(m.name).parts
                assert not m.name.startswith("/") and ".." not in parts, m.name
                assert m.isdir() or m.isfile() or m.issym(), f"unexpected entry {m.name}"
            tar.extractall(rootfs, members=members, numeric_owner=True)


@pytest.fixture(scope="module")
def bundles(images, tmp_path_factory):
    """{name: (bundle dir, image config)} with the rootfs unpacked and runc's default spec."""
    out = {}
    for name in BINARIES:
        _, config, layers = open_image(images / name, f"buildcache/{name}:{VERSION}")
        bundle = tmp_path_factory.mktemp(f"bundle-{name}")
        unpack(layers, bundle / "rootfs")
        subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
        # Each container starts from runc's default spec, not from the previous one's edits.
        shutil.copy(bundle / "config.json", bundle / "default-spec.json")
        out[name] = (bundle, config)
    return out


class Container:
    """One `runc run` of an image's rootfs, in the foreground so its stdio are ours."""

    def __init__(self, bundle: pathlib.Path, image_config: dict, args, mounts=(), state=None,
                 command=None):
        self.id = "bc-test-" + uuid.uuid4().hex[:10]
        self.state = state
        spec = json.loads((bundle / "default-spec.json").read_text())
        uid, gid = (int(x) for x in image_config["config"]["User"].split(":"))
        spec["process"].update({
            "terminal": False,
            # `command` replaces the entrypoint, as a pod's container command does.
            "args": list(command or image_config["config"]["Entrypoint"]) + list(args),
            "env": image_config["config"]["Env"],
            "cwd": image_config["config"].get("WorkingDir") or "/",
            "user": {"uid": uid, "gid": gid},
        })
        spec["root"] = {"path": "rootfs", "readonly": True}
        # The host's network namespace: the test reaches the container's 127.0.0.1 listener.
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"]
                                       if n["type"] != "network"]
        spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "mode=1777"]})
        for source, destination, readonly in mounts:
            spec["mounts"].append({"destination": destination, "type": "bind",
                                   "source": str(source),
                                   "options": ["rbind", "ro" if readonly else "rw"]})
        (bundle / "config.json").write_text(json.dumps(spec))
        self.proc = subprocess.Popen(
            ["runc", "--root", str(state), "run", "--bundle", str(bundle), self.id],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.logs, self.stdout = [], []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.logs), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout),
                         daemon=True).start()

    def _read(self, stream, sink):
        for line in stream:
            with self._cond:
                sink.append(line)
                self._cond.notify_all()

    def wait_for_log(self, msg, timeout=60):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.logs:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if entry.get("msg") == msg:
                        return entry
                remaining = deadline - time.monotonic()
                assert remaining > 0 and self.proc.poll() is None, \
                    f"no {msg!r} log line; exit={self.proc.poll()}:\n{''.join(self.logs[-30:])}"
                self._cond.wait(min(remaining, 0.2))

    def wait(self, timeout=60):
        return self.proc.wait(timeout)

    def stop(self):
        """SIGTERM through runc (the binary is PID 1 in the container); returns its exit code."""
        if self.proc.poll() is None:
            subprocess.run(["runc", "--root", str(self.state), "kill", self.id, "TERM"],
                           capture_output=True)
        try:
            return self.proc.wait(30)
        finally:
            self.delete()

    def delete(self):
        if self.proc.poll() is None:
            subprocess.run(["runc", "--root", str(self.state), "kill", self.id, "KILL"],
                           capture_output=True)
            self.proc.wait(30)
        subprocess.run(["runc", "--root", str(self.state), "delete", "--force", self.id],
                       capture_output=True)


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "runc-state"
    path.mkdir()
    return path


def run_once(bundles, name, args, state):
    bundle, config = bundles[name]
    container = Container(bundle, config, args, state=state)
    try:
        code = container.wait(60)
    finally:
        container.delete()
    return code, "".join(container.stdout), "".join(container.logs)


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_layout_is_a_valid_oci_image_of_a_non_root_user(images, name):
    manifest, config, layers = open_image(images / name, f"buildcache/{name}:{VERSION}")
    assert config["os"] == "linux"
    assert config["config"]["User"] == f"{UID}:{UID}"
    assert config["config"]["Entrypoint"] == [f"/usr/local/bin/{BINARIES[name]}"]
    with tarfile.open(fileobj=io.BytesIO(layers[0])) as tar:
        names = set(tar.getnames())
        passwd = tar.extractfile("./etc/passwd").read().decode()
        binary = tar.getmember(f"./usr/local/bin/{BINARIES[name]}")
    assert f"buildcache:x:{UID}:{UID}:" in passwd
    assert binary.mode & 0o111 and binary.uid == 0
    assert "./etc/ssl/certs/ca-certificates.crt" in names
    # The OCI archive holds the same layout.
    with tarfile.open(images / f"{name}.tar") as tar:
        index = json.load(tar.extractfile("index.json"))
    assert index == json.loads((images / name / "index.json").read_text())


def test_layout_is_reproducible(images, tmp_path):
    again = tmp_path / "again"
    run_build_images("--out", str(again), "agent")
    assert (again / "agent" / "index.json").read_bytes() == \
        (images / "agent" / "index.json").read_bytes()


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_dockerfile_installs_a_package_list_covering_every_linked_library(name):
    dockerfile = (REPO / "images" / f"{name}.Dockerfile").read_text()
    runtime = dockerfile.split("FROM debian:12-slim", 1)[1]
    assert f"COPY images/{name}.packages /tmp/runtime.packages" in runtime
    assert "xargs" in runtime and "apt-get install" in runtime
    assert f"--uid {UID}" in runtime and f"USER {UID}:{UID}" in runtime
    listed = {line.split("#")[0].strip()
              for line in (REPO / "images" / f"{name}.packages").read_text().splitlines()}
    ldd = subprocess.run(["ldd", str(BIN_DIR / BINARIES[name])], capture_output=True, text=True,
                         check=True).stdout
    libraries = re.findall(r"=> (/\S+)", ldd)
    assert libraries
    for lib in libraries:
        owners = set()
        for candidate in {lib, os.path.realpath(lib), lib.replace("/usr/lib/", "/lib/", 1),
                          os.path.realpath(lib).replace("/usr/lib/", "/lib/", 1)}:
            proc = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
            if proc.returncode == 0:
                owners.add(proc.stdout.split(":")[0])
        assert owners & listed, f"{lib} (package {owners}) is not in images/{name}.packages"


def test_a_package_list_missing_a_library_fails_the_build_naming_it(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    original = (REPO / "images" / "agent.packages").read_text().splitlines()
    (lists / "agent.packages").write_text(
        "\n".join(line for line in original if line.strip() != "libssl3") + "\n")
    proc = run_build_images("--out", str(tmp_path / "out"), "--packages-dir", str(lists),
                            "agent", check=False)
    assert proc.returncode == 1
    assert "misses libssl3" in proc.stderr
    assert not (tmp_path / "out" / "agent").exists()


def test_a_missing_binary_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(BUILD_IMAGES), "--bin-dir", str(tmp_path),
                           "--out", str(tmp_path / "out"), "operator"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "buildcache-operator is missing" in proc.stderr


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_binary_runs_in_the_container(bundles, name, state):
    code, stdout, logs = run_once(bundles, name, ["--version"], state)
    assert code == 0, logs
    assert stdout.strip() == f"{BINARIES[name]} {VERSION}"
    code, stdout, logs = run_once(bundles, name, ["--help"], state)
    assert code == 0, logs
    assert "Usage" in stdout


def test_agent_serves_health_and_metrics_from_the_container(bundles, state, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, UID)
    bundle, config = bundles["agent"]
    container = Container(bundle, config,
                          ["--listen", "127.0.0.1:0", "--data-dir", "/var/lib/buildcache"],
                          mounts=[(data, "/var/lib/buildcache", False)], state=state)
    try:
        address = container.wait_for_log("listening")["address"]
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as resp:
            assert resp.status == 200
        body = b"cached object from inside the container"
        put = urllib.request.Request(f"http://{address}/cache/test/object", data=body,
                                     method="PUT")
        with urllib.request.urlopen(put, timeout=10) as resp:
            assert resp.status // 100 == 2
        with urllib.request.urlopen(f"http://{address}/cache/test/object", timeout=10) as resp:
            assert resp.read() == body
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert re.search(r"^buildcache_\w+", metrics, re.MULTILINE), metrics[:500]
    finally:
        code = container.stop()
    # PID 1 in the container still stops cleanly on SIGTERM.
    assert code == 0, "".join(container.logs[-30:])
    # It ran as the image's user: what it wrote belongs to UID 65532, not root.
    written = [p for p in data.rglob("*")]
    assert written
    assert {p.stat().st_uid for p in written} == {UID}


def test_agent_image_installs_gocacheprog_as_the_webhooks_init_container_does(bundles, state,
                                                                             tmp_path):
    """The init container the webhook renders (operator/webhook/pod_mutator.cc): the agent image,
    its command replaced by buildcache-gocacheprog --install=<emptyDir>, as the image's user. The
    copy is executable by any user of the pod, and it runs here, outside the image."""
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    empty_dir.chmod(0o777)  # as the kubelet makes an emptyDir
    bundle, config = bundles["agent"]
    container = Container(bundle, config, ["--install=/buildcache/gocacheprog"], state=state,
                          command=["/usr/local/bin/buildcache-gocacheprog"],
                          mounts=[(empty_dir, "/buildcache/gocacheprog", False)])
    try:
        code = container.wait(60)
    finally:
        container.delete()
    assert code == 0, "".join(container.logs)
    installed = empty_dir / "buildcache-gocacheprog"
    st = installed.stat()
    assert st.st_uid == UID and st.st_mode & 0o777 == 0o755, oct(st.st_mode)
    assert installed.read_bytes() == (bundle / "rootfs/usr/local/bin/buildcache-gocacheprog"
                                      ).read_bytes()
    res = subprocess.run([str(installed), f"--dir={tmp_path / 'd'}"],
                         input='{"ID":1,"Command":"close"}\n', capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0 and res.stdout.splitlines()[1] == '{"ID":1}', res.stderr


controlplane = control_plane_fixture(crd=CRD)


def test_operator_reaches_a_real_api_server_from_the_container(bundles, state, controlplane,
                                                               tmp_path):
    bundle, config = bundles["operator"]
    # The kubeconfig carries its certificates inline; the copy is readable by the image's user
    # only, as a Secret mounted with fsGroup would be.
    kube_dir = tmp_path / "kube"
    kube_dir.mkdir()
    shutil.copy(controlplane.kubeconfig, kube_dir / "kubeconfig")
    os.chown(kube_dir / "kubeconfig", UID, UID)
    (kube_dir / "kubeconfig").chmod(0o400)
    container = Container(
        bundle, config,
        ["--kubeconfig", "/etc/buildcache/kubeconfig", "--metrics-addr", "127.0.0.1:0",
         "--agent-image", f"buildcache/agent:{VERSION}"],
        mounts=[(kube_dir, "/etc/buildcache", True)], state=state)
    try:
        address = container.wait_for_log("metrics listening")["address"]
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as resp:
            assert resp.status == 200
        # Ready once its BuildCache cache has listed from the API server over TLS.
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/readyz", timeout=10) as resp:
                    if resp.status == 200:
                        break
            except urllib.error.HTTPError as err:
                assert err.code == 503
            assert time.monotonic() < deadline, "".join(container.logs[-30:])
            time.sleep(0.5)
    finally:
        code = container.stop()
    assert code == 0, "".join(container.logs[-30:])
