#!/usr/bin/env python3
"""pip cold / warm / peer-warm inside pods on a real two-node cluster (harness/kubecluster.py).

    sudo python3 bench/cluster_peer_warm.py [--rounds N]

The user's flow: the chart installed with helm (images loaded into each node's containerd), a
BuildCache with this machine's pip index as upstream and `replication.copies: 2` applied, then an
annotated Job (wired by the webhook: PIP_INDEX_URL is the node-local Service) that runs
`pip install -r` of bench/peer_warm.py's requirement set (an sdist among them) in the CI image
(Debian's python3, pip and gcc, built by mmdebstrap): cold on node 1, warm on node 1 (a new pod,
so pip's own cache is empty), peer-warm on node 2. Prints each Job's pip time (measured inside
the pod), the bytes each agent served by source, the time from `kubectl apply` of the BuildCache
to every agent pod Ready, and the agent pods' working-set memory from the kubelet's stats.
Results go to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import clusterflow, upstreams, workloads  # noqa: E402
from harness.kubecluster import KubeCluster  # noqa: E402
from harness.metrics import metric  # noqa: E402

NS, NAME = "ci", "bench"

JOB_SCRIPT = """set -e
cat > /tmp/req.txt <<'EOF'
{requirements}EOF
python3 -m venv /tmp/venv
python3 - <<'EOF'
import subprocess, sys, time
t = time.monotonic()
p = subprocess.run(["/tmp/venv/bin/pip", "install", "--disable-pip-version-check",
                    "-r", "/tmp/req.txt"], capture_output=True, text=True)
print(p.stdout[-2000:], p.stderr[-2000:])
print("PIP_SECONDS=%.2f" % (time.monotonic() - t))
# Debian's venv has no `wheel`: pip 23.0 then builds an sdist with `setup.py install`.
print("BUILT_SDIST=%s" % any(m in p.stdout for m in ("Building wheel for {sdist}",
                                                    "Running setup.py install for {sdist}")))
sys.exit(p.returncode)
EOF
/tmp/venv/bin/python -c "{imports}"
"""


def log(msg: str) -> None:
    print(f"[cluster_peer_warm] {msg}", file=sys.stderr, flush=True)


def served(kc, agents: dict) -> dict:
    out = {}
    for node, pod in agents.items():
        m = clusterflow.agent_metrics(pod["status"]["podIP"])
        out[node] = {s: metric(m, "buildcache_served_bytes_total", frontend="pypi", source=s)
                     for s in ("local", "peer", "upstream")}
    return out


def run_round(kc, index: int, nodes: list[str]) -> dict:
    script = JOB_SCRIPT.format(requirements=workloads.PIP_REQUIREMENTS,
                               sdist=workloads.PIP_C_PROJECT, imports=workloads.PIP_IMPORTS)
    annotations = {"buildcache.io/cache": NAME}
    results = {}
    for label, node in (("cold", nodes[0]), ("warm", nodes[0]), ("peer-warm", nodes[1])):
        out = clusterflow.run_job(kc, NS, f"pip-{label}-{index}", node, script, annotations)
        secs = re.search(r"PIP_SECONDS=([0-9.]+)", out)
        if not secs:
            raise clusterflow.FlowError(f"no PIP_SECONDS in the job's log:\n{out[-3000:]}")
        results[label] = float(secs.group(1))
        log(f"round {index}: pip {label} on {node}: {results[label]:.1f}s "
            f"(sdist built: {'BUILT_SDIST=True' in out})")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds, each with a BuildCache of its own (fresh stores)")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="buildcache-cluster-bench."))
    started = time.monotonic()
    with KubeCluster(work / "cluster", nodes=2) as kc:
        log(f"cluster up in {time.monotonic() - started:.0f}s")
        t = time.monotonic()
        clusterflow.load_images(kc, work, ci=True)
        log(f"images built and loaded in {time.monotonic() - t:.0f}s")
        _, sumdb_name, _ = upstreams.go_sumdb(upstreams.go_proxy())
        clusterflow.helm_install(kc, "--set", f"agent.goSumdbName={sumdb_name}")
        kc.kubectl("create", "namespace", NS)
        for r in range(args.rounds):
            if r:
                kc.kubectl("delete", "buildcache", NAME, "-n", NS, "--wait=true", timeout=300)
            t = time.monotonic()
            kc.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
                "metadata": {"name": NAME, "namespace": NS},
                "spec": {"nodeSelector": {"buildcache.io/ci": "true"},
                         "agent": {"imagePullPolicy": "Never"},
                         "storage": {"maxSize": "5Gi",
                                     "hostPath": f"/var/lib/buildcache/{NS}/{NAME}-{r}"},
                         "ecosystems": {"pypi": {"upstream": upstreams.pypi_index()}},
                         "replication": {"copies": 2}}}))
            agents = clusterflow.agent_pods(kc, NS, NAME)
            log(f"round {r}: kubectl apply -> every agent pod Ready in {time.monotonic() - t:.1f}s")
            times = run_round(kc, r, kc.node_names)
            print(json.dumps({"round": r, "pip_seconds": times, "served_bytes": served(kc, agents),
                              "agent_working_set_bytes": clusterflow.working_sets(kc, agents)}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
