#include "operator/controllers/admin_token.h"

#include <openssl/rand.h>

#include "common/kube/config.h"
#include "common/kube/resource.h"
#include "operator/controllers/owned_objects.h"

namespace buildcache::controllers {

using Json = api::Json;

std::string AdminSecretName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-admin";
}

std::string AdminTokenFromSecret(const Json& secret) {
  if (!secret.is_object()) return "";
  std::string b64 = kube::StringAt(secret, {"data", kAdminTokenKey});
  if (b64.empty()) return "";
  Result<std::string> decoded = kube::Base64Decode(b64);
  return decoded.ok() ? *decoded : "";
}

Result<std::string> NewAdminToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return Internal("RAND_bytes failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token += kHex[b >> 4];
    token += kHex[b & 0xf];
  }
  return token;
}

Json BuildAdminSecret(const api::BuildCache& cache, const std::string& token) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", OwnedMetadata(cache, AdminSecretName(cache))},
          {"type", "Opaque"},
          {"data", {{kAdminTokenKey, kube::Base64Encode(token)}}}};
}

}  // namespace buildcache::controllers
