#include "agent/identity/caller.h"

#include <algorithm>

namespace buildcache::identity {

std::string_view AnonymousAccessName(AnonymousAccess access) {
  return access == AnonymousAccess::kRead ? "read" : "none";
}

bool IsScopeName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return name.front() != '-' && name.back() != '-';
}

bool TrustedWriters::Matches(std::string_view ns, std::string_view service_account,
                             const std::map<std::string, std::string>& labels) const {
  if (std::find(namespaces.begin(), namespaces.end(), ns) != namespaces.end()) return true;
  const std::string sa = std::string(ns) + "/" + std::string(service_account);
  if (std::find(service_accounts.begin(), service_accounts.end(), sa) != service_accounts.end()) {
    return true;
  }
  if (pod_labels.empty()) return false;
  for (const auto& [key, value] : pod_labels) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

}  // namespace buildcache::identity
