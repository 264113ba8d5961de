#pragma once

#include <string>

#include "operator/api/buildcache.h"

namespace buildcache::controllers {

// The objects the operator runs for a BuildCache, built by pure functions (no cluster): the agent
// ConfigMap, the agent DaemonSet, a headless Service for peer discovery and the Service pods use.
// Every object lives in the BuildCache's namespace, carries CommonLabels and a controller owner
// reference to the BuildCache (so the garbage collector removes it with the BuildCache), and is a
// complete server-side-apply configuration: the fields in it are the fields the operator owns.

using Json = api::Json;

// What the builders need to know besides the BuildCache.
struct BuildOptions {
  // The agent image when spec.agent.image is empty.
  std::string agent_image = "buildcache-agent:latest";
  // The operator's own namespace: its pods scrape the agents' /metrics (hit_ratio.h), so the
  // agents' NetworkPolicy admits them on the agent port. "" leaves them out.
  std::string operator_namespace{};
  // The ClusterRole bound to the agents when caller identity is on (agent_identity.h).
  std::string agent_cluster_role = "buildcache-agent";
  // The ClusterRole bound (per namespace, by a RoleBinding) to the agents of BuildCaches with
  // pypi builders: create, get, list, watch and delete WheelBuilds (wheel_build_pod.h). Empty:
  // agent_cluster_role + "-wheelbuilds".
  std::string agent_wheelbuild_cluster_role{};
  std::string WheelBuildClusterRole() const {
    return agent_wheelbuild_cluster_role.empty() ? agent_cluster_role + "-wheelbuilds"
                                                 : agent_wheelbuild_cluster_role;
  }
};

// The labels every operator pod carries (charts/buildcache), which the NetworkPolicy admits.
inline constexpr char kOperatorComponentLabel[] = "app.kubernetes.io/component";
inline constexpr char kOperatorComponent[] = "operator";

// The port every agent serves its protocols, probes and metrics on (container port "http").
inline constexpr int kAgentPort = 8080;
// The port agents serve the peer protocol (gRPC) on (container port "peer").
inline constexpr int kPeerPort = 8081;
// The port agents answer the kubelet's probes on (/healthz, /readyz only; container port "probe"):
// a listener of its own, so clients filling kAgentPort's connections cannot fail the probes.
inline constexpr int kProbePort = 8082;
// The port pods use on the local Service (it forwards to kAgentPort).
inline constexpr int kServicePort = 80;
// Where the rendered config is mounted in the agent container.
inline constexpr char kConfigDir[] = "/etc/buildcache";
inline constexpr char kConfigKey[] = "agent.yaml";
// Where the node's hostPath is mounted in the agent container.
inline constexpr char kDataMountPath[] = "/var/lib/buildcache";
// The pod template annotation holding ConfigHash: a config change rolls the agents.
inline constexpr char kConfigHashAnnotation[] = "buildcache.io/config-hash";
// The finalizer the reconciler puts on every BuildCache.
inline constexpr char kFinalizer[] = "buildcache.io/cleanup";
inline constexpr char kManagedBy[] = "buildcache-operator";

// Object names, all derived from the BuildCache name (at most 40 characters, so they stay within
// the 63-character DNS label limit).
std::string DaemonSetName(const api::BuildCache& cache);    // buildcache-NAME
std::string ConfigMapName(const api::BuildCache& cache);    // buildcache-NAME-config
std::string ServiceName(const api::BuildCache& cache);      // buildcache-NAME (pods use this)
std::string PeerServiceName(const api::BuildCache& cache);  // buildcache-NAME-peers (headless)

// The node directory that backs spec.directories[name]: HOSTPATH/directories/NAME. The agent
// DaemonSet creates it on every node; pods mount the same path.
std::string DirectoryHostPath(const api::BuildCache& cache, const std::string& name);

// app.kubernetes.io/{name,instance,component,part-of,managed-by}.
Json CommonLabels(const api::BuildCache& cache);
// The subset that selects the agent pods (stable for the DaemonSet's lifetime: a selector cannot
// change).
Json SelectorLabels(const api::BuildCache& cache);
// {apiVersion, kind, name, uid, controller: true, blockOwnerDeletion: true}.
Json OwnerReference(const api::BuildCache& cache);
// The metadata of an object the BuildCache owns: name, its namespace, CommonLabels, its
// OwnerReference.
Json OwnedMetadata(const api::BuildCache& cache, const std::string& name);

// Where the agent container sees spec.directories[name] (the DirectoryHostPath volume).
std::string DirectoryMountPath(const std::string& name);

// The peers Service's DNS name, which the agents resolve to find each other:
// buildcache-NAME-peers.NS.svc.
std::string PeerServiceHost(const api::BuildCache& cache);

// The agent's configuration file (agent/config/agent_config.h) for this BuildCache, as YAML.
// replication.advertise is not in it (a ConfigMap is the same for every pod): the DaemonSet passes
// --advertise=$(POD_IP):kPeerPort, which the kubelet expands from the downward API.
std::string RenderAgentConfig(const api::BuildCache& cache);
// A short, stable digest of the rendered configuration (hex SHA-256, first 16 characters).
std::string ConfigHash(const std::string& rendered_config);

Json BuildConfigMap(const api::BuildCache& cache);
// With spec.replication.mutualTLS, `peer_tls_hash` (PeerTlsHash of the Secret the agents mount)
// goes into the pod template, so a certificate rotation rolls the agents.
Json BuildDaemonSet(const api::BuildCache& cache, const BuildOptions& options,
                    const std::string& peer_tls_hash = "");
Json BuildPeerService(const api::BuildCache& cache);
Json BuildService(const api::BuildCache& cache);
// buildcache-NAME (spec.access.networkPolicy): ingress to the agent pods only on kAgentPort from
// pods of the namespaces the BuildCache allows (spec.access), the agents and the operator's pods
// (options.operator_namespace), and on kPeerPort only from the agents. Pods are matched by
// namespace and labels: a pod in an allowed namespace can always reach kAgentPort, which is what
// allowed means; only pods in the BuildCache's namespace can carry the agents' labels there.
Json BuildNetworkPolicy(const api::BuildCache& cache, const BuildOptions& options);
std::string NetworkPolicyName(const api::BuildCache& cache);  // buildcache-NAME

// Renders JSON as block-style YAML with keys in sorted order (for ConfigMaps and golden files).
std::string ToYaml(const Json& value);

}  // namespace buildcache::controllers
