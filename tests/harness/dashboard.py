"""The Grafana dashboard's queries (charts/buildcache/dashboards/buildcache.json), and Prometheus
(Debian's binary) on the host of a real-node cluster (harness.kubecluster) scraping the agent
and operator pods with the scrape jobs docs/observability.md gives for a Prometheus without the
Prometheus operator (ClusterPrometheus, on Prometheus: one started from a configuration).
Used by tests/integration/test_dashboard.py (the queries, Prometheus) and scripts/demo.py (both).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

from harness.controlplane import _set_pdeathsig, free_port
from harness.docblocks import parse_blocks

REPO = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "buildcache" / "dashboards" / "buildcache.json"
SCRAPE_DOC = REPO / "docs" / "observability.md"
SCRAPE_BLOCK = "buildcache-scrape.yaml"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets(dashboard: dict):
    """(panel, target) for every query of the dashboard."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def substitute(expr: str, window: str, **variables: str) -> str:
    """Replaces Grafana variables the way Grafana does for an "All" or single selection."""
    values = {"namespace": ".*", "buildcache": ".*", "node": ".*", "instance": ".*",
              **variables}
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    expr = expr.replace("$__rate_interval", window).replace("$__range", window)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def documented_scrape_jobs() -> list[dict]:
    """The scrape jobs of docs/observability.md's `buildcache-scrape.yaml` block."""
    blocks = [b for b in parse_blocks(SCRAPE_DOC) if b.file == SCRAPE_BLOCK]
    if len(blocks) != 1:
        raise RuntimeError(f"{SCRAPE_DOC}: want one block file={SCRAPE_BLOCK}, found {len(blocks)}")
    return yaml.safe_load(blocks[0].text)


class PrometheusError(RuntimeError):
    pass


def _meta_label(name: str) -> str:
    """A Kubernetes label name as Prometheus' Kubernetes discovery spells it in a meta label."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def pod_targets(pods: list[dict]) -> list[dict]:
    """file_sd target groups, one per named container port of each running pod with an IP, with
    the __meta_kubernetes_* labels Prometheus' `kubernetes_sd_configs` (role: pod) gives them."""
    groups = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
        if not status.get("podIP") or status.get("phase") != "Running":
            continue
        labels = {"__meta_kubernetes_namespace": meta["namespace"],
                  "__meta_kubernetes_pod_name": meta["name"],
                  "__meta_kubernetes_pod_ip": status["podIP"],
                  "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
                  "__meta_kubernetes_pod_phase": status["phase"]}
        for k, v in meta.get("labels", {}).items():
            labels[f"__meta_kubernetes_pod_label_{_meta_label(k)}"] = v
            labels[f"__meta_kubernetes_pod_labelpresent_{_meta_label(k)}"] = "true"
        for c in spec.get("containers", []):
            for port in c.get("ports", []):
                groups.append({"targets": [f"{status['podIP']}:{port['containerPort']}"],
                               "labels": {**labels,
                                          "__meta_kubernetes_pod_container_name": c["name"],
                                          "__meta_kubernetes_pod_container_port_name":
                                              port.get("name", ""),
                                          "__meta_kubernetes_pod_container_port_number":
                                              str(port["containerPort"])}})
    return groups


class Prometheus:
    """`prometheus` (Debian's binary) on this host with the given configuration (a dict), its own
    port and data directory under work; no proxy reaches it or is used by it. Stop it with stop();
    it dies with its parent too."""

    def __init__(self, work: pathlib.Path, config: dict, ready_timeout: float = 90):
        work.mkdir(parents=True, exist_ok=True)
        (work / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.time()
        self.logfile = work / "prometheus.log"
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        with open(self.logfile, "w") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={work / 'prometheus.yml'}",
                 f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=_set_pdeathsig)
        self._wait("prometheus ready", self._ready, ready_timeout)

    def _wait(self, what, fn, timeout):
        deadline = time.monotonic() + timeout
        while not fn():
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited:\n{self.logfile.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise PrometheusError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.25)

    def _ready(self) -> bool:
        try:
            with _NO_PROXY.open(self.url + "/-/ready", timeout=5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with _NO_PROXY.open(url, timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict, float]]:
        """Instant query (at unix time `at`, default now): [(labels, value)]."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr}: a {data['resultType']}, not a vector")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class ClusterPrometheus(Prometheus):
    """Prometheus with the documented scrape jobs (the host routes the pod CIDRs,
    so it reaches pods as a Prometheus in the cluster would). Debian's Prometheus is built without
    Kubernetes service discovery, so each job's `kubernetes_sd_configs` is replaced by a file the
    harness writes from the API server's pod list with the same `__meta_kubernetes_*` labels
    (pod_targets; refresh it with discover()); the documented relabel_configs run unchanged."""

    def __init__(self, work: pathlib.Path, kubectl, interval: str = "5s"):
        """kubectl(*args) -> CompletedProcess runs kubectl against the cluster."""
        work.mkdir(parents=True, exist_ok=True)
        self.kubectl = kubectl
        self.targets_file = work / "pods.json"
        self.discover()
        jobs = documented_scrape_jobs()
        for job in jobs:
            if job.pop("kubernetes_sd_configs", None) != [{"role": "pod"}]:
                raise PrometheusError(f"{SCRAPE_DOC}: job {job['job_name']} does not discover "
                                      "pods (kubernetes_sd_configs: [{role: pod}])")
            job["file_sd_configs"] = [{"files": [str(self.targets_file)],
                                       "refresh_interval": "5s"}]
            job["scrape_interval"] = interval
        super().__init__(work, {"global": {"scrape_interval": interval}, "scrape_configs": jobs})

    def discover(self) -> None:
        """Rewrites the target file from the cluster's pods now (Prometheus rereads it)."""
        pods = json.loads(self.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pod_targets(pods)))
        tmp.rename(self.targets_file)

    def targets_up(self) -> dict[str, list[dict]]:
        """{job: [target labels]} of the targets whose last scrape succeeded."""
        up = {}
        for t in self.api("targets", state="active")["activeTargets"]:
            if t["health"] == "up":
                up.setdefault(t["labels"]["job"], []).append(t["labels"])
        return up

    def wait_scraped_after(self, t: float, targets: int, timeout: float = 120) -> None:
        """Waits until `targets` targets have been scraped since unix time t."""
        def done():
            stamps = [v for _, v in self.query("timestamp(up == 1)")]
            return len([s for s in stamps if s > t]) >= targets
        self._wait(f"{targets} targets scraped after {t:.0f}", done, timeout)

    def dashboard(self) -> dict[str, list[list[tuple[dict, float]]]]:
        """{panel title: [series per target]}: every dashboard query, "All" selected, over a
        window from Prometheus' start to now."""
        window = f"{int(time.time() - self.started) + 15}s"
        results: dict[str, list] = {}
        for panel, target in dashboard_targets(load_dashboard()):
            results.setdefault(panel["title"], []).append(
                self.query(substitute(target["expr"], window)))
        return results

