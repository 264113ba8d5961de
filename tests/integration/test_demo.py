"""The README's first command, run as CI runs everything else: scripts/demo.py (scripts/demo
without its setup and build steps, which scripts/test has done) must finish and show what it
promises: the jobs' cold / warm / peer-warm times, hit ratios, and bytes the second host got from
its peer. Two demo breaks reached a session's end before this test existed."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_demo_runs_the_whole_story():
    proc = subprocess.run([sys.executable, "-u", str(REPO / "scripts" / "demo.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "== results" in out, out[-4000:]
    for job in ("pip", "go (download)"):
        line = re.search(rf"^\s+{re.escape(job)}: cold ([0-9.]+)s; warm ([0-9.]+)s .*"
                         rf"peer-warm ([0-9.]+)s", out, re.M)
        assert line, f"no result line for {job}:\n{out[-4000:]}"
    # Host 1 answered the warm job from its store; host 2 got bytes from its peer, not upstream.
    host1 = re.search(r"host 1: pypi ([0-9.]+|-), goproxy ([0-9.]+|-)", out)
    assert host1 and host1.group(1) != "-" and float(host1.group(1)) > 0, out[-4000:]
    assert host1.group(2) != "-" and float(host1.group(2)) > 0, out[-4000:]
    host2 = re.search(r"host 2: .*served pypi: local ([0-9.]+) MB, peer ([0-9.]+) MB", out)
    assert host2 and float(host2.group(2)) > 0, out[-4000:]
    # kubectl printed the BuildCache the operator reconciled.
    assert re.search(r"^NAME\s+.*\n\s*demo\s", out, re.M), out[-4000:]
