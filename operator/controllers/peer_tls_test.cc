#include "operator/controllers/peer_tls.h"

#include <gtest/gtest.h>

#include "common/kube/config.h"
#include "common/kube/resource.h"

namespace buildcache::controllers {
namespace {

using namespace std::chrono_literals;
using api::Json;

const pki::SystemTime kT0 = std::chrono::system_clock::from_time_t(1'800'000'000);

api::BuildCache Cache(const std::string& ns, const std::string& name) {
  api::BuildCache cache;
  cache.ns = ns;
  cache.name = name;
  cache.uid = "uid-" + name;
  return cache;
}

// Short lives, so that rotation is reachable: CA 60 days, leaf 20 days, renewal 10 days ahead.
PeerTlsOptions Short() {
  return {.ca_validity = 24h * 60, .leaf_validity = 24h * 20, .renew_before = 24h * 10};
}

bool Verifies(const std::string& leaf, const std::string& ca, const api::BuildCache& cache) {
  return pki::CertMatches(leaf, ca, {PeerServerName(cache)}, {});
}

TEST(PeerTls, FirstPassMakesACaAndALeafNamingThePeersService) {
  const api::BuildCache cache = Cache("ci-system", "ci");
  Result<PeerTlsState> state = NextPeerTls(cache, {}, kT0, false, Short());
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_EQ(PeerServerName(cache), "buildcache-ci-peers.ci-system.svc");
  EXPECT_TRUE(Verifies(state->leaf.cert_pem, state->ca.cert_pem, cache));
  EXPECT_TRUE(state->previous_ca.empty());
  EXPECT_EQ(state->Bundle(), state->ca.cert_pem);
  // Nothing due: the same state, so nothing is written and the agents do not roll.
  Result<PeerTlsState> again = NextPeerTls(cache, *state, kT0 + 24h, true, Short());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(*again == *state);
  EXPECT_EQ(PeerTlsHash(*again), PeerTlsHash(*state));
}

TEST(PeerTls, AnotherBuildCachesCertificateDoesNotVerify) {
  const api::BuildCache a = Cache("team-a", "ci"), b = Cache("team-b", "ci");
  PeerTlsState sa = *NextPeerTls(a, {}, kT0, false, Short());
  PeerTlsState sb = *NextPeerTls(b, {}, kT0, false, Short());
  EXPECT_FALSE(pki::CertMatches(sb.leaf.cert_pem, sa.ca.cert_pem, {}, {}));
  EXPECT_FALSE(pki::CertMatches(sa.leaf.cert_pem, sb.ca.cert_pem, {}, {}));
}

TEST(PeerTls, CaRotationKeepsTheOldCaInTheBundleAndSwitchesTheLeafOnlyAfterTheRollout) {
  const api::BuildCache cache = Cache("ci-system", "ci");
  const PeerTlsState first = *NextPeerTls(cache, {}, kT0, false, Short());
  // Leaf renewals before the CA is due keep the CA (every agent trusts it already).
  const PeerTlsState renewed = *NextPeerTls(cache, first, kT0 + 24h * 45, false, Short());
  EXPECT_EQ(renewed.ca.cert_pem, first.ca.cert_pem);
  EXPECT_NE(renewed.leaf.cert_pem, first.leaf.cert_pem);

  // 55 days in, the CA expires within the renewal window: phase 1.
  const pki::SystemTime t1 = kT0 + 24h * 55;
  PeerTlsState p1 = *NextPeerTls(cache, renewed, t1, /*bundle_rolled_out=*/true, Short());
  EXPECT_NE(p1.ca.cert_pem, first.ca.cert_pem);
  EXPECT_EQ(p1.previous_ca, first.ca.cert_pem);
  EXPECT_NE(p1.Bundle().find(first.ca.cert_pem), std::string::npos);
  EXPECT_NE(p1.Bundle().find(p1.ca.cert_pem), std::string::npos);
  // The leaf stays (signed by the old CA): agents that have not rolled yet still trust it.
  EXPECT_EQ(p1.leaf.cert_pem, renewed.leaf.cert_pem);
  EXPECT_NE(PeerTlsHash(p1), PeerTlsHash(renewed));  // the agents roll to the new bundle

  // Not every agent has the bundle yet: the leaf waits.
  PeerTlsState waiting = *NextPeerTls(cache, p1, t1 + 1h, false, Short());
  EXPECT_TRUE(waiting == p1);
  // Phase 2: once rolled out, the new CA signs the leaf; the old CA stays in the bundle.
  PeerTlsState p2 = *NextPeerTls(cache, p1, t1 + 2h, true, Short());
  EXPECT_TRUE(Verifies(p2.leaf.cert_pem, p2.ca.cert_pem, cache));
  EXPECT_EQ(p2.previous_ca, first.ca.cert_pem);
  // Phase 3: the old CA leaves the bundle when it has expired.
  PeerTlsState p3 = *NextPeerTls(cache, p2, kT0 + 24h * 61, false, Short());
  EXPECT_TRUE(p3.previous_ca.empty());
  EXPECT_EQ(p3.leaf.cert_pem, p2.leaf.cert_pem);
  EXPECT_EQ(p3.Bundle(), p3.ca.cert_pem);
}

TEST(PeerTls, ALeafFromAForeignCaIsReplaced) {
  const api::BuildCache cache = Cache("ci-system", "ci");
  PeerTlsState state = *NextPeerTls(cache, {}, kT0, false, Short());
  PeerTlsState foreign = *NextPeerTls(Cache("x", "y"), {}, kT0, false, Short());
  state.leaf = foreign.leaf;  // someone wrote another BuildCache's certificate into the Secret
  PeerTlsState next = *NextPeerTls(cache, state, kT0, false, Short());
  EXPECT_TRUE(Verifies(next.leaf.cert_pem, next.ca.cert_pem, cache));
}

TEST(PeerTls, SecretsRoundTripAndTheAgentsSecretHasNoCaKey) {
  const api::BuildCache cache = Cache("ci-system", "ci");
  PeerTlsState state = *NextPeerTls(cache, {}, kT0, false, Short());
  state = *NextPeerTls(cache, state, kT0 + 24h * 55, false, Short());  // with a previous CA
  const Json ca = BuildPeerCaSecret(cache, state);
  const Json tls = BuildPeerTlsSecret(cache, state);
  EXPECT_EQ(kube::NameOf(ca), "buildcache-ci-peer-ca");
  EXPECT_EQ(kube::NameOf(tls), "buildcache-ci-peer-tls");
  EXPECT_EQ(tls["type"], "kubernetes.io/tls");
  EXPECT_FALSE(tls["data"].contains("ca.key"));
  EXPECT_EQ(*kube::Base64Decode(tls["data"]["ca.crt"].get<std::string>()), state.Bundle());
  EXPECT_EQ(ca["metadata"]["ownerReferences"][0]["uid"], "uid-ci");
  EXPECT_TRUE(PeerTlsFromSecrets(ca, tls) == state);
  EXPECT_TRUE(PeerTlsFromSecrets(Json::object(), Json::object()) == PeerTlsState{});
}

}  // namespace
}  // namespace buildcache::controllers
