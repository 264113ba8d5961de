#include "agent/identity/pod_address_identity.h"

#include <algorithm>

#include "common/kube/informer.h"
#include "common/kube/resource.h"
#include "common/log/log.h"

namespace buildcache::identity {
namespace {

using Json = nlohmann::json;

std::string_view Unbracket(std::string_view ip) {
  if (ip.size() >= 2 && ip.front() == '[' && ip.back() == ']') return ip.substr(1, ip.size() - 2);
  return ip;
}

// The pod's IPs worth mapping: none for host-network pods (their IP is the node's, shared by
// every host-network pod and the node's own processes) and for pods that have finished (their
// IP may already belong to another pod).
std::vector<std::string> MappedIps(const Json& pod) {
  std::vector<std::string> ips;
  const Json& spec = pod.value("spec", Json::object());
  const Json& status = pod.value("status", Json::object());
  if (spec.value("hostNetwork", false)) return ips;
  const std::string phase = status.value("phase", "");
  if (phase == "Succeeded" || phase == "Failed") return ips;
  if (auto it = status.find("podIPs"); it != status.end() && it->is_array()) {
    for (const Json& entry : *it) {
      if (entry.is_object() && entry.value("ip", "") != "") ips.push_back(entry.value("ip", ""));
    }
  }
  const std::string primary = status.value("podIP", "");
  if (!primary.empty() && std::find(ips.begin(), ips.end(), primary) == ips.end()) {
    ips.push_back(primary);
  }
  return ips;
}

}  // namespace

Caller CallerForPod(const PodIdentity& pod, const TrustedWriters& trusted) {
  return Caller{pod.ns, pod.ns + "/" + pod.service_account,
                trusted.Matches(pod.ns, pod.service_account, pod.labels), false};
}

PodAddressIdentity::PodAddressIdentity(kube::KubeClient* client, PodAddressOptions options,
                                       std::unique_ptr<IdentitySource> tokens)
    : options_(std::move(options)), tokens_(std::move(tokens)) {
  kube::InformerOptions informer_options;
  informer_options.field_selector = "spec.nodeName=" + options_.node_name;
  informer_ = std::make_unique<kube::Informer>(client, kube::resources::kPods, informer_options);
  kube::EventHandlers handlers;
  handlers.on_add = [this](const Json& pod) { Upsert(pod); };
  handlers.on_update = [this](const Json&, const Json& pod) { Upsert(pod); };
  handlers.on_delete = [this](const Json& pod) { Remove(pod); };
  informer_->AddEventHandlers(std::move(handlers));
  informer_->Start();
}

PodAddressIdentity::~PodAddressIdentity() { informer_->Stop(); }

void PodAddressIdentity::Upsert(const Json& pod) {
  PodIdentity info;
  info.ns = kube::NamespaceOf(pod);
  info.name = kube::NameOf(pod);
  info.service_account = kube::StringAt(pod, {"spec", "serviceAccountName"});
  if (info.service_account.empty()) info.service_account = "default";
  const Json& metadata = pod.value("metadata", Json::object());
  if (auto it = metadata.find("labels"); it != metadata.end() && it->is_object()) {
    for (const auto& [key, value] : it->items()) {
      if (value.is_string()) info.labels[key] = value.get<std::string>();
    }
  }
  const std::string key = info.ns + "/" + info.name;
  const std::string uid = kube::StringAt(pod, {"metadata", "uid"});
  std::vector<std::string> ips = MappedIps(pod);
  std::string replaced;
  {
    MutexLock lock(mu_);
    if (!uid.empty()) {
      std::string& known = uid_by_pod_[key];
      if (!known.empty() && known != uid) {
        // The name now belongs to another pod: the old one is gone.
        MarkGone(known);
        replaced = known;
      }
      known = uid;
    }
    for (const std::string& old : ips_by_pod_[key]) {
      auto it = by_ip_.find(old);
      if (it != by_ip_.end() && it->second.ns == info.ns && it->second.name == info.name) {
        by_ip_.erase(it);
      }
    }
    for (const std::string& ip : ips) by_ip_[ip] = info;
    if (ips.empty()) {
      ips_by_pod_.erase(key);
    } else {
      ips_by_pod_[key] = std::move(ips);
    }
  }
  if (!replaced.empty() && options_.on_pod_deleted) options_.on_pod_deleted(replaced);
}

void PodAddressIdentity::MarkGone(const std::string& uid) {
  constexpr size_t kMaxGone = 10000;
  if (!gone_uids_.insert(uid).second) return;
  gone_order_.push_back(uid);
  if (gone_order_.size() > kMaxGone) {
    gone_uids_.erase(gone_order_.front());
    gone_order_.pop_front();
  }
}

BoundPod PodAddressIdentity::CheckBoundPod(const std::string& ns, const std::string& name,
                                           const std::string& uid) const {
  MutexLock lock(mu_);
  if (!uid.empty() && gone_uids_.contains(uid)) return BoundPod::kGone;
  auto it = uid_by_pod_.find(ns + "/" + name);
  if (it == uid_by_pod_.end()) return BoundPod::kUnknown;
  return uid.empty() || it->second == uid ? BoundPod::kLive : BoundPod::kGone;
}

void PodAddressIdentity::Remove(const Json& pod) {
  const std::string ns = kube::NamespaceOf(pod);
  const std::string name = kube::NameOf(pod);
  const std::string uid = kube::StringAt(pod, {"metadata", "uid"});
  {
    MutexLock lock(mu_);
    if (!uid.empty()) {
      MarkGone(uid);
      auto known = uid_by_pod_.find(ns + "/" + name);
      if (known != uid_by_pod_.end() && known->second == uid) uid_by_pod_.erase(known);
    }
    auto pod_it = ips_by_pod_.find(ns + "/" + name);
    if (pod_it != ips_by_pod_.end()) {
      for (const std::string& ip : pod_it->second) {
        auto it = by_ip_.find(ip);
        if (it != by_ip_.end() && it->second.ns == ns && it->second.name == name) by_ip_.erase(it);
      }
      ips_by_pod_.erase(pod_it);
    }
  }
  if (!uid.empty() && options_.on_pod_deleted) options_.on_pod_deleted(uid);
}

Caller PodAddressIdentity::ForAddress(std::string_view address) const {
  MutexLock lock(mu_);
  auto it = by_ip_.find(std::string(Unbracket(address)));
  if (it == by_ip_.end()) return Caller::Anonymous();
  return CallerForPod(it->second, options_.trusted);
}

bool PodAddressIdentity::WaitForSync(std::chrono::milliseconds timeout) const {
  return informer_->WaitForSync(timeout);
}

size_t PodAddressIdentity::known_addresses() const {
  MutexLock lock(mu_);
  return by_ip_.size();
}

std::map<std::string, std::string> PodAddressIdentity::LabelsOf(const std::string& ns,
                                                                const std::string& name) const {
  MutexLock lock(mu_);
  auto pod = ips_by_pod_.find(ns + "/" + name);
  if (pod == ips_by_pod_.end() || pod->second.empty()) return {};
  auto it = by_ip_.find(pod->second.front());
  return it == by_ip_.end() ? std::map<std::string, std::string>() : it->second.labels;
}

Result<Caller> PodAddressIdentity::Identify(const http::Request& request) {
  if (!request.header("Authorization").empty()) {
    if (tokens_) return tokens_->Identify(request);
    return PermissionDenied("this agent takes no tokens (identity.tokensFile is unset)");
  }
  return ForAddress(request.client_ip());
}

}  // namespace buildcache::identity
