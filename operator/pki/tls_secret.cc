#include "operator/pki/tls_secret.h"

#include "common/kube/config.h"

namespace buildcache::pki {
namespace {

std::string Field(const kube::Json& secret, const char* key) {
  std::string b64 = kube::StringAt(secret, {"data", key});
  if (b64.empty()) return "";
  Result<std::string> decoded = kube::Base64Decode(b64);
  return decoded.ok() ? *decoded : "";
}

void Put(kube::Json& data, const char* key, const std::string& pem) {
  if (!pem.empty()) data[key] = kube::Base64Encode(pem);
}

}  // namespace

TlsSecretData ReadTlsSecret(const kube::Json& secret) {
  if (!secret.is_object()) return {};
  return {.ca = {Field(secret, kCaCertKey), Field(secret, kCaKeyKey)},
          .previous_ca = Field(secret, kPreviousCaKey),
          .leaf = {Field(secret, kTlsCertKey), Field(secret, kTlsKeyKey)}};
}

kube::Json TlsSecretDataJson(const TlsSecretData& data) {
  kube::Json out = kube::Json::object();
  Put(out, kCaCertKey, data.ca.cert_pem);
  Put(out, kCaKeyKey, data.ca.key_pem);
  Put(out, kPreviousCaKey, data.previous_ca);
  Put(out, kTlsCertKey, data.leaf.cert_pem);
  Put(out, kTlsKeyKey, data.leaf.key_pem);
  return out;
}

kube::Json TlsSecret(kube::Json metadata, const std::string& type, const TlsSecretData& data) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", std::move(metadata)},
          {"type", type},
          {"data", TlsSecretDataJson(data)}};
}

bool ExpiresWithin(const std::string& pem, SystemTime now, std::chrono::seconds window) {
  Result<SystemTime> not_after = CertNotAfter(pem);
  return !not_after.ok() || *not_after - window <= now;
}

}  // namespace buildcache::pki
