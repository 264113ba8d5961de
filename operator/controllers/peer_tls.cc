#include "operator/controllers/peer_tls.h"

#include "common/log/log.h"
#include "operator/controllers/owned_objects.h"
#include "operator/kube/config.h"
#include "operator/kube/resource.h"

namespace buildcache::controllers {
namespace {

using Json = api::Json;

constexpr char kCaCert[] = "ca.crt";
constexpr char kCaKey[] = "ca.key";
constexpr char kPreviousCa[] = "ca-previous.crt";
constexpr char kTlsCert[] = "tls.crt";
constexpr char kTlsKey[] = "tls.key";

std::string DataField(const Json& secret, const char* key) {
  if (!secret.is_object()) return "";
  std::string b64 = kube::StringAt(secret, {"data", key});
  if (b64.empty()) return "";
  Result<std::string> decoded = kube::Base64Decode(b64);
  return decoded.ok() ? *decoded : "";
}

bool ExpiresWithin(const std::string& pem, pki::SystemTime now, std::chrono::seconds window) {
  Result<pki::SystemTime> not_after = pki::CertNotAfter(pem);
  return !not_after.ok() || *not_after - window <= now;
}

Json SecretMetadata(const api::BuildCache& cache, const std::string& name) {
  return {{"name", name},
          {"namespace", cache.ns},
          {"labels", CommonLabels(cache)},
          {"ownerReferences", Json::array({OwnerReference(cache)})}};
}

}  // namespace

std::string PeerCaSecretName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-peer-ca";
}
std::string PeerTlsSecretName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-peer-tls";
}
std::string PeerServerName(const api::BuildCache& cache) { return PeerServiceHost(cache); }

PeerTlsState PeerTlsFromSecrets(const Json& ca_secret, const Json& tls_secret) {
  PeerTlsState state;
  state.ca = {DataField(ca_secret, kCaCert), DataField(ca_secret, kCaKey)};
  state.previous_ca = DataField(ca_secret, kPreviousCa);
  state.leaf = {DataField(tls_secret, kTlsCert), DataField(tls_secret, kTlsKey)};
  return state;
}

Result<PeerTlsState> NextPeerTls(const api::BuildCache& cache, const PeerTlsState& current,
                                 pki::SystemTime now, bool bundle_rolled_out,
                                 const PeerTlsOptions& options) {
  PeerTlsState next = current;
  const std::vector<std::string> names = {PeerServerName(cache)};
  const std::string key = cache.ns + "/" + cache.name;

  if (next.ca.cert_pem.empty() || next.ca.key_pem.empty() ||
      ExpiresWithin(next.ca.cert_pem, now, options.renew_before)) {
    // Phase 1: the old CA, while still valid, stays in the bundle; the leaf it signed stays.
    next.previous_ca.clear();
    if (!next.ca.cert_pem.empty() && !ExpiresWithin(next.ca.cert_pem, now, {})) {
      next.previous_ca = next.ca.cert_pem;
    }
    BC_ASSIGN_OR_RETURN(
        next.ca, pki::GenerateCa("buildcache-" + key + "-peer-ca", now, options.ca_validity));
    log::Info("peer ca created", {{"key", key}, {"previous_kept", !next.previous_ca.empty()}});
  }
  // Phase 3.
  if (!next.previous_ca.empty() && ExpiresWithin(next.previous_ca, now, {})) {
    next.previous_ca.clear();
  }

  const bool by_current = !next.leaf.key_pem.empty() &&
                          pki::CertMatches(next.leaf.cert_pem, next.ca.cert_pem, names, {});
  const bool by_previous = !next.leaf.key_pem.empty() && !next.previous_ca.empty() &&
                           pki::CertMatches(next.leaf.cert_pem, next.previous_ca, names, {});
  const bool expiring = ExpiresWithin(next.leaf.cert_pem, now, options.renew_before);
  const bool expired = ExpiresWithin(next.leaf.cert_pem, now, {});
  bool reissue;
  if (by_current) {
    reissue = expiring;
  } else if (by_previous) {
    // Phase 2 waits for the bundle to reach every agent: a leaf from the new CA presented to an
    // agent that only trusts the old one would be refused. An expired leaf has nothing to lose.
    reissue = (bundle_rolled_out && next == current) || expired;
  } else {
    reissue = true;  // missing, or from no CA this BuildCache trusts
  }
  if (reissue) {
    BC_ASSIGN_OR_RETURN(next.leaf,
                        pki::GeneratePeerCert(next.ca, names, now, options.leaf_validity));
    log::Info("peer certificate issued", {{"key", key}});
  }
  return next;
}

std::string PeerTlsHash(const PeerTlsState& state) {
  return ConfigHash(state.Bundle() + state.leaf.cert_pem);
}

Json BuildPeerCaSecret(const api::BuildCache& cache, const PeerTlsState& state) {
  Json data = {{kCaCert, kube::Base64Encode(state.ca.cert_pem)},
               {kCaKey, kube::Base64Encode(state.ca.key_pem)}};
  if (!state.previous_ca.empty()) data[kPreviousCa] = kube::Base64Encode(state.previous_ca);
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", SecretMetadata(cache, PeerCaSecretName(cache))},
          {"type", "Opaque"},
          {"data", std::move(data)}};
}

Json BuildPeerTlsSecret(const api::BuildCache& cache, const PeerTlsState& state) {
  return {{"apiVersion", "v1"},
          {"kind", "Secret"},
          {"metadata", SecretMetadata(cache, PeerTlsSecretName(cache))},
          {"type", "kubernetes.io/tls"},
          {"data",
           {{kCaCert, kube::Base64Encode(state.Bundle())},
            {kTlsCert, kube::Base64Encode(state.leaf.cert_pem)},
            {kTlsKey, kube::Base64Encode(state.leaf.key_pem)}}}};
}

}  // namespace buildcache::controllers
