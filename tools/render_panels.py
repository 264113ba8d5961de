#!/usr/bin/env python3
"""Renders key panels of the Grafana dashboard to PNG from a Prometheus that scraped agents.

The panels' queries are read from charts/buildcache/dashboards/buildcache.json (variables set to
"All"), run through Prometheus's /api/v1/query_range, and drawn with matplotlib, so the pictures
show exactly what the dashboard would. Used for docs/images/dashboard-*.png (see
tools/dashboard_demo.py, which produces a Prometheus with a workload in it).

    tools/render_panels.py --prometheus http://127.0.0.1:9090 --minutes 10 --out docs/images
"""

import argparse
import json
import pathlib
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "charts" / "buildcache" / "dashboards" / "buildcache.json"
# file name -> (panel titles drawn side by side)
FIGURES = {
    "dashboard-hit-ratio.png": ("Hit ratio by front end", "Hit ratio by node"),
    "dashboard-traffic.png": ("Bytes served by source", "Request latency"),
}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def substitute(expr, rate_interval, range_):
    for name in ("namespace", "buildcache", "node", "instance"):
        expr = expr.replace(f"${name}", ".*")
    return expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)


def legend(template, labels):
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    while "{{" in out:  # a label the series lacks (node outside Kubernetes)
        start = out.index("{{")
        out = out[:start] + out[out.index("}}", start) + 2:]
    return out.strip() or "value"


def query_range(prometheus, expr, start, end, step):
    params = urllib.parse.urlencode(
        {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}s"})
    with NO_PROXY.open(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as resp:
        body = json.load(resp)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def human_bytes(value, _pos=None):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def draw(ax, panel, prometheus, start, end, step, rate_interval):
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    stacked = panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    lines = []
    for target in panel["targets"]:
        expr = substitute(target["expr"], rate_interval, f"{int(end - start)}s")
        for series in query_range(prometheus, expr, start, end, step):
            xs = [(float(t) - start) / 60 for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            lines.append((legend(target["legendFormat"], series["metric"]), xs, ys))
    if not lines:
        raise RuntimeError(f"panel {panel['title']!r} has no data in this Prometheus")
    lines.sort(key=lambda line: line[0])
    if stacked:
        # Series may start at different times: stack on the union of timestamps.
        grid = sorted({x for _, xs, _ in lines for x in xs})
        stacks = []
        for _, xs, ys in lines:
            points = dict(zip(xs, ys))
            stacks.append([points.get(x, 0.0) for x in grid])
        ax.stackplot(grid, *stacks, labels=[name for name, _, _ in lines], alpha=0.8)
    else:
        for name, xs, ys in lines:
            ax.plot(xs, ys, label=name, linewidth=1.6)
    ax.set_title(panel["title"], fontsize=11, loc="left")
    ax.set_xlabel("minutes")
    ax.grid(True, alpha=0.3)
    if unit == "percentunit":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylim(0, 1.05)
    elif unit == "Bps":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, p: human_bytes(v) + "/s"))
    elif unit == "s":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, p: f"{v * 1000:.1f} ms"))
    ax.legend(fontsize=8, loc="best")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=10, help="how far back to draw")
    parser.add_argument("--end", type=float, default=None, help="unix time (default: now)")
    parser.add_argument("--step", type=int, default=5, help="seconds between points")
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval becomes")
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    args = parser.parse_args()

    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    end = args.end or time.time()
    start = end - args.minutes * 60
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, titles in FIGURES.items():
        fig, axes = plt.subplots(1, len(titles), figsize=(6.4 * len(titles), 3.8))
        for ax, title in zip(axes, titles):
            draw(ax, panels[title], args.prometheus, start, end, args.step, args.rate_interval)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
