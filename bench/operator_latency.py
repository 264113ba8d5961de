#!/usr/bin/env python3
"""buildcache-operator against a real kube-apiserver: reconcile latency, webhook latency, memory.

Starts etcd + kube-apiserver (tests/harness/controlplane.py, no controller manager: nothing here
needs one, and it would only add load) and the operator from BUILDCACHE_BIN_DIR (default
build/bin), with its admission webhook on loopback (certificates made here with openssl and
passed as --webhook-cert-dir, the cert-manager mode), then measures:

  latency  create -> DaemonSet: a BuildCache is created with a direct API POST (what kubectl apply
           does for a new object, without kubectl's start-up); the time until a DaemonSet watch
           delivers ADDED for its DaemonSet. Spec change -> DaemonSet updated: a merge PATCH of
           the BuildCache's pypi upstream; the time until the watch delivers the DaemonSet with a
           new config-hash. --runs of each. Target p99 < 1 s.
  webhook  AdmissionReview POSTs straight to the operator's /mutate-pods at a steady --rate for
           --seconds (open loop: latency is measured from each request's scheduled time, so a
           stall is not hidden), over one kept-alive TLS connection as the API server uses, and
           over a new connection per request. Then the same rate of pod creations through the
           API server with the MutatingWebhookConfiguration in place, and without it (baseline).
           Target p99 < 10 ms (direct).
  rss      --caches BuildCaches and --pods pods (annotated for the webhook; with no kubelet they
           stay Pending) created through the API; once every BuildCache has been reconciled the
           operator's VmRSS and VmHWM from /proc. Target < 150 MiB.

Prints each number next to its target; --only picks sections.
"""

import argparse
import http.client
import json
import os
import pathlib
import platform
import queue
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from harness.controlplane import ControlPlane  # noqa: E402

BIN_DIR = pathlib.Path(os.environ.get("BUILDCACHE_BIN_DIR", REPO / "build" / "bin"))
CRD = REPO / "crds" / "buildcache.io_buildcaches.yaml"
NS = "bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def summary(name, seconds, target_ms=None):
    ms = [s * 1000 for s in seconds]
    med, p99 = statistics.median(ms), percentile(ms, 99)
    line = f"{name}: n={len(ms)} median={med:.1f} ms p99={p99:.1f} ms max={max(ms):.1f} ms"
    if target_ms:
        line += f"  (target p99 < {target_ms} ms: {'met' if p99 < target_ms else 'MISSED'}, " \
                f"p99/target = {p99 / target_ms:.2f})"
    print(line, flush=True)
    return {"n": len(ms), "median_ms": med, "p99_ms": p99, "max_ms": max(ms)}


class Api:
    """Admin requests to the API server over one kept-alive TLS connection per thread."""

    def __init__(self, cp):
        self.host, self.port = "127.0.0.1", cp.port
        self.ctx = cp.ssl_context()
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self.local.conn = c
        return c

    def request(self, method, path, body=None, content_type="application/json"):
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            c = self._conn()
            try:
                c.request(method, path, body=data, headers={"Content-Type": content_type,
                                                            "Accept": "application/json"})
                resp = c.getresponse()
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.conn = None
                if attempt == 1:
                    raise


class Watch(threading.Thread):
    """Watches DaemonSets in NS; records (arrival time, event) per DaemonSet name."""

    def __init__(self, cp):
        super().__init__(daemon=True)
        self.cp = cp
        self.events = queue.Queue()
        self.ready = threading.Event()

    def run(self):
        ctx = self.cp.ssl_context()
        conn = http.client.HTTPSConnection("127.0.0.1", self.cp.port, context=ctx, timeout=3600)
        conn.request("GET", f"/apis/apps/v1/namespaces/{NS}/daemonsets?watch=true"
                            "&allowWatchBookmarks=false&timeoutSeconds=3600")
        resp = conn.getresponse()
        self.ready.set()
        buf = b""
        while True:
            try:
                chunk = resp.read1(65536)
            except (http.client.HTTPException, OSError):
                return  # the control plane stopped
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    self.events.put((now, json.loads(line)))

    def wait(self, pred, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching DaemonSet event")
            try:
                t, ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if pred(ev):
                return t, ev


def buildcache(name, upstream="https://pypi.example.internal/simple/"):
    return {"apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"storage": {"maxSize": "10Gi"},
                     "ecosystems": {"pypi": {"upstream": upstream}, "httpcache": {}},
                     "directories": [{"name": "gobuild", "mountPath": "/root/.cache/go-build",
                                      "maxSize": "5Gi"}]}}


BC_PATH = f"/apis/buildcache.io/v1alpha1/namespaces/{NS}/buildcaches"


def bench_latency(cp, api, runs):
    watch = Watch(cp)
    watch.start()
    watch.ready.wait(10)
    # The first BuildCache after the CRD is installed waits on the API server's cold caches for
    # the new resource (about 2 s here, most of it before the POST returns): reported, not counted.
    t0 = time.monotonic()
    status, body = api.request("POST", BC_PATH, buildcache("warm-up"))
    posted = time.monotonic() - t0
    assert status == 201, body
    t1, _ = watch.wait(lambda e: e["type"] == "ADDED" and
                       e["object"]["metadata"]["name"] == "buildcache-warm-up")
    print(f"first BuildCache after installing the CRD (not counted): {(t1 - t0) * 1000:.0f} ms, "
          f"of which the POST {posted * 1000:.0f} ms", flush=True)
    create = []
    for i in range(runs):
        name = f"lat-{i}"
        t0 = time.monotonic()
        status, body = api.request("POST", BC_PATH, buildcache(name))
        assert status == 201, body
        t1, _ = watch.wait(lambda e: e["type"] == "ADDED" and
                           e["object"]["metadata"]["name"] == f"buildcache-{name}")
        create.append(t1 - t0)
    result = {"create": summary("create -> DaemonSet exists", create, 1000),
              "create_ms": [round(x * 1000, 1) for x in create]}

    update = []
    ds_name = "buildcache-lat-0"
    hash_of = lambda ds: ds["spec"]["template"]["metadata"]["annotations"][  # noqa: E731
        "buildcache.io/config-hash"]
    status, ds = api.request("GET", f"/apis/apps/v1/namespaces/{NS}/daemonsets/{ds_name}")
    assert status == 200, ds
    last = hash_of(ds)
    for i in range(runs):
        t0 = time.monotonic()
        status, body = api.request(
            "PATCH", f"{BC_PATH}/lat-0",
            {"spec": {"ecosystems": {"pypi": {"upstream": f"https://pypi{i}.example.internal/"}}}},
            content_type="application/merge-patch+json")
        assert status == 200, body
        t1, ev = watch.wait(lambda e: e["object"]["metadata"]["name"] == ds_name and
                            hash_of(e["object"]) != last)
        last = hash_of(ev["object"])
        update.append(t1 - t0)
    result["update"] = summary("spec change -> DaemonSet updated", update, 1000)
    return result


def make_certs(d):
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench-ca")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.crt"


def review(i):
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": f"uid-{i}", "operation": "CREATE", "namespace": NS,
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "object": pod(f"direct-{i}")}}


def pod(name):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                         "annotations": {"buildcache.io/cache": "lat-0"}},
            "spec": {"automountServiceAccountToken": False,
                     "containers": [{"name": "build", "image": "builder.example.internal/ci:1"}]}}


def open_loop(rate, seconds, send, workers=16):
    """Calls send(i) at a steady rate from a pool of workers (each with its own connection), so a
    slow answer does not delay the next request; latency is from each call's scheduled time."""
    n = int(rate * seconds)
    start = time.monotonic() + 0.2
    jobs = queue.Queue()
    lat = [None] * n
    errors = []

    def work():
        while (job := jobs.get()) is not None:
            i, scheduled = job
            try:
                send(i)
            except Exception as err:  # noqa: BLE001
                errors.append(err)
            lat[i] = time.monotonic() - scheduled
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        jobs.put((i, scheduled))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return lat


def histogram(url, name):
    """{le: cumulative count} of a histogram on a /metrics page."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        out[float(m.group(1))] = float(m.group(2))
    return out


def histogram_p99(before, after):
    """The upper bound of the bucket holding the 99th percentile of the samples in between."""
    delta = sorted((le, after[le] - before.get(le, 0)) for le in after)
    total = delta[-1][1]
    for le, count in delta:
        if count >= 0.99 * total:
            return le, total
    return float("inf"), total


def bench_webhook(cp, api, port, ca_file, rate, seconds, metrics_url):
    ctx = ssl.create_default_context(cafile=str(ca_file))
    result = {}
    local = threading.local()

    def post(path, body):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx,
                                                            timeout=10)
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()

    def send_keepalive(i):
        status, raw = post("/mutate-pods", json.dumps(review(i)))
        body = json.loads(raw)
        assert status == 200 and body["response"]["allowed"] and \
            body["response"].get("patch"), body

    def send_healthz(i):
        assert post("/healthz", None)[0] == 200
    # Warm up (connections, first lookups).
    open_loop(rate, 1, send_keepalive)
    base = summary(f"baseline: GET /healthz on the same server, kept-alive, {rate}/s for {seconds}s",
                   open_loop(rate, seconds, send_healthz))
    result["direct_healthz_baseline"] = base
    hist = "buildcache_webhook_admission_duration_seconds"
    before = histogram(metrics_url, hist)
    result["direct_keepalive"] = summary(
        f"webhook direct, kept-alive connections, {rate}/s for {seconds}s",
        open_loop(rate, seconds, send_keepalive), 10)
    le, total = histogram_p99(before, histogram(metrics_url, hist))
    print(f"  in the operator (admission_duration histogram, {total:.0f} reviews): p99 <= "
          f"{le * 1000:g} ms; client p99 / baseline p99 = "
          f"{result['direct_keepalive']['p99_ms'] / base['p99_ms']:.2f}", flush=True)
    result["direct_server_p99_bucket_ms"] = le * 1000

    def send_new_conn(i):
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        c.request("POST", "/mutate-pods", body=json.dumps(review(i)),
                  headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        resp.read()
        c.close()
        assert resp.status == 200
    result["direct_new_connection"] = summary(
        f"webhook direct, new TLS connection per review, {rate}/s for {seconds}s",
        open_loop(rate, seconds, send_new_conn))

    pods_path = f"/api/v1/namespaces/{NS}/pods"
    counter = iter(range(10**9))

    def create_pod(prefix):
        def send(i):
            name = f"{prefix}-{next(counter)}"
            status, body = api.request("POST", pods_path, pod(name))
            assert status == 201, body
            if prefix == "hooked":
                env = body["spec"]["containers"][0].get("env", [])
                assert any(e["name"] == "PIP_INDEX_URL" for e in env), body
        return send

    for i in range(10):
        create_pod("warm")(i)
    result["pod_create_without_webhook"] = summary(
        f"pod create via API server, no webhook, {rate}/s for {seconds}s",
        open_loop(rate, seconds, create_pod("plain")))
    config = {"apiVersion": "admissionregistration.k8s.io/v1",
              "kind": "MutatingWebhookConfiguration", "metadata": {"name": "buildcache-bench"},
              "webhooks": [{"name": "pods.buildcache.io",
                            "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate-pods",
                                             "caBundle": __import__("base64").b64encode(
                                                 ca_file.read_bytes()).decode()},
                            "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                       "operations": ["CREATE"], "resources": ["pods"],
                                       "scope": "Namespaced"}],
                            "failurePolicy": "Fail", "sideEffects": "None",
                            "admissionReviewVersions": ["v1"], "timeoutSeconds": 10}]}
    status, body = api.request("POST",
                               "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                               config)
    assert status == 201, body
    # The API server picks the configuration up asynchronously: wait until pods get mutated.
    deadline = time.monotonic() + 30
    while True:
        status, body = api.request("POST", pods_path, pod(f"probe-{next(counter)}"))
        if body["spec"]["containers"][0].get("env"):
            break
        assert time.monotonic() < deadline, "webhook never called"
        time.sleep(0.2)
    hooked = summary(f"pod create via API server, with webhook, {rate}/s for {seconds}s",
                     open_loop(rate, seconds, create_pod("hooked")))
    result["pod_create_with_webhook"] = hooked
    print(f"  webhook adds {hooked['p99_ms'] - result['pod_create_without_webhook']['p99_ms']:.1f}"
          f" ms at p99, {hooked['median_ms'] - result['pod_create_without_webhook']['median_ms']:.1f}"
          " ms at the median", flush=True)
    return result


def memory(pid):
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    get = lambda k: int(re.search(rf"{k}:\s+(\d+) kB", text).group(1)) / 1024  # noqa: E731
    return {"VmRSS_MiB": get("VmRSS"), "VmHWM_MiB": get("VmHWM")}


def parallel(n, threads, fn):
    it = iter(range(n))
    lock = threading.Lock()
    errors = []

    def work():
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                return
            try:
                fn(i)
            except Exception as err:  # noqa: BLE001
                errors.append(err)
                return
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def bench_rss(cp, api, op_pid, caches, pods):
    print(f"operator before: {memory(op_pid)}", flush=True)
    existing = 0

    def make_bc(i):
        status, body = api.request("POST", BC_PATH, buildcache(f"rss-{i}"))
        assert status == 201, body
    t0 = time.monotonic()
    deadline = time.monotonic() + 30
    while (st := api.request("GET", BC_PATH))[0] != 200:  # the CRD's path right after Established
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    existing = len(st[1]["items"])
    parallel(max(0, caches - existing), 4, make_bc)
    print(f"created {caches - existing} BuildCaches in {time.monotonic() - t0:.0f} s", flush=True)
    have = len(api.request("GET", f"/api/v1/namespaces/{NS}/pods")[1].get("items", []))

    def make_pod(i):
        p = pod(f"rss-{i}")
        p["metadata"]["annotations"]["buildcache.io/cache"] = f"rss-{i % caches}"
        status, body = api.request("POST", f"/api/v1/namespaces/{NS}/pods", p)
        assert status == 201, body
    t0 = time.monotonic()
    parallel(max(0, pods - have), 4, make_pod)
    print(f"created {max(0, pods - have)} pods ({pods} in all with the webhook benchmark's) in "
          f"{time.monotonic() - t0:.0f} s", flush=True)

    deadline = time.monotonic() + 900
    while True:
        items = api.request("GET", BC_PATH)[1]["items"]
        done = sum(1 for b in items if b.get("status", {}).get("observedGeneration") ==
                   b["metadata"]["generation"])
        if done == len(items):
            break
        assert time.monotonic() < deadline, f"only {done} of {len(items)} reconciled"
        time.sleep(2)
    print(f"all {len(items)} BuildCaches reconciled", flush=True)
    time.sleep(5)
    m = memory(op_pid)
    target = 150
    print(f"operator with {len(items)} BuildCaches and {pods}+ pods: VmRSS {m['VmRSS_MiB']:.1f} "
          f"MiB, VmHWM {m['VmHWM_MiB']:.1f} MiB (target < {target} MiB: "
          f"{'met' if m['VmHWM_MiB'] < target else 'MISSED'}, ratio {m['VmHWM_MiB'] / target:.2f})",
          flush=True)
    return {**m, "buildcaches": len(items)}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--caches", type=int, default=500)
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--only", default="latency,webhook,rss")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    only = set(args.only.split(","))

    print(f"machine: {platform.uname()}, nproc {os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="operator-bench-"))
    cp = ControlPlane(work / "cp")
    cp.start()
    op = None
    try:
        cp.apply_crd(CRD)
        cp.kubectl("create", "namespace", NS)
        cp.kubectl("create", "serviceaccount", "default", "-n", NS, check=False)
        ca = make_certs(work / "certs")
        port, metrics_port = free_port(), free_port()
        log = open(work / "operator.log", "w")
        op = subprocess.Popen(
            [str(BIN_DIR / "buildcache-operator"), "--kubeconfig", str(cp.kubeconfig),
             "--agent-image", "buildcache-agent:bench", "--namespace", NS,
             "--metrics-addr", f"127.0.0.1:{metrics_port}", "--log-level", "info",
             "--webhook-listen", f"127.0.0.1:{port}", "--webhook-cert-dir", str(work / "certs")],
            stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert op.poll() is None, (work / "operator.log").read_text()
                assert time.monotonic() < deadline, "webhook never listened"
                time.sleep(0.2)
        # Measure from a synced controller: the first list of every informer is start-up cost.
        while True:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                        f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert op.poll() is None and time.monotonic() < deadline + 60, "operator never ready"
            time.sleep(0.2)
        api = Api(cp)
        results = {"machine": " ".join(platform.uname()), "nproc": os.cpu_count(),
                   "loadavg_before": os.getloadavg()[0]}
        if "latency" in only or "webhook" in only:
            results["latency"] = bench_latency(cp, api, args.runs)
        if "webhook" in only:
            results["webhook"] = bench_webhook(cp, api, port, ca, args.rate, args.seconds,
                                               f"http://127.0.0.1:{metrics_port}/metrics")
        if "rss" in only:
            results["rss"] = bench_rss(cp, api, op.pid, args.caches, args.pods)
        results["loadavg_after"] = os.getloadavg()[0]
        print(f"load average after: {results['loadavg_after']:.2f}")
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
        assert op.poll() is None, "operator exited"
    finally:
        if op is not None and op.poll() is None:
            op.terminate()
            op.wait(20)
        cp.stop()


if __name__ == "__main__":
    main()
