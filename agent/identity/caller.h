#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace buildcache::identity {

// Who sent a request, as far as the agent's identity source could tell (identity_source.h).
//
// Scopes decide what a caller's build-cache writes can reach (agent/frontends/httpcache):
// entries whose bytes cannot be checked against their name are written into the writer's scope
// and read from the reader's own scope first, then from the trusted scope every reader sees.
// Only trusted writers write into the trusted scope; anonymous callers write nothing.
struct Caller {
  // The caller's scope name ([a-z0-9-], at most 63 bytes); "" for anonymous callers and when
  // identity is off.
  std::string scope;
  // Who the caller is, for logs and never a secret: the token entry's name, "anonymous", or
  // "*" when identity is off.
  std::string subject;
  // May write into the trusted scope (and upload wheels).
  bool trusted_writer = false;
  // No credentials and no known address: reads only (when anonymous access is "read").
  bool anonymous = false;

  // Identity off: every caller is a trusted writer, as before identity existed.
  static Caller Unrestricted() { return Caller{"", "*", true, false}; }
  static Caller Anonymous() { return Caller{"", "anonymous", false, true}; }

  bool may_write() const { return !anonymous; }
};

// What anonymous callers (no credentials, no known address) may do.
enum class AnonymousAccess {
  kRead,  // read what the trusted scope holds; every write is refused (403)
  kNone,  // nothing: every request is 401
};
std::string_view AnonymousAccessName(AnonymousAccess access);

// Which pods write into the trusted scope: a pod matching any of the three lists is a trusted
// writer. Empty lists match nothing.
struct TrustedWriters {
  std::vector<std::string> namespaces;            // the pod's namespace is one of these
  std::vector<std::string> service_accounts;      // "namespace/name" of the pod's service account
  std::map<std::string, std::string> pod_labels;  // every one of these labels (non-empty)

  bool Matches(std::string_view ns, std::string_view service_account,
               const std::map<std::string, std::string>& labels) const;
  bool operator==(const TrustedWriters&) const = default;
};

// True for a usable scope name: 1..63 bytes of [a-z0-9-], starting and ending alphanumeric (a
// Kubernetes namespace name is one).
bool IsScopeName(std::string_view name);

}  // namespace buildcache::identity
