"""The faster variant of the demo, `scripts/demo --netns` (scripts/demo_netns.py: a real control
plane, the operator, three agents on network namespaces, no nodes), must finish and show its
times, hit ratios and the bytes the second host got from its peer.

Not in CTest: the real-cluster demo (test_demo.py) tells the same story on real nodes, and the CI
budget has no room for both (docs/development.md). By hand, as root:
    python3 -m pytest -q -p no:cacheprovider tests/integration/test_demo_netns.py
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_netns_demo_runs_the_whole_story():
    proc = subprocess.run([sys.executable, "-u", str(REPO / "scripts" / "demo_netns.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "== results" in out, out[-4000:]
    for job in ("pip", "go (download)"):
        line = re.search(rf"^\s+{re.escape(job)}: cold ([0-9.]+)s; warm ([0-9.]+)s .*"
                         rf"peer-warm ([0-9.]+)s", out, re.M)
        assert line, f"no result line for {job}:\n{out[-4000:]}"
    host1 = re.search(r"host 1: pypi ([0-9.]+|-), goproxy ([0-9.]+|-)", out)
    assert host1 and host1.group(1) != "-" and float(host1.group(1)) > 0, out[-4000:]
    assert host1.group(2) != "-" and float(host1.group(2)) > 0, out[-4000:]
    host2 = re.search(r"host 2: .*served pypi: local ([0-9.]+) MB, peer ([0-9.]+) MB", out)
    assert host2 and float(host2.group(2)) > 0, out[-4000:]
    assert re.search(r"^NAME\s+.*\n\s*demo\s", out, re.M), out[-4000:]
