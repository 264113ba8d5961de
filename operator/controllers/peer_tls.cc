#include "operator/controllers/peer_tls.h"

#include "common/kube/config.h"
#include "common/kube/resource.h"
#include "common/log/log.h"
#include "operator/controllers/owned_objects.h"
#include "operator/pki/tls_secret.h"

namespace buildcache::controllers {
namespace {

using Json = api::Json;
using pki::ExpiresWithin;

}  // namespace

std::string PeerCaSecretName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-peer-ca";
}
std::string PeerTlsSecretName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-peer-tls";
}
std::string PeerServerName(const api::BuildCache& cache) { return PeerServiceHost(cache); }

PeerTlsState PeerTlsFromSecrets(const Json& ca_secret, const Json& tls_secret) {
  const pki::TlsSecretData ca = pki::ReadTlsSecret(ca_secret);
  PeerTlsState state;
  state.ca = ca.ca;
  state.previous_ca = ca.previous_ca;
  state.leaf = pki::ReadTlsSecret(tls_secret).leaf;
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
  return pki::TlsSecret(OwnedMetadata(cache, PeerCaSecretName(cache)), "Opaque",
                        {.ca = state.ca, .previous_ca = state.previous_ca});
}

Json BuildPeerTlsSecret(const api::BuildCache& cache, const PeerTlsState& state) {
  // The agents' Secret: ca.crt is the bundle they trust, and no CA key.
  return pki::TlsSecret(OwnedMetadata(cache, PeerTlsSecretName(cache)), "kubernetes.io/tls",
                        {.ca = {.cert_pem = state.Bundle()}, .leaf = state.leaf});
}

}  // namespace buildcache::controllers
