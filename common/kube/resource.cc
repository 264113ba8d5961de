#include "common/kube/resource.h"

#include "common/http/rest_client.h"

namespace buildcache::kube {

std::string Resource::ApiVersion() const { return group.empty() ? version : group + "/" + version; }

std::string Resource::Path(std::string_view ns, std::string_view name,
                           std::string_view subresource) const {
  std::string path = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
  if (namespaced && !ns.empty()) {
    path += "/namespaces/";
    path += http::UrlEncode(ns);
  }
  path += "/";
  path += plural;
  if (!name.empty()) {
    path += "/";
    path += http::UrlEncode(name);
    if (!subresource.empty()) {
      path += "/";
      path += subresource;
    }
  }
  return path;
}

std::string Resource::Describe() const { return group.empty() ? plural : plural + "." + group; }

namespace resources {
const Resource kConfigMaps{"", "v1", "configmaps", "ConfigMap", true};
const Resource kSecrets{"", "v1", "secrets", "Secret", true};
const Resource kServices{"", "v1", "services", "Service", true};
const Resource kServiceAccounts{"", "v1", "serviceaccounts", "ServiceAccount", true};
const Resource kPods{"", "v1", "pods", "Pod", true};
const Resource kNodes{"", "v1", "nodes", "Node", false};
const Resource kNamespaces{"", "v1", "namespaces", "Namespace", false};
const Resource kDaemonSets{"apps", "v1", "daemonsets", "DaemonSet", true};
const Resource kEndpointSlices{"discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true};
const Resource kNetworkPolicies{"networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy",
                                true};
const Resource kDeployments{"apps", "v1", "deployments", "Deployment", true};
const Resource kLeases{"coordination.k8s.io", "v1", "leases", "Lease", true};
const Resource kEvents{"events.k8s.io", "v1", "events", "Event", true};
const Resource kCoreEvents{"", "v1", "events", "Event", true};
const Resource kCustomResourceDefinitions{"apiextensions.k8s.io", "v1", "customresourcedefinitions",
                                          "CustomResourceDefinition", false};
const Resource kMutatingWebhookConfigurations{"admissionregistration.k8s.io", "v1",
                                              "mutatingwebhookconfigurations",
                                              "MutatingWebhookConfiguration", false};
}  // namespace resources

std::string StringAt(const Json& object, std::initializer_list<std::string_view> path) {
  const Json* at = &object;
  for (std::string_view field : path) {
    if (!at->is_object()) return "";
    auto it = at->find(field);
    if (it == at->end()) return "";
    at = &*it;
  }
  return at->is_string() ? at->get<std::string>() : "";
}

namespace {
std::string MetadataString(const Json& object, std::string_view field) {
  return StringAt(object, {"metadata", field});
}
}  // namespace

std::string NameOf(const Json& object) { return MetadataString(object, "name"); }
std::string NamespaceOf(const Json& object) { return MetadataString(object, "namespace"); }
std::string ResourceVersionOf(const Json& object) {
  return MetadataString(object, "resourceVersion");
}
std::string UidOf(const Json& object) { return MetadataString(object, "uid"); }

std::string ObjectKey(std::string_view ns, std::string_view name) {
  if (ns.empty()) return std::string(name);
  std::string key(ns);
  key += "/";
  key += name;
  return key;
}

std::string ObjectKey(const Json& object) { return ObjectKey(NamespaceOf(object), NameOf(object)); }

void SplitObjectKey(std::string_view key, std::string* ns, std::string* name) {
  size_t slash = key.find('/');
  if (slash == std::string_view::npos) {
    ns->clear();
    *name = std::string(key);
  } else {
    *ns = std::string(key.substr(0, slash));
    *name = std::string(key.substr(slash + 1));
  }
}

}  // namespace buildcache::kube
