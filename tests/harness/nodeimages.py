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
    config = _canonical({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer_tar)]},
    })
    manifest = _canonical({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha(layer_gz), "size": len(layer_gz)}],
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
        for blob in (config, manifest, layer_gz):
            add("blobs/sha256/" + _sha(blob).split(":")[1], blob)
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
