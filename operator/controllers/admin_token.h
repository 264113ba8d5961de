#pragma once

#include <string>

#include "common/status/status.h"
#include "operator/api/buildcache.h"

namespace buildcache::controllers {

// The agents' admin token (the agent's admin.tokenFile; POST /admin/purge, docs/agent.md).
//
// Every BuildCache gets a random token in the Secret buildcache-NAME-admin (key "token"), made
// once when the Secret is missing or holds no token and never changed or logged after that. The
// DaemonSet mounts it (mode 0400) at kAdminTokenDir. Whoever may read that Secret may purge the
// BuildCache's agents; `kubectl buildcache purge` reads it and calls every agent through the API
// server's pod proxy, so Kubernetes RBAC (get on the Secret, pods/proxy) decides who may purge.

inline constexpr char kAdminTokenDir[] = "/etc/buildcache-admin";
inline constexpr char kAdminTokenKey[] = "token";

std::string AdminSecretName(const api::BuildCache& cache);  // buildcache-NAME-admin

// The token in a Secret as the API server returned it; "" when absent or not decodable.
std::string AdminTokenFromSecret(const api::Json& secret);

// 32 random bytes as 64 hex digits (OpenSSL's CSPRNG). kInternal when it fails.
Result<std::string> NewAdminToken();

// The Secret, a complete server-side-apply configuration owned by the BuildCache.
api::Json BuildAdminSecret(const api::BuildCache& cache, const std::string& token);

}  // namespace buildcache::controllers
