"""Small container images for the real-node cluster (tests/harness/kubecluster.py), built here
from this machine's files, with no registry and no container engine.

    pause_image(work)      # the pod sandbox image: a static C program built with gcc
    busybox_image(work)    # Debian's busybox-static with its applets: sh, nc, nslookup, sha256sum

Each returns (reference, OCI archive path). The archive is one layer; its index names the image
with `io.containerd.image.name`, which `ctr images import` uses as the image's name, so the
kubelet finds it with `imagePullPolicy: Never`. The agent and operator images come from
scripts/build-images (same archive format; kubecluster.py names them on import).

Python 3.11 standard library only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pathlib
import shutil
import subprocess
import tarfile

PAUSE_REF = "buildcache.test/pause:1"
BUSYBOX_REF = "buildcache.test/busybox:1"

# The sandbox's process: holds the pod's namespaces, reaps orphans, exits on SIGTERM/SIGINT.
PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction term = {.sa_handler = on_term};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGTERM, &term, NULL);
  sigaction(SIGINT, &term, NULL);
  sigaction(SIGCHLD, &child, NULL);
  for (;;) pause();
}
"""


class ImageError(RuntimeError):
    pass


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def oci_archive(out: pathlib.Path, ref: str, files: dict[str, tuple[bytes, int]],
                symlinks: dict[str, str], entrypoint: list[str], user: str = "0:0") -> pathlib.Path:
    """Writes a one-layer OCI archive to out: files {path: (content, mode)}, symlinks
    {path: target}; directories are created as needed."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(p) for path in [*files, *symlinks]
                       for p in pathlib.PurePosixPath(path.lstrip("/")).parents if str(p) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for path, target in sorted(symlinks.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    layer_tar = layer.getvalue()
    layer_gz = gzip.compress(layer_tar, mtime=0)
    return _pack(out, ref, {"Entrypoint": entrypoint, "User": user, "Env": ["PATH=/bin"]},
                 _sha(layer_tar), "application/vnd.oci.image.layer.v1.tar+gzip", layer_gz)


def _file_sha(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _pack(out: pathlib.Path, ref: str, image_config: dict, diff_id: str, layer_type: str,
          layer: bytes | pathlib.Path) -> pathlib.Path:
    """The OCI archive of one layer (bytes, or a file streamed into the archive)."""
    layer_digest = _sha(layer) if isinstance(layer, bytes) else _file_sha(layer)
    layer_size = len(layer) if isinstance(layer, bytes) else layer.stat().st_size
    config = _canonical({
        "architecture": "amd64", "os": "linux", "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    manifest = _canonical({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer_size}],
    })
    index = _canonical({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": _sha(manifest), "size": len(manifest),
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref}}],
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
        add("index.json", index)
        for blob in (config, manifest):
            add("blobs/sha256/" + _sha(blob).split(":")[1], blob)
        layer_name = "blobs/sha256/" + layer_digest.split(":")[1]
        if isinstance(layer, bytes):
            add(layer_name, layer)
        else:
            tar.add(str(layer), arcname=layer_name)
    return out


def pause_image(work: pathlib.Path) -> tuple[str, pathlib.Path]:
    work.mkdir(parents=True, exist_ok=True)
    src, binary = work / "pause.c", work / "pause"
    src.write_text(PAUSE_C)
    proc = subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"gcc -static pause.c failed (scripts/setup installs build-essential):\n"
                         f"{proc.stderr}")
    return PAUSE_REF, oci_archive(work / "pause.tar", PAUSE_REF,
                                  {"/pause": (binary.read_bytes(), 0o755)}, {}, ["/pause"],
                                  user="65535:65535")


def busybox_image(work: pathlib.Path) -> tuple[str, pathlib.Path]:
    busybox = pathlib.Path("/bin/busybox")
    if not busybox.exists():
        raise ImageError("/bin/busybox is missing (scripts/setup installs busybox-static)")
    applets = ["sh", "nc", "nslookup", "sha256sum", "cat", "head", "tail", "sed", "grep", "wc",
               "sleep", "echo", "printf", "ls", "tr", "cut", "env", "date", "mkdir"]
    return BUSYBOX_REF, oci_archive(work / "busybox.tar", BUSYBOX_REF,
                                    {"/bin/busybox": (busybox.read_bytes(), 0o755)},
                                    {f"/bin/{a}": "busybox" for a in applets}, ["/bin/sh"])


CI_REF = "buildcache.test/ci:1"
# The CI image: real clients from Debian (pip as a CI job runs it, a C compiler for the sdists pip
# builds), busybox for a shell's small tools. Changing the list builds a new image (the cache key
# is its hash). Go is not Debian's (1.19 is too old for today's modules): this machine's
# toolchain, whose binaries are static, is copied in as /usr/local/go (ci_image).
CI_PACKAGES = ["python3", "python3-pip", "python3-venv", "python3-dev", "gcc", "libc6-dev",
               "ca-certificates", "busybox"]


def machine_goroot() -> tuple[pathlib.Path, str]:
    """This machine's Go toolchain: (GOROOT, version such as go1.26.8)."""
    proc = subprocess.run(["go", "env", "GOROOT", "GOVERSION"], capture_output=True, text=True)
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) != 2:
        raise ImageError(f"go env GOROOT GOVERSION failed (scripts/setup installs Go): "
                         f"{proc.stderr.strip()}")
    return pathlib.Path(lines[0]), lines[1]


def _with_go(base: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """base (a root file system tar) plus this machine's GOROOT as usr/local/go (its test/ tree
    left out), written to out once."""
    if out.exists():
        return out
    goroot, _ = machine_goroot()
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(base, tmp)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.name == "usr/local/go/test" or info.name.startswith("usr/local/go/test/"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info
    with tarfile.open(tmp, "a", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(goroot), arcname="usr/local/go", filter=keep)
    tmp.rename(out)
    return out


def ci_image(work: pathlib.Path,
             cache_root: pathlib.Path | None = None) -> tuple[str, pathlib.Path]:
    """A Debian 12 image with Python 3, pip and this machine's Go, made by mmdebstrap from the
    Debian archive this machine's apt uses (/etc/apt/sources.list.d/debian.sources), built once
    and cached under the tools cache (ci-image-<hash>/rootfs.tar, and rootfs-<go version>.tar
    with /usr/local/go added). The layer is the uncompressed root file system tar."""
    import os  # pylint: disable=import-outside-toplevel
    if cache_root is None:
        cache_root = pathlib.Path(os.environ.get("BUILDCACHE_TOOLS_DIR")
                                  or os.path.expanduser("~/.cache/buildcache/tools"))
    key = hashlib.sha256(" ".join(CI_PACKAGES).encode()).hexdigest()[:12]
    cache = cache_root / f"ci-image-bookworm-{key}"
    rootfs = cache / "rootfs.tar"
    if not rootfs.exists():
        sources = pathlib.Path("/etc/apt/sources.list.d/debian.sources")
        if not sources.exists():
            sources = pathlib.Path("/etc/apt/sources.list")
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / "rootfs.tar.tmp"
        proc = subprocess.run(["mmdebstrap", "--variant=apt", "--mode=root", "--format=tar",
                               "--include=" + ",".join(CI_PACKAGES), "bookworm", str(tmp),
                               str(sources)], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise ImageError(f"mmdebstrap failed (scripts/setup installs it):\n"
                             f"{proc.stderr[-3000:]}")
        tmp.rename(rootfs)
    rootfs = _with_go(rootfs, cache / f"rootfs-{machine_goroot()[1]}.tar")
    env = ["PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME=/root", "LANG=C.UTF-8", "GOTOOLCHAIN=local"]
    work.mkdir(parents=True, exist_ok=True)
    return CI_REF, _pack(work / "ci.tar", CI_REF, {"Entrypoint": ["/bin/sh"], "User": "0:0",
                                                  "Env": env, "WorkingDir": "/root"},
                         _file_sha(rootfs), "application/vnd.oci.image.layer.v1.tar", rootfs)
