#pragma once

#include <chrono>
#include <string>

#include "common/status/status.h"
#include "operator/api/buildcache.h"
#include "operator/pki/certs.h"

namespace buildcache::controllers {

// Mutual TLS between the agents of one BuildCache (spec.replication.mutualTLS).
//
// Every BuildCache gets its own CA, kept in the Secret buildcache-NAME-peer-ca (ca.crt, ca.key,
// and ca-previous.crt while a replaced CA is still valid), which no pod mounts. The agents share
// one leaf certificate (serverAuth and clientAuth) whose only subject alternative name is the
// headless Service's name, PeerServerName; it is in the Secret buildcache-NAME-peer-tls (tls.crt,
// tls.key, and ca.crt: the CA bundle, current CA first) that the DaemonSet mounts. Agents dial
// each other by pod IP and check that name instead (replication.tls.serverName), so an agent of
// another BuildCache (another CA) or anything without the certificate is refused both ways.
//
// One leaf per BuildCache rather than one per pod: a DaemonSet's pods share one template, so a
// per-pod Secret cannot be named in it, and issuing per pod would need an issuing endpoint that
// authenticates pods; what a peer must prove is "I am an agent of this BuildCache", which the
// per-BuildCache CA says. The pod-IP binding it gives up protects against one agent impersonating
// another, but agents of one BuildCache already share their data and trust each other's writes.
//
// Rotation without dropping peer traffic, in phases, each rolled out to every agent before the
// next (the pod template carries PeerTlsHash, so a change rolls the DaemonSet one node at a time):
//   1. The CA nears expiry: a new CA is made, and the bundle carries new and old; the leaf stays
//      (signed by the old CA), so rolled and unrolled agents trust each other.
//   2. Once every agent runs with that bundle, the leaf is reissued by the new CA (trusted by
//      every agent, as the bundle has both).
//   3. The old CA leaves the bundle when it expires.
// A leaf nearing expiry is reissued by the current CA, which every agent already trusts.

inline constexpr char kPeerTlsDir[] = "/etc/buildcache-peer-tls";
// The pod template annotation holding PeerTlsHash: a rotation rolls the agents.
inline constexpr char kPeerTlsHashAnnotation[] = "buildcache.io/peer-tls-hash";

std::string PeerCaSecretName(const api::BuildCache& cache);   // buildcache-NAME-peer-ca
std::string PeerTlsSecretName(const api::BuildCache& cache);  // buildcache-NAME-peer-tls
// The name in the agents' certificate, which every agent checks: buildcache-NAME-peers.NS.svc.
std::string PeerServerName(const api::BuildCache& cache);

struct PeerTlsOptions {
  std::chrono::seconds ca_validity{std::chrono::hours(24 * 365 * 5)};
  std::chrono::seconds leaf_validity{std::chrono::hours(24 * 365)};
  // A CA or leaf expiring within this time is replaced.
  std::chrono::seconds renew_before{std::chrono::hours(24 * 30)};
};

// What the two Secrets hold.
struct PeerTlsState {
  pki::KeyPair ca{};
  std::string previous_ca{};  // PEM; "" when there is none
  pki::KeyPair leaf{};

  // ca.crt in the agents' Secret: the current CA, then the previous one.
  std::string Bundle() const { return ca.cert_pem + previous_ca; }
  bool operator==(const PeerTlsState& o) const {
    return ca.cert_pem == o.ca.cert_pem && ca.key_pem == o.ca.key_pem &&
           previous_ca == o.previous_ca && leaf.cert_pem == o.leaf.cert_pem &&
           leaf.key_pem == o.leaf.key_pem;
  }
};

// The state stored in the Secrets as the API server returned them (either may be an empty
// object when it does not exist; fields that do not decode are empty).
PeerTlsState PeerTlsFromSecrets(const api::Json& ca_secret, const api::Json& tls_secret);

// The state the Secrets should hold at `now`, following the phases above. `bundle_rolled_out`:
// every agent runs with current.Bundle() (the DaemonSet's template carries PeerTlsHash(current)
// and its rollout is complete). Returns `current` when nothing is due.
Result<PeerTlsState> NextPeerTls(const api::BuildCache& cache, const PeerTlsState& current,
                                 pki::SystemTime now, bool bundle_rolled_out,
                                 const PeerTlsOptions& options);

// A short digest of what the agents see (bundle and leaf), for kPeerTlsHashAnnotation.
std::string PeerTlsHash(const PeerTlsState& state);

// The two Secrets, complete server-side-apply configurations owned by the BuildCache.
api::Json BuildPeerCaSecret(const api::BuildCache& cache, const PeerTlsState& state);
api::Json BuildPeerTlsSecret(const api::BuildCache& cache, const PeerTlsState& state);

}  // namespace buildcache::controllers
