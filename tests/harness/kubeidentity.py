"""Callers with a Kubernetes identity, for the agent's identity tests against a real API server:
pods registered on a node (what the agent's pod watch maps a source address to), ServiceAccount
tokens as the kubelet projects them, JWTs signed by hand for the forgeries, and curl from a
chosen source address with an optional bearer token."""

import base64
import json
import shutil
import subprocess

CURL = shutil.which("curl")
NODE = "node-1"


def apply(cp, manifest):
    cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def namespace(cp, ns):
    apply(cp, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})


def service_account(cp, ns, name):
    """The ServiceAccount (its namespace must exist)."""
    apply(cp, {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": ns}})


def add_pod(cp, ns, name, ip, sa=None, *, node=NODE, labels=None, host_network=False):
    """A Running pod of node with address ip (status patched: no kubelet here), run as sa (the
    ServiceAccount is created) in namespace ns, which must exist: applying it here would drop the
    labels a test gave it."""
    spec = {"nodeName": node, "containers": [{"name": "c", "image": "ci:test"}]}
    if sa:
        service_account(cp, ns, sa)
        spec["serviceAccountName"] = sa
    if host_network:
        spec["hostNetwork"] = True
    apply(cp, {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
               "spec": spec})
    cp.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p",
               json.dumps({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}))


def pod_token(cp, ns, sa, pod, audience="buildcache.io"):
    """What the kubelet writes into the webhook's projected volume: a pod-bound token."""
    return cp.kubectl("create", "token", sa, "-n", ns, "--audience", audience,
                      "--bound-object-kind", "Pod", "--bound-object-name", pod,
                      "--duration", "10m").stdout.strip()


def sa_token(cp, ns, name, audience="buildcache.io"):
    """A ServiceAccount token bound to no pod (namespace and ServiceAccount created)."""
    namespace(cp, ns)
    service_account(cp, ns, name)
    return cp.kubectl("create", "token", name, "-n", ns, "--audience", audience,
                      "--duration", "10m").stdout.strip()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(key_file, header, claims, tmp_path):
    """A JWT of header and claims signed with the PEM key in key_file (the control plane's sa.key
    for tokens only the API server should be able to make, or a stranger's): RS256 with an RSA
    key, ES256 with an EC P-256 key (as JWS spells it: R and S, 32 bytes each)."""
    part = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    data = tmp_path / "signed"
    data.write_text(part)
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key_file), str(data)],
                         capture_output=True, check=True).stdout
    if header.get("alg") == "ES256":
        sig = ecdsa_der_to_jws(sig, 32)
    return f"{part}.{b64url(sig)}"


def ecdsa_der_to_jws(der, size):
    """An ECDSA signature as OpenSSL writes it (DER: SEQUENCE of INTEGER r, INTEGER s) as JWS
    wants it: r and s, each big-endian in exactly size bytes."""
    def length(pos):
        first = der[pos]
        if first < 0x80:
            return first, pos + 1
        n = first & 0x7F
        return int.from_bytes(der[pos + 1:pos + 1 + n], "big"), pos + 1 + n

    assert der[0] == 0x30, "not a DER SEQUENCE"
    _, pos = length(1)
    out = b""
    for _ in range(2):
        assert der[pos] == 0x02, "not a DER INTEGER"
        n, pos = length(pos + 1)
        value = der[pos:pos + n].lstrip(b"\0")
        out += value.rjust(size, b"\0")
        pos += n
    return out


def curl(url, source, *args, data=None, token=None, method=None):
    """(status, body) of a request sent from source (an address of this host); data makes it a
    PUT, token adds "Authorization: Bearer"."""
    cmd = [CURL, "-sS", "--interface", source, "-o", "-", "-w", "\n%{http_code}", *args]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if data is not None:
        cmd += ["-X", "PUT", "--data-binary", "@-"]
    if method:
        cmd += ["-X", method]
    out = subprocess.run(cmd + [url], capture_output=True, timeout=60, input=data, check=True)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code), body
