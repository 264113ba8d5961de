"""ServiceAccount tokens the agent cannot decide offline go to the API server's TokenReview, and
a deleted pod's token is refused (agent/identity/service_account_token.h), against a real
kube-apiserver that issues the tokens (TokenRequest API, pod-bound as the kubelet asks for them).

The agents run with a ServiceAccount's token and RBAC of their own: one whose role lacks the
issuer-discovery rights (so the JWKS cannot be read, at start or later: every token goes to the
TokenReview), one with them (offline verification; the TokenReview only for an unknown key), and
one with neither discovery nor TokenReview rights (tokens cannot be decided: 503, never a
downgrade). Callers are pods registered on the agent's node with loopback addresses as pod IPs,
as in test_identity_kube.py. Each hostile case performs the attack and asserts that nothing was
stored or served from it, with the log lines and buildcache_identity_refused_total reasons."""

import json
import secrets
import subprocess

import pytest
import yaml

from conftest import metric
from harness.cpfixture import control_plane_fixture, wait_for
from harness.kubeidentity import (CURL, NODE, add_pod, apply, b64url, curl, namespace, pod_token,
                                  service_account, sign_jwt, unb64url)

AGENT_NS = "buildcache"
TEAM_A_IP, RELEASE_IP, GONE_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
POD_RULES = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}
REVIEW_RULES = {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                "verbs": ["create"]}
DISCOVERY_RULES = {"nonResourceURLs": ["/.well-known/openid-configuration", "/openid/v1/jwks"],
                   "verbs": ["get"]}

cp = control_plane_fixture()

pytestmark = pytest.mark.skipif(not CURL, reason="needs curl")


def can_i(cp, verb, what, user):
    proc = cp.kubectl("auth", "can-i", verb, what, f"--as={user}", check=False)
    return proc.stdout.strip() == "yes"


def agent_identity(cp, tmp_path, name, rules):
    """A ServiceAccount for an agent with exactly these cluster rules; a kubeconfig with its
    token, as the pod's in-cluster configuration would give it."""
    namespace(cp, AGENT_NS)
    service_account(cp, AGENT_NS, name)
    apply(cp, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": f"test-{name}"}, "rules": rules})
    apply(cp, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": f"test-{name}"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": f"test-{name}"},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": AGENT_NS}]})
    token = cp.kubectl("create", "token", name, "-n", AGENT_NS, "--duration=1h").stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path = tmp_path / f"kubeconfig-{name}"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def cluster(cp):
    # The API server binds issuer discovery to every ServiceAccount by default; take it away, so
    # that only the rules given below decide what the agents may read.
    cp.kubectl("delete", "clusterrolebinding", "system:service-account-issuer-discovery",
               "--ignore-not-found")
    for ns in ("team-a", "release"):
        namespace(cp, ns)
    add_pod(cp, "team-a", "ci-1", TEAM_A_IP, "builder")
    add_pod(cp, "release", "main-1", RELEASE_IP, "publisher")
    return cp


def start(cp, start_agent, tmp_path, name, rules):
    kubeconfig = agent_identity(cp, tmp_path, name, rules)
    user = f"system:serviceaccount:{AGENT_NS}:{name}"
    assert can_i(cp, "get", "/openid/v1/jwks", user) == (DISCOVERY_RULES in rules)
    config = tmp_path / f"agent-{name}.yaml"
    config.write_text(
        "logLevel: debug\nidentity:\n"
        f"  kubernetes: {{nodeName: {NODE}, kubeconfig: {kubeconfig}}}\n"
        "  trustedWriters: {serviceAccounts: [release/publisher]}\n")
    agent = start_agent(config=config)
    watched = agent.wait_for_log("node pods watched")
    assert watched["synced"] is True, watched
    return agent


def forgeries(cp, token, tmp_path):
    """Tokens an attacker can make from a real one: claims edited to the trusted namespace with
    the signature kept; the same claims signed with a key of its own under a key id the issuer
    never had; and an expired token signed with the issuer's real key."""
    header, claims, sig = token.split(".")
    edited = json.loads(unb64url(claims))
    edited["kubernetes.io"]["namespace"] = "release"
    edited["kubernetes.io"]["serviceaccount"]["name"] = "publisher"
    edited_token = f"{header}.{b64url(json.dumps(edited).encode())}.{sig}"
    own_key = tmp_path / "own.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(own_key)], check=True, capture_output=True)
    foreign = sign_jwt(own_key, {"alg": "RS256", "kid": "k-" + secrets.token_hex(8)}, edited,
                       tmp_path)
    old = json.loads(unb64url(claims))
    old["exp"] = old["iat"] - 3600
    expired = sign_jwt(cp.pki / "sa.key", json.loads(unb64url(header)), old, tmp_path)
    return {"edited": edited_token, "foreign key": foreign, "expired": expired}


def refusals(agent):
    return [e for e in agent.logs if e.get("msg") == "request refused"]


def no_token_in_logs(agent, tokens):
    text = "\n".join(str(e) for e in agent.logs)
    for token in tokens:
        assert token.split(".")[2] not in text


def test_without_the_issuer_keys_tokens_are_decided_by_the_token_review(cluster, start_agent,
                                                                        tmp_path):
    agent = start(cluster, start_agent, tmp_path, "agent-review",
                  [POD_RULES, REVIEW_RULES])
    warning = agent.wait_for_log("service account keys not loaded; tokens go to the TokenReview")
    assert "403" in warning["error"], warning
    key = f"{agent.url}/cache/ab/{secrets.token_hex(19)}"
    publisher = pod_token(cluster, "release", "publisher", "main-1")
    builder = pod_token(cluster, "team-a", "builder", "ci-1")

    # Real tokens: the trusted writer's lands in the trusted scope, the other in its own.
    assert curl(key, "127.0.0.1", data=b"release bytes", token=publisher)[0] == 201
    assert curl(key, "127.0.0.1", data=b"team-a bytes", token=builder)[0] == 201
    assert curl(key, "127.0.0.1") == (200, b"release bytes")
    assert curl(key, "127.0.0.1", token=builder) == (200, b"team-a bytes")
    for _ in range(5):  # cached: reviewed once each
        assert curl(key, "127.0.0.1", token=publisher) == (200, b"release bytes")
    m = agent.metrics()
    assert metric(m, "buildcache_identity_token_reviews_total", result="authenticated") == 2
    subjects = {(e["subject"], e["trusted_writer"]) for e in agent.logs
                if e.get("msg") == "caller identified"}
    assert ("release/publisher", True) in subjects and ("team-a/builder", False) in subjects

    # Attacks: every forgery is refused by the TokenReview too, writes nothing, reads nothing,
    # and is never served as anonymous or by the pod's address.
    fakes = forgeries(cluster, builder, tmp_path)
    fakes["other audience"] = pod_token(cluster, "team-a", "builder", "ci-1",
                                        audience="not-buildcache")
    fresh = f"{agent.url}/cache/{secrets.token_hex(20)}"
    for name, token in fakes.items():
        code, body = curl(key, TEAM_A_IP, data=b"poison", token=token)
        assert code == 401 and b"refused by the API server's TokenReview" in body, (name, body)
        assert curl(fresh, RELEASE_IP, data=b"poison", token=token)[0] == 401, name
        assert curl(key, RELEASE_IP, token=token)[0] == 401, name
    assert curl(key, "127.0.0.1") == (200, b"release bytes")
    assert curl(key, "127.0.0.1", token=builder) == (200, b"team-a bytes")
    assert curl(fresh, "127.0.0.1", token=publisher)[0] == 404
    m = agent.metrics()
    assert metric(m, "buildcache_identity_token_reviews_total", result="refused") == len(fakes)
    assert metric(m, "buildcache_identity_refused_total", reason="bad_credentials") == 3 * len(fakes)
    refused = refusals(agent)
    assert len(refused) == 3 * len(fakes)
    assert all(e["reason"] == "bad_credentials" and "TokenReview" in e["why"] for e in refused)
    no_token_in_logs(agent, [publisher, builder, *fakes.values()])


def test_a_deleted_pods_token_is_refused_offline_and_by_the_review(cluster, start_agent,
                                                                   tmp_path):
    offline = start(cluster, start_agent, tmp_path, "agent-offline",
                    [POD_RULES, REVIEW_RULES, DISCOVERY_RULES])
    offline.wait_for_log("service account keys loaded")
    review = start(cluster, start_agent, tmp_path, "agent-review-2", [POD_RULES, REVIEW_RULES])
    add_pod(cluster, "team-a", "ci-gone", GONE_IP, "builder")
    token = pod_token(cluster, "team-a", "builder", "ci-gone")
    key = f"/cache/{secrets.token_hex(20)}"
    for agent in (offline, review):
        wait_for("the pod in the agent's watch",
                 lambda a=agent: curl(a.url + key, GONE_IP, data=b"x")[0] == 201)
        assert curl(agent.url + key, "127.0.0.1", data=b"before", token=token)[0] == 201
    assert metric(offline.metrics(), "buildcache_identity_token_reviews_total") == 0

    # The attack: the pod is gone, its token is replayed (from anywhere). The cached verdict
    # goes with the pod; the offline check refuses it by the pod watch, the review by the API
    # server's own check.
    cluster.kubectl("delete", "pod", "ci-gone", "-n", "team-a", "--grace-period=0", "--force",
                    "--wait=false")
    for agent, why in ((offline, b"ci-gone no longer exists on this node"),
                       (review, b"refused by the API server's TokenReview")):
        wait_for("the deleted pod's token refused",
                 lambda a=agent: curl(a.url + key, "127.0.0.1", token=token)[0] == 401)
        code, body = curl(agent.url + key, "127.0.0.1", data=b"after", token=token)
        # Through the review, whichever saw the deletion first refuses it: the API server, or
        # the agent's pod watch.
        assert code == 401 and (why in body or b"no longer exists" in body), body
        assert curl(agent.url + key, GONE_IP)[0] == 404  # the address is nobody's now
        assert curl(agent.url + key, GONE_IP, data=b"after")[0] == 403
        no_token_in_logs(agent, [token])
    [gone] = [e for e in refusals(offline) if "no longer exists" in e["why"]][:1]
    assert gone["reason"] == "bad_credentials" and gone["client"] == "127.0.0.1", gone

    # A key the issuer never had, on the agent that has the keys: refreshed (rate-limited), then
    # reviewed and refused.
    builder = pod_token(cluster, "team-a", "builder", "ci-1")
    foreign = forgeries(cluster, builder, tmp_path)["foreign key"]
    code, body = curl(offline.url + key, TEAM_A_IP, data=b"poison", token=foreign)
    assert code == 401 and b"refused by the API server's TokenReview" in body, body
    assert metric(offline.metrics(), "buildcache_identity_token_reviews_total",
                  result="refused") == 1


def test_a_token_that_cannot_be_decided_is_503_and_never_a_downgrade(cluster, start_agent,
                                                                     tmp_path):
    agent = start(cluster, start_agent, tmp_path, "agent-blind", [POD_RULES])
    key = f"{agent.url}/cache/{secrets.token_hex(20)}"
    publisher = pod_token(cluster, "release", "publisher", "main-1")
    code, body = curl(key, RELEASE_IP, data=b"release bytes", token=publisher)
    assert code == 503 and b"TokenReview failed" in body, (code, body)
    assert curl(key, RELEASE_IP, token=publisher)[0] == 503
    assert curl(key, RELEASE_IP)[0] == 404  # nothing was stored (the pod by its address)
    m = agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="unverified") == 2
    assert metric(m, "buildcache_identity_refused_total", reason="bad_credentials") == 0
    assert metric(m, "buildcache_identity_token_reviews_total", result="error") == 1
    [first] = refusals(agent)[:1]
    assert first["reason"] == "unverified" and "HTTP 403" in first["why"], first
    no_token_in_logs(agent, [publisher])
