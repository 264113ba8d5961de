#!/usr/bin/env python3
"""Generates charts/buildcache/dashboards/buildcache.json, the Grafana dashboard.

The dashboard is written as data here rather than edited as JSON by hand: panel ids and grid
positions are computed, every query uses the same label selector, and
tests/integration/test_dashboard.py checks that the committed JSON equals this script's output
before it runs every query against a real Prometheus.

    tools/gen_dashboard.py            # rewrite the JSON
    tools/gen_dashboard.py --check    # exit 1 if the committed JSON is stale

Label model. The agent itself exports `frontend`, `result`, `source`, `outcome` and (the
caller's namespace, bounded per agent) `scope`; the scraper adds the target labels. Prometheus always adds `job` and `instance`; in Kubernetes the
ServiceMonitor adds `namespace` and `pod`, and (by relabeling, see docs/observability.md) `node`
and `buildcache`. Every variable's "All" value is the regex `.*`, which also matches a series
that lacks the label, so the same queries work on a laptop agent scraped by a plain Prometheus.
"""

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "charts" / "buildcache" / "dashboards" / "buildcache.json"

DS = {"type": "prometheus", "uid": "${datasource}"}
# Agent series: every agent query carries this selector.
AGENT = ('namespace=~"$namespace", buildcache=~"$buildcache", node=~"$node", '
         'instance=~"$instance"')
RATE = "$__rate_interval"
# Front ends that have an upstream registry: bytes they serve from local or peer copies are bytes
# not fetched upstream. httpcache hits save a rebuild instead, so they are not counted as saved.
PACKAGE_FRONTENDS = 'frontend!="httpcache"'
SAVED_SOURCES = 'source=~"local|peer"'
HIT = 'result="hit"'
BUILD_OUTCOMES = 'outcome=~"started|succeeded|failed"'
DEDUPLICATED = 'outcome="deduplicated"'
LOOKUP = 'result=~"hit|miss"'
ERROR = 'result="error"'


def sel(*extra):
    return "{" + ", ".join((AGENT,) + extra) + "}"


def hit_ratio(by=""):
    group = f" by ({by})" if by else ""
    lookups = f"sum{group} (rate(buildcache_requests_total{sel(LOOKUP)}[{RATE}]))"
    # A front end or node that only missed has no hit series: its ratio is 0, not absent.
    return (f"(sum{group} (rate(buildcache_requests_total{sel(HIT)}[{RATE}]))\n"
            f" or 0 * {lookups})\n/ {lookups}")


def gocache_hit_ratio():
    """The share of buildcache-gocacheprog's action look-ups that hit."""
    action = 'object="action"'
    lookups = f"sum (rate(buildcache_gocache_requests_total{sel(action, LOOKUP)}[{RATE}]))"
    return (f"(sum (rate(buildcache_gocache_requests_total{sel(action, HIT)}[{RATE}]))\n"
            f" or 0 * {lookups})\n/ {lookups}")


def scope_hit_ratio():
    """Per caller scope (namespace): lookups answered from the cache over all lookups."""
    lookups = f"sum by (scope) (rate(buildcache_scope_requests_total{sel(LOOKUP)}[{RATE}]))"
    return (f"(sum by (scope) (rate(buildcache_scope_requests_total{sel(HIT)}[{RATE}]))\n"
            f" or 0 * {lookups})\n/ {lookups}")


def quantile(q, metric, by="le", selector=None):
    selector = sel() if selector is None else selector
    return (f"histogram_quantile({q}, sum by ({by}) "
            f"(rate({metric}_bucket{selector}[{RATE}])))")


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True}


def targets(*pairs):
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def stat(title, description, expr, unit, width=6, thresholds=None, height=4):
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": targets((expr, "")),
        "fieldConfig": {"defaults": {"unit": unit, "decimals": 2,
                                     "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": "auto",
                    "justifyMode": "auto", "orientation": "auto"},
        "_w": width, "_h": height,
    }


def series(title, description, pairs, unit, width=12, stack=False, max_=None, min_=None):
    defaults = {"unit": unit,
                "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                           "showPoints": "never", "spanNulls": True,
                           "stacking": {"mode": "normal" if stack else "none", "group": "A"}}}
    if max_ is not None:
        defaults["max"] = max_
    if min_ is not None:
        defaults["min"] = min_
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": targets(*pairs),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "_w": width, "_h": 8,
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_w": 24, "_h": 1}


RATIO_STEPS = [{"color": "red", "value": None}, {"color": "orange", "value": 0.5},
               {"color": "green", "value": 0.8}]
FILL_STEPS = [{"color": "green", "value": None}, {"color": "orange", "value": 0.9},
              {"color": "red", "value": 0.98}]


def panels():
    return [
        row("Overview"),
        stat("Hit ratio",
             "GET/HEAD answered 2xx over all lookups (2xx or 404), all front ends. For package "
             "front ends an upstream fetch also answers 2xx: see the byte hit ratio.",
             hit_ratio(), "percentunit", 5, RATIO_STEPS),
        stat("Byte hit ratio",
             "Share of bytes served that came from this node's store or a peer rather than "
             "from an upstream registry.",
             f"sum (rate(buildcache_served_bytes_total{sel(SAVED_SOURCES)}[{RATE}]))\n"
             f"/ sum (rate(buildcache_served_bytes_total{sel()}[{RATE}]))",
             "percentunit", 5, RATIO_STEPS),
        stat("Upstream bandwidth saved",
             "Bytes package front ends served from local or peer copies in the selected time "
             "range: bytes that did not cross the upstream link.",
             f"sum (increase(buildcache_served_bytes_total"
             f'{sel(SAVED_SOURCES, PACKAGE_FRONTENDS)}[$__range]))',
             "bytes", 5),
        stat("Store fill", "Bytes stored over the stores' quotas (store.maxSize), all agents.",
             f"sum (buildcache_store_bytes{sel()}) / sum (buildcache_store_max_bytes{sel()})",
             "percentunit", 5, FILL_STEPS),
        stat("Agents reporting", "Agents whose metrics were scraped.",
             f"count (buildcache_build_info{sel()})", "none", 4),

        row("Hit ratio"),
        series("Hit ratio by front end", "Lookups answered 2xx over all lookups, per protocol; "
               "\"go build cache\" is the share of the go command's action look-ups "
               "(buildcache-gocacheprog) that found a compiled result.",
               [(hit_ratio("frontend"), "{{frontend}}"), (gocache_hit_ratio(), "go build cache")],
               "percentunit", 8, max_=1, min_=0),
        series("Hit ratio by node", "Per agent; a cold or thrashing node stands out here.",
               [(hit_ratio("node, instance"), "{{node}} {{instance}}")], "percentunit", 8,
               max_=1, min_=0),
        series("Requests by result",
               "Requests per second by result (hit, miss, stored, ...). A 304 revalidation is a "
               "hit; a 301/308 name-normalisation redirect is a redirect, not a rejection.",
               [(f"sum by (result) (rate(buildcache_requests_total{sel()}[{RATE}]))",
                 "{{result}}")], "reqps", 8),

        row("Traffic"),
        series("Bytes served by source",
               "Body bytes sent to clients per second, by where they came from: this node's "
               "store (local), another agent (peer) or an upstream registry (upstream).",
               [(f"sum by (source) (rate(buildcache_served_bytes_total{sel()}[{RATE}]))",
                 "{{source}}")], "Bps", 8, stack=True),
        series("Saved vs fetched from upstream",
               "Package bytes served without going upstream, next to the bytes that were "
               "fetched upstream.",
               [(f"sum by (frontend) (rate(buildcache_served_bytes_total"
                 f"{sel(SAVED_SOURCES, PACKAGE_FRONTENDS)}[{RATE}]))", "saved {{frontend}}"),
                (f"sum by (frontend) (rate(buildcache_upstream_bytes_total{sel()}[{RATE}]))",
                 "fetched {{frontend}}")], "Bps", 8),
        series("Upstream requests by outcome",
               "Requests the agents made to upstream registries (ok, not_found, not_modified, "
               "error).",
               [(f"sum by (outcome) (rate(buildcache_upstream_requests_total{sel()}[{RATE}]))",
                 "{{outcome}}")], "reqps", 8),

        row("Latency"),
        series("Request latency",
               "From request headers to the end of the response, all front ends.",
               [(quantile(0.5, "buildcache_request_duration_seconds"), "p50"),
                (quantile(0.9, "buildcache_request_duration_seconds"), "p90"),
                (quantile(0.99, "buildcache_request_duration_seconds"), "p99")], "s", 8),
        series("p99 latency by front end", "99th percentile request latency per protocol.",
               [(quantile(0.99, "buildcache_request_duration_seconds", "le, frontend"),
                 "{{frontend}}")], "s", 8),
        series("Upstream latency", "Duration of requests to upstream registries.",
               [(quantile(0.5, "buildcache_upstream_request_duration_seconds"), "p50"),
                (quantile(0.99, "buildcache_upstream_request_duration_seconds"), "p99")],
               "s", 8),

        row("Store"),
        series("Store fill by node", "Bytes stored over the quota, per agent.",
               [(f"buildcache_store_bytes{sel()} / buildcache_store_max_bytes{sel()}",
                 "{{node}} {{instance}}")], "percentunit", 8, max_=1, min_=0),
        series("Evictions", "Blobs and bytes evicted per second to stay within the quota. A "
               "steady high rate means the quota is smaller than the working set.",
               [(f"sum (rate(buildcache_store_evictions_total{sel()}[{RATE}]))", "blobs/s"),
                (f"sum (rate(buildcache_store_evicted_bytes_total{sel()}[{RATE}]))",
                 "bytes/s")], "short", 8),
        series("Errors and integrity",
               "Requests answered 5xx or aborted, upstream artifacts rejected because their "
               "digest did not match, and stored blobs found corrupt. All should be zero.",
               [(f"sum (rate(buildcache_requests_total{sel(ERROR)}[{RATE}]))",
                 "request errors"),
                (f"sum (rate(buildcache_upstream_verify_failures_total{sel()}[{RATE}]))",
                 "upstream digest mismatches"),
                (f"sum (rate(buildcache_store_corrupt_blobs_total{sel()}[{RATE}]))",
                 "corrupt blobs")], "short", 8),

        row("Replication"),
        series("Peer lookups by outcome",
               "Asks to the owning peer agents for an object missing locally: hit, miss, or "
               "error (unreachable, stalled, or bad bytes).",
               [(f"sum by (outcome) (rate(buildcache_peer_requests_total{sel()}[{RATE}]))",
                 "{{outcome}}")], "reqps", 6),
        series("Peer traffic",
               "Object bytes received from (in) and sent to (out) peer agents.",
               [(f"sum by (direction) (rate(buildcache_peer_bytes_total{sel()}[{RATE}]))",
                 "{{direction}}")], "Bps", 6),
        series("Peer pushes",
               "New objects pushed to their other owners, by outcome, and pushes waiting in the "
               "queue (dropped means the queue was full or retries ran out).",
               [(f"sum by (outcome) (rate(buildcache_peer_pushes_total{sel()}[{RATE}]))",
                 "{{outcome}}"),
                (f"sum (buildcache_peer_push_queue{sel()})", "queued")], "short", 6),
        series("Peers live", "Agents each agent knows (itself included) and the ones not "
               "marked down: a gap between them is a peer that cannot be reached.",
               [(f"sum by (node, instance) (buildcache_peer_members_live{sel()})",
                 "live {{node}} {{instance}}"),
                (f"max (buildcache_peer_members{sel()})", "members")], "none", 6),

        row("Directory caches"),
        series("Hydration progress",
               "Bytes start-up hydration pulled from peers against the bytes it planned (the "
               "hot set), per agent; agents still hydrating report not ready.",
               [(f"sum by (node, instance) (buildcache_dircache_hydration_bytes{sel()})",
                 "pulled {{node}} {{instance}}"),
                (f"sum by (node, instance) (buildcache_dircache_hydration_target_bytes{sel()})",
                 "planned {{node}} {{instance}}")], "bytes", 8),
        stat("Agents hydrating", "Agents holding /readyz at 503 while they hydrate.",
             f"sum (buildcache_dircache_hydrating{sel()})", "none", 4, height=8),
        series("Directory cache traffic",
               "Files indexed from pods' writes and bytes pulled from peers, per directory.",
               [(f"sum by (directory) (rate(buildcache_dircache_pulled_bytes_total{sel()}"
                 f"[{RATE}]))", "pulled {{directory}}"),
                (f"sum by (directory) (rate(buildcache_dircache_indexed_files_total{sel()}"
                 f"[{RATE}]))", "indexed files/s {{directory}}")], "short", 6),
        series("Directory cache sync lag",
               "Age of the oldest peer file an agent wants but has not pulled yet (0 when "
               "caught up), and files no peer could supply intact.",
               [(f"max by (directory) (buildcache_dircache_sync_lag_seconds{sel()})",
                 "lag {{directory}}"),
                (f"sum by (directory) (rate(buildcache_dircache_pull_failures_total{sel()}"
                 f"[{RATE}]))", "failures/s {{directory}}")], "s", 6),

        row("Go build cache"),
        series("Go build cache requests",
               "buildcache-gocacheprog's requests per second: action entries (a hit means the "
               "go command does not compile that package) and compiled outputs, by result.",
               [(f"sum by (object, result) (rate(buildcache_gocache_requests_total{sel()}"
                 f"[{RATE}]))", "{{object}} {{result}}")], "reqps", 12),
        series("Go build cache bytes",
               "Compiled outputs and action entries served to go commands and received from "
               "them (uploads stored), per second.",
               [(f"sum by (direction) (rate(buildcache_gocache_bytes_total{sel()}[{RATE}]))",
                 "{{direction}}")], "Bps", 12),

        row("Saved by namespace"),
        series("Bytes saved by namespace",
               "Body bytes per second the cache served from a store or a peer, by the caller's "
               "namespace (its scope; standalone, its token's scope): the ten largest. Each agent "
               "names at most identity.attributionLimit namespaces and counts later ones as "
               "(other); (anonymous) are callers without identity, (unscoped) all callers when "
               "identity is off.",
               [(f"topk(10, sum by (scope) (rate(buildcache_scope_bytes_total{sel(HIT)}"
                 f"[{RATE}])))", "{{scope}}")], "Bps", 8, stack=True),
        series("Hit ratio by namespace",
               "Lookups answered from a store or a peer over all lookups (404s and upstream "
               "fetches are misses), per caller namespace.",
               [(scope_hit_ratio(), "{{scope}}")], "percentunit", 8, max_=1, min_=0),
        series("Lookups by namespace",
               "Lookups per second by the caller's namespace and result.",
               [(f"topk(20, sum by (scope, result) (rate(buildcache_scope_requests_total{sel()}"
                 f"[{RATE}])))", "{{scope}} {{result}}")], "reqps", 8),
        row("Wheel builds"),
        series("Wheel builds by outcome",
               "Wheel builds from upstream sdists per second (pypi builders): started, "
               "succeeded, failed. In a cluster the sdist's owner runs and counts them.",
               [(f"sum by (outcome) (rate(buildcache_pypi_builds_total"
                 f'{sel(BUILD_OUTCOMES)}[{RATE}]))', "{{outcome}}")], "ops", 6),
        series("Wheel builds deduplicated",
               "Requests for a build already queued or running that joined it instead of "
               "building again, peers' offers to the sdist's owner included: builds saved.",
               [(f"sum (rate(buildcache_pypi_builds_total{sel(DEDUPLICATED)}[{RATE}]))",
                 "joined")], "ops", 6),
        series("Wheel build duration",
               "From a build's start to its wheel checked and stored, or its failure.",
               [(quantile(0.5, "buildcache_pypi_build_duration_seconds"), "p50"),
                (quantile(0.99, "buildcache_pypi_build_duration_seconds"), "p99")], "s", 6),
        series("Wheels served from builds",
               "Downloads of wheels the cache built itself: each one is a compile a client "
               "did not run.",
               [(f"sum (rate(buildcache_pypi_built_wheels_served_total{sel()}[{RATE}]))",
                 "downloads")], "reqps", 6),

        row("Operator"),
        series("Reconciles by result",
               "BuildCache reconciles per second: success, error (retried with backoff), "
               "invalid (reported in status), gone.",
               [("sum by (result) (rate(buildcache_operator_reconciles_total[$__rate_interval]))",
                 "{{result}}")], "ops", 8),
        series("Reconcile duration", "How long one BuildCache reconcile took.",
               [(quantile(0.5, "buildcache_operator_reconcile_duration_seconds", selector=""),
                 "p50"),
                (quantile(0.99, "buildcache_operator_reconcile_duration_seconds", selector=""),
                 "p99")], "s", 8),
        series("Work queue and leader",
               "BuildCache keys waiting to be reconciled, and replicas holding the leader "
               "lease (exactly 1 when healthy).",
               [("sum (buildcache_operator_workqueue_depth)", "queue depth"),
                ("sum (buildcache_operator_leader)", "leaders")], "short", 8),
        series("Webhook admissions by result",
               "Pod admission reviews per second: mutated, unchanged, not_requested, "
               "not_allowed, failed. The webhook fails open, so failures show up here and as "
               "cold pods, not as pods that fail to start.",
               [("sum by (result) (rate(buildcache_webhook_admissions_total[$__rate_interval]))",
                 "{{result}}")], "reqps", 12),
        series("Webhook latency", "Time to answer one admission review (the API server waits "
               "for it on every pod creation).",
               [(quantile(0.5, "buildcache_webhook_admission_duration_seconds", selector=""),
                 "p50"),
                (quantile(0.99, "buildcache_webhook_admission_duration_seconds", selector=""),
                 "p99")], "s", 12),
    ]


def variable(name, label, query):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": query, "query": {"query": query, "refId": f"{name}-query"},
        "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [], "hide": 0, "regex": "", "skipUrlSync": False,
    }


def layout(items):
    """Assigns ids and left-to-right, top-to-bottom grid positions (24 columns)."""
    x = y = row_height = 0
    for i, p in enumerate(items, start=1):
        w, h = p.pop("_w"), p.pop("_h")
        if x + w > 24 or p["type"] == "row":
            x, y, row_height = 0, y + row_height, 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x += w
        row_height = max(row_height, h)
    return items


def dashboard():
    info = "buildcache_build_info"
    return {
        "uid": "buildcache-overview",
        "title": "buildcache",
        "description": "Hit ratio, traffic, latency and store of buildcache agents; health of "
                       "the buildcache operator and its webhook.",
        "tags": ["buildcache"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
             "includeAll": False, "multi": False, "options": [], "skipUrlSync": False},
            variable("namespace", "Namespace", f"label_values({info}, namespace)"),
            variable("buildcache", "BuildCache",
                     f'label_values({info}{{namespace=~"$namespace"}}, buildcache)'),
            variable("node", "Node", f'label_values({info}{{namespace=~"$namespace", '
                                     f'buildcache=~"$buildcache"}}, node)'),
            variable("instance", "Agent", f'label_values({info}{{namespace=~"$namespace", '
                                          f'buildcache=~"$buildcache", node=~"$node"}}, '
                                          f"instance)"),
        ]},
        "panels": layout(panels()),
    }


def render():
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run {pathlib.Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
