#!/usr/bin/env python3
"""The faster variant of the demo (`scripts/demo --netns` runs setup and the build first, then
this): the whole story on one machine without nodes. scripts/demo.py is the main demo, on a
real-node cluster.

1. A real control plane (etcd, kube-apiserver, kube-controller-manager; tests/harness).
2. The CRD and the real buildcache-operator.
3. A BuildCache whose upstreams are this machine's own pip index and Go module proxy.
4. The operator's rendered agent configuration (its ConfigMap) run by three agents on three
   network-namespace hosts (no kubelet runs here, so the demo starts the agents the DaemonSet
   describes), peers of each other, and an EndpointSlice for them as Kubernetes would publish
   it, so the operator can read their hit ratio.
5. A pip job and a Go job, each run cold on host 1, warm on host 1 (the client's own caches
   empty), and peer-warm on host 2 (an agent that never saw the packages; its peer has them),
   printing the times, the ratios, and the hit ratios from /metrics and the BuildCache status.

Everything is removed on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import polling, upstreams, workloads  # noqa: E402
from harness.cluster import AgentCluster, Masquerade
from harness.metrics import metric  # noqa: E402
from harness.controlplane import ControlPlane  # noqa: E402
from harness.netns import NetnsCluster  # noqa: E402

NS = "ci"
NAME = "demo"


def step(msg: str) -> None:
    print(f"\n\033[1m== {msg}\033[0m", flush=True)


def info(msg: str) -> None:
    print(f"   {msg}", flush=True)


def wait_for(what: str, fn, timeout: float = 60):
    return polling.wait_for(what, fn, timeout, interval=0.5, error=RuntimeError)


class Operator:
    def __init__(self, binary: pathlib.Path, kubeconfig: pathlib.Path, log: pathlib.Path):
        self.log_path = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [str(binary), "--kubeconfig", str(kubeconfig), "--agent-image",
                 "buildcache/agent:0.1.0", "--metrics-addr", "127.0.0.1:0",
                 "--metrics-scrape-interval", "2"],
                stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def buildcache(pip_index: str, go_proxy: str, sumdb_name: str) -> dict:
    return {
        "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "nodeSelector": {"buildcache.io/ci": "true"},
            "storage": {"maxSize": "10Gi"},
            "ecosystems": {
                "pypi": {"upstream": pip_index},
                "goproxy": {"upstream": go_proxy, "sumdb": True, "sumdbName": sumdb_name},
                "httpcache": {},
            },
            "replication": {"copies": 2, "hydrate": True},
        },
    }


def endpoint_slice(addresses: list[str]) -> dict:
    """What Kubernetes publishes for the headless peers Service once the agent pods are ready."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"buildcache-{NAME}-peers-demo", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": f"buildcache-{NAME}-peers"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "peer", "port": 8081, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


def hit_ratio(metrics: dict, frontend: str) -> str:
    """Requests served without going upstream, over all lookups, for one front end."""
    hits = metric(metrics, "buildcache_requests_total", frontend=frontend, result="hit")
    misses = metric(metrics, "buildcache_requests_total", frontend=frontend, result="miss")
    fetched = metric(metrics, "buildcache_upstream_requests_total", frontend=frontend,
                         outcome="ok")
    total = hits + misses
    return f"{max(hits - fetched, 0) / total:.2f}" if total else "-"


def served(metrics: dict, frontend: str) -> str:
    parts = []
    for source in ("local", "peer", "upstream"):
        b = metric(metrics, "buildcache_served_bytes_total", frontend=frontend, source=source)
        parts.append(f"{source} {b / 1e6:.1f} MB")
    return ", ".join(parts)


def mount_secrets(cp, daemonset: dict, config, root: pathlib.Path):
    """Does what the kubelet does with the agent pod's Secret volumes (the peer certificates and
    the admin token the operator issued): writes each Secret's keys into a directory of its own
    under root, and points the configuration's paths below each mountPath there instead."""
    spec = daemonset["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", [])
               if "secret" in v}
    moved = {}
    for mount in spec["containers"][0].get("volumeMounts", []):
        if mount["name"] not in secrets:
            continue
        secret = json.loads(cp.kubectl("get", "secret", secrets[mount["name"]], "-n", NS,
                                       "-o", "json").stdout)
        target = root / mount["name"]
        target.mkdir(parents=True, exist_ok=True)
        for key, value in secret.get("data", {}).items():
            (target / key).write_bytes(base64.b64decode(value))
            (target / key).chmod(0o400)
        moved[mount["mountPath"].rstrip("/") + "/"] = str(target) + "/"

    def rewrite(node):
        if isinstance(node, dict):
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        if isinstance(node, str):
            for prefix, local in moved.items():
                if node.startswith(prefix):
                    return local + node[len(prefix):]
        return node
    return rewrite(config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", default=str(REPO / "build" / "bin"))
    parser.add_argument("--skip-go", action="store_true", help="only the pip job")
    args = parser.parse_args()
    bin_dir = pathlib.Path(args.bin_dir)

    # SIGTERM/SIGHUP end the demo like Ctrl-C does: through the with-blocks' clean-ups.
    def interrupted(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    step("this machine's registries (from its pip and go configuration)")
    pip_index = upstreams.pypi_index()
    go_proxy = upstreams.go_proxy()
    sumdb_key, sumdb_name, sumdb_url = upstreams.go_sumdb(go_proxy)
    info(f"pip index: {pip_index}\n   Go proxy:  {go_proxy}   checksum database: {sumdb_name}")

    work = pathlib.Path(tempfile.mkdtemp(prefix="buildcache-demo."))
    operator = None
    try:
        step("control plane: etcd, kube-apiserver, kube-controller-manager (real, on loopback)")
        started = time.monotonic()
        with ControlPlane(work / "cp", controller_manager=True) as cp:
            info(f"ready in {time.monotonic() - started:.1f}s; KUBECONFIG={cp.kubeconfig}")

            step("the BuildCache CRD and buildcache-operator")
            cp.apply_crd(REPO / "crds" / "buildcache.io_buildcaches.yaml")
            cp.kubectl("create", "namespace", NS)
            for i in range(1, 4):
                cp.kubectl("apply", "-f", "-", input=json.dumps({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": f"host-{i}", "labels": {"buildcache.io/ci": "true"}}}))
            operator = Operator(bin_dir / "buildcache-operator", cp.kubeconfig,
                                work / "operator.log")
            info(f"operator running (log: {work / 'operator.log'})")

            step(f"BuildCache {NS}/{NAME}")
            cp.kubectl("apply", "-f", "-", input=json.dumps(
                buildcache(pip_index, go_proxy, sumdb_key)))
            config_map = wait_for("the operator's ConfigMap", lambda: json.loads(cp.kubectl(
                "get", "configmap", f"buildcache-{NAME}-config", "-n", NS, "-o", "json",
                check=False).stdout or "null"))
            wait_for("the DaemonSet", lambda: cp.kubectl(
                "get", "daemonset", f"buildcache-{NAME}", "-n", NS, check=False).returncode == 0)
            print(cp.kubectl("get", "buildcache,daemonset,service,configmap", "-n", NS).stdout,
                  flush=True)
            config = yaml.safe_load(config_map["data"]["agent.yaml"])
            daemonset = wait_for("the DaemonSet's Secret volumes", lambda: json.loads(cp.kubectl(
                "get", "daemonset", f"buildcache-{NAME}", "-n", NS, "-o", "json").stdout))
            config = mount_secrets(cp, daemonset, config, work / "mounts")

            step("three hosts (network namespaces) running the agent with the operator's config")
            with NetnsCluster(3) as net, Masquerade(net), \
                    AgentCluster(net, work / "hosts", config, bin_dir / "buildcache-agent") as agents:
                for i in range(3):
                    info(f"host {i + 1}: {agents.url(i)}  (peers on :8081)")
                cp.kubectl("apply", "-f", "-", input=json.dumps(
                    endpoint_slice([agents.address(i) for i in range(3)])))
                results = run_jobs(agents, work, sumdb_key, sumdb_name, args.skip_go)
                report(agents, results, cp)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", flush=True)
        return 130
    finally:
        if operator:
            operator.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_jobs(agents, work, sumdb_key, sumdb_name, skip_go):
    results = {}
    step("pip: requirements of 10 packages, one an sdist with a C extension")
    pip_runs = {}
    for label, host in (("cold, host 1", 0), ("warm, host 1", 0), ("peer-warm, host 2", 1)):
        prefix = agents.net.exec_prefix(host)
        secs, built, cache = workloads.pip_install(
            work / f"pip-{len(pip_runs)}", f"{agents.url(host)}/pypi/simple/", prefix=prefix)
        pip_runs[label] = secs
        info(f"{label:<18} {secs:6.1f}s" + ("  (compiled the sdist)" if built else ""))
        if label.startswith("cold") and built:
            # Publishing the built wheel is refused now (the upstream has that version, and
            # uploads are anonymous: docs/security.md), and the agent does not build wheels yet:
            # each node's first job compiles the sdist once, its pip cache keeps the wheel.
            info("the sdist's wheel stays in this job's pip cache; the wheel house takes no "
                 "uploads for upstream versions")
    results["pip"] = pip_runs
    if not skip_go:
        step("go: go mod download + go build of a module with 11 direct dependencies")
        go_runs = {}
        for label, host in (("cold, host 1", 0), ("warm, host 1", 0), ("peer-warm, host 2", 1)):
            gosumdb = f"{sumdb_key} {agents.url(host)}/gomod/sumdb/{sumdb_name}"
            download, build = workloads.go_download_build(
                work / f"go-{len(go_runs)}", f"{agents.url(host)}/gomod", gosumdb,
                prefix=agents.net.exec_prefix(host))
            go_runs[label] = download
            info(f"{label:<18} download {download:6.1f}s   build {build:6.1f}s")
        results["go (download)"] = go_runs
    return results


def report(agents, results, cp):
    step("results")
    for job, runs in results.items():
        cold = runs["cold, host 1"]
        info(f"{job}: cold {cold:.1f}s; warm {runs['warm, host 1']:.1f}s "
             f"({runs['warm, host 1'] / cold:.2f}x of cold); peer-warm "
             f"{runs['peer-warm, host 2']:.1f}s ({runs['peer-warm, host 2'] / cold:.2f}x of cold, "
             f"{runs['peer-warm, host 2'] / runs['warm, host 1']:.2f}x of warm)")
    step("hit ratios from each agent's /metrics")
    for i in range(3):
        m = agents.metrics(i)
        info(f"host {i + 1}: pypi {hit_ratio(m, 'pypi')}, goproxy {hit_ratio(m, 'goproxy')}; "
             f"served pypi: {served(m, 'pypi')}")
    step("the BuildCache as kubectl shows it (the operator scrapes the agents)")
    try:
        wait_for("status.hitRatio", lambda: json.loads(cp.kubectl(
            "get", "buildcache", NAME, "-n", NS, "-o", "json").stdout)
            .get("status", {}).get("hitRatio"), timeout=20)
    except RuntimeError as err:
        info(str(err))
    print(cp.kubectl("get", "buildcache", "-n", NS).stdout, flush=True)
    info("(Ready stays False and Nodes 0: no kubelet runs here, so Kubernetes never sees agent "
         "pods;\n    the three agents above stand in for them. The hit ratio is the operator's "
         "reading of their /metrics.)")


if __name__ == "__main__":
    sys.exit(main())
