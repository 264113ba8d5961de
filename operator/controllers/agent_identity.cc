#include "operator/controllers/agent_identity.h"

#include "operator/controllers/owned_objects.h"

namespace buildcache::controllers {

std::string AgentServiceAccountName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-agent";
}

std::string AgentRoleBindingName(const api::BuildCache& cache) {
  return "buildcache-agent-" + cache.ns + "-" + cache.name;
}

void RenderIdentityConfig(const api::BuildCache& cache, agent::PartialAgentConfig* out) {
  const api::Access& access = cache.spec.access;
  if (!access.IdentityEnabled()) return;
  agent::IdentityConfig& id = out->config().identity;
  out->Set(id.anonymous, access.anonymous == "none" ? identity::AnonymousAccess::kNone
                                                    : identity::AnonymousAccess::kRead);
  // The node name from the downward API (the DaemonSet's NODE_NAME); the API server through the
  // agent's own ServiceAccount (kubeconfig "", the default, is the in-cluster configuration).
  out->Set(id.kube_node_name, std::string("$NODE_NAME"));
  out->Set(id.audience, std::string(kTokenAudience));
  if (access.attribution_limit) {
    out->Set(id.attribution_limit, int64_t{*access.attribution_limit});
  }
  identity::TrustedWriters& writers = id.trusted_writers;
  if (access.trusted_writers) {
    writers.namespaces = access.trusted_writers->namespaces;
    writers.service_accounts = access.trusted_writers->service_accounts;
    writers.pod_labels = access.trusted_writers->pod_labels;
  }
  out->Mark(writers.namespaces);
  out->Mark(writers.service_accounts);
  out->Mark(writers.pod_labels);
}

std::string IdentityMode(const api::BuildCache& cache) {
  const api::Access& access = cache.spec.access;
  if (!access.IdentityEnabled()) return "off";
  return std::string("podAddress+token;anonymous=") +
         (access.anonymous.empty() ? "read" : access.anonymous);
}

api::Json BuildAgentServiceAccount(const api::BuildCache& cache) {
  return {{"apiVersion", "v1"},
          {"kind", "ServiceAccount"},
          {"metadata", OwnedMetadata(cache, AgentServiceAccountName(cache))}};
}

api::Json BuildAgentRoleBinding(const api::BuildCache& cache, const std::string& cluster_role) {
  return {{"apiVersion", "rbac.authorization.k8s.io/v1"},
          {"kind", "ClusterRoleBinding"},
          {"metadata", {{"name", AgentRoleBindingName(cache)}, {"labels", CommonLabels(cache)}}},
          {"roleRef",
           {{"apiGroup", "rbac.authorization.k8s.io"},
            {"kind", "ClusterRole"},
            {"name", cluster_role}}},
          {"subjects", Json::array({{{"kind", "ServiceAccount"},
                                     {"name", AgentServiceAccountName(cache)},
                                     {"namespace", cache.ns}}})}};
}

}  // namespace buildcache::controllers
