#include "operator/controllers/reconciler.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/kube/api_error.h"
#include "common/kube/event_recorder.h"
#include "common/kube/testing/memory_kube_client.h"
#include "common/text/base64.h"
#include "operator/controllers/admin_token.h"

namespace buildcache::controllers {
namespace {

Json DaemonSet(int64_t generation, int64_t observed, int desired, int ready, int updated) {
  return {{"metadata", {{"generation", generation}}},
          {"status",
           {{"observedGeneration", observed},
            {"desiredNumberScheduled", desired},
            {"numberReady", ready},
            {"updatedNumberScheduled", updated}}}};
}

const api::Condition* Find(const api::BuildCacheStatus& status, const std::string& type) {
  for (const api::Condition& c : status.conditions) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

TEST(ComputeStatus, AllAgentsReadyIsReady) {
  api::BuildCacheStatus s = ComputeStatus(4, DaemonSet(2, 2, 3, 3, 3), {}, "T1");
  EXPECT_EQ(s.observed_generation, 4);
  EXPECT_EQ(s.desired_nodes, 3);
  EXPECT_EQ(s.ready_nodes, 3);
  EXPECT_EQ(Find(s, "Ready")->status, "True");
  EXPECT_EQ(Find(s, "Ready")->reason, "AllAgentsReady");
  EXPECT_EQ(Find(s, "Progressing")->status, "False");
  EXPECT_EQ(Find(s, "Degraded")->status, "False");
}

TEST(ComputeStatus, NoMatchingNodesIsNotReady) {
  api::BuildCacheStatus s = ComputeStatus(1, DaemonSet(1, 1, 0, 0, 0), {}, "T1");
  EXPECT_EQ(Find(s, "Ready")->status, "False");
  EXPECT_EQ(Find(s, "Ready")->reason, "NoNodes");
}

TEST(ComputeStatus, UnobservedTemplateIsProgressing) {
  api::BuildCacheStatus s = ComputeStatus(1, DaemonSet(3, 2, 2, 2, 2), {}, "T1");
  EXPECT_EQ(Find(s, "Ready")->reason, "AgentsNotReady");
  EXPECT_EQ(Find(s, "Progressing")->status, "True");
  EXPECT_EQ(Find(s, "Progressing")->reason, "RollingOut");
}

TEST(ComputeStatus, PartialRolloutIsProgressingAndNotReady) {
  api::BuildCacheStatus s = ComputeStatus(1, DaemonSet(2, 2, 4, 4, 1), {}, "T1");
  EXPECT_EQ(Find(s, "Ready")->status, "False");
  EXPECT_EQ(Find(s, "Progressing")->status, "True");
}

TEST(ComputeStatus, UnchangedConditionKeepsItsTransitionTime) {
  api::BuildCacheStatus first = ComputeStatus(1, DaemonSet(1, 1, 1, 0, 1), {}, "T1");
  api::BuildCacheStatus second = ComputeStatus(1, DaemonSet(1, 1, 1, 1, 1), first.conditions, "T2");
  EXPECT_EQ(Find(second, "Ready")->last_transition_time, "T2");        // False -> True
  EXPECT_EQ(Find(second, "Degraded")->last_transition_time, "T1");     // still False
  EXPECT_EQ(Find(second, "Progressing")->last_transition_time, "T1");  // still False
}

}  // namespace
}  // namespace buildcache::controllers

namespace buildcache::controllers {
namespace {

// The in-memory API server, where applied DaemonSets report every agent ready, and every apply
// must force as buildcache-operator.
class MapKubeClient : public kube::testing::MemoryKubeClient {
 public:
  Result<Json> Apply(const kube::Resource& r, const Json& object, const kube::ApplyOptions& o,
                     const std::string& subresource = "") override {
    EXPECT_EQ(o.field_manager, "buildcache-operator");
    EXPECT_TRUE(o.force);
    Json stored = object;
    if (r.plural == "daemonsets") {
      stored["metadata"]["generation"] = 1;
      stored["status"] = {{"observedGeneration", 1},
                          {"desiredNumberScheduled", 2},
                          {"numberReady", 2},
                          {"updatedNumberScheduled", 2}};
    }
    return MemoryKubeClient::Apply(r, stored, o, subresource);
  }
};

class ReconcilerTest : public ::testing::Test {
 protected:
  void Put(Json spec) {
    client_.objects[Key()] = {
        {"apiVersion", "buildcache.io/v1alpha1"},
        {"kind", "BuildCache"},
        {"metadata", {{"name", "ci"}, {"namespace", "ns"}, {"uid", "u1"}, {"generation", 2}}},
        {"spec", std::move(spec)}};
  }
  static std::string Key() { return MapKubeClient::Key(kBuildCaches, "ns", "ci"); }
  Json& Object() { return client_.objects[Key()]; }
  std::string ConditionOf(const std::string& type, const char* field) {
    for (const Json& c : Object()["status"]["conditions"]) {
      if (c["type"] == type) return c[field];
    }
    return "";
  }

  MapKubeClient client_;
  Reconciler reconciler_{&client_, nullptr, {}};
  const Json valid_ = {{"storage", {{"maxSize", "1Gi"}, {"reclaimPolicy", "Delete"}}},
                       {"ecosystems", {{"httpcache", Json::object()}}}};
};

TEST_F(ReconcilerTest, AppliesObjectsAddsFinalizerAndWritesStatus) {
  Put(valid_);
  EXPECT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_EQ(Object()["metadata"]["finalizers"], Json::array({kFinalizer}));
  EXPECT_TRUE(client_.objects.contains("daemonsets/ns/buildcache-ci"));
  EXPECT_TRUE(client_.objects.contains("configmaps/ns/buildcache-ci-config"));
  EXPECT_TRUE(client_.objects.contains("services/ns/buildcache-ci"));
  EXPECT_TRUE(client_.objects.contains("services/ns/buildcache-ci-peers"));
  EXPECT_EQ(Object()["status"]["observedGeneration"], 2);
  EXPECT_EQ(Object()["status"]["nodes"], (Json{{"desired", 2}, {"ready", 2}}));
  EXPECT_EQ(ConditionOf("Ready", "reason"), "AllAgentsReady");
}

TEST_F(ReconcilerTest, IdentityBindsTheAgentsAndResolvesTrustedNamespaces) {
  for (const auto& [name, trust] :
       {std::pair{"release", "yes"}, {"team-a", "no"}, {"main-builds", "yes"}}) {
    client_.objects["namespaces//" + std::string(name)] = {
        {"metadata", {{"name", name}, {"labels", {{"trust", trust}}}}}};
  }
  Json spec = valid_;
  spec["access"] = Json::parse(R"({"trustedWriters": {
      "namespaceSelector": {"matchLabels": {"trust": "yes"}},
      "serviceAccounts": ["ci/publisher"]}})");
  Put(spec);
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  ASSERT_TRUE(client_.objects.contains("serviceaccounts/ns/buildcache-ci-agent"));
  const Json& binding = client_.objects["clusterrolebindings//buildcache-agent-ns-ci"];
  EXPECT_EQ(binding["roleRef"]["name"], "buildcache-agent");
  EXPECT_EQ(binding["subjects"][0]["name"], "buildcache-ci-agent");
  const std::string config =
      client_.objects["configmaps/ns/buildcache-ci-config"]["data"]["agent.yaml"];
  EXPECT_NE(config.find("- main-builds\n      - release\n"), std::string::npos) << config;
  EXPECT_EQ(config.find("team-a"), std::string::npos) << config;
  EXPECT_EQ(client_.objects["daemonsets/ns/buildcache-ci"]["spec"]["template"]["spec"]
                           ["serviceAccountName"],
            "buildcache-ci-agent");
  EXPECT_EQ(Object()["status"]["identity"], "podAddress+token;anonymous=read");

  // Turned off: the binding goes (the agents lose their rights on pods), status says off.
  Object()["spec"].erase("access");
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_FALSE(client_.objects.contains("clusterrolebindings//buildcache-agent-ns-ci"));
  EXPECT_EQ(Object()["status"]["identity"], "off");
}

TEST_F(ReconcilerTest, AdminTokenIsMadeOnceAndNeverReplaced) {
  Put(valid_);
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  const Json& secret = client_.objects["secrets/ns/buildcache-ci-admin"];
  const std::string token = AdminTokenFromSecret(secret);
  EXPECT_EQ(token.size(), 64u);
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_EQ(AdminTokenFromSecret(client_.objects["secrets/ns/buildcache-ci-admin"]), token);

  // Another BuildCache gets another token.
  client_.objects[MapKubeClient::Key(kBuildCaches, "ns", "other")] = {
      {"apiVersion", "buildcache.io/v1alpha1"},
      {"kind", "BuildCache"},
      {"metadata", {{"name", "other"}, {"namespace", "ns"}, {"uid", "u2"}, {"generation", 1}}},
      {"spec", valid_}};
  ASSERT_EQ(reconciler_.Reconcile("ns/other").result, ReconcileResult::kSuccess);
  const std::string other_token =
      AdminTokenFromSecret(client_.objects["secrets/ns/buildcache-other-admin"]);
  EXPECT_EQ(other_token.size(), 64u);
  EXPECT_NE(other_token, token);
}

// An upstreamSecretRef: the agents mount the Secret by name and get only the paths; a missing
// Secret is a condition and a Warning event (the agents still run), found once it exists; the
// value is in no object the operator writes.
TEST_F(ReconcilerTest, UpstreamSecretIsMountedReportedWhenMissingAndNeverCopied) {
  kube::EventRecorder events(&client_, {});
  Reconciler reconciler(&client_, &events, {});
  Json spec = valid_;
  spec["ecosystems"]["npm"] = {{"upstream", "https://npm.example.internal/"},
                               {"upstreamSecretRef", {{"name", "npm-token"}, {"type", "bearer"}}}};
  Put(spec);
  ReconcileOutcome missing = reconciler.Reconcile("ns/ci");
  ASSERT_EQ(missing.result, ReconcileResult::kSuccess) << missing.status.ToString();
  EXPECT_GT(missing.requeue_after.count(), 0);
  EXPECT_EQ(ConditionOf("UpstreamCredentials", "status"), "False");
  EXPECT_EQ(ConditionOf("UpstreamCredentials", "reason"), "SecretNotFound");
  EXPECT_NE(ConditionOf("UpstreamCredentials", "message")
                .find("spec.ecosystems.npm.upstreamSecretRef: Secret ns/npm-token not found"),
            std::string::npos);
  EXPECT_EQ(ConditionOf("Ready", "status"), "True");  // the agents run without it
  int warnings = 0;
  for (const auto& [key, object] : client_.objects) {
    if (key.starts_with("events/") && object.value("reason", "") == "SecretNotFound" &&
        object.value("type", "") == "Warning") {
      ++warnings;
    }
  }
  EXPECT_EQ(warnings, 1);

  const Json& ds = client_.objects["daemonsets/ns/buildcache-ci"];
  const Json& pod = ds["spec"]["template"]["spec"];
  Json volume;
  for (const Json& v : pod["volumes"]) {
    if (v["name"] == "upstream-npm") volume = v;
  }
  EXPECT_EQ(volume["secret"],
            (Json{{"secretName", "npm-token"},
                  {"defaultMode", 0400},
                  {"optional", true},
                  {"items", Json::array({{{"key", "token"}, {"path", "token"}}})}}));
  bool mounted = false;
  for (const Json& m : pod["containers"][0]["volumeMounts"]) {
    if (m["name"] == "upstream-npm") {
      mounted = m["mountPath"] == "/var/run/buildcache/upstream/npm" && m["readOnly"] == true;
    }
  }
  EXPECT_TRUE(mounted);
  const std::string config =
      client_.objects["configmaps/ns/buildcache-ci-config"]["data"]["agent.yaml"];
  EXPECT_NE(config.find("tokenFile: /var/run/buildcache/upstream/npm/token"), std::string::npos)
      << config;
  const std::string hash_before =
      ds["spec"]["template"]["metadata"]["annotations"]["buildcache.io/config-hash"];

  // The Secret appears without its key, then with it.
  const std::string value = "npm-secret-value-7f3a";
  client_.objects["secrets/ns/npm-token"] = {
      {"metadata", {{"name", "npm-token"}, {"namespace", "ns"}}}, {"data", {{"other", "eA=="}}}};
  ASSERT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_NE(ConditionOf("UpstreamCredentials", "message").find("has no key token"),
            std::string::npos);
  client_.objects["secrets/ns/npm-token"]["data"] = {{"token", text::Base64Encode(value)}};
  ReconcileOutcome found = reconciler.Reconcile("ns/ci");
  ASSERT_EQ(found.result, ReconcileResult::kSuccess);
  EXPECT_EQ(found.requeue_after.count(), 0);
  EXPECT_EQ(ConditionOf("UpstreamCredentials", "status"), "True");
  EXPECT_EQ(ConditionOf("UpstreamCredentials", "reason"), "SecretsFound");
  for (const auto& [key, object] : client_.objects) {
    if (key == "secrets/ns/npm-token") continue;
    const std::string dumped = object.dump();
    EXPECT_EQ(dumped.find(value), std::string::npos) << key;
    EXPECT_EQ(dumped.find(text::Base64Encode(value)), std::string::npos) << key;
  }

  // Another Secret named: the agents roll (the config hash changes).
  Object()["spec"]["ecosystems"]["npm"]["upstreamSecretRef"]["name"] = "npm-token-2";
  ASSERT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_NE(client_.objects["daemonsets/ns/buildcache-ci"]["spec"]["template"]["metadata"]
                           ["annotations"]["buildcache.io/config-hash"],
            hash_before);
}

TEST_F(ReconcilerTest, UnchangedStatusIsNotWrittenAgain) {
  Put(valid_);
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  const size_t patches = client_.patches.size();
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_EQ(client_.patches.size(), patches);
}

TEST_F(ReconcilerTest, TransientApplyFailureIsRetriedAndReported) {
  Put(valid_);
  client_.fail_apply = kube::ApiErrorStatus(503, "", "apply");
  ReconcileOutcome outcome = reconciler_.Reconcile("ns/ci");
  EXPECT_EQ(outcome.result, ReconcileResult::kError);
  EXPECT_EQ(ConditionOf("Degraded", "reason"), "ApplyFailed");
  EXPECT_EQ(ConditionOf("Degraded", "status"), "True");
  client_.fail_apply = Status::Ok();
  EXPECT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_EQ(ConditionOf("Degraded", "status"), "False");
}

TEST_F(ReconcilerTest, RejectedObjectIsReportedAndNotRetried) {
  Put(valid_);
  client_.fail_apply = kube::ApiErrorStatus(422, "", "apply");
  EXPECT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kInvalid);
  EXPECT_EQ(ConditionOf("Degraded", "reason"), "ObjectRejected");
}

TEST_F(ReconcilerTest, InvalidSpecIsReportedInStatus) {
  Json spec = valid_;
  spec["storage"]["hostPath"] = "relative/path";
  Put(spec);
  EXPECT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kInvalid);
  EXPECT_EQ(ConditionOf("Ready", "status"), "False");
  EXPECT_EQ(ConditionOf("Degraded", "reason"), "InvalidSpec");
  EXPECT_NE(ConditionOf("Degraded", "message").find("absolute path"), std::string::npos);
  EXPECT_FALSE(client_.objects.contains("daemonsets/ns/buildcache-ci"));
}

TEST_F(ReconcilerTest, DeletionDeletesOwnedObjectsAndRemovesTheFinalizer) {
  Put(valid_);
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  Object()["metadata"]["deletionTimestamp"] = "2026-11-28T09:00:00Z";
  EXPECT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kGone);
  EXPECT_EQ(Object()["metadata"]["finalizers"], Json::array());
  EXPECT_EQ(client_.deleted.size(), 7u);  // and the peer certificate and admin Secrets
  EXPECT_FALSE(client_.objects.contains("daemonsets/ns/buildcache-ci"));
}

TEST_F(ReconcilerTest, HitStatsAreWrittenWithoutApplyingAndOnlyWhenChanged) {
  std::optional<HitStats> stats;
  Reconciler reconciler(&client_, nullptr, {.hit_stats = [&](const std::string& key) {
    EXPECT_EQ(key, "ns/ci");
    return stats;
  }});
  Put(valid_);
  stats = HitStats{"0.50", {{"httpcache", "0.50", 4}}};
  // Not reconciled yet: the reconcile writes the first status, not this.
  ASSERT_EQ(reconciler.UpdateHitStats("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_FALSE(Object().contains("status"));

  ASSERT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_EQ(Object()["status"]["hitRatio"], "0.50");  // the reconcile takes the stats too
  stats = HitStats{"0.75", {{"httpcache", "0.75", 8}}};
  client_.fail_apply = kube::ApiErrorStatus(503, "", "apply");  // proves nothing is applied
  ASSERT_EQ(reconciler.UpdateHitStats("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_EQ(Object()["status"]["hitRatio"], "0.75");
  EXPECT_EQ(Object()["status"]["ecosystems"],
            Json::parse(R"([{"name":"httpcache","hitRatio":"0.75","lookups":8}])"));
  EXPECT_EQ(ConditionOf("Ready", "reason"), "AllAgentsReady");  // the rest is kept
  const size_t patches = client_.patches.size();
  ASSERT_EQ(reconciler.UpdateHitStats("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_EQ(client_.patches.size(), patches);
}

TEST_F(ReconcilerTest, PeerCertificatesAreIssuedMountedAndNotRewritten) {
  Put(valid_);
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  ASSERT_TRUE(client_.objects.contains("secrets/ns/buildcache-ci-peer-ca"));
  ASSERT_TRUE(client_.objects.contains("secrets/ns/buildcache-ci-peer-tls"));
  const Json ca = client_.objects["secrets/ns/buildcache-ci-peer-ca"];
  const Json tls = client_.objects["secrets/ns/buildcache-ci-peer-tls"];
  EXPECT_FALSE(tls["data"].contains("ca.key"));
  const Json& ds = client_.objects["daemonsets/ns/buildcache-ci"];
  const Json& pod = ds["spec"]["template"];
  EXPECT_EQ(pod["metadata"]["annotations"][kPeerTlsHashAnnotation],
            PeerTlsHash(PeerTlsFromSecrets(ca, tls)));
  bool mounted = false;
  for (const Json& v : pod["spec"]["volumes"]) {
    if (v.contains("secret") && v["secret"]["secretName"] == "buildcache-ci-peer-tls") {
      mounted = true;
    }
  }
  EXPECT_TRUE(mounted);
  const std::string config =
      client_.objects["configmaps/ns/buildcache-ci-config"]["data"]["agent.yaml"];
  EXPECT_NE(config.find("serverName: buildcache-ci-peers.ns.svc"), std::string::npos) << config;
  // A second pass changes nothing (no churn, no roll).
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_EQ(client_.objects["secrets/ns/buildcache-ci-peer-ca"], ca);
  EXPECT_EQ(client_.objects["secrets/ns/buildcache-ci-peer-tls"], tls);
}

TEST_F(ReconcilerTest, CaRotationWaitsForTheRolloutBeforeSwitchingTheLeaf) {
  auto now = std::chrono::system_clock::from_time_t(1'800'000'000);
  Reconciler reconciler(&client_, nullptr,
                        {.now = [&] { return now; },
                         .peer_tls = {.ca_validity = std::chrono::hours(24 * 60),
                                      .leaf_validity = std::chrono::hours(24 * 365),
                                      .renew_before = std::chrono::hours(24 * 10)}});
  Put(valid_);
  ASSERT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  auto state = [&] {
    return PeerTlsFromSecrets(client_.objects["secrets/ns/buildcache-ci-peer-ca"],
                              client_.objects["secrets/ns/buildcache-ci-peer-tls"]);
  };
  const PeerTlsState first = state();
  now += std::chrono::hours(24 * 55);  // the CA is due
  ASSERT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  const PeerTlsState rotated = state();
  EXPECT_EQ(rotated.previous_ca, first.ca.cert_pem);
  EXPECT_EQ(rotated.leaf.cert_pem, first.leaf.cert_pem);
  // One agent still runs the old template: the leaf waits.
  client_.objects["daemonsets/ns/buildcache-ci"]["status"]["updatedNumberScheduled"] = 1;
  client_.fail_apply = kube::ApiErrorStatus(503, "", "apply");  // the DaemonSet stays as it is
  (void)reconciler.Reconcile("ns/ci");
  client_.fail_apply = Status::Ok();
  EXPECT_EQ(state().leaf.cert_pem, first.leaf.cert_pem);
  // Rolled out (the fake DaemonSet reports every agent updated after an apply).
  client_.objects["daemonsets/ns/buildcache-ci"]["status"]["updatedNumberScheduled"] = 2;
  ASSERT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_NE(state().leaf.cert_pem, first.leaf.cert_pem);
  EXPECT_TRUE(pki::CertMatches(state().leaf.cert_pem, rotated.ca.cert_pem, {}, {}));
  EXPECT_EQ(state().previous_ca, first.ca.cert_pem);
}

TEST_F(ReconcilerTest, NetworkPolicyFollowsTheSpecAndMutualTlsCanBeTurnedOff) {
  Json spec = valid_;
  spec["access"] = {{"networkPolicy", true}};
  spec["replication"] = {{"mutualTLS", false}};
  Put(spec);
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_TRUE(client_.objects.contains("networkpolicies/ns/buildcache-ci"));
  EXPECT_FALSE(client_.objects.contains("secrets/ns/buildcache-ci-peer-tls"));
  const std::string config =
      client_.objects["configmaps/ns/buildcache-ci-config"]["data"]["agent.yaml"];
  EXPECT_EQ(config.find("tls"), std::string::npos) << config;
  Object()["spec"]["access"]["networkPolicy"] = false;
  ASSERT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_FALSE(client_.objects.contains("networkpolicies/ns/buildcache-ci"));
}

// A spec author picks the image that runs as root on every node: one outside the operator's
// allow-list is refused, and an agent DaemonSet that ran before the change is removed.
TEST_F(ReconcilerTest, ImageOutsideTheAllowListIsRefusedAndRunsNoAgent) {
  Reconciler reconciler(&client_, nullptr,
                        {.build = {.agent_image = "registry.example.internal/bc/agent:1"},
                         .policy = {.allowed_images = {"registry.example.internal/bc/agent"}}});
  Put(valid_);
  ASSERT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  ASSERT_TRUE(client_.objects.contains("daemonsets/ns/buildcache-ci"));
  Object()["spec"]["agent"] = {{"image", "attacker.example/agent:1"}};
  EXPECT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kInvalid);
  EXPECT_EQ(ConditionOf("Degraded", "reason"), "NotAllowed");
  EXPECT_EQ(ConditionOf("Ready", "status"), "False");
  EXPECT_NE(ConditionOf("Degraded", "message").find("attacker.example/agent:1"), std::string::npos);
  EXPECT_FALSE(client_.objects.contains("daemonsets/ns/buildcache-ci"));
}

TEST_F(ReconcilerTest, HostPathOutsideTheRootIsRefused) {
  Json spec = valid_;
  spec["storage"]["hostPath"] = "/etc/kubernetes";
  Put(spec);
  EXPECT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kInvalid);
  EXPECT_EQ(ConditionOf("Degraded", "reason"), "NotAllowed");
  EXPECT_FALSE(client_.objects.contains("daemonsets/ns/buildcache-ci"));
  EXPECT_FALSE(client_.objects.contains("configmaps/ns/buildcache-ci-config"));
}

// Two BuildCaches on one node directory: the one created later gets a condition and no agents.
TEST_F(ReconcilerTest, LaterOverlappingHostPathGetsAConditionAndNoDaemonSet) {
  Json spec = valid_;
  spec["storage"]["hostPath"] = "/var/lib/buildcache/shared";
  Put(spec);
  Object()["metadata"]["creationTimestamp"] = "2026-12-01T10:00:00Z";
  Json later = Object();
  later["metadata"]["name"] = "later";
  later["metadata"]["namespace"] = "other";
  later["metadata"]["creationTimestamp"] = "2026-12-01T11:00:00Z";
  later["spec"]["storage"]["hostPath"] = "/var/lib/buildcache/shared/inner";
  client_.objects[MapKubeClient::Key(kBuildCaches, "other", "later")] = later;

  EXPECT_EQ(reconciler_.Reconcile("other/later").result, ReconcileResult::kInvalid);
  const Json& refused = client_.objects[MapKubeClient::Key(kBuildCaches, "other", "later")];
  std::string reason, message;
  for (const Json& c : refused["status"]["conditions"]) {
    if (c["type"] == "Degraded") {
      reason = c["reason"];
      message = c["message"];
    }
  }
  EXPECT_EQ(reason, "HostPathConflict");
  EXPECT_NE(message.find("BuildCache ns/ci"), std::string::npos) << message;
  EXPECT_FALSE(client_.objects.contains("daemonsets/other/buildcache-later"));
  EXPECT_FALSE(client_.objects.contains("configmaps/other/buildcache-later-config"));
  // The first one is unaffected.
  EXPECT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kSuccess);
  EXPECT_TRUE(client_.objects.contains("daemonsets/ns/buildcache-ci"));
  // Once the first is gone, the later one runs.
  client_.objects.erase(Key());
  EXPECT_EQ(reconciler_.Reconcile("other/later").result, ReconcileResult::kSuccess);
  EXPECT_TRUE(client_.objects.contains("daemonsets/other/buildcache-later"));
}

TEST_F(ReconcilerTest, BuildCacheOutsideTheManagedNamespacesIsRefusedWithoutAnyWrite) {
  Reconciler reconciler(&client_, nullptr, {.namespaces = {"ci", "team-a"}});
  Put(valid_);  // in namespace "ns"
  EXPECT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kInvalid);
  EXPECT_EQ(ConditionOf("Degraded", "reason"), "NamespaceNotManaged");
  EXPECT_NE(ConditionOf("Degraded", "message").find("ci, team-a"), std::string::npos);
  EXPECT_FALSE(Object()["metadata"].contains("finalizers"));
  EXPECT_EQ(client_.objects.size(), 1u);  // the BuildCache alone
  // Deleting it needs nothing from the operator (and deletes nothing it may not).
  Object()["metadata"]["finalizers"] = Json::array({kFinalizer});
  Object()["metadata"]["deletionTimestamp"] = "2026-12-01T10:00:00Z";
  EXPECT_EQ(reconciler.Reconcile("ns/ci").result, ReconcileResult::kGone);
  EXPECT_TRUE(client_.deleted.empty());
  EXPECT_EQ(Object()["metadata"]["finalizers"], Json::array());
}

TEST_F(ReconcilerTest, MissingBuildCacheIsGone) {
  EXPECT_EQ(reconciler_.Reconcile("ns/ci").result, ReconcileResult::kGone);
}

}  // namespace
}  // namespace buildcache::controllers
