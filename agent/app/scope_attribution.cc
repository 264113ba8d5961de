#include "agent/app/scope_attribution.h"

namespace buildcache::agent {

std::string ScopeLabels::For(const identity::Caller& caller) {
  if (caller.anonymous) return std::string(kAnonymous);
  if (caller.scope.empty()) return std::string(kUnscoped);
  MutexLock lock(mu_);
  if (admitted_.contains(caller.scope)) return caller.scope;
  if (admitted_.size() >= limit_) return std::string(kOther);
  admitted_.insert(caller.scope);
  return caller.scope;
}

size_t ScopeLabels::admitted() const {
  MutexLock lock(mu_);
  return admitted_.size();
}

}  // namespace buildcache::agent
