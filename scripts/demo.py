#!/usr/bin/env python3
"""The demo's main part (scripts/demo runs setup and the build first): the whole story on a real
Kubernetes cluster built on this machine (tests/harness/kubecluster.py, docs/real-cluster.md).

1. A cluster of two nodes: the control plane, the scheduler and CoreDNS on this host; on each
   node (a network and mount namespace) containerd, a kubelet and kube-proxy.
2. The images loaded into each node's containerd (no registry): the agent and operator images of
   scripts/build-images, and a CI image with Debian's Python 3 and pip and this machine's Go.
3. `helm install` of charts/buildcache (operator, webhook, CRD, RBAC).
4. Prometheus on this host, scraping the agent and operator pods with the scrape jobs
   docs/observability.md documents.
5. `kubectl apply` of a BuildCache whose upstreams are this machine's own pip index and Go module
   proxy, with a `gobuild` directory cache and `replication.copies: 2`; its agent pods become
   Ready on both nodes.
6. An annotated Job (the webhook wires pip and go to the node's agent) running `pip install` (an
   sdist among the packages) and `go build` of a real program: cold on node 1, warm on node 1 (a
   new pod: pip's and go's own caches empty), peer-warm on node 2.
7. The times and ratios, the bytes each agent served by source, the hit ratios as `kubectl get
   buildcache` and `kubectl buildcache status` show them, the dashboard's queries in Prometheus,
   the agent pods' memory from the kubelet, and a cold node's agent hydrating from its peer.

The last line, `DEMO_RESULT {json}`, has every number (tests/integration/test_demo.py reads it).
Needs root. Everything is removed on exit or Ctrl-C. `scripts/demo --netns` runs the faster
variant without nodes (scripts/demo_netns.py).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import clusterflow, kubecluster, upstreams, workloads  # noqa: E402
from harness.clusterflow import agent_metrics, agent_pods, wait_for  # noqa: E402
from harness.dashboard import ClusterPrometheus  # noqa: E402
from harness.metrics import metric  # noqa: E402

NS, NAME = "ci", "demo"
FRONTENDS = ("pypi", "goproxy")
SOURCES = ("local", "peer", "upstream")
PHASES = (("cold", 0), ("warm", 0), ("peer-warm", 1))  # (label, node index)

JOB_SCRIPT = """set -e
cat > /tmp/req.txt <<'EOF'
{requirements}EOF
mkdir -p /tmp/p && cd /tmp/p
cat > go.mod <<'EOF'
{go_mod}EOF
cat > main.go <<'EOF'
{go_main}EOF
python3 -m venv /tmp/venv
export GOFLAGS=-mod=mod GOMODCACHE=/tmp/modcache GOSUMDB={gosumdb}
echo "PIP_INDEX_URL=$PIP_INDEX_URL GOPROXY=$GOPROXY GOCACHE=$GOCACHE"
python3 - <<'EOF'
import subprocess, sys, time
def timed(name, argv):
    t = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True)
    print("%s_SECONDS=%.2f" % (name, time.monotonic() - t), flush=True)
    if p.returncode:
        print(p.stdout[-3000:], p.stderr[-3000:])
        sys.exit(p.returncode)
    return p
p = timed("PIP", ["/tmp/venv/bin/pip", "install", "--disable-pip-version-check",
                  "-r", "/tmp/req.txt"])
# Debian's venv has no `wheel`: pip then builds the sdist with `setup.py install`.
print("BUILT_SDIST=%s" % any(m in p.stdout for m in ("Building wheel for {sdist}",
                                                    "Running setup.py install for {sdist}")))
timed("GO", ["go", "build", "-o", "/tmp/demo", "."])
EOF
/tmp/venv/bin/python -c "{imports}"
/tmp/demo >/dev/null
echo JOB_OK
"""


def step(msg: str) -> None:
    print(f"\n\033[1m== {msg}\033[0m", flush=True)


def info(msg: str) -> None:
    print(f"   {msg}", flush=True)


def buildcache(pip_index: str, go_proxy: str) -> dict:
    return {
        "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "nodeSelector": {"buildcache.io/ci": "true"},
            "agent": {"imagePullPolicy": "Never"},
            "storage": {"maxSize": "5Gi"},
            # Index pages and version lists are kept for the demo's length (default 10m and 1m):
            # the warm Jobs run minutes after the cold one, after the cold `go build`.
            "ecosystems": {"pypi": {"upstream": pip_index, "metadataTTL": "1h"},
                           "goproxy": {"upstream": go_proxy, "metadataTTL": "1h"}},
            "directories": [{"name": "gobuild", "mountPath": "/root/.cache/go-build",
                             "maxSize": "2Gi"}],
            "replication": {"copies": 2},
        },
    }


def served(kc) -> dict[str, dict[str, dict[str, float]]]:
    """{node: {frontend: {source: bytes}}} each node's agent has served since it started."""
    out = {}
    for node, pod in agent_pods(kc, NS, NAME).items():
        m = agent_metrics(pod["status"]["podIP"])
        out[node] = {f: {s: metric(m, "buildcache_served_bytes_total", frontend=f, source=s)
                         for s in SOURCES} for f in FRONTENDS}
    return out


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def run_phases(kc, script: str) -> dict:
    runs = {}
    for label, index in PHASES:
        node = kc.node_names[index]
        before = served(kc)
        log = clusterflow.run_job(kc, NS, f"ci-{label}", node, script,
                                  {"buildcache.io/cache": NAME}, timeout=2400)
        if "JOB_OK" not in log:
            raise clusterflow.FlowError(f"job ci-{label} did not finish its steps:\n{log[-3000:]}")
        after = served(kc)
        times = {k.lower(): float(v) for k, v in re.findall(r"^(PIP|GO)_SECONDS=([0-9.]+)$",
                                                               log, re.M)}
        runs[label] = {
            "node": node, "pip": times["pip"], "go": times["go"],
            "built_sdist": "BUILT_SDIST=True" in log,
            "bytes": {f: {s: after[node][f][s] - before[node][f][s] for s in SOURCES}
                      for f in FRONTENDS},
            "working_set": clusterflow.working_sets(kc, agent_pods(kc, NS, NAME)),
        }
        b = runs[label]["bytes"]
        info(f"{label:<9} on {node}: pip {times['pip']:6.1f}s  go build {times['go']:6.1f}s   "
             f"agent served pypi {mb(sum(b['pypi'].values()))} "
             f"(upstream {mb(b['pypi']['upstream'])}), goproxy {mb(sum(b['goproxy'].values()))} "
             f"(upstream {mb(b['goproxy']['upstream'])})"
             + ("   [compiled the sdist]" if runs[label]["built_sdist"] else ""))
    return runs


def report(runs: dict) -> dict:
    step("results: seconds inside the Job's pod, and ratios")
    print(f"   {'':<6} {'cold':>8} {'warm':>8} {'peer-warm':>10}   {'warm/cold':>9} "
          f"{'peer/cold':>9} {'peer/warm':>9}")
    ratios = {}
    for tool in ("pip", "go"):
        cold, warm, peer = (runs[p][tool] for p in ("cold", "warm", "peer-warm"))
        ratios[tool] = {"warm/cold": warm / cold, "peer-warm/cold": peer / cold,
                        "peer-warm/warm": peer / warm}
        print(f"   {tool:<6} {cold:7.1f}s {warm:7.1f}s {peer:9.1f}s   {warm / cold:9.2f} "
              f"{peer / cold:9.2f} {peer / warm:9.2f}")
    info("bytes the node's agent served to each Job, by source (local store, peer, upstream):")
    for label, _ in PHASES:
        b = runs[label]["bytes"]
        info(f"  {label:<9} " + "; ".join(
            f"{f}: " + ", ".join(f"{s} {mb(b[f][s])}" for s in SOURCES) for f in FRONTENDS))
    return ratios


def hit_ratios(kc, bin_dir: pathlib.Path) -> dict:
    step("hit ratios: kubectl get buildcache, kubectl buildcache status (the operator scrapes "
         "the agents)")
    def current():
        return json.loads(kc.kubectl("get", "buildcache", NAME, "-n", NS, "-o", "json").stdout
                          ).get("status", {})
    status = {}
    try:  # the operator reads the agents every --metrics-scrape-interval (30 s by default)
        status = wait_for("status.hitRatio", lambda: (lambda s: s if s.get("hitRatio") else None)
                          (current()), 120, interval=3)
    except clusterflow.FlowError as err:
        info(str(err))
        status = current()
    print(kc.kubectl("get", "buildcache", "-n", NS).stdout, flush=True)
    plugin = subprocess.run([str(bin_dir / "kubectl-buildcache"), "status", "-n", NS],
                            capture_output=True, text=True, env=kc.cp.env(), timeout=60)
    print(plugin.stdout + plugin.stderr, flush=True)
    return {"hitRatio": status.get("hitRatio"),
            "ecosystems": {e.get("name"): e.get("hitRatio") for e in status.get("ecosystems", [])},
            "nodes": status.get("nodes"), "plugin_exit": plugin.returncode}


def dashboard(prom: ClusterPrometheus, kc) -> dict:
    step("Prometheus: the dashboard's queries (charts/buildcache/dashboards/buildcache.json)")
    prom.discover()
    prom.wait_scraped_after(time.time(), targets=len(kc.nodes) + 1)
    up = prom.targets_up()
    info("targets up: " + ", ".join(f"{job} {len(t)}" for job, t in sorted(up.items())))
    panels = prom.dashboard()
    queries = sum(len(r) for r in panels.values())
    empty = sorted({title for title, results in panels.items() if any(not r for r in results)})
    info(f"{queries - sum(1 for r in panels.values() for x in r if not x)} of {queries} "
         f"queries returned series; panels with an empty query: {', '.join(empty) or 'none'}")
    for title in ("Hit ratio", "Byte hit ratio", "Agents reporting", "Bytes served by source"):
        info(f"{title}: " + "; ".join(
            ", ".join(f"{labels.get('source', '')}{'=' if labels.get('source') else ''}{v:.3g}"
                      for labels, v in r) for r in panels.get(title, [])))
    return {"targets_up": {job: len(t) for job, t in up.items()}, "queries": queries,
            "empty_panels": empty,
            "panels": {t: [[[labels, v] for labels, v in r] for r in rs]
                       for t, rs in panels.items()}}


def cold_node_hydrates(kc) -> dict:
    """Node 2 leaves the BuildCache (its agent pod goes), its store is wiped, and it joins again:
    the new agent pulls the gobuild directory from node 1 before it reports Ready."""
    step("a cold node: node 2's store wiped, its new agent hydrates from node 1 before Ready")
    node = kc.nodes[1]
    old = agent_pods(kc, NS, NAME)[node.name]
    kc.kubectl("label", "node", node.name, "buildcache.io/ci-")
    wait_for("node 2's agent pod gone", lambda: not any(
        p["metadata"]["uid"] == old["metadata"]["uid"]
        for p in clusterflow.pods(kc, NS, f"app.kubernetes.io/instance={NAME}")), 180)
    store = node.dir / "var-lib" / "buildcache" / NS / NAME
    shutil.rmtree(store, ignore_errors=True)
    t = time.monotonic()
    kc.kubectl("label", "node", node.name, "buildcache.io/ci=true")
    new = wait_for("a new agent pod Ready on node 2",
                   lambda: (lambda p: p if p and p["metadata"]["uid"] != old["metadata"]["uid"]
                            else None)(agent_pods(kc, NS, NAME).get(node.name)), 600)
    label_to_ready = time.monotonic() - t
    m = agent_metrics(new["status"]["podIP"])
    hydrated = metric(m, "buildcache_dircache_hydration_bytes")
    result = {"start_to_ready": clusterflow.start_to_ready_seconds(new),
              "label_to_ready": label_to_ready, "hydrated_bytes": hydrated}
    info(f"label -> agent Ready {label_to_ready:.1f}s; container start -> Ready "
         f"{result['start_to_ready']:.0f}s; hydrated {mb(hydrated)} of gobuild from node 1")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=str(REPO / "build" / "bin"))
    parser.add_argument("--no-hydration-step", action="store_true",
                        help="leave out the cold node's hydration at the end")
    args = parser.parse_args()
    bin_dir = pathlib.Path(args.bin_dir)

    def interrupted(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    kubecluster.check_host()  # names what is missing (root, containerd, node binaries, ...)
    step("this machine's registries (from its pip and go configuration)")
    pip_index, go_proxy = upstreams.pypi_index(), upstreams.go_proxy()
    sumdb_key = upstreams.go_sumdb_key()
    sumdb_name = sumdb_key.split("+", 1)[0]
    info(f"pip index: {pip_index}\n   Go proxy:  {go_proxy}   checksum database: {sumdb_name}")

    work = pathlib.Path(tempfile.mkdtemp(prefix="buildcache-demo."))
    result: dict = {"phases_seconds": {}}
    prom = None
    try:
        step("cluster: control plane, scheduler and CoreDNS on this host; two nodes with "
             "containerd, kubelet and kube-proxy")
        t = time.monotonic()
        with kubecluster.KubeCluster(work / "cluster", nodes=2) as kc:
            result["phases_seconds"]["cluster"] = time.monotonic() - t
            info(f"nodes Ready in {time.monotonic() - t:.0f}s: {', '.join(kc.node_names)}; "
                 f"KUBECONFIG={kc.cp.kubeconfig}")
            try:
                run(kc, bin_dir, work, pip_index, go_proxy, sumdb_key, sumdb_name, result,
                    not args.no_hydration_step)
            except BaseException:
                print(kc.describe(), file=sys.stderr)
                raise
            finally:
                prom = result.pop("_prom", None)
                if prom:
                    prom.stop()
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", flush=True)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("DEMO_RESULT " + json.dumps(result), flush=True)
    return 0


def run(kc, bin_dir, work, pip_index, go_proxy, sumdb_key, sumdb_name, result,
        hydration) -> None:
    phases = result["phases_seconds"]
    step("images into each node's containerd: agent, operator (scripts/build-images), CI image")
    t = time.monotonic()
    clusterflow.load_images(kc, work, ci=True)
    phases["images"] = time.monotonic() - t
    info(f"{phases['images']:.0f}s")

    step("helm install charts/buildcache")
    t = time.monotonic()
    clusterflow.helm_install(kc, "--set", f"agent.goSumdbName={sumdb_name}")
    phases["helm_install"] = time.monotonic() - t
    print(kc.kubectl("get", "pods", "-n", clusterflow.RELEASE_NS, "-o", "wide").stdout,
          flush=True)

    step("Prometheus on this host, with the scrape jobs of docs/observability.md")
    prom = result["_prom"] = ClusterPrometheus(work / "prometheus", kc.kubectl)
    info(f"{prom.url}")

    step(f"kubectl apply BuildCache {NS}/{NAME} (upstreams: this machine's pip index and Go "
         "module proxy)")
    kc.kubectl("create", "namespace", NS)
    t = time.monotonic()
    kc.kubectl("apply", "-f", "-", input=json.dumps(buildcache(pip_index, go_proxy)))
    agents = agent_pods(kc, NS, NAME, timeout=300)
    result["apply_to_ready"] = time.monotonic() - t
    result["start_to_ready"] = {n: clusterflow.start_to_ready_seconds(p)
                                for n, p in agents.items()}
    prom.discover()
    for pod in agents.values():
        wait_for(f"agent {pod['metadata']['name']} to know both peers",
                 lambda ip=pod["status"]["podIP"]:
                 metric(agent_metrics(ip), "buildcache_peer_members") == 2, 120)
    info(f"every agent pod Ready {result['apply_to_ready']:.1f}s after kubectl apply "
         f"(container start -> Ready: " + ", ".join(
             f"{n} {s:.0f}s" for n, s in result["start_to_ready"].items()) + ")")
    print(kc.kubectl("get", "pods", "-n", NS, "-o", "wide").stdout, flush=True)

    step("the Job, cold on node 1, warm on node 1, peer-warm on node 2: pip install of 10 "
         f"packages ({workloads.PIP_C_PROJECT} an sdist with a C extension), go build of a "
         "program with 11 modules")
    script = JOB_SCRIPT.format(requirements=workloads.PIP_REQUIREMENTS, go_mod=workloads.GO_MOD,
                               go_main=workloads.GO_MAIN, gosumdb=sumdb_key,
                               sdist=workloads.PIP_C_PROJECT, imports=workloads.PIP_IMPORTS)
    t = time.monotonic()
    runs = run_phases(kc, script)
    phases["jobs"] = time.monotonic() - t
    result["runs"] = runs
    result["ratios"] = report(runs)
    result["working_set_max"] = max(w for r in runs.values() for w in r["working_set"].values())
    info("agent pods' working set (kubelet stats) after each Job: " + "; ".join(
        f"{label} " + ", ".join(f"{n} {w / 2**20:.0f} MiB" for n, w in r["working_set"].items())
        for label, r in runs.items()))
    result["status"] = hit_ratios(kc, bin_dir)
    result["dashboard"] = dashboard(prom, kc)
    if hydration:
        t = time.monotonic()
        result["hydration"] = cold_node_hydrates(kc)
        phases["hydration"] = time.monotonic() - t


if __name__ == "__main__":
    sys.exit(main())
