"""Reading an agent's or the operator's /metrics (Prometheus text format) in tests, benchmarks
and the demo."""


def parse_metrics(text):
    """{(name, frozenset of (label, value))): value} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        labels = {}
        if "{" in name_labels:
            name, _, rest = name_labels.partition("{")
            for part in rest.rstrip("}").split('",'):
                if part:
                    k, _, v = part.partition("=")
                    labels[k] = v.strip('"')
        else:
            name = name_labels
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def metric(metrics, name, **labels):
    """Sum of a metric's samples whose labels include the given ones."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))
