"""The real ccache compiling C files against a remote storage URL, the way a CI pod does."""

import shutil
import subprocess

CCACHE = shutil.which("ccache")
CC = shutil.which("gcc") or shutil.which("cc")


def build(src_dir, env, c_files):
    """Zeroes ccache's counters, compiles every file of c_files (in src_dir) through ccache with
    env (CCACHE_DIR, CCACHE_REMOTE_STORAGE, ...), links them into src_dir/prog and runs it.
    Returns (ccache's counters from --print-stats, the program's stdout)."""
    subprocess.run([CCACHE, "--zero-stats"], env=env, check=True, capture_output=True)
    objects = []
    for name in c_files:
        obj = src_dir / (name[:-2] + ".o")
        obj.unlink(missing_ok=True)
        subprocess.run([CCACHE, CC, "-O2", "-c", name, "-o", obj.name], cwd=src_dir, env=env,
                       check=True, capture_output=True)
        objects.append(obj.name)
    subprocess.run([CC, "-o", "prog", *objects], cwd=src_dir, check=True, capture_output=True)
    out = subprocess.run([str(src_dir / "prog")], check=True, capture_output=True, text=True)
    stats = subprocess.run([CCACHE, "--print-stats"], env=env, check=True, capture_output=True,
                           text=True).stdout
    counters = {}
    for line in stats.splitlines():
        key, _, value = line.partition("\t")
        if value.strip().lstrip("-").isdigit():
            counters[key] = int(value)
    return counters, out.stdout
