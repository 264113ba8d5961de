"""A MutatingWebhookConfiguration that sends pod creations to an operator's webhook on loopback,
as the tests register it (the Helm chart's points at a Service instead). The operator fills in
caBundle itself."""


def loopback_webhook_configuration(name, port, namespace_selector, object_selector=None):
    webhook = {
        "name": "pods.buildcache.io",
        "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate-pods"},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                   "resources": ["pods"], "scope": "Namespaced"}],
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 10,
        "namespaceSelector": namespace_selector,
    }
    if object_selector:
        webhook["objectSelector"] = object_selector
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name}, "webhooks": [webhook]}


def namespaces_except(*names):
    """A namespace selector for every namespace but these."""
    return {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                  "values": list(names)}]}
