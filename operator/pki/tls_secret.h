#pragma once

// The one place that reads and writes the operator's TLS Secrets: the webhook's serving
// certificate (operator/webhook/cert_manager) and the agents' peer certificates
// (operator/controllers/peer_tls). All of them use the same data keys.

#include <chrono>
#include <string>

#include "common/kube/resource.h"
#include "operator/pki/certs.h"

namespace buildcache::pki {

inline constexpr char kCaCertKey[] = "ca.crt";  // the CA, or (in a leaf's Secret) the CA bundle
inline constexpr char kCaKeyKey[] = "ca.key";
inline constexpr char kPreviousCaKey[] = "ca-previous.crt";  // a replaced CA, while still valid
inline constexpr char kTlsCertKey[] = "tls.crt";
inline constexpr char kTlsKeyKey[] = "tls.key";

// What a TLS Secret holds, decoded. Each field is "" when its key is absent.
struct TlsSecretData {
  KeyPair ca{};
  std::string previous_ca{};  // PEM
  KeyPair leaf{};             // tls.crt and tls.key
};

// Decodes a Secret as the API server returned it. Anything that is not an object (a Secret that
// does not exist), missing keys and values that are not base64 read as "".
TlsSecretData ReadTlsSecret(const kube::Json& secret);

// The Secret's `data`: the non-empty fields, base64-encoded under the keys above.
kube::Json TlsSecretDataJson(const TlsSecretData& data);

// A complete Secret (apiVersion, kind, metadata as given, type, data).
kube::Json TlsSecret(kube::Json metadata, const std::string& type, const TlsSecretData& data);

// True when the first certificate in `pem` expires within `window` of `now`, or cannot be read
// (so a broken certificate is replaced like an expiring one).
bool ExpiresWithin(const std::string& pem, SystemTime now, std::chrono::seconds window);

}  // namespace buildcache::pki
