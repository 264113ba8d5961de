"""The BuildCache CRD (crds/buildcache.io_buildcaches.yaml) on a real kube-apiserver: it installs,
accepts and defaults the samples, and rejects each object in crds/testdata/invalid with the
message its "# expect:" lines name. operator/api's unit test checks the C++ validation against
the same files, so the two cannot drift apart.
"""

import json
import pathlib
import re
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from harness.cpfixture import control_plane_fixture  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
CRD = CRDS / "buildcache.io_buildcaches.yaml"
INVALID = sorted((CRDS / "testdata" / "invalid").glob("*.yaml"))


def expectations(path):
    return [line[len("# expect: "):] for line in path.read_text().splitlines()
            if line.startswith("# expect: ")]


cp = control_plane_fixture(crd=CRD, namespaces=("ci-system",))


def get_json(cp, *args):
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


def test_crd_is_established_with_a_structural_schema(cp):
    crd = get_json(cp, "crd", "buildcaches.buildcache.io")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "Nodes", "Desired", "Hit ratio", "Age"]
    # The short name and category work with kubectl.
    assert cp.kubectl("get", "bc", "-A").returncode == 0
    assert cp.kubectl("get", "buildcache", "-A").returncode == 0


def test_full_sample_is_accepted_as_written_plus_defaults(cp):
    cp.kubectl("apply", "-f", str(CRDS / "samples" / "buildcache.yaml"))
    spec = get_json(cp, "buildcache", "ci", "-n", "ci-system")["spec"]
    assert spec["storage"] == {"hostPath": "/var/lib/buildcache/ci", "maxSize": "200Gi",
                               "reclaimPolicy": "Retain"}
    # The wheel house (anonymous uploads) is off unless a BuildCache turns it on.
    assert spec["ecosystems"]["pypi"] == {
        "upstream": "https://pypi.example.internal/simple", "metadataTTL": "10m",
        "wheelHouse": True, "buildDeadline": "20m", "buildFailureTTL": "1h", "buildWorkers": 1,
        "builders": [{"name": "py311", "image": "registry.example.internal/ci/python:3.11-bookworm",
                      "python": "3.11", "libcVersion": "2.36", "implementation": "CPython",
                      "libc": "glibc", "cpu": "x86_64",
                      "resources": {"limits": {"memory": "2Gi"}}}]}
    assert spec["ecosystems"]["goproxy"]["sumdb"] is True
    assert spec["ecosystems"]["npm"]["metadataTTL"] == "5m"
    assert spec["ecosystems"]["httpcache"] == {"maxObjectSize": "512Mi"}
    assert [d["name"] for d in spec["directories"]] == ["gobuild", "pip"]
    assert spec["replication"] == {"copies": 2, "hydrate": True, "mutualTLS": True}
    assert spec["access"]["namespaceSelector"] == {"matchLabels": {"buildcache.io/allowed": "true"}}


def test_minimal_sample_gets_the_schema_defaults(cp):
    # operator/api's MinimalSampleGetsTheSchemaDefaults expects exactly these.
    cp.kubectl("apply", "-n", "default", "-f", str(CRDS / "samples" / "minimal.yaml"))
    spec = get_json(cp, "buildcache", "minimal", "-n", "default")["spec"]
    assert spec == {
        "storage": {"maxSize": "10Gi", "reclaimPolicy": "Retain"},
        "ecosystems": {"httpcache": {"maxObjectSize": "1Gi"}},
        "replication": {"copies": 2, "hydrate": True, "mutualTLS": True},
        "agent": {"logLevel": "info"},
    }


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_object_is_rejected_with_a_clear_message(cp, path):
    wanted = expectations(path)
    assert wanted, f"{path.name} has no '# expect:' line"
    proc = cp.kubectl("create", "-n", "default", "-f", str(path), check=False)
    assert proc.returncode != 0, f"{path.name} was accepted:\n{proc.stdout}"
    for text in wanted:
        assert text in proc.stderr, f"{path.name}: wanted {text!r} in:\n{proc.stderr}"
    # Nothing was stored.
    name = re.search(r"^  name: (\S+)$", path.read_text(), re.M).group(1)
    assert cp.kubectl("get", "buildcache", name, "-n", "default", check=False).returncode != 0


def test_invalid_cases_cover_every_rule(cp):
    """Each CEL rule message in the CRD is exercised by at least one invalid object (except the
    immutability rule, which needs an update and has its own test)."""
    crd = CRD.read_text()
    messages = re.findall(r"^\s+message: (.+)$", crd, re.M)
    # Folded (>-) messages: take their first line after the marker.
    folded = re.findall(r"message: >-\n\s+(.+)\n", crd)
    expected = "\n".join(line for p in INVALID for line in expectations(p))
    uncovered = []
    for message in [m for m in messages if m != ">-"] + folded:
        first_words = " ".join(message.split()[:5])
        if first_words not in expected and "cannot be changed" not in message:
            uncovered.append(message)
    assert not uncovered, f"rules without an invalid sample: {uncovered}"


def test_host_path_cannot_change_but_size_can(cp):
    cp.kubectl("apply", "-f", str(CRDS / "samples" / "buildcache.yaml"))
    moved = cp.kubectl("patch", "buildcache", "ci", "-n", "ci-system", "--type=merge", "-p",
                       json.dumps({"spec": {"storage": {"hostPath": "/var/lib/elsewhere"}}}),
                       check=False)
    assert moved.returncode != 0
    assert "storage.hostPath cannot be changed (the cached data lives there)" in moved.stderr
    dropped = cp.kubectl("patch", "buildcache", "ci", "-n", "ci-system", "--type=json", "-p",
                         json.dumps([{"op": "remove", "path": "/spec/storage/hostPath"}]),
                         check=False)
    assert dropped.returncode != 0 and "cannot be changed" in dropped.stderr
    cp.kubectl("patch", "buildcache", "ci", "-n", "ci-system", "--type=merge", "-p",
               json.dumps({"spec": {"storage": {"maxSize": "300Gi"}}}))
    spec = get_json(cp, "buildcache", "ci", "-n", "ci-system")["spec"]
    assert spec["storage"]["maxSize"] == "300Gi"
    assert spec["storage"]["hostPath"] == "/var/lib/buildcache/ci"


def test_status_subresource_and_printer_columns(cp):
    cp.kubectl("apply", "-f", str(CRDS / "samples" / "buildcache.yaml"))
    before = get_json(cp, "buildcache", "ci", "-n", "ci-system")
    generation = before["metadata"]["generation"]
    status = {"status": {
        "observedGeneration": generation,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllAgentsReady",
                        "message": "12 of 12 agents are ready",
                        "lastTransitionTime": "2026-11-28T07:30:00Z"}],
        "nodes": {"desired": 12, "ready": 12},
        "hitRatio": "0.94",
    }}
    cp.kubectl("patch", "buildcache", "ci", "-n", "ci-system", "--subresource=status",
               "--type=merge", "-p", json.dumps(status))
    after = get_json(cp, "buildcache", "ci", "-n", "ci-system")
    assert after["status"] == status["status"]
    assert after["metadata"]["generation"] == generation  # status writes leave it alone

    # Through the main resource, status is ignored.
    cp.kubectl("patch", "buildcache", "ci", "-n", "ci-system", "--type=merge", "-p",
               json.dumps({"status": {"hitRatio": "0.10"}}))
    assert get_json(cp, "buildcache", "ci", "-n", "ci-system")["status"]["hitRatio"] == "0.94"

    table = cp.kubectl("get", "buildcache", "ci", "-n", "ci-system").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "NODES", "HIT", "RATIO", "AGE"]
    assert table[1].split()[:4] == ["ci", "True", "12", "0.94"]
    wide = cp.kubectl("get", "buildcache", "ci", "-n", "ci-system", "-o", "wide").stdout
    assert "DESIRED" in wide.splitlines()[0]

    bad = cp.kubectl("patch", "buildcache", "ci", "-n", "ci-system", "--subresource=status",
                     "--type=merge", "-p", json.dumps({"status": {"hitRatio": "1.5"}}),
                     check=False)
    assert bad.returncode != 0 and "status.hitRatio" in bad.stderr
    bad_condition = cp.kubectl(
        "patch", "buildcache", "ci", "-n", "ci-system", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}}),
        check=False)
    assert bad_condition.returncode != 0
    assert 'Unsupported value: "Maybe"' in bad_condition.stderr


def test_samples_use_no_real_registry_hosts():
    for path in CRDS.rglob("*.yaml"):
        for url in re.findall(r"[a-z]+://[^\s\"',}]+", path.read_text()):
            host = re.match(r"[a-z]+://(?:[^/@]*@)?([^/:]+)", url).group(1)  # after user:pw@
            # Pod IPs (a WheelBuild's agentURL) are no registry host either.
            assert host.endswith(".example.internal") or host == "localhost" or \
                re.fullmatch(r"[0-9.]+", host), \
                f"{path.relative_to(REPO)}: {url}"
