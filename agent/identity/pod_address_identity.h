#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "agent/identity/identity_source.h"
#include "agent/identity/service_account_token.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::kube {
class Informer;
class KubeClient;
}  // namespace buildcache::kube

namespace buildcache::identity {

// What the agent knows about one pod of its node.
struct PodIdentity {
  std::string ns;
  std::string name;
  std::string service_account;
  std::map<std::string, std::string> labels;
};

// The caller a pod is: scope = its namespace, subject = "namespace/serviceaccount".
Caller CallerForPod(const PodIdentity& pod, const TrustedWriters& trusted);

struct PodAddressOptions {
  std::string node_name;  // the agent's node (downward API spec.nodeName); required
  TrustedWriters trusted;
  // Called with the uid of each pod of this node that is deleted (from the watch thread, with
  // no lock held): cached verdicts of tokens bound to it are dropped.
  std::function<void(const std::string& uid)> on_pod_deleted;
};

// Identity from the source address, with no client configuration: the pods of this agent's
// node are listed and watched through the API server (field selector spec.nodeName=<node>;
// RBAC: list and watch pods), and a request from a pod's IP is that pod. Host-network pods
// (their IP is the node's), pods that finished (Succeeded, Failed) and unknown addresses are
// anonymous. A request carrying credentials is passed to `tokens` (a token wins over the
// address); without a token source it is kPermissionDenied.
//
// What this relies on: a pod cannot send from another pod's IP on the node. True with the
// common CNIs' defaults (Calico, Cilium, Flannel, kindnet, the AWS VPC CNI, Azure CNI, GKE
// Dataplane V2 all check or route by the pod's own address), not with pods given CAP_NET_RAW and
// a CNI that does not filter spoofed sources. docs/security.md says more.
//
// Thread-safe. Until the first list completes every address is anonymous.
class PodAddressIdentity final : public IdentitySource {
 public:
  // Starts the informer on `client` (which must outlive this). `tokens` may be null.
  PodAddressIdentity(kube::KubeClient* client, PodAddressOptions options,
                     std::unique_ptr<IdentitySource> tokens);
  ~PodAddressIdentity() override;

  // IdentitySource
  Result<Caller> Identify(const http::Request& request) override;
  std::string_view mode() const override { return tokens_ ? "kubernetes+tokens" : "kubernetes"; }

  // The caller behind a client address ("10.1.2.3", "[fd00::1]" or "fd00::1").
  Caller ForAddress(std::string_view address) const EXCLUDES(mu_);
  // Waits up to `timeout` for the first list of the node's pods.
  bool WaitForSync(std::chrono::milliseconds timeout) const;
  size_t known_addresses() const EXCLUDES(mu_);
  // The labels of a pod of this node that has an address; empty when unknown.
  std::map<std::string, std::string> LabelsOf(const std::string& ns, const std::string& name) const
      EXCLUDES(mu_);
  // Whether the pod a token is bound to is still this node's: kGone once the watch saw it
  // deleted (the last 10,000 deleted uids are kept) or its name taken by another uid; kUnknown
  // for a pod the watch has not seen (another node's, or one deleted before the agent started).
  BoundPod CheckBoundPod(const std::string& ns, const std::string& name,
                         const std::string& uid) const EXCLUDES(mu_);

 private:
  void Upsert(const nlohmann::json& pod) EXCLUDES(mu_);
  void Remove(const nlohmann::json& pod) EXCLUDES(mu_);
  void MarkGone(const std::string& uid) REQUIRES(mu_);

  const PodAddressOptions options_;
  std::unique_ptr<IdentitySource> tokens_;
  mutable Mutex mu_;
  std::map<std::string, PodIdentity> by_ip_ GUARDED_BY(mu_);
  std::map<std::string, std::vector<std::string>> ips_by_pod_ GUARDED_BY(mu_);  // "ns/name"
  std::map<std::string, std::string> uid_by_pod_ GUARDED_BY(mu_);               // "ns/name"
  std::set<std::string> gone_uids_ GUARDED_BY(mu_);
  std::deque<std::string> gone_order_ GUARDED_BY(mu_);  // oldest first, to bound gone_uids_
  std::unique_ptr<kube::Informer> informer_;
};

}  // namespace buildcache::identity
