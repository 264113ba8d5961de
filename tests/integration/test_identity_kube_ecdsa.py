"""ServiceAccount tokens of an ECDSA issuer, against a real kube-apiserver + etcd started with an
EC P-256 key as --service-account-signing-key-file (ControlPlane(service_account_key="ec")): the
API server then signs ES256 and publishes {kty: EC, crv: P-256} in its JWKS. The real agent
verifies the tokens offline through OIDC discovery and the JWKS
(agent/identity/service_account_token.h), asking no TokenReview. Tokens are real pod-bound
projected tokens from the TokenRequest API, as the kubelet writes them into the webhook's volume
(test_identity_kube.py does the same for the default RSA issuer). Each hostile case performs
the attack and asserts that it is refused with a message and that nothing was stored or served
from it."""

import json
import secrets
import subprocess

import pytest

from conftest import metric
from harness.cpfixture import control_plane_fixture
from harness.kubeidentity import (CURL, NODE, add_pod, b64url, curl, namespace, pod_token,
                                  sa_token, sign_jwt, unb64url)

TEAM_A_IP, TEAM_B_IP = "127.0.0.2", "127.0.0.5"

cp = control_plane_fixture(service_account_key="ec")


@pytest.fixture(scope="module")
def pods(cp):
    for ns in ("team-a", "team-b", "release"):
        namespace(cp, ns)
    add_pod(cp, "team-a", "ci-1", TEAM_A_IP, sa="builder")
    add_pod(cp, "team-b", "ci-2", TEAM_B_IP, sa="builder")
    return cp


@pytest.fixture
def ec_agent(pods, start_agent, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(
        "logLevel: debug\nidentity:\n"
        f"  kubernetes: {{nodeName: $BC_TEST_NODE, kubeconfig: {pods.kubeconfig}}}\n"
        "  trustedWriters: {serviceAccounts: [release/publisher]}\n")
    agent = start_agent(config=config, env={"BC_TEST_NODE": NODE})
    loaded = agent.wait_for_log("service account keys loaded")
    assert loaded["keys"] == 1 and loaded["issuer"] == pods.url, loaded
    watched = agent.wait_for_log("node pods watched")
    assert watched["synced"] is True, watched
    return agent


def jwt_parts(token):
    header, claims, sig = token.split(".")
    return json.loads(unb64url(header)), json.loads(unb64url(claims)), sig


def test_the_api_server_signs_es256_with_a_p256_key(pods):
    jwks = json.loads(pods.kubectl("get", "--raw", "/openid/v1/jwks").stdout)
    [key] = jwks["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256"), key
    header, claims, sig = jwt_parts(pod_token(pods, "team-a", "builder", "ci-1"))
    assert header["alg"] == "ES256" and header["kid"] == key["kid"], header
    assert len(unb64url(sig)) == 64  # R || S
    assert claims["kubernetes.io"]["pod"]["name"] == "ci-1"


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_es256_tokens_are_verified_offline_and_scoped_to_their_namespace(ec_agent, pods):
    key = f"{ec_agent.url}/cache/ab/{secrets.token_hex(19)}"
    publisher = sa_token(pods, "release", "publisher")  # trusted writer by serviceAccounts
    team_a = pod_token(pods, "team-a", "builder", "ci-1")
    team_b = pod_token(pods, "team-b", "builder", "ci-2")
    # From an address that is no pod's: the token alone decides.
    assert curl(key, "127.0.0.1", data=b"release bytes", token=publisher)[0] == 201
    assert curl(key, "127.0.0.1", data=b"team-a bytes", token=team_a)[0] == 201
    assert curl(key, "127.0.0.1", token=team_a) == (200, b"team-a bytes")
    # Nobody else sees team-a's write: anonymous callers, the publisher and team-b read the
    # trusted entry.
    assert curl(key, "127.0.0.1") == (200, b"release bytes")
    assert curl(key, "127.0.0.1", token=publisher) == (200, b"release bytes")
    assert curl(key, "127.0.0.1", token=team_b) == (200, b"release bytes")
    # A key only team-a wrote: team-a reads it, team-b does not.
    own = f"{ec_agent.url}/cache/{secrets.token_hex(20)}"
    assert curl(own, "127.0.0.1", data=b"team-a only", token=team_a)[0] == 201
    assert curl(own, "127.0.0.1", token=team_a) == (200, b"team-a only")
    assert curl(own, "127.0.0.1", token=team_b)[0] == 404
    assert curl(own, "127.0.0.1")[0] == 404

    m = ec_agent.metrics()
    assert metric(m, "buildcache_identity_token_reviews_total") == 0, m  # all decided offline
    subjects = {(e["subject"], e["trusted_writer"]) for e in ec_agent.logs
                if e.get("msg") == "caller identified"}
    assert {("release/publisher", True), ("team-a/builder", False),
            ("team-b/builder", False)} <= subjects, subjects
    text = "\n".join(str(e) for e in ec_agent.logs)
    for token in (publisher, team_a, team_b):
        assert token.split(".")[2] not in text


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_changed_and_foreign_es256_signatures_are_refused(ec_agent, pods, tmp_path):
    key = f"{ec_agent.url}/cache/ab/{secrets.token_hex(19)}"
    publisher = sa_token(pods, "release", "publisher")
    assert curl(key, "127.0.0.1", data=b"release bytes", token=publisher)[0] == 201
    team_a = pod_token(pods, "team-a", "builder", "ci-1")
    header, claims, sig = team_a.split(".")
    raw = bytearray(unb64url(sig))

    # The signature changed: one bit of R, one bit of S, and S set to zero (never valid).
    changed = []
    for index in (5, 40):
        flipped = bytearray(raw)
        flipped[index] ^= 0x01
        changed.append(f"{header}.{claims}.{b64url(bytes(flipped))}")
    changed.append(f"{header}.{claims}.{b64url(bytes(raw[:32]) + bytes(32))}")
    # The claims edited to name the release namespace and its trusted ServiceAccount, the real
    # signature kept.
    edited = json.loads(unb64url(claims))
    edited["kubernetes.io"]["namespace"] = "release"
    edited["kubernetes.io"]["serviceaccount"]["name"] = "publisher"
    forged = f"{header}.{b64url(json.dumps(edited).encode())}.{sig}"
    # The same header (key id) and claims signed by another EC P-256 key, and signed by it for
    # the trusted ServiceAccount.
    other_key = tmp_path / "other-ec.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(other_key)],
                   check=True, capture_output=True)
    foreign = sign_jwt(other_key, json.loads(unb64url(header)), json.loads(unb64url(claims)),
                       tmp_path)
    foreign_publisher = sign_jwt(other_key, json.loads(unb64url(header)), edited, tmp_path)
    # Expired, but signed with the API server's own key: the claims are checked too.
    expired_claims = json.loads(unb64url(claims))
    expired_claims["exp"] = expired_claims["iat"] - 3600
    expired = sign_jwt(pods.pki / "sa.key", json.loads(unb64url(header)), expired_claims, tmp_path)
    assert len(unb64url(expired.split(".")[2])) == 64

    cases = [(f"changed {i}", t, b"bad token signature") for i, t in enumerate(changed)]
    cases += [("edited claims", forged, b"bad token signature"),
              ("foreign key", foreign, b"bad token signature"),
              ("foreign key, trusted claims", foreign_publisher, b"bad token signature"),
              ("expired", expired, b"token expired")]
    fresh = f"{ec_agent.url}/cache/{secrets.token_hex(20)}"
    for name, token, why in cases:
        code, body = curl(key, TEAM_A_IP, data=b"poison", token=token)
        assert code == 401 and why in body, (name, code, body)
        code, body = curl(fresh, "127.0.0.1", data=b"poison", token=token)
        assert code == 401 and why in body, (name, code, body)
        assert curl(key, TEAM_A_IP, token=token)[0] == 401, name  # never a downgrade
    # Nothing was stored: the trusted entry is unchanged for everyone, the fresh key is absent in
    # every scope, and team-a's own scope holds nothing for the key.
    assert curl(key, "127.0.0.1") == (200, b"release bytes")
    assert curl(key, "127.0.0.1", token=team_a) == (200, b"release bytes")
    for token in (None, team_a, publisher):
        assert curl(fresh, "127.0.0.1", token=token)[0] == 404

    m = ec_agent.metrics()
    assert metric(m, "buildcache_identity_token_reviews_total") == 0, m
    assert metric(m, "buildcache_identity_refused_total", reason="bad_credentials") == 3 * len(cases)
    text = "\n".join(str(e) for e in ec_agent.logs)
    for _, token, _ in cases:
        assert token.split(".")[2] not in text
