"""The Grafana dashboard and the Prometheus rules against a real Prometheus scraping real agents
and a real operator.

Two agents (A with a Maven upstream fixture, B with a tiny quota so it evicts), a replicating
pair (C and D, peers of each other over gRPC on loopback, each object owned by one of them, both
with a PyPI fixture index and a wheel builder: a fake interpreter that answers the probe and
"builds" a prepared wheel after a pause, so one build runs and the other node's request joins
it), the
operator (reconciling BuildCaches in a real kube-apiserver, and answering pod admission reviews
on its webhook) and a real `prometheus` server scraping them all every second on loopback, with
the rule file loaded.

A small workload runs in two phases. The warm-up creates every labelled series; once Prometheus
has scraped it, the measured phase runs, and every query of every dashboard panel is evaluated
through /api/v1/query with the dashboard variables substituted and a rate window that starts
after the warm-up: so each panel must return data, and the hit ratios and byte counts must be
the ones the measured phase implies. Agent A is scraped with the labels a ServiceMonitor adds
(namespace, buildcache, node), agent B with none, as on a laptop: the same queries must work for
both. The recording rules must produce series and the agent-down alert must go pending when B
stops.

Panels for features this test does not exercise are listed in NOT_EXERCISED with the reason.
"""

import base64
import hashlib
import http.client
import http.server
import json
import math
import pathlib
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile

import pytest

from conftest import BIN_DIR, REPO, Agent, metric, parse_metrics

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.controlplane import free_port  # noqa: E402
from harness.cpfixture import running_control_plane  # noqa: E402
from harness.dashboard import (Prometheus, dashboard_targets, load_dashboard,  # noqa: E402
                               substitute)
from harness.webhook import loopback_webhook_configuration  # noqa: E402
from test_pypi import FixtureIndex  # noqa: E402

DASHBOARD = REPO / "charts" / "buildcache" / "dashboards" / "buildcache.json"
RULES = REPO / "charts" / "buildcache" / "rules" / "buildcache-rules.yaml"
RULE_TESTS = REPO / "charts" / "buildcache" / "rules" / "tests"
OPERATOR = BIN_DIR / "buildcache-operator"
CRD = REPO / "crds" / "buildcache.io_buildcaches.yaml"
NS = "ci-system"
WEBHOOK_CONFIG = "buildcache-dashboard-test"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Panel title -> why its queries may return nothing here. Keep it short: every entry is a panel
# a broken metric name could hide in.
DIRCACHE = ("no directory caches are configured here: tests/integration/test_dircache_netns.py "
            "drives them")
NOT_EXERCISED = {
    "Directory cache traffic": DIRCACHE,
    "Directory cache sync lag": DIRCACHE,
}

KIB = 1024
A_LABELS = {"namespace": NS, "buildcache": "ci", "node": "node-a"}
PEERS_NS = "team-b"


# Callers of agent D with a scope of their own (the namespace label of the "Saved by namespace"
# panels): tokens from D's tokens file.
SCOPE_TOKENS = {"web": "web-token-0123456789abcdef", "data": "data-token-0123456789abcdef"}


def peer_labels(node):
    return {"namespace": PEERS_NS, "buildcache": "shared", "node": node}


def wait_for(what, fn, timeout=60.0, interval=0.25, detail=lambda: ""):
    """Polls fn until it returns a truthy value, which is returned; fails on timeout, with
    detail() in the message."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r}) {detail()}",
                pytrace=False)


# --- a Maven repository on loopback -------------------------------------------------------------

def write_peer_pair_configs(work, maven_url, pypi_url=None, builder=None):
    """Writes work/c.yaml and work/d.yaml: two agents that are each other's peers, with copies 1,
    so a jar one of them does not own is fetched from its owner, which fetches it upstream. With
    pypi_url and builder (an interpreter), both also build wheels (one build per sdist between
    them: the sdist's owner runs it)."""
    ports = {"c": free_port(), "d": free_port()}
    pypi = ""
    if pypi_url:
        pypi = (f"pypi:\n  upstream: {pypi_url}\n  metadataTtl: 0s\n  buildSandbox: none\n"
                f"  builders:\n    - name: fake-py311\n      python: {builder}\n")
    for name, other in (("c", "d"), ("d", "c")):
        (work / f"{name}.yaml").write_text(
            f"maven:\n  upstream: {maven_url}\n{pypi}replication:\n"
            f"  listen: 127.0.0.1:{ports[name]}\n  advertise: 127.0.0.1:{ports[name]}\n"
            f"  copies: 1\n  peers: [127.0.0.1:{ports[other]}]\n")


# A pip User-Agent the fake builder serves (CPython 3.11, glibc 2.36, x86_64).
PIP_UA = ('pip/24.0 {"cpu":"x86_64","distro":{"libc":{"lib":"glibc","version":"2.36"}},'
          '"implementation":{"name":"CPython","version":"3.11.7"},"python":"3.11.7",'
          '"system":{"name":"Linux","release":"6.1"}}')
WHEEL = "dashwheel-1.0-py3-none-any.whl"


def fake_builder(work):
    """An sdist for the fixture index, and an interpreter the agent's wheel builder runs: it
    answers the builder probe, reads no build requirements (the defaults), pretends to download
    them, and "builds" a prepared, well-formed wheel after a pause long enough for a second
    request to join the build."""
    sdist = work / "dashwheel-1.0.tar.gz"
    sdist.write_bytes(b"sdist of dashwheel 1.0 " * 64)
    wheel = work / "prepared" / WHEEL
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("dashwheel/__init__.py", "")
        z.writestr("dashwheel-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: dashwheel\nVersion: 1.0\n")
        z.writestr("dashwheel-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
    probe = json.dumps({"implementation": "CPython", "python": "3.11.2", "system": "Linux",
                        "cpu": "x86_64", "lib": "glibc", "libc_version": "2.36", "pip": "23.0.1",
                        "setuptools": "66.1.1", "wheel": "0.38.4"})
    python = work / "fake-python"
    python.write_text(f"""#!/bin/sh
case "$*" in
  *libc_ver*) echo '{probe}' ;;
  *"-m pip download"*) exit 0 ;;
  *"-m pip wheel"*) sleep 5; while [ $# -gt 2 ]; do shift; done; cp {wheel} "$1/" ;;
  *) echo '{{"requires": null}}' ;;
esac
""")
    python.chmod(0o755)
    return sdist, python


class MavenFixture:
    """Serves jars with .sha1 files; /broken/ answers 500; a jar whose .sha1 does not match."""

    def __init__(self):
        self.files = {}
        fixture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if "/broken/" in self.path:
                    self.send_error(500)
                    return
                body = fixture.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def jar_path(artifact, version):
        return f"/maven/io/example/{artifact}/{version}/{artifact}-{version}.jar"

    def add_jar(self, artifact, version, size, good_digest=True):
        path = f"/io/example/{artifact}/{version}/{artifact}-{version}.jar"
        body = hashlib.sha256(path.encode()).digest() * (size // 32)
        digest = hashlib.sha1(body if good_digest else b"other").hexdigest()
        self.files[path] = body
        self.files[path + ".sha1"] = digest.encode()
        return "/maven" + path, body

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- Prometheus ---------------------------------------------------------------------------------

def start_prometheus(workdir, targets, operator_target):
    """Prometheus scraping the agents at targets ([(address, labels)]) and the operator every
    second, with the chart's recording and alerting rules."""
    static = [{"targets": [t], "labels": labels} for t, labels in targets]
    scrape = [{"job_name": "buildcache-agent", "scrape_interval": "1s",
               "static_configs": static}]
    if operator_target:
        scrape.append({"job_name": "buildcache-operator", "scrape_interval": "1s",
                       "static_configs": [{"targets": [operator_target]}]})
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(RULES)], "scrape_configs": scrape}
    return Prometheus(pathlib.Path(workdir), config, ready_timeout=60)


# --- the operator -------------------------------------------------------------------------------

class Operator:
    def __init__(self, kubeconfig, webhook_port):
        self.logs = []
        self.proc = subprocess.Popen(
            [str(OPERATOR), "--kubeconfig", str(kubeconfig), "--agent-image", "agent:dash",
             "--namespace", NS, "--metrics-addr", "127.0.0.1:0",
             "--webhook-listen", f"127.0.0.1:{webhook_port}",
             "--webhook-configuration", WEBHOOK_CONFIG],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        entry = wait_for("operator metrics address", self._listening, timeout=60)
        self.address = entry["address"]

    def _read(self):
        for line in self.proc.stderr:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"msg": "<raw>", "line": line})

    def _listening(self):
        if self.proc.poll() is not None:
            pytest.fail(f"operator exited {self.proc.returncode}: {self.logs[-20:]}",
                        pytrace=False)
        return next((e for e in list(self.logs) if e.get("msg") == "metrics listening"), None)

    def metric(self, name):
        """Sum of the family's samples in the operator's own /metrics."""
        with NO_PROXY.open(f"http://{self.address}/metrics", timeout=5) as resp:
            return metric(parse_metrics(resp.read().decode()), name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def buildcache(name, generation_hint="", **extra):
    spec = {"storage": {"maxSize": "10Gi"},
            "ecosystems": {"httpcache": {}, "pypi": {"upstream":
                                                     "https://pypi.example.internal/simple/"}},
            **extra}
    meta = {"name": name, "namespace": NS}
    if generation_hint:
        meta["annotations"] = {"test/generation": generation_hint}
    return {"apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache", "metadata": meta,
            "spec": spec}


def annotated_pod():
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "job-" + uuid.uuid4().hex[:8], "namespace": NS,
                         "annotations": {"buildcache.io/cache": "ci"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    if not OPERATOR.exists():
        pytest.fail(f"{OPERATOR} is missing: build the buildcache-operator target", pytrace=False)
    with running_control_plane(tmp_path_factory.mktemp("cp"), crd=CRD, namespaces=(NS,)) as plane:
        yield plane


def admit(s):
    """Sends one AdmissionReview for an annotated pod to the operator's webhook, the way the API
    server would, and returns True when the pod is mutated.

    The operator's certificate names its Service (buildcache-webhook.<ns>.svc), which a test API
    server on loopback cannot reach by name, so curl plays the API server: TLS verified against
    the caBundle the operator wrote into the MutatingWebhookConfiguration, with the Service name
    resolved to the webhook's loopback port."""
    cp, port = s["cp"], s["webhook_port"]
    config = json.loads(cp.kubectl("get", "mutatingwebhookconfiguration", WEBHOOK_CONFIG,
                                   "-o", "json").stdout)
    ca = config["webhooks"][0]["clientConfig"].get("caBundle")
    if not ca:
        return False  # the operator has not written it yet
    secret = json.loads(cp.kubectl("get", "secrets", "-A", "--field-selector",
                                   "metadata.name=buildcache-webhook-tls", "-o", "json").stdout)
    host = f"buildcache-webhook.{secret['items'][0]['metadata']['namespace']}.svc"
    (s["work"] / "ca.crt").write_bytes(base64.b64decode(ca))
    pod = annotated_pod()
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": str(uuid.uuid4()), "operation": "CREATE", "namespace": NS,
                          "kind": {"group": "", "version": "v1", "kind": "Pod"},
                          "resource": {"group": "", "version": "v1", "resource": "pods"},
                          "object": pod}}
    out = subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "10", "--noproxy", "*",
         "--cacert", str(s["work"] / "ca.crt"), "--resolve", f"{host}:{port}:127.0.0.1",
         "-H", "Content-Type: application/json", "--data-binary", "@-",
         f"https://{host}:{port}/mutate-pods"],
        input=json.dumps(review), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    response = json.loads(out.stdout)["response"]
    assert response["allowed"] is True, response
    patch = json.loads(base64.b64decode(response.get("patch", "") or "W10="))
    return "BUILDCACHE_HTTP_CACHE_URL" in json.dumps(patch)


# --- the dashboard ------------------------------------------------------------------------------

def test_dashboard_json_is_generated_and_well_formed():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "gen_dashboard.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "buildcache", "node", "instance"):
        assert variables[name]["allValue"] == ".*", name  # also matches a missing label
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    assert len(titles) == len(set(titles))  # the test finds panels by title
    for panel, target in dashboard_targets(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    assert set(NOT_EXERCISED) <= {p["title"] for p in dashboard["panels"]}


def exported_families():
    """Every family the agent (docs/metrics.md, kept exact by test_agent.py) and the operator
    (its metric catalogs) export, and Prometheus's own `up`."""
    families = set(re.findall(r"^\| `(buildcache_[a-z_]+)`", (REPO / "docs" / "metrics.md")
                              .read_text(), re.M))
    for catalog in ("operator/controllers/metrics_catalog.cc",
                    "operator/webhook/webhook_metrics.cc"):
        families |= set(re.findall(r'"(buildcache_[a-z_]+)"', (REPO / catalog).read_text()))
    return families | {"up"}


def referenced_families(text):
    # Metric names, not recording rules (level:metric:operations) nor label names.
    names = set(re.findall(r"(?<![:\w])buildcache_[a-z_]+(?![:\w])", text))
    names |= set(re.findall(r"\bup(?=\s*[{\[])", text))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_dashboard_and_rules_use_only_exported_families():
    """Covers the panels this test cannot exercise (NOT_EXERCISED) as well."""
    families = exported_families()
    assert "buildcache_requests_total" in families
    exprs = "\n".join(t["expr"] for _, t in dashboard_targets(load_dashboard()))
    used = referenced_families(exprs)
    assert len(used) > 20
    assert used <= families, used - families
    rules = referenced_families(RULES.read_text())
    assert rules <= families, rules - families


def test_promtool_checks_and_unit_tests_the_rules():
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted(RULE_TESTS.glob("*.yaml"))
    assert tests
    run = subprocess.run(["promtool", "test", "rules", *map(str, tests)], capture_output=True,
                         text=True, cwd=RULE_TESTS)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("SUCCESS") == len(tests), run.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory, control_plane):
    """Agents, operator, fixture and Prometheus, with the warm-up done and scraped."""
    work = tmp_path_factory.mktemp("dash")
    maven = MavenFixture()
    config_a = work / "a.yaml"
    config_a.write_text(f"maven:\n  upstream: {maven.url}\nstore:\n  maxSize: 64Mi\n"
                        "httpcache:\n  maxObjectSize: 1Mi\n")
    # B: a quota of 5 objects of 200 KiB, so the measured phase evicts.
    config_b = work / "b.yaml"
    config_b.write_text("store:\n  maxSize: 1Mi\nhttpcache:\n  maxObjectSize: 256Ki\n")
    pypi = FixtureIndex()
    sdist, builder = fake_builder(work)
    pypi.files["dashwheel"] = [sdist]
    write_peer_pair_configs(work, maven.url, pypi.url, builder)
    # D knows two caller scopes by their tokens (the "Saved by namespace" row); its other callers
    # stay anonymous readers.
    (work / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f'  - {{token: "{token}", scope: {scope}}}\n'
                               for scope, token in SCOPE_TOKENS.items()))
    with open(work / "d.yaml", "a") as d_config:
        d_config.write(f"identity:\n  tokensFile: {work / 'tokens.yaml'}\n")
    agents = []
    operator = prometheus = None
    try:
        agents.append(Agent(work / "data-a", config=config_a))
        agents.append(Agent(work / "data-b", config=config_b))
        agents.append(Agent(work / "data-c", config=work / "c.yaml"))
        agents.append(Agent(work / "data-d", config=work / "d.yaml"))
        a, b, c, d = agents
        cp = control_plane
        webhook_port = free_port()
        cp.kubectl("create", "-f", "-", input=json.dumps(loopback_webhook_configuration(
            WEBHOOK_CONFIG, webhook_port, {"matchLabels": {"kubernetes.io/metadata.name": NS}})))
        operator = Operator(cp.kubeconfig, webhook_port)
        prometheus = start_prometheus(work, [(a.address, A_LABELS), (b.address, {}),
                                             (c.address, peer_labels("node-c")),
                                             (d.address, peer_labels("node-d"))],
                                      operator.address)
        yield {"a": a, "b": b, "c": c, "d": d, "maven": maven, "pypi": pypi, "operator": operator,
               "prom": prometheus, "cp": cp, "work": work, "webhook_port": webhook_port}
    finally:
        if prometheus:
            prometheus.stop()
        if operator:
            operator.stop()
        for agent in agents:
            agent.stop()
        maven.close()
        pypi.close()


def http_get(agent, path):
    """GET through the agent; returns (status, body) for any status, ("aborted", b"") when the
    agent cut the transfer (it streams before the digest is known, so a mismatch aborts)."""
    try:
        status, body, _ = agent.get(path)
        return status, body
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (ConnectionError, http.client.IncompleteRead):
        return "aborted", b""


def warm_up(s):
    """Touches every series the measured phase increments, so the rate window that starts after
    it sees every increment of the measured phase."""
    a, b, maven, cp = s["a"], s["b"], s["maven"], s["cp"]
    for agent in (a, b):
        assert agent.put("/cache/warm/k", b"w" * KIB)[0] // 100 == 2
        assert http_get(agent, "/cache/warm/k")[0] == 200
        assert http_get(agent, "/cache/warm/missing")[0] == 404
    action = "/cache/gocache/v1/a/"  # gocacheprog's action entries: stored, hit, missed
    assert a.put(action + "c3" * 32, b"w" * KIB)[0] // 100 == 2
    assert http_get(a, action + "c3" * 32)[0] == 200
    assert http_get(a, action + "d4" * 32)[0] == 404
    jar, _ = maven.add_jar("warm", "1.0", 4 * KIB)
    assert http_get(a, jar)[0] == 200  # from upstream
    assert http_get(a, jar)[0] == 200  # local
    assert http_get(a, "/maven/io/example/none/1.0/none-1.0.jar")[0] == 404
    assert http_get(a, "/maven/io/example/broken/1.0/broken-1.0.jar")[0] == 502
    bad, _ = maven.add_jar("tampered", "1.0", 4 * KIB, good_digest=False)
    assert http_get(a, bad)[0] in (502, "aborted")
    # D: jars owned by C come from C (peer), the others from the upstream; new objects are
    # pushed to their owner.
    for i in range(8):
        assert http_get(s["d"], maven.add_jar(f"warm-peer{i}", "1.0", 4 * KIB)[0])[0] == 200
    # D's scoped callers: a hit each, and an upstream fetch (a miss) for "data".
    for scope in SCOPE_TOKENS:
        assert scope_get(s["d"], scope, maven.jar_path("warm-peer0", "1.0"))[0] == 200
    scope_read_until_upstream(s, "data", "warm-data")
    cp.kubectl("apply", "-f", "-", input=json.dumps(buildcache("ci")))
    wait_for("the operator to reconcile",
             lambda: s["operator"].metric("buildcache_operator_reconciles_total") > 0)
    # The operator writes the caBundle shortly after it starts.
    wait_for("the webhook to mutate a pod", lambda: admit(s), timeout=60, interval=0.5,
             detail=lambda: s["operator"].logs[-30:])


def measured_phase(s):
    """The workload the panels are checked against. Returns what it implies."""
    a, b, maven, cp = s["a"], s["b"], s["maven"], s["cp"]
    # A, httpcache: 4 objects read twice (8 hits), 4 missing keys (4 misses).
    for i in range(4):
        assert a.put(f"/cache/m/a{i}", bytes([i]) * (10 * KIB))[0] // 100 == 2
    for _ in range(2):
        for i in range(4):
            assert http_get(a, f"/cache/m/a{i}") == (200, bytes([i]) * (10 * KIB))
    for i in range(4):
        assert http_get(a, f"/cache/m/none{i}")[0] == 404
    # A, the Go build cache (gocacheprog's action entries are httpcache requests too): one entry
    # stored and found (1 hit), one action never stored (1 miss).
    action = "/cache/gocache/v1/a/"
    assert a.put(action + "a1" * 32, b"g" * KIB)[0] // 100 == 2
    assert http_get(a, action + "a1" * 32) == (200, b"g" * KIB)
    assert http_get(a, action + "b2" * 32)[0] == 404
    # A, maven: one jar from upstream then three times from the store (4 hits), 2 misses.
    jar, body = maven.add_jar("lib", "2.0", 100 * KIB)
    for _ in range(4):
        assert http_get(a, jar) == (200, body)
    for i in range(2):
        assert http_get(a, f"/maven/io/example/none/{i}.0/none-{i}.0.jar")[0] == 404
    assert http_get(a, "/maven/io/example/broken/2.0/broken-2.0.jar")[0] == 502
    bad, _ = maven.add_jar("tampered", "2.0", 4 * KIB, good_digest=False)
    assert http_get(a, bad)[0] in (502, "aborted")
    # B: 12 objects of 200 KiB through a 1 MiB quota (evictions), the last two read twice
    # (4 hits), 6 misses.
    for i in range(12):
        assert b.put(f"/cache/m/b{i}", bytes([i]) * (200 * KIB))[0] // 100 == 2
    for _ in range(2):
        for i in (10, 11):
            assert http_get(b, f"/cache/m/b{i}") == (200, bytes([i]) * (200 * KIB))
    for i in range(6):
        assert http_get(b, f"/cache/m/nope{i}")[0] == 404
    # D: 16 jars of 16 KiB, about half of them owned by C (1 in 32768 that none is).
    for i in range(16):
        peer_jar, peer_body = maven.add_jar(f"peer{i}", "1.0", 16 * KIB)
        assert http_get(s["d"], peer_jar) == (200, peer_body)
    # D, by scope: "web" reads 4 jars D holds (4 hits); "data" reads 2 of them, then new jars
    # until one comes from the upstream (a miss; ones its owner C had are peer hits).
    for i in range(4):
        assert scope_get(s["d"], "web", maven.jar_path(f"peer{i}", "1.0"))[0] == 200
    for i in (4, 5):
        assert scope_get(s["d"], "data", maven.jar_path(f"peer{i}", "1.0"))[0] == 200
    data_peer_hits = scope_read_until_upstream(s, "data", "data")
    # C and D, wheel builds: a pip client on each downloads the same sdist at once; the sdist's
    # owner builds it once (the other's request joins), and each node then serves the wheel.
    sdist_path = "/pypi/files/dashwheel/dashwheel-1.0.tar.gz"
    for agent in (s["c"], s["d"]):
        assert agent.get(sdist_path, headers={"User-Agent": PIP_UA})[0] == 200
    json_accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    for agent in (s["c"], s["d"]):
        wait_for(f"the built wheel listed on {agent.address}", lambda a=agent: WHEEL in [
            f["filename"] for f in json.loads(a.get("/pypi/simple/dashwheel/",
                                                    headers=json_accept)[1])["files"]],
            timeout=120)
        assert agent.get(f"/pypi/wheelhouse/dashwheel/{WHEEL}")[0] == 200
    # Operator: a spec change (a reconcile) and two more admissions.
    before = s["operator"].metric("buildcache_operator_reconciles_total")
    cp.kubectl("apply", "-f", "-", input=json.dumps(buildcache("ci", generation_hint="2",
                                                               replication={"copies": 2})))
    wait_for("the operator to reconcile the change",
             lambda: s["operator"].metric("buildcache_operator_reconciles_total") > before)
    assert admit(s) and admit(s)
    return {
        "hits": {"a": 13, "b": 4}, "lookups": {"a": 20, "b": 10},
        "frontend_ratio": {"httpcache": 13 / 24, "maven": 4 / 6},
        "local_bytes": {"a": 8 * 10 * KIB + KIB + 3 * len(body), "b": 4 * 200 * KIB},
        "upstream_bytes": len(body), "saved_bytes": 3 * len(body),
        "scope_hits": {"web": 4, "data": 2 + data_peer_hits},
        "scope_lookups": {"web": 4, "data": 3 + data_peer_hits},
    }


def scope_get(agent, scope, path):
    """GET as the caller with `scope`'s token: (status, X-Buildcache-Source)."""
    status, _, headers = agent.get(path, {"Authorization": f"Bearer {SCOPE_TOKENS[scope]}"})
    return status, headers.get("X-Buildcache-Source", "")


def scope_read_until_upstream(s, scope, prefix):
    """Reads new 16 KiB jars through D as `scope` until one comes from the upstream (D owns
    about half of them); returns how many came from the peer before it."""
    for i in range(40):
        status, source = scope_get(s["d"], scope, s["maven"].add_jar(f"{prefix}{i}", "1.0",
                                                                     16 * KIB)[0])
        assert status == 200 and source in ("peer", "upstream"), (status, source)
        if source == "upstream":
            return i
    pytest.fail("no jar of 40 was fetched from the upstream by D")


def scraped(prom, agents):
    """True once Prometheus holds the current value of every agent's request counters."""
    for agent in agents:
        want = metric(agent.metrics(), "buildcache_requests_total")
        got = prom.query(f'sum(buildcache_requests_total{{instance="{agent.address}"}})')
        # /metrics itself is not counted, so reading it does not move the target.
        if (got[0][1] if got else 0) != want:  # C serves peers only: no request series
            return False
    return True


@pytest.fixture(scope="module")
def measured(stack):
    prom, a = stack["prom"], stack["a"]
    warm_up(stack)
    agents = [stack[name] for name in "abcd"]
    wait_for("prometheus to scrape the warm-up", lambda: scraped(prom, agents), timeout=60)
    baseline = time.time()
    # Every target scraped after the warm-up: the rate window starts at `baseline`, so its first
    # sample holds the warm-up state and every increment of the measured phase is inside it.
    wait_scraped_after(prom, baseline)
    fetched_before = metric(a.metrics(), "buildcache_upstream_bytes_total")
    expected = measured_phase(stack)
    # Upstream bytes include checksum files and the tampered jar: take the agent's own count.
    expected["fetched_bytes"] = metric(a.metrics(), "buildcache_upstream_bytes_total") - \
        fetched_before
    done = time.time()
    wait_scraped_after(prom, done)
    assert scraped(prom, agents)
    now = time.time()
    window = f"{int((now - baseline) * 1000)}ms"
    # For exact comparisons within agent A: a window from A's first to its last scrape after the
    # baseline. Rates over it are not extrapolated (Prometheus extrapolates a counter towards the
    # window's edges, differently for series whose first value is small), so they are the
    # measured phase's increments over the same duration for every series.
    aligned = {}
    for agent in agents:
        data = prom.api("query", query=f'up{{instance="{agent.address}"}}[{window}]',
                        time=f"{now:.3f}")
        stamps = [float(t) for t, _ in data["result"][0]["values"]]
        first, last = min(stamps), max(stamps)
        assert first > baseline
        aligned[agent.address] = {"window": f"{int((last - first) * 1000) + 1}ms", "at": last}
    return {**expected, "at": now, "window": window, "aligned": aligned}


def run_agent_panels(prom, measured, agent):
    """run_panels for one agent, over the window aligned with its scrapes."""
    return run_panels(prom, measured, instance=escape(agent.address),
                      **measured["aligned"][agent.address])


def wait_scraped_after(prom, t):
    """Waits until every target's latest scrape started after unix time t."""
    def done():
        stamps = values(prom.query("timestamp(up)"))
        return len(stamps) == 5 and min(stamps) > t
    wait_for(f"a scrape of every target after {t}", done, timeout=30)


def run_panels(prom, measured, window=None, at=None, **variables):
    """{panel title: [[(labels, value)] per target]} for every panel with targets."""
    results = {}
    for panel, target in dashboard_targets(load_dashboard()):
        expr = substitute(target["expr"], window or measured["window"], **variables)
        results.setdefault(panel["title"], []).append(prom.query(expr, at=at or measured["at"]))
    return results


def escape(value):
    """A variable value as Grafana puts it into a regex matcher: dots escaped, in PromQL."""
    return value.replace(".", "\\\\.")


def values(result):
    return [v for _, v in result]


def by(result, label):
    return {labels.get(label, ""): v for labels, v in result}


def close(got, want, rel=0.08, abs_=0.0):
    return math.isclose(got, want, rel_tol=rel, abs_tol=abs_)


def check_replication_panels(prom, measured, stack):
    """C and D, selected by their namespace: D got jars from C (its owner) and pushed copies."""
    peers = run_panels(prom, measured, namespace=PEERS_NS)
    lookups = by(peers["Peer lookups by outcome"][0], "outcome")
    assert lookups["hit"] > 0, lookups
    traffic = by(peers["Peer traffic"][0], "direction")
    assert traffic["in"] > 0 and traffic["out"] > 0, traffic
    pushes, queue = peers["Peer pushes"]
    assert sum(values(pushes)) > 0 and len(queue) == 1, (pushes, queue)
    live, members = peers["Peers live"]
    assert by(live, "instance") == {stack["c"].address: 2, stack["d"].address: 2}, live
    assert values(members) == [2]
    sources = by(peers["Bytes served by source"][0], "source")
    assert sources["peer"] > 0 and sources["upstream"] > 0, sources
    outcomes = by(peers["Wheel builds by outcome"][0], "outcome")
    assert outcomes["started"] > 0 and outcomes["succeeded"] > 0, outcomes
    assert values(peers["Wheel builds deduplicated"][0])[0] > 0, peers["Wheel builds deduplicated"]
    assert values(peers["Wheels served from builds"][0])[0] > 0
    builds = [metric(stack[n].metrics(), "buildcache_pypi_builds_total", outcome="started")
              for n in "cd"]
    assert sum(builds) == 1, builds  # one build between the two nodes
    d_only = run_agent_panels(prom, measured, stack["d"])
    [ratio] = values(d_only["Hit ratio by node"][0])
    assert ratio == 1, ratio  # every jar was answered, from the peer or the upstream
    check_scope_panels(measured, d_only)


def check_scope_panels(measured, d_only):
    """D's callers by scope: "web" and "data" (tokens) and the anonymous ones."""
    hits, lookups = measured["scope_hits"], measured["scope_lookups"]
    ratios = by(d_only["Hit ratio by namespace"][0], "scope")
    assert {"web", "data", "(anonymous)"} <= set(ratios), ratios
    assert ratios["web"] == 1, ratios
    assert close(ratios["data"], hits["data"] / lookups["data"], rel=0.01), (ratios, hits)
    saved = by(d_only["Bytes saved by namespace"][0], "scope")
    # Every jar read by scope is 16 KiB: saved bytes are in the ratio of the hits.
    assert close(saved["web"] / saved["data"], hits["web"] / hits["data"], rel=0.01), saved
    lookups_by = {(labels["scope"], labels["result"]): v
                  for labels, v in d_only["Lookups by namespace"][0]}
    assert lookups_by[("data", "miss")] > 0 and ("web", "miss") not in lookups_by, lookups_by


def test_every_panel_returns_sensible_data(stack, measured):
    prom = stack["prom"]
    panels = run_panels(prom, measured)
    for title, results in panels.items():
        if title in NOT_EXERCISED:
            continue
        for i, result in enumerate(results):
            assert result, f"panel {title!r} target {i} returned no data"
            for labels, v in result:
                assert math.isfinite(v) and v >= 0, (title, i, labels, v)
    assert values(panels["Agents reporting"][0]) == [4]
    sources = by(panels["Bytes served by source"][0], "source")
    assert set(sources) == {"local", "peer", "upstream"}, sources

    check_replication_panels(prom, measured, stack)

    # From here on, A and B: the agents with a known workload.
    panels = run_panels(prom, measured,
                        instance=f"({escape(stack['a'].address)}|{escape(stack['b'].address)})")
    # Both agents' lookups: 17 hits of 30. Across targets, Prometheus extrapolates each target's
    # counters over its own scrape times, so these are close, not exact (counting stores as
    # hits, say, would give 0.73).
    hits = sum(measured["hits"].values())
    lookups = sum(measured["lookups"].values())
    [overall] = values(panels["Hit ratio"][0])
    assert close(overall, hits / lookups, abs_=0.05), (overall, hits / lookups)
    per_frontend = by(panels["Hit ratio by front end"][0], "frontend")
    assert set(per_frontend) == {"httpcache", "maven"}, per_frontend
    assert close(per_frontend["httpcache"], measured["frontend_ratio"]["httpcache"],
                 abs_=0.05), per_frontend
    per_node = by(panels["Hit ratio by node"][0], "instance")
    assert set(per_node) == {stack["a"].address, stack["b"].address}, per_node
    # Within one agent, over a window aligned with its scrapes, they are exact.
    a_only = run_agent_panels(prom, measured, stack["a"])
    b_only = run_agent_panels(prom, measured, stack["b"])
    [ratio] = values(a_only["Hit ratio by node"][0])
    assert close(ratio, 13 / 20, rel=0.01), ratio
    [ratio] = values(b_only["Hit ratio by node"][0])
    assert close(ratio, 4 / 10, rel=0.01), ratio
    ratio = by(a_only["Hit ratio by front end"][0], "frontend")["maven"]
    assert close(ratio, measured["frontend_ratio"]["maven"], rel=0.01), ratio
    results = by(panels["Requests by result"][0], "result")
    assert {"hit", "miss", "stored", "error"} <= set(results), results

    sources = by(panels["Bytes served by source"][0], "source")
    assert set(sources) == {"local", "upstream"}, sources  # no replication between A and B
    # Byte counts are compared within agent A, over a window aligned with its scrapes (see
    # measured): sums across targets are extrapolated over different sample times.
    sources = by(a_only["Bytes served by source"][0], "source")
    local, upstream = measured["local_bytes"]["a"], measured["upstream_bytes"]
    assert close(sources["local"] / sources["upstream"], local / upstream, rel=0.01), sources
    [byte_ratio] = values(a_only["Byte hit ratio"][0])
    assert close(byte_ratio, local / (local + upstream), rel=0.01), byte_ratio
    [saved] = values(a_only["Upstream bandwidth saved"][0])
    [fetched] = values(prom.query(substitute(
        f'sum(increase(buildcache_upstream_bytes_total{{instance="{stack["a"].address}"}}'
        f'[$__range]))', measured["aligned"][stack["a"].address]["window"]),
        at=measured["aligned"][stack["a"].address]["at"]))
    # The jar was fetched once and then served three times from the store.
    want = measured["saved_bytes"] / measured["fetched_bytes"]
    assert close(saved / fetched, want, rel=0.01), (saved, fetched, want)
    [byte_ratio] = values(panels["Byte hit ratio"][0])
    assert 0.5 < byte_ratio < 1, byte_ratio
    saved_rate, fetched_rate = panels["Saved vs fetched from upstream"]
    assert set(by(saved_rate, "frontend")) == {"maven"}  # httpcache hits save no upstream
    assert by(fetched_rate, "frontend")["maven"] > 0
    outcomes = by(panels["Upstream requests by outcome"][0], "outcome")
    assert outcomes["ok"] > 0 and outcomes["not_found"] > 0 and outcomes["error"] > 0, outcomes

    for title in ("Request latency", "p99 latency by front end", "Upstream latency",
                  "Reconcile duration", "Webhook latency"):
        for result in panels[title]:
            assert all(0 < v < 10 for v in values(result)), (title, result)
    p50, p90, p99 = (values(r)[0] for r in panels["Request latency"])
    assert p50 <= p90 <= p99

    # Store fill is each agent's own gauge ratio.
    fills = by(panels["Store fill by node"][0], "instance")
    for agent in (stack["a"], stack["b"]):
        m = agent.metrics()
        want = metric(m, "buildcache_store_bytes") / metric(m, "buildcache_store_max_bytes")
        assert close(fills[agent.address], want, rel=0.01), (fills, want)
    assert 0.5 < fills[stack["b"].address] <= 1.0  # B holds about 5 of its 200 KiB objects
    blobs, evicted_bytes = (values(r)[0] for r in panels["Evictions"])
    assert blobs > 0 and evicted_bytes > 0
    [store_fill] = values(panels["Store fill"][0])
    assert 0 < store_fill < 1
    assert values(panels["Agents reporting"][0]) == [2]
    errors, mismatches, corrupt = (values(r)[0] for r in panels["Errors and integrity"])
    assert errors > 0 and mismatches > 0 and corrupt == 0

    reconciles = by(panels["Reconciles by result"][0], "result")
    assert reconciles.get("success", 0) > 0, reconciles
    queue, leaders = (values(r) for r in panels["Work queue and leader"])
    assert queue == [0] and leaders == [1]
    admissions = by(panels["Webhook admissions by result"][0], "result")
    assert admissions.get("mutated", 0) > 0, admissions


def test_variables_select_labelled_and_unlabelled_agents(stack, measured):
    prom = stack["prom"]
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    # The variable queries list the ServiceMonitor-style labels the agents carry, each narrowed
    # by the variables before it (B has none, and appears in no list but the instances).
    def options(name, **selected):
        query = variables[name]["query"]["query"]
        inner = substitute(query[len("label_values("):query.rindex(",")], "1m", **selected)
        return prom.api(f"label/{name}/values", **{"match[]": inner})

    assert options("namespace") == [NS, PEERS_NS]
    assert options("buildcache") == ["ci", "shared"]
    assert options("buildcache", namespace=NS) == ["ci"]
    assert options("node", namespace=PEERS_NS) == ["node-c", "node-d"]
    assert options("instance", node="node-a") == [stack["a"].address]
    assert stack["b"].address in options("instance")

    only_a = run_panels(prom, measured, node="node-a", namespace=NS, buildcache="ci",
                        **measured["aligned"][stack["a"].address])
    [ratio] = values(only_a["Hit ratio"][0])
    assert close(ratio, 13 / 20, rel=0.01), ratio
    assert values(only_a["Agents reporting"][0]) == [1]
    # B has no Kubernetes labels; selecting it by instance still works.
    only_b = run_agent_panels(prom, measured, stack["b"])
    [ratio] = values(only_b["Hit ratio"][0])
    assert close(ratio, 4 / 10, rel=0.01), ratio
    assert by(only_b["Hit ratio by front end"][0], "frontend").keys() == {"httpcache"}


def test_recording_rules_produce_series_and_agent_down_alert_fires(stack, measured):
    prom = stack["prom"]
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) > 10
    for rule in rules:
        assert rule["health"] == "ok", rule
    records = [r["name"] for r in rules if r["type"] == "recording"]
    # The workload has upstream errors, evictions and latency: every rule has input.
    for name in records:
        result = wait_for(f"recording rule {name}", lambda: prom.query(name), timeout=30)
        assert all(math.isfinite(v) for v in values(result)), (name, result)
    ratio = by(prom.query("instance:buildcache_hit_ratio:ratio_rate5m"), "instance")
    assert {stack["a"].address, stack["b"].address} <= set(ratio), ratio
    assert all(0 <= v <= 1 for v in ratio.values()), ratio
    fill = by(prom.query("instance:buildcache_store_fill:ratio"), "instance")
    assert 0 < fill[stack["a"].address] < fill[stack["b"].address] <= 1

    # Stop B: up == 0 makes BuildcacheAgentDown pending (it fires after 5 minutes).
    stack["b"].stop()

    def pending():
        return [labels for labels, _ in prom.query(
            'ALERTS{alertname="BuildcacheAgentDown", alertstate="pending"}')]

    [labels] = wait_for("BuildcacheAgentDown pending", pending, timeout=30)
    assert labels["instance"] == stack["b"].address
    # The tampered jars fire the alert that has no pending period; nothing else fires.
    firing = {labels["alertname"] for labels, _ in prom.query('ALERTS{alertstate="firing"}')}
    assert firing == {"BuildcacheUpstreamVerifyFailures"}, firing
