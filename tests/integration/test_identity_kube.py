"""Caller identity on Kubernetes (identity.kubernetes) against a real kube-apiserver: from the
pod's address (agent/identity/pod_address_identity.h: pods registered on the agent's node with
loopback addresses as their pod IPs, set through the status subresource as the kubelet would, and
curl sending from those addresses with --interface), and from ServiceAccount tokens the API
server issues with the TokenRequest API (agent/identity/service_account_token.h). Each hostile
case performs the attack and asserts nothing was stored or served from it."""

import json
import secrets
import subprocess

import pytest

from conftest import metric
from harness.cpfixture import control_plane_fixture, wait_for
from harness.kubeidentity import (CURL, NODE, add_pod, b64url, curl, namespace, sa_token,
                                  sign_jwt, unb64url)

TEAM_A_IP, RELEASE_IP, HOSTNET_IP, TEAM_B_IP, OTHER_NODE_IP = (
    "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
TOKEN = "tok-" + secrets.token_hex(16)  # scope team-a, not trusted


cp = control_plane_fixture()


@pytest.fixture(scope="module")
def pods(cp):
    for ns in ("team-a", "release", "kube-system", "team-b"):
        namespace(cp, ns)
    add_pod(cp, "team-a", "ci-1", TEAM_A_IP, sa="builder")
    add_pod(cp, "release", "main-1", RELEASE_IP, labels={"branch": "main"})
    add_pod(cp, "kube-system", "node-agent", HOSTNET_IP, host_network=True)
    add_pod(cp, "team-b", "elsewhere", OTHER_NODE_IP, node="node-2")
    return cp


@pytest.fixture
def kube_agent(pods, start_agent, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n  - {{token: \"{TOKEN}\", scope: team-a, name: team-a-token}}\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        "logLevel: debug\nidentity:\n"
        f"  tokensFile: {tokens}\n"
        f"  kubernetes: {{nodeName: $BC_TEST_NODE, kubeconfig: {pods.kubeconfig}}}\n"
        "  trustedWriters: {podLabels: {branch: main}, serviceAccounts: [release/publisher]}\n")
    agent = start_agent(config=config, env={"BC_TEST_NODE": NODE})
    watched = agent.wait_for_log("node pods watched")
    assert watched["synced"] is True and watched["node"] == NODE, watched
    return agent


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_a_pods_address_is_its_namespace_and_only_trusted_pods_write_the_trusted_scope(kube_agent):
    key = f"{kube_agent.url}/cache/ab/{secrets.token_hex(19)}"
    assert curl(key, RELEASE_IP, data=b"release bytes")[0] == 201  # trusted (label branch=main)
    # The attack: a pull-request pod overwrites the key; it lands in team-a's scope only.
    assert curl(key, TEAM_A_IP, data=b"poison")[0] == 201
    assert curl(key, RELEASE_IP) == (200, b"release bytes")
    assert curl(key, "127.0.0.1") == (200, b"release bytes")  # no pod: anonymous
    assert curl(key, TEAM_A_IP) == (200, b"poison")
    # Host-network pods share the node's address: anonymous, so they cannot write. A pod of
    # another node is not this agent's: its address is anonymous too.
    for source in (HOSTNET_IP, OTHER_NODE_IP, "127.0.0.1"):
        assert curl(key, source, data=b"poison")[0] == 403, source
        assert curl(key, source) == (200, b"release bytes"), source
    # A token wins over the address: the release pod sending team-a's token is team-a.
    assert curl(key, RELEASE_IP, token=TOKEN) == (200, b"poison")
    assert curl(key, RELEASE_IP, token="forged-" + secrets.token_hex(8))[0] == 401
    m = kube_agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="anonymous_write") == 3
    assert metric(m, "buildcache_identity_refused_total", reason="bad_credentials") == 1
    subjects = {(e["subject"], e["scope"], e["trusted_writer"]) for e in kube_agent.logs
                if e.get("msg") == "caller identified"}
    assert ("team-a/builder", "team-a", False) in subjects
    assert ("release/default", "release", True) in subjects
    assert ("team-a-token", "team-a", False) in subjects
    assert TOKEN not in "\n".join(str(e) for e in kube_agent.logs)


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_pods_that_come_and_go_are_followed(kube_agent, cp):
    key = f"{kube_agent.url}/cache/{secrets.token_hex(20)}"
    assert curl(key, TEAM_B_IP, data=b"x")[0] == 403  # no pod has this address yet
    add_pod(cp, "team-b", "ci-2", TEAM_B_IP)
    wait_for("the new pod", lambda: curl(key, TEAM_B_IP, data=b"team-b bytes")[0] == 201)
    assert curl(key, TEAM_B_IP) == (200, b"team-b bytes")
    assert curl(key, TEAM_A_IP)[0] == 404  # team-b's scope is not team-a's
    cp.kubectl("delete", "pod", "ci-2", "-n", "team-b", "--grace-period=0", "--force", "--wait=false")
    # Once the pod is gone its address is nobody's: it reads nothing from team-b's scope.
    wait_for("the pod's removal", lambda: curl(key, TEAM_B_IP)[0] == 404)
    assert curl(key, TEAM_B_IP, data=b"again")[0] == 403


@pytest.mark.skipif(not CURL, reason="needs curl")
def test_service_account_tokens_name_their_namespace_and_bad_ones_are_401(kube_agent, cp,
                                                                         tmp_path):
    key = f"{kube_agent.url}/cache/{secrets.token_hex(20)}"
    publisher = sa_token(cp, "release", "publisher")  # a trusted writer by serviceAccounts
    builder = sa_token(cp, "team-a", "builder")
    # From an address no pod has (anonymous by address): the token decides.
    assert curl(key, "127.0.0.1", data=b"release bytes", token=publisher)[0] == 201
    assert curl(key, "127.0.0.1", data=b"team-a bytes", token=builder)[0] == 201  # its scope
    assert curl(key, "127.0.0.1", token=builder) == (200, b"team-a bytes")
    assert curl(key, "127.0.0.1") == (200, b"release bytes")
    assert curl(key, TEAM_A_IP) == (200, b"team-a bytes")  # the pod of team-a by address

    # Attacks: a token for another audience, a token whose claims were edited (now naming the
    # release namespace) with the signature kept, an expired token signed with the real key, a
    # token signed with another key. Each is 401 and writes nothing.
    other_audience = sa_token(cp, "team-a", "builder", audience="not-buildcache")
    header, claims, sig = builder.split(".")
    edited = json.loads(unb64url(claims))
    edited["kubernetes.io"]["namespace"] = "release"
    forged = f"{header}.{b64url(json.dumps(edited).encode())}.{sig}"
    expired_claims = json.loads(unb64url(claims))
    expired_claims["exp"] = expired_claims["iat"] - 3600
    expired = sign_jwt(cp.pki / "sa.key", json.loads(unb64url(header)), expired_claims, tmp_path)
    other_key = tmp_path / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(other_key)], check=True, capture_output=True)
    foreign = sign_jwt(other_key, json.loads(unb64url(header)), json.loads(unb64url(claims)),
                       tmp_path)
    for name, token, why in (("audience", other_audience, b"not for audience buildcache.io"),
                             ("edited", forged, b"bad token signature"),
                             ("expired", expired, b"token expired"),
                             ("foreign key", foreign, b"bad token signature")):
        code, body = curl(key, RELEASE_IP, data=b"poison", token=token)
        assert code == 401 and why in body, (name, code, body)
        assert curl(key, RELEASE_IP, token=token)[0] == 401, name  # never a downgrade
    assert curl(key, "127.0.0.1") == (200, b"release bytes")
    assert curl(key, "127.0.0.1", token=builder) == (200, b"team-a bytes")
    m = kube_agent.metrics()
    assert metric(m, "buildcache_identity_refused_total", reason="bad_credentials") == 8
    text = "\n".join(str(e) for e in kube_agent.logs)
    for token in (publisher, builder, other_audience, forged, expired, foreign):
        assert token not in text and token.split(".")[2] not in text
    subjects = {(e["subject"], e["trusted_writer"]) for e in kube_agent.logs
                if e.get("msg") == "caller identified"}
    assert ("release/publisher", True) in subjects and ("team-a/builder", False) in subjects
