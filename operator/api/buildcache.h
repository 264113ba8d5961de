#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status/status.h"

namespace buildcache::api {

// The BuildCache custom resource (crds/buildcache.io_buildcaches.yaml) as C++ types. FromJson
// applies the schema's defaults and its validation (types, enums, bounds and every CEL rule, with
// the same messages), so the operator never acts on an object the API server would have refused,
// and objects written before a rule existed are caught too.

using Json = nlohmann::json;

inline constexpr char kGroup[] = "buildcache.io";
inline constexpr char kVersion[] = "v1alpha1";
inline constexpr char kApiVersion[] = "buildcache.io/v1alpha1";
inline constexpr char kKind[] = "BuildCache";
inline constexpr char kPlural[] = "buildcaches";

// Ecosystem names, as pods name them in the buildcache.io/use annotation.
inline constexpr std::string_view kEcosystemNames[] = {"pypi",  "goproxy", "npm",
                                                       "cargo", "maven",   "httpcache"};

// A byte size as written ("200Gi") and its value.
struct ByteSize {
  std::string text{};
  uint64_t bytes = 0;
};

// A duration as written ("10m") and its value.
struct Ttl {
  std::string text{};
  std::chrono::nanoseconds value{0};
};

struct Toleration {
  std::string key{};
  std::string op{};  // "Exists", "Equal" or "" (Equal)
  std::string value{};
  std::string effect{};
  std::optional<int64_t> toleration_seconds{};
};

enum class ReclaimPolicy { kRetain, kDelete };

struct Storage {
  std::string host_path{};  // "" when not given: see BuildCache::HostPath
  ByteSize max_size{};
  ReclaimPolicy reclaim_policy = ReclaimPolicy::kRetain;
};

// spec.ecosystems.<name>.upstreamSecretRef: a Secret in the BuildCache's namespace with the
// credential a private upstream wants. basic: its keys username and password; bearer: its key
// token (kSecretKeys... in operator/controllers/owned_objects.h).
struct UpstreamSecretRef {
  std::string name{};
  std::string type{};  // "basic" or "bearer"

  bool operator==(const UpstreamSecretRef&) const = default;
};

// spec.ecosystems.pypi.builders[]: an image that builds wheels in builder pods, for the platform
// it declares (operator/controllers/wheel_build_pod.h builds the pod).
struct PypiBuilder {
  std::string name{};
  std::string image{};
  std::string python{};                           // "3.11"
  std::string implementation = "CPython";         // CPython | PyPy
  std::string libc = "glibc";                     // glibc | musl
  std::string libc_version{};                     // "2.36"
  std::string cpu = "x86_64";                     // x86_64 | aarch64
  std::map<std::string, std::string> requests{};  // cpu, memory, ephemeral-storage
  std::map<std::string, std::string> limits{};

  bool operator==(const PypiBuilder&) const = default;
};

// The pypi-only build settings (spec.ecosystems.pypi.{builders,buildDeadline,...}).
struct PypiBuilds {
  std::vector<PypiBuilder> builders{};
  Ttl deadline{};       // buildDeadline, 1m..2h (default 15m)
  Ttl failure_ttl{};    // buildFailureTTL (default 1h)
  int32_t workers = 1;  // buildWorkers, 1..8

  // The builder of this name, or nullptr.
  const PypiBuilder* Find(const std::string& name) const;
};

// A registry mirror: pypi, npm, cargo, maven, and the base of goproxy.
struct Mirror {
  std::string upstream{};
  Ttl metadata_ttl{};
  bool wheel_house = false;  // pypi only (spec.ecosystems.pypi.wheelHouse): accept uploads
  std::optional<UpstreamSecretRef> upstream_secret_ref{};
  PypiBuilds builds{};  // pypi only
};

struct GoProxy {
  Mirror mirror{};
  bool sumdb = true;  // verify modules against the checksum database (off: stored unverified)
  // The checksum database's name (GOSUMDB's first word); "" = the operator's default
  // (SpecPolicy::go_sumdb_name).
  std::string sumdb_name{};
};

struct HttpCache {
  ByteSize max_object_size{};
};

// Present means enabled.
struct Ecosystems {
  std::optional<Mirror> pypi{};
  std::optional<GoProxy> goproxy{};
  std::optional<Mirror> npm{};
  std::optional<Mirror> cargo{};
  std::optional<Mirror> maven{};
  std::optional<HttpCache> httpcache{};

  // The enabled ecosystems' names, in the order of kEcosystemNames.
  std::vector<std::string> Enabled() const;
};

struct Directory {
  std::string name{};
  std::string mount_path{};
  ByteSize max_size{};
};

struct Replication {
  int32_t copies = 2;
  bool hydrate = true;
  // Agents authenticate each other with certificates from a CA the operator keeps for this
  // BuildCache (mutual TLS on the peer port); false serves the peer protocol in plaintext.
  bool mutual_tls = true;
  // spec.replication.scopeMissTTL (agent replication.scopeMissTtl); nullopt: the agent's default.
  std::optional<Ttl> scope_miss_ttl{};
};

struct LabelSelectorRequirement {
  std::string key{};
  std::string op{};  // In, NotIn, Exists, DoesNotExist
  std::vector<std::string> values{};
};

struct LabelSelector {
  std::map<std::string, std::string> match_labels{};
  std::vector<LabelSelectorRequirement> match_expressions{};

  // Kubernetes label selector semantics: every label and every expression must match; an empty
  // selector matches everything.
  bool Matches(const std::map<std::string, std::string>& labels) const;
};

// spec.access.trustedWriters: the pods whose build-cache writes go into the trusted scope every
// reader sees (agent identity.trustedWriters). A pod matching any of the three is trusted.
struct TrustedWriters {
  // nullopt: no namespace is trusted as a whole. The agent takes namespace names, so the
  // reconciler resolves the selector into `namespaces` (below) from the cluster's namespaces.
  std::optional<LabelSelector> namespace_selector{};
  std::vector<std::string> service_accounts{};      // "namespace/name"
  std::map<std::string, std::string> pod_labels{};  // podSelector.matchLabels (every one)
  // Not part of the spec: the namespaces namespace_selector matched when the reconciler last
  // looked (sorted), rendered into the agent's configuration.
  std::vector<std::string> namespaces{};
};

struct Access {
  // nullopt: only the BuildCache's own namespace.
  std::optional<LabelSelector> namespace_selector{};
  // Render a NetworkPolicy that admits the agent port only from allowed namespaces' pods, the
  // agents and the operator, and the peer port only from the agents.
  bool network_policy = false;
  // spec.access.anonymous: "read" or "none"; "" when not given.
  std::string anonymous{};
  std::optional<TrustedWriters> trusted_writers{};
  // spec.access.attributionLimit (agent identity.attributionLimit, 0..10000); nullopt: the
  // agent's default. Only with identity on (a CRD rule).
  std::optional<int32_t> attribution_limit{};

  // Caller identity is on (the agents identify callers by pod address and projected tokens, and
  // the webhook projects tokens) when trustedWriters or anonymous is given.
  bool IdentityEnabled() const { return trusted_writers.has_value() || !anonymous.empty(); }
};

struct Agent {
  std::string image{};  // "" for the operator's default
  std::string image_pull_policy{};
  std::string log_level = "info";
  std::map<std::string, std::string> requests{};  // resource name -> quantity
  std::map<std::string, std::string> limits{};
};

struct BuildCacheSpec {
  std::map<std::string, std::string> node_selector{};
  std::vector<Toleration> tolerations{};
  Storage storage{};
  Ecosystems ecosystems{};
  std::vector<Directory> directories{};
  Replication replication{};
  Access access{};
  Agent agent{};
};

// metav1.Condition.
struct Condition {
  std::string type{};
  std::string status{};  // "True", "False", "Unknown"
  std::string reason{};
  std::string message{};
  std::string last_transition_time{};  // RFC 3339
  int64_t observed_generation = 0;
};

// The hit ratio of one ecosystem (agent front end), summed over the agents.
struct EcosystemStatus {
  std::string name{};
  std::string hit_ratio{};  // "0.94"
  int64_t lookups = 0;      // GET/HEAD requests counted (hits and misses)

  bool operator==(const EcosystemStatus&) const = default;
};

// One caller namespace (the agents' scope label, docs/metrics.md) in status.topNamespaces,
// summed over the agents.
struct NamespaceStatus {
  std::string name{};       // a namespace, or "(anonymous)", "(unscoped)", "(other)"
  int64_t saved_bytes = 0;  // bytes served from a store or a peer (buildcache_scope_bytes_total)
  std::string hit_ratio{};  // "0.94": lookups answered from a store or a peer
  int64_t lookups = 0;

  bool operator==(const NamespaceStatus&) const = default;
};
inline constexpr size_t kMaxTopNamespaces = 5;

struct BuildCacheStatus {
  int64_t observed_generation = 0;
  std::vector<Condition> conditions{};
  int32_t desired_nodes = 0;
  int32_t ready_nodes = 0;
  std::string hit_ratio{};                    // "0.94"; "" when unknown
  std::vector<EcosystemStatus> ecosystems{};  // per ecosystem, by name; empty when unknown
  // The kMaxTopNamespaces namespaces the cache saved the most bytes for, most first.
  std::vector<NamespaceStatus> top_namespaces{};
  // How the agents identify callers: "off", or "podAddress+token;anonymous=read" (the sources
  // that are on; what anonymous callers may do); "" when not reported (controllers IdentityMode).
  std::string identity{};
};

struct BuildCache {
  std::string name{};
  std::string ns{};
  std::string uid{};
  std::string resource_version{};
  int64_t generation = 0;
  BuildCacheSpec spec{};
  BuildCacheStatus status{};

  // spec.storage.hostPath, or DefaultHostPath(ns, name) when it is not given.
  std::string HostPath() const;
  // Whether a pod in namespace `pod_ns` (with these namespace labels) may use this cache.
  bool AllowsNamespace(const std::string& pod_ns,
                       const std::map<std::string, std::string>& ns_labels) const;
};

// /var/lib/buildcache/NAMESPACE/NAME: distinct for every BuildCache, so tenants never share it.
std::string DefaultHostPath(const std::string& ns, const std::string& name);

// One violation, as the API server reports it: "spec.storage.hostPath: Invalid value: \"string\":
// storage.hostPath must be an absolute path".
struct FieldError {
  std::string path{};     // "spec.storage.hostPath", "<nil>" for the object itself
  std::string message{};  // everything after "PATH: "
  std::string ToString() const { return path + ": " + message; }
};

// The object with the schema's defaults filled in, as the API server stores it.
Json ApplyDefaults(const Json& object);

// Every violation of the schema and its rules in `object` (which should have defaults applied).
std::vector<FieldError> Validate(const Json& object);

// Validate(new_object) plus the rules about changes (storage.hostPath cannot change).
std::vector<FieldError> ValidateUpdate(const Json& old_object, const Json& new_object);

// Defaults, validates and converts a BuildCache. Fails with kInvalidArgument listing every
// violation, one per line, in the API server's words.
Result<BuildCache> FromJson(const Json& object);

// The object's JSON form (apiVersion, kind, metadata, spec with defaults, status), the inverse of
// FromJson: FromJson(ToJson(x)) == x.
Json ToJson(const BuildCache& cache);
// Just the status, for the status subresource.
Json StatusToJson(const BuildCacheStatus& status);
// status.topNamespaces of a status object, read tolerantly (wrong types read as empty/0), and
// written.
std::vector<NamespaceStatus> TopNamespacesFromJson(const Json& status);
Json TopNamespacesToJson(const std::vector<NamespaceStatus>& top);

// Kubernetes resource quantity ("500m", "2", "1.5Gi", "1e3") as a number, or nullopt when the
// text is not a quantity. Precise enough to compare requests with limits.
std::optional<long double> ParseQuantity(std::string_view text);

}  // namespace buildcache::api
