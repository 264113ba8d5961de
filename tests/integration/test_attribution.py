"""Per-namespace attribution (buildcache_scope_*_total) from the real agent binary: the cap on
label values under ten times as many callers, the exposition through the real
`promtool check metrics`, and that nothing a client sends names the scope it is counted under.

Callers are told apart by tokens (a standalone tokens file); the pod-address source feeds the
same Caller, so the bound does not depend on where the scope came from.
"""

import subprocess
import urllib.error
import urllib.request

from conftest import parse_metrics

LIMIT = 5
CALLERS = 10 * LIMIT


def token(scope):
    return f"token-of-{scope}-0123456789"


def request(agent, method, path, headers=None, data=None):
    req = urllib.request.Request(agent.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def scope_values(metrics_text, family):
    return {dict(labels)["scope"] for (name, labels) in parse_metrics(metrics_text)
            if name == family}


def start(start_agent, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n" + f'  - {{token: "{token("release")}", scope: release, '
                      "trustedWriter: true}\n" + "".join(
                          f'  - {{token: "{token(f"ns-{i}")}", scope: ns-{i}}}\n'
                          for i in range(CALLERS)))
    config = tmp_path / "agent.yaml"
    config.write_text(f"identity: {{tokensFile: {tokens}, attributionLimit: {LIMIT}}}\n")
    agent = start_agent(config=config)
    auth = {"Authorization": f"Bearer {token('release')}"}
    assert request(agent, "PUT", "/cache/shared", auth, b"shared bytes")[0] // 100 == 2
    return agent


def test_ten_times_the_cap_of_callers_yield_at_most_cap_plus_one_values(start_agent, tmp_path):
    agent = start(start_agent, tmp_path)
    for i in range(CALLERS):
        auth = {"Authorization": f"Bearer {token(f'ns-{i}')}"}
        assert request(agent, "GET", "/cache/shared", auth) == (200, b"shared bytes")
        assert request(agent, "GET", "/cache/absent", auth)[0] == 404
    _, body = request(agent, "GET", "/metrics")
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == b"" and check.stderr.strip() == b"", check
    text = body.decode()
    for family in ("buildcache_scope_requests_total", "buildcache_scope_bytes_total"):
        values = scope_values(text, family)
        assert len(values) <= LIMIT + 1, values
        assert "(other)" in values
    m = parse_metrics(text)
    hits = {dict(ls)["scope"]: v for (n, ls), v in m.items()
            if n == "buildcache_scope_requests_total" and dict(ls)["result"] == "hit"}
    assert sum(hits.values()) == CALLERS  # nothing lost to the cap
    assert hits["(other)"] == CALLERS - LIMIT


def test_headers_and_credentials_a_client_sends_name_no_scope(start_agent, tmp_path):
    agent = start(start_agent, tmp_path)
    forged = {"X-Buildcache-Scope": "forged-a", "X-Forwarded-For": "10.9.9.9",
              "Forwarded": "for=10.9.9.9", "Impersonate-User": "forged-b",
              "X-Remote-User": "forged-c"}
    # An anonymous caller and a known one, each with every forged header.
    assert request(agent, "GET", "/cache/shared", forged)[0] == 200
    known = {**forged, "Authorization": f"Bearer {token('ns-1')}"}
    assert request(agent, "GET", "/cache/shared", known)[0] == 200
    # Unknown credentials naming a would-be scope are refused, not attributed.
    assert request(agent, "GET", "/cache/shared",
                   {"Authorization": "Bearer forged-d-0123456789abcdef"})[0] == 401
    assert request(agent, "GET", "/cache/shared",
                   {"Authorization": "Basic Zm9yZ2VkLWU6Zm9yZ2VkLWU="})[0] == 401  # forged-e
    _, body = request(agent, "GET", "/metrics")
    text = body.decode()
    assert "forged" not in text
    assert scope_values(text, "buildcache_scope_requests_total") == {"(anonymous)", "ns-1"}
