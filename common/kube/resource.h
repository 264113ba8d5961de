#pragma once

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace buildcache::kube {

// Kubernetes objects are handled as JSON documents, exactly as the API server sends them.
using Json = nlohmann::json;

// A kind of object the API server serves, and how to address it.
struct Resource {
  std::string group;    // "" for the core group ("v1" objects)
  std::string version;  // "v1", "v1alpha1"
  std::string plural;   // "configmaps": the URL segment
  std::string kind;     // "ConfigMap"
  bool namespaced = true;

  // "v1" for the core group, else "group/version": the apiVersion field of an object.
  std::string ApiVersion() const;

  // The URL path of the collection, an object, or an object's subresource:
  //   /api/v1/namespaces/NS/configmaps[/NAME[/SUB]]
  //   /apis/GROUP/VERSION/PLURAL[/NAME[/SUB]]   (cluster-scoped, or all namespaces when ns is "")
  // Name and namespace are path-escaped.
  std::string Path(std::string_view ns, std::string_view name = {},
                   std::string_view subresource = {}) const;

  // "configmaps" or "leases.coordination.k8s.io", for messages.
  std::string Describe() const;
};

// Resources the operator uses.
namespace resources {
extern const Resource kConfigMaps;
extern const Resource kSecrets;
extern const Resource kServices;
extern const Resource kServiceAccounts;
extern const Resource kPods;
extern const Resource kNodes;
extern const Resource kNamespaces;
extern const Resource kDaemonSets;
extern const Resource kEndpointSlices;   // discovery.k8s.io/v1
extern const Resource kNetworkPolicies;  // networking.k8s.io/v1
extern const Resource kDeployments;
extern const Resource kLeases;
extern const Resource kEvents;      // events.k8s.io/v1
extern const Resource kCoreEvents;  // v1 (the older API)
extern const Resource kCustomResourceDefinitions;
extern const Resource kMutatingWebhookConfigurations;
}  // namespace resources

// "namespace/name", or "name" for a cluster-scoped object: the key of caches and work queues.
std::string ObjectKey(const Json& object);
std::string ObjectKey(std::string_view ns, std::string_view name);
// Splits a key made by ObjectKey into namespace ("" for none) and name.
void SplitObjectKey(std::string_view key, std::string* ns, std::string* name);

// The string at a path of nested object fields ({"metadata", "continue"}), or "" when a field is
// missing or not of the expected type. Never throws.
std::string StringAt(const Json& object, std::initializer_list<std::string_view> path);

// metadata.name / metadata.namespace / metadata.resourceVersion / metadata.uid, or "" when absent.
std::string NameOf(const Json& object);
std::string NamespaceOf(const Json& object);
std::string ResourceVersionOf(const Json& object);
std::string UidOf(const Json& object);

}  // namespace buildcache::kube
