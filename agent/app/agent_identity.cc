#include <atomic>
#include <cstdlib>
#include <map>

#include "agent/app/agent.h"
#include "agent/identity/identity_gate.h"
#include "agent/identity/pod_address_identity.h"
#include "agent/identity/service_account_token.h"
#include "agent/identity/token_file_identity.h"
#include "common/kube/config.h"
#include "common/kube/rest_kube_client.h"
#include "common/log/log.h"

// Agent's identity wiring (config.identity): the sources a request's caller comes from, in
// front of every front end. Kept beside agent.cc, as LevelDB's DBImpl hands work to siblings.
namespace buildcache::agent {

Status Agent::StartIdentity(const AgentConfig& config) {
  const IdentityConfig& ic = config.identity;
  std::unique_ptr<identity::IdentitySource> source;
  if (!ic.tokens_file.empty()) {
    identity::TokenFileOptions options;
    options.path = ic.tokens_file;
    auto tokens = identity::TokenFileIdentity::Open(std::move(options));
    if (!tokens.ok()) {
      return InvalidArgument("identity.tokensFile: " + std::string(tokens.status().message()));
    }
    source = std::move(tokens).value();
  }
  if (!ic.kube_node_name.empty()) {
    BC_ASSIGN_OR_RETURN(source, StartPodIdentity(ic, std::move(source)));
  }
  AgentMetrics& m = metrics_;
  identity::GateObserver observer;
  observer.on_refused = [&m](std::string_view reason) {
    m.identity_refused.With({std::string(reason)}).Inc();
  };
  for (const char* reason :
       {"bad_credentials", "unverified", "anonymous_read", "anonymous_write", "untrusted_write"}) {
    m.identity_refused.With({reason});
  }
  identity_ = std::make_unique<identity::IdentityGate>(std::move(source), config.identity.anonymous,
                                                       observer);
  log::Info("identity", {{"mode", identity_->mode()},
                         {"anonymous", identity::AnonymousAccessName(config.identity.anonymous)}});
  return Status::Ok();
}

Result<kube::RestKubeClient*> Agent::KubeClient(const IdentityConfig& ic, std::string_view who) {
  if (rest_kube_ != nullptr) return rest_kube_;
  auto kube_config = kube::LoadDefaultConfig(ic.kubeconfig);
  if (!kube_config.ok()) {
    return InvalidArgument(std::string(who) + ": " + std::string(kube_config.status().message()));
  }
  kube::RestKubeClientOptions client_options;
  client_options.user_agent = "buildcache-agent/" BUILDCACHE_VERSION;
  BC_ASSIGN_OR_RETURN(auto client, kube::RestKubeClient::Create(*kube_config, client_options));
  rest_kube_ = client.get();
  kube_client_ = std::move(client);
  log::Info("kubernetes client", {{"server", kube_config->server}, {"for", who}});
  return rest_kube_;
}

Result<std::unique_ptr<identity::IdentitySource>> Agent::StartPodIdentity(
    const IdentityConfig& ic, std::unique_ptr<identity::IdentitySource> tokens) {
  identity::PodAddressOptions options;
  options.node_name = ic.kube_node_name;
  if (options.node_name.starts_with('$')) {
    const char* value = std::getenv(options.node_name.c_str() + 1);
    if (value == nullptr || *value == '\0') {
      return InvalidArgument("identity.kubernetes.nodeName: " + options.node_name +
                             " is not set in the environment");
    }
    options.node_name = value;
  }
  options.trusted = ic.trusted_writers;
  BC_ASSIGN_OR_RETURN(kube::RestKubeClient * rest, KubeClient(ic, "identity.kubernetes"));
  // Filled once the pod watch exists: service-account tokens naming a pod get its labels.
  auto pods_cell = std::make_shared<std::atomic<identity::PodAddressIdentity*>>(nullptr);
  if (!ic.audience.empty()) {
    identity::ServiceAccountTokenOptions sa;
    sa.audience = ic.audience;
    sa.trusted = ic.trusted_writers;
    sa.fetch = [rest](const std::string& path) -> Result<std::string> {
      BC_ASSIGN_OR_RETURN(http::RestResponse r, rest->Raw({.method = "GET", .target = path}));
      if (r.status != 200) {
        return Unavailable("GET " + path + " from the API server: HTTP " +
                           std::to_string(r.status));
      }
      return std::move(r.body);
    };
    sa.pod_labels = [pods_cell](const std::string& ns, const std::string& name) {
      identity::PodAddressIdentity* pods = pods_cell->load();
      return pods ? pods->LabelsOf(ns, name) : std::map<std::string, std::string>();
    };
    sa.bound_pod = [pods_cell](const std::string& ns, const std::string& name,
                               const std::string& uid) {
      identity::PodAddressIdentity* pods = pods_cell->load();
      return pods ? pods->CheckBoundPod(ns, name, uid) : identity::BoundPod::kUnknown;
    };
    // The fallback for tokens the offline check cannot decide, with the agent's own credentials
    // (RBAC: create tokenreviews). The body holds the token: it is sent, never logged.
    sa.review = [rest](const std::string& body) -> Result<std::string> {
      BC_ASSIGN_OR_RETURN(http::RestResponse r,
                          rest->Raw({.method = "POST",
                                     .target = "/apis/authentication.k8s.io/v1/tokenreviews",
                                     .headers = {{"Content-Type", "application/json"},
                                                 {"Accept", "application/json"}},
                                     .body = body,
                                     .timeout = std::chrono::seconds(10)}));
      if (r.status != 201 && r.status != 200) {
        return Unavailable("POST tokenreviews to the API server: HTTP " + std::to_string(r.status));
      }
      return std::move(r.body);
    };
    AgentMetrics& m = metrics_;
    for (const char* result : {"authenticated", "refused", "error"}) {
      m.identity_token_reviews.With({result});
    }
    sa.on_review = [&m](std::string_view result) {
      m.identity_token_reviews.With({std::string(result)}).Inc();
    };
    auto verifier = identity::ServiceAccountTokenIdentity::Create(std::move(sa), std::move(tokens));
    if (!verifier.ok()) {
      return InvalidArgument("identity.kubernetes.audience: service account tokens: " +
                             std::string(verifier.status().message()));
    }
    identity::ServiceAccountTokenIdentity* sa_tokens = verifier->get();
    options.on_pod_deleted = [sa_tokens](const std::string& uid) { sa_tokens->ForgetPod(uid); };
    tokens = std::move(verifier).value();
  }
  auto pods = std::make_unique<identity::PodAddressIdentity>(kube_client_.get(), options,
                                                             std::move(tokens));
  pods_cell->store(pods.get());
  // Until the first list, every pod is anonymous: wait a little for it, but never block start.
  bool synced = pods->WaitForSync(std::chrono::seconds(10));
  log::Write(
      synced ? log::Level::kInfo : log::Level::kWarn, "node pods watched",
      {{"node", options.node_name}, {"synced", synced}, {"addresses", pods->known_addresses()}});
  return std::unique_ptr<identity::IdentitySource>(std::move(pods));
}

}  // namespace buildcache::agent
