#pragma once

// Private upstreams (spec.ecosystems.<name>.upstreamSecretRef): the operator mounts each
// referenced Secret into the agents and renders only the files' paths into their configuration
// (the agent's <section>.auth). The operator never needs the Secret's data for this: mounting by
// name is the kubelet's business. It does look at the Secret (with the get it already has on
// Secrets of a BuildCache namespace, for the peer certificates and the admin token) to report a
// missing Secret or key in status; it reads only which keys the Secret has, never a value, and
// keeps nothing of it.

#include <string>
#include <utility>
#include <vector>

#include "agent/config/agent_config_tree.h"
#include "operator/api/buildcache.h"

namespace buildcache::controllers {

// Each referenced Secret is mounted at kUpstreamSecretsDir/<ecosystem> (volume
// "upstream-<ecosystem>"), mode 0400 (the agent runs as root), optional (a missing Secret leaves
// the directory empty instead of keeping the agent from starting; the kubelet fills it when the
// Secret appears, and the agent reads the files again when they change).
inline constexpr char kUpstreamSecretsDir[] = "/var/run/buildcache/upstream";

// The ecosystems with an upstreamSecretRef and their references, in kEcosystemNames order.
std::vector<std::pair<std::string, api::UpstreamSecretRef>> UpstreamSecretRefs(
    const api::BuildCache& cache);

// The Secret keys a reference of this type reads: {"token"} (bearer) or {"username", "password"}
// (basic; the keys of a kubernetes.io/basic-auth Secret).
std::vector<std::string> UpstreamSecretKeys(const std::string& type);

// Sets <section>.auth of each referenced ecosystem to the mounted files.
void RenderUpstreamAuth(const api::BuildCache& cache, agent::PartialAgentConfig* out);

// The DaemonSet's volumes and the agent container's mounts for the referenced Secrets.
void AddUpstreamSecretVolumes(const api::BuildCache& cache, api::Json* volumes, api::Json* mounts);

// What the config hash covers besides the rendered configuration: the references (a new Secret
// name or type rolls the agents; a rotated value does not, the agents re-read it).
std::string UpstreamSecretRefsText(const api::BuildCache& cache);

// A problem with one referenced Secret as the API server returned it (`secret` is {} when it does
// not exist), for the UpstreamCredentials condition; "" when it has every key the type needs.
// Names the ecosystem, the Secret and the missing keys; never a value.
std::string UpstreamSecretProblem(const api::BuildCache& cache, const std::string& ecosystem,
                                  const api::UpstreamSecretRef& ref, const api::Json& secret);

}  // namespace buildcache::controllers
