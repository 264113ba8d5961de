#include "agent/identity/caller.h"

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

}  // namespace buildcache::identity
