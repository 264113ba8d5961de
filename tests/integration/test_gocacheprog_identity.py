"""buildcache-gocacheprog in a pod the webhook wired for caller identity: the real go command, a
real agent verifying ServiceAccount tokens against a real kube-apiserver, and the token found
only through BUILDCACHE_TOKEN_FILE (what the webhook sets beside the projected token; no
gocacheprog flag or variable of its own). A trusted service account's token writes into the
trusted scope every reader sees, an untrusted one's into its own namespace's scope, and a bad
token is a miss with the build going on, storing nothing."""

import json
import os
import secrets

import pytest

from harness.cpfixture import control_plane_fixture
from harness.metrics import metric
from test_gocacheprog import PACKAGES, compiles, go_build, go_env, module, stats  # noqa: F401

NODE = "node-1"

cp = control_plane_fixture()


def token(cp, ns, sa):
    cp.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
    cp.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}))
    return cp.kubectl("create", "token", sa, "-n", ns, "--audience", "buildcache.io",
                      "--duration", "30m").stdout.strip()


def test_the_webhooks_token_file_decides_the_scope_of_go_build_outputs(cp, start_agent, module,
                                                                       tmp_path):
    root, want = module
    config = tmp_path / "agent.yaml"
    config.write_text(
        "identity:\n  anonymous: read\n"
        f"  kubernetes: {{nodeName: {NODE}, kubeconfig: {cp.kubeconfig}}}\n"
        "  trustedWriters: {serviceAccounts: [release/publisher]}\n")
    agent = start_agent(config=config)
    agent.wait_for_log("service account keys loaded")
    tokens = {"builder": token(cp, "team-a", "builder"),
              "publisher": token(cp, "release", "publisher"),
              "forged": token(cp, "team-a", "builder")[:-8] + secrets.token_hex(4)}

    def build(tag, who=None):
        env = go_env(tmp_path, [f"--agent={agent.url}", "--stats",
                                f"--dir={tmp_path / ('d-' + tag)}"], tag)
        env.pop("BUILDCACHE_TOKEN_FILE", None)
        env.pop("BUILDCACHE_GOCACHEPROG_TOKEN_FILE", None)
        if who:
            # The kubelet's layout: token -> ..data/token, ..data -> a timestamped directory.
            volume = tmp_path / f"token-{tag}"
            (volume / "v1").mkdir(parents=True)
            (volume / "v1" / "token").write_text(tokens[who])
            os.symlink("v1", volume / "..data")
            os.symlink("..data/token", volume / "token")
            env["BUILDCACHE_TOKEN_FILE"] = str(volume / "token")
        log, out = go_build(root, env, tmp_path / f"bin-{tag}")
        assert out == want
        return log, stats(log)

    def stored():
        return metric(agent.metrics(), "buildcache_requests_total", frontend="httpcache",
                      result="stored")

    # An untrusted pod's outputs go into its namespace's scope: it reads them back, an
    # anonymous caller (the trusted scope) does not see them.
    log, s = build("builder-1", "builder")
    assert s["uploads"] == s["puts"] > 0, s
    log, s = build("builder-2", "builder")
    assert compiles(log) == [] and s["remote_hits"] > 0, s
    log, s = build("anonymous-1")
    assert s["remote_hits"] == 0 and len(compiles(log)) >= PACKAGES, s
    assert s["uploads"] == 0 and "HTTP 403" in log, s  # anonymous: read only

    # The attack: a forged token. The build succeeds, its gets are misses, nothing is stored.
    before = stored()
    log, s = build("forged", "forged")
    assert s["uploads"] == 0 and s["remote_hits"] == 0, s
    assert "agent did not accept the token (HTTP 401)" in log, log[-2000:]
    assert stored() == before

    # A trusted writer's outputs go into the trusted scope, which every reader sees.
    log, s = build("publisher", "publisher")
    assert s["uploads"] == s["puts"] > 0 and s["remote_hits"] == 0, s
    log, s = build("anonymous-2")
    assert compiles(log) == [] and s["remote_hits"] > 0, s
    text = "\n".join(str(e) for e in agent.logs)
    for t in tokens.values():
        assert t.split(".")[2] not in text
