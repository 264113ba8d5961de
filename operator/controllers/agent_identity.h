#pragma once

#include <string>

#include "agent/config/agent_config_tree.h"
#include "operator/api/buildcache.h"

namespace buildcache::controllers {

// Caller identity for a BuildCache's agents (spec.access.trustedWriters / anonymous; the agent's
// identity.* configuration, docs/security.md).
//
// With identity on, the agents run as their own ServiceAccount buildcache-NAME-agent, bound by a
// ClusterRoleBinding to the ClusterRole the chart ships (BuildOptions::agent_cluster_role): list
// and watch pods (the agent watches its node's pods only, by field selector) and get the API
// server's service-account issuer discovery document and keys. Nothing else. A
// ClusterRoleBinding cannot be owned by a namespaced BuildCache, so the reconciler deletes it
// when identity is turned off and when the BuildCache is finalized.

// The audience the webhook projects tokens for and the agents accept.
inline constexpr char kTokenAudience[] = "buildcache.io";

std::string AgentServiceAccountName(const api::BuildCache& cache);  // buildcache-NAME-agent
// buildcache-agent-NAMESPACE-NAME (cluster-scoped, so it names the namespace).
std::string AgentRoleBindingName(const api::BuildCache& cache);

// Sets (and marks) the agent's `identity` keys for this BuildCache in `out`; nothing when identity
// is off. Trusted namespaces come from spec.access.trustedWriters.namespaces, which the
// reconciler resolves from the namespace selector.
void RenderIdentityConfig(const api::BuildCache& cache, agent::PartialAgentConfig* out);

// What status.identity says: "off", or the sources that are on and what anonymous callers may
// do ("podAddress+token;anonymous=read").
std::string IdentityMode(const api::BuildCache& cache);

// Complete server-side-apply configurations. The ServiceAccount is owned by the BuildCache; the
// ClusterRoleBinding carries the BuildCache's labels (and no owner reference).
api::Json BuildAgentServiceAccount(const api::BuildCache& cache);
api::Json BuildAgentRoleBinding(const api::BuildCache& cache, const std::string& cluster_role);

}  // namespace buildcache::controllers
