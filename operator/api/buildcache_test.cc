#include "operator/api/buildcache.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "operator/api/testing/yaml_json.h"

namespace buildcache::api {
namespace {

using namespace std::chrono_literals;

using testing::kCrdDir;
using testing::LoadYaml;

TEST(BuildCacheTest, FullSampleParses) {
  auto cache = FromJson(LoadYaml(kCrdDir + "/samples/buildcache.yaml"));
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  const BuildCacheSpec& s = cache->spec;
  EXPECT_EQ(cache->name, "ci");
  EXPECT_EQ(cache->ns, "ci-system");
  EXPECT_EQ(s.node_selector.at("buildcache.io/ci"), "true");
  ASSERT_EQ(s.tolerations.size(), 1u);
  EXPECT_EQ(s.tolerations[0].effect, "NoSchedule");
  EXPECT_EQ(s.storage.host_path, "/var/lib/buildcache/ci");
  EXPECT_EQ(cache->HostPath(), "/var/lib/buildcache/ci");
  EXPECT_EQ(s.storage.max_size.bytes, 200ull << 30);
  EXPECT_EQ(s.storage.reclaim_policy, ReclaimPolicy::kRetain);
  ASSERT_TRUE(s.ecosystems.pypi);
  EXPECT_EQ(s.ecosystems.pypi->upstream, "https://pypi.example.internal/simple");
  EXPECT_EQ(s.ecosystems.pypi->metadata_ttl.value, 10min);  // defaulted
  EXPECT_EQ(s.ecosystems.npm->metadata_ttl.value, 5min);
  EXPECT_EQ(s.ecosystems.npm->upstream_secret_ref,
            (UpstreamSecretRef{"npm-registry-token", "bearer"}));
  EXPECT_EQ(s.ecosystems.maven->upstream_secret_ref,
            (UpstreamSecretRef{"maven-credentials", "basic"}));
  EXPECT_FALSE(s.ecosystems.pypi->upstream_secret_ref);
  const PypiBuilds& builds = s.ecosystems.pypi->builds;
  ASSERT_EQ(builds.builders.size(), 1u);
  EXPECT_EQ(builds.builders[0], (PypiBuilder{"py311",
                                             "registry.example.internal/ci/python:3.11-bookworm",
                                             "3.11",
                                             "CPython",
                                             "glibc",
                                             "2.36",
                                             "x86_64",
                                             {},
                                             {{"memory", "2Gi"}}}));
  EXPECT_EQ(builds.Find("py311"), &builds.builders[0]);
  EXPECT_EQ(builds.Find("py312"), nullptr);
  EXPECT_EQ(builds.deadline.value, 20min);
  EXPECT_EQ(builds.failure_ttl.value, 1h);  // defaulted
  EXPECT_EQ(builds.workers, 1);
  ASSERT_TRUE(s.ecosystems.goproxy);
  EXPECT_TRUE(s.ecosystems.goproxy->sumdb);
  EXPECT_EQ(s.ecosystems.goproxy->sumdb_name, "sum.example.internal");
  EXPECT_EQ(s.ecosystems.httpcache->max_object_size.bytes, 512ull << 20);
  EXPECT_EQ(s.ecosystems.Enabled(),
            (std::vector<std::string>{"pypi", "goproxy", "npm", "cargo", "maven", "httpcache"}));
  ASSERT_EQ(s.directories.size(), 2u);
  EXPECT_EQ(s.directories[0].name, "gobuild");
  EXPECT_EQ(s.directories[0].mount_path, "/root/.cache/go-build");
  EXPECT_EQ(s.directories[1].max_size.bytes, 20ull << 30);
  EXPECT_EQ(s.replication.copies, 2);
  EXPECT_TRUE(s.replication.hydrate);
  ASSERT_TRUE(s.access.namespace_selector);
  EXPECT_EQ(s.agent.requests.at("cpu"), "500m");
  EXPECT_EQ(s.agent.limits.at("memory"), "2Gi");
}

// The defaults the API server filled in for this file (test_crd.py checks the server side).
TEST(BuildCacheTest, MinimalSampleGetsTheSchemaDefaults) {
  Json minimal = LoadYaml(kCrdDir + "/samples/minimal.yaml");
  minimal["metadata"]["namespace"] = "team-a";
  Json defaulted = ApplyDefaults(minimal);
  EXPECT_EQ(defaulted["spec"], Json::parse(R"({
      "storage": {"maxSize": "10Gi", "reclaimPolicy": "Retain"},
      "ecosystems": {"httpcache": {"maxObjectSize": "1Gi"}},
      "replication": {"copies": 2, "hydrate": true, "mutualTLS": true},
      "agent": {"logLevel": "info"}})"));
  auto cache = FromJson(minimal);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  EXPECT_EQ(cache->HostPath(), "/var/lib/buildcache/team-a/minimal");
  EXPECT_EQ(cache->spec.ecosystems.Enabled(), std::vector<std::string>{"httpcache"});
  EXPECT_EQ(cache->spec.ecosystems.httpcache->max_object_size.bytes, 1ull << 30);
}

TEST(BuildCacheTest, DefaultsDoNotOverrideGivenValues) {
  Json object = Json::parse(R"({"metadata":{"name":"x"},"spec":{
      "storage":{"maxSize":"1Gi","reclaimPolicy":"Delete"},
      "ecosystems":{"goproxy":{"upstream":"http://proxy.example.internal","sumdb":false,
                               "metadataTTL":"1h"},
                    "pypi":{"upstream":"http://pypi.example.internal","wheelHouse":true}},
      "replication":{"copies":3},"agent":{"logLevel":"debug"}}})");
  Json spec = ApplyDefaults(object)["spec"];
  EXPECT_EQ(spec["storage"]["reclaimPolicy"], "Delete");
  EXPECT_EQ(spec["ecosystems"]["goproxy"]["sumdb"], false);
  EXPECT_EQ(spec["ecosystems"]["pypi"]["wheelHouse"], true);
  EXPECT_EQ(spec["ecosystems"]["goproxy"]["metadataTTL"], "1h");
  EXPECT_EQ(spec["replication"], Json::parse(R"({"copies":3,"hydrate":true,"mutualTLS":true})"));
  EXPECT_EQ(spec["agent"]["logLevel"], "debug");
}

// Go modules are verified unless the spec says otherwise, and the wheel house (anonymous
// uploads) is off unless the spec says otherwise.
TEST(BuildCacheTest, SumdbDefaultsOnAndTheWheelHouseOff) {
  Json object = Json::parse(R"({"metadata":{"name":"x","namespace":"n"},"spec":{
      "storage":{"maxSize":"1Gi"},
      "ecosystems":{"goproxy":{"upstream":"http://proxy.example.internal"},
                    "pypi":{"upstream":"http://pypi.example.internal"}}}})");
  Json spec = ApplyDefaults(object)["spec"];
  EXPECT_EQ(spec["ecosystems"]["goproxy"]["sumdb"], true);
  EXPECT_FALSE(spec["ecosystems"]["goproxy"].contains("sumdbName"));
  EXPECT_EQ(spec["ecosystems"]["pypi"]["wheelHouse"], false);
  auto cache = FromJson(object);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  EXPECT_TRUE(cache->spec.ecosystems.goproxy->sumdb);
  EXPECT_EQ(cache->spec.ecosystems.goproxy->sumdb_name, "");
  EXPECT_FALSE(cache->spec.ecosystems.pypi->wheel_house);
  auto again = FromJson(ToJson(*cache));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ToJson(*again), ToJson(*cache));
  object["spec"]["ecosystems"]["pypi"]["wheelHouse"] = "yes";
  EXPECT_FALSE(FromJson(object).ok());
}

struct InvalidCase {
  std::string file;
  Json object;
  std::vector<std::string> expected;
};

// Every object the API server must reject (test_crd.py applies the same files), with the
// message both must give, from the file's "# expect:" lines.
std::vector<InvalidCase> InvalidCases() {
  std::vector<InvalidCase> cases;
  for (const auto& entry : std::filesystem::directory_iterator(kCrdDir + "/testdata/invalid")) {
    if (entry.path().extension() != ".yaml") continue;
    InvalidCase c{entry.path().filename().string(), LoadYaml(entry.path().string()), {}};
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("# expect: ", 0) == 0) c.expected.push_back(line.substr(10));
    }
    cases.push_back(std::move(c));
  }
  std::sort(cases.begin(), cases.end(),
            [](const InvalidCase& a, const InvalidCase& b) { return a.file < b.file; });
  return cases;
}

TEST(BuildCacheTest, EveryInvalidSampleIsRejectedWithTheApiServersMessage) {
  auto cases = InvalidCases();
  ASSERT_GE(cases.size(), 20u);
  for (const InvalidCase& c : cases) {
    ASSERT_FALSE(c.expected.empty()) << c.file << " has no # expect: line";
    auto cache = FromJson(c.object);
    ASSERT_FALSE(cache.ok()) << c.file << " was accepted";
    EXPECT_EQ(cache.status().code(), StatusCode::kInvalidArgument);
    for (const std::string& want : c.expected) {
      EXPECT_NE(cache.status().message().find(want), std::string::npos)
          << c.file << ": wanted \"" << want << "\" in:\n"
          << cache.status().message();
    }
  }
}

TEST(BuildCacheTest, ErrorsNameTheObjectAndListEveryProblem) {
  Json object = Json::parse(R"({"metadata":{"name":"two-problems"},"spec":{
      "storage":{"hostPath":"relative","maxSize":"0"},"ecosystems":{"httpcache":{}}}})");
  auto cache = FromJson(object);
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.status().message(),
            "BuildCache \"two-problems\" is invalid:\n"
            "spec.storage.hostPath: Invalid value: \"string\": storage.hostPath must be an "
            "absolute path\n"
            "spec.storage.maxSize: Invalid value: \"string\": must be greater than zero");
}

TEST(BuildCacheTest, WrongTypesAreReportedNotThrown) {
  Json object = Json::parse(R"({"metadata":{"name":"types"},"spec":{
      "storage":{"maxSize":10},"ecosystems":{"httpcache":[]},
      "replication":{"copies":"two","hydrate":"yes"},"directories":{"a":1},
      "tolerations":[1]},"status":{"observedGeneration":"x"}})");
  auto cache = FromJson(object);
  ASSERT_FALSE(cache.ok());
  const std::string& m = cache.status().message();
  EXPECT_NE(m.find("spec.storage.maxSize in body must be of type string"), std::string::npos) << m;
  EXPECT_NE(m.find("spec.replication.copies in body must be of type integer"), std::string::npos);
  EXPECT_NE(m.find("spec.replication.hydrate in body must be of type boolean"), std::string::npos);
  EXPECT_NE(m.find("spec.directories in body must be of type array"), std::string::npos);
  EXPECT_NE(m.find("spec.tolerations[0] in body must be of type object"), std::string::npos);
  EXPECT_FALSE(FromJson(Json::array()).ok());
  EXPECT_FALSE(FromJson(Json::parse(R"({"metadata":{"name":"nospec"}})")).ok());

  // A status of the wrong shape (never written by a valid operator) fails instead of throwing.
  Json bad_status = LoadYaml(kCrdDir + "/samples/minimal.yaml");
  bad_status["status"] = {{"observedGeneration", "x"}};
  EXPECT_EQ(FromJson(bad_status).status().code(), StatusCode::kInvalidArgument);
}

TEST(BuildCacheTest, HostPathCannotChange) {
  Json before = ApplyDefaults(LoadYaml(kCrdDir + "/samples/buildcache.yaml"));
  Json after = before;
  after["spec"]["storage"]["hostPath"] = "/var/lib/elsewhere";
  auto errors = ValidateUpdate(before, after);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].path, "spec.storage");
  EXPECT_NE(errors[0].message.find("storage.hostPath cannot be changed"), std::string::npos);
  Json removed = before;
  removed["spec"]["storage"].erase("hostPath");
  EXPECT_EQ(ValidateUpdate(before, removed).size(), 1u);
  Json resized = before;
  resized["spec"]["storage"]["maxSize"] = "300Gi";
  EXPECT_TRUE(ValidateUpdate(before, resized).empty());
}

TEST(BuildCacheTest, RoundTripsThroughJson) {
  auto cache = FromJson(LoadYaml(kCrdDir + "/samples/buildcache.yaml"));
  ASSERT_TRUE(cache.ok());
  cache->status.observed_generation = 3;
  cache->status.conditions.push_back(
      {"Ready", "True", "AllAgentsReady", "12 of 12 agents ready", "2026-11-28T07:30:00Z", 3});
  cache->status.desired_nodes = 12;
  cache->status.ready_nodes = 12;
  cache->status.hit_ratio = "0.94";
  Json json = ToJson(*cache);
  EXPECT_EQ(json["status"]["nodes"], Json::parse(R"({"desired":12,"ready":12})"));
  EXPECT_EQ(json["status"]["conditions"][0]["reason"], "AllAgentsReady");
  auto again = FromJson(json);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(ToJson(*again), json);
  EXPECT_EQ(again->status.conditions[0].observed_generation, 3);
  EXPECT_EQ(again->status.hit_ratio, "0.94");
}

TEST(LabelSelectorTest, MatchesLikeKubernetes) {
  LabelSelector empty;
  EXPECT_TRUE(empty.Matches({}));
  LabelSelector sel{{{"buildcache.io/allowed", "true"}},
                    {{"team", "In", {"a", "b"}},
                     {"legacy", "DoesNotExist", {}},
                     {"env", "NotIn", {"prod"}},
                     {"tier", "Exists", {}}}};
  EXPECT_TRUE(sel.Matches({{"buildcache.io/allowed", "true"}, {"team", "a"}, {"tier", "ci"}}));
  EXPECT_FALSE(sel.Matches({{"buildcache.io/allowed", "true"}, {"team", "c"}, {"tier", "ci"}}));
  EXPECT_FALSE(sel.Matches({{"team", "a"}, {"tier", "ci"}}));
  EXPECT_FALSE(sel.Matches(
      {{"buildcache.io/allowed", "true"}, {"team", "a"}, {"tier", "ci"}, {"legacy", "1"}}));
  EXPECT_FALSE(sel.Matches(
      {{"buildcache.io/allowed", "true"}, {"team", "a"}, {"tier", "ci"}, {"env", "prod"}}));
  EXPECT_FALSE(sel.Matches({{"buildcache.io/allowed", "true"}, {"team", "a"}}));
}

TEST(BuildCacheTest, AccessDefaultsToTheOwnNamespace) {
  auto minimal = LoadYaml(kCrdDir + "/samples/minimal.yaml");
  minimal["metadata"]["namespace"] = "team-a";
  auto own_only = FromJson(minimal);
  ASSERT_TRUE(own_only.ok());
  EXPECT_TRUE(own_only->AllowsNamespace("team-a", {}));
  EXPECT_FALSE(own_only->AllowsNamespace("team-b", {{"buildcache.io/allowed", "true"}}));
  auto shared = FromJson(LoadYaml(kCrdDir + "/samples/buildcache.yaml"));
  ASSERT_TRUE(shared.ok());
  EXPECT_TRUE(shared->AllowsNamespace("team-b", {{"buildcache.io/allowed", "true"}}));
  EXPECT_FALSE(shared->AllowsNamespace("team-b", {}));
}

TEST(BuildCacheTest, AccessIdentityFieldsRoundTripAndTurnIdentityOn) {
  auto object = LoadYaml(kCrdDir + "/samples/minimal.yaml");
  auto off = FromJson(object);
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->spec.access.IdentityEnabled());
  object["spec"]["access"] = Json::parse(R"({
      "anonymous": "none",
      "trustedWriters": {
        "namespaceSelector": {"matchExpressions": [{"key": "trust", "operator": "Exists"}]},
        "serviceAccounts": ["release/publisher"],
        "podSelector": {"matchLabels": {"branch": "main"}}}})");
  auto cache = FromJson(object);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  EXPECT_TRUE(cache->spec.access.IdentityEnabled());
  EXPECT_EQ(cache->spec.access.anonymous, "none");
  ASSERT_TRUE(cache->spec.access.trusted_writers.has_value());
  const TrustedWriters& tw = *cache->spec.access.trusted_writers;
  ASSERT_TRUE(tw.namespace_selector.has_value());
  EXPECT_TRUE(tw.namespace_selector->Matches({{"trust", "x"}}));
  EXPECT_FALSE(tw.namespace_selector->Matches({}));
  EXPECT_EQ(tw.service_accounts, std::vector<std::string>{"release/publisher"});
  EXPECT_EQ(tw.pod_labels, (std::map<std::string, std::string>{{"branch", "main"}}));
  Json json = ToJson(*cache);
  EXPECT_EQ(json["spec"]["access"], object["spec"]["access"]);
  auto again = FromJson(json);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ToJson(*again), json);
  // An empty trustedWriters is identity with nobody trusted.
  object["spec"]["access"] = {{"trustedWriters", Json::object()}};
  auto nobody = FromJson(object);
  ASSERT_TRUE(nobody.ok());
  EXPECT_TRUE(nobody->spec.access.IdentityEnabled());
  EXPECT_EQ(ToJson(*nobody)["spec"]["access"], object["spec"]["access"]);
}

TEST(BuildCacheTest, AttributionLimitAndScopeMissTtlRoundTripAndHaveNoDefault) {
  auto object = LoadYaml(kCrdDir + "/samples/minimal.yaml");
  auto absent = FromJson(object);
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->spec.access.attribution_limit.has_value());  // the agent's default
  EXPECT_FALSE(absent->spec.replication.scope_miss_ttl.has_value());
  EXPECT_FALSE(ToJson(*absent)["spec"]["replication"].contains("scopeMissTTL"));
  object["spec"]["access"] = {{"anonymous", "read"}, {"attributionLimit", 0}};
  object["spec"]["replication"] = {{"scopeMissTTL", "1m30s"}};
  auto cache = FromJson(object);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  EXPECT_EQ(cache->spec.access.attribution_limit, 0);
  ASSERT_TRUE(cache->spec.replication.scope_miss_ttl.has_value());
  EXPECT_EQ(cache->spec.replication.scope_miss_ttl->value, 90s);
  Json json = ToJson(*cache);
  EXPECT_EQ(json["spec"]["access"]["attributionLimit"], 0);
  EXPECT_EQ(json["spec"]["replication"]["scopeMissTTL"], "1m30s");
  auto again = FromJson(json);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ToJson(*again), json);
  // The bounds (crds/testdata/invalid holds the API server's messages for the rest).
  object["spec"]["access"]["attributionLimit"] = 10000;
  object["spec"]["replication"]["scopeMissTTL"] = "0s";
  EXPECT_TRUE(FromJson(object).ok());
  object["spec"]["access"]["attributionLimit"] = -1;
  EXPECT_NE(FromJson(object).status().message().find(
                "spec.access.attributionLimit in body should be greater than or equal to 0"),
            std::string::npos);
}

TEST(BuildCacheTest, StatusIdentityRoundTrips) {
  BuildCacheStatus status;
  status.identity = "podAddress+token;anonymous=read";
  EXPECT_EQ(StatusToJson(status)["identity"], status.identity);
  EXPECT_FALSE(StatusToJson(BuildCacheStatus{}).contains("identity"));
}

TEST(QuantityTest, ParsesKubernetesQuantities) {
  EXPECT_DOUBLE_EQ(static_cast<double>(*ParseQuantity("500m")), 0.5);
  EXPECT_DOUBLE_EQ(static_cast<double>(*ParseQuantity("2")), 2.0);
  EXPECT_DOUBLE_EQ(static_cast<double>(*ParseQuantity("1Gi")), 1073741824.0);
  EXPECT_DOUBLE_EQ(static_cast<double>(*ParseQuantity("1.5k")), 1500.0);
  EXPECT_DOUBLE_EQ(static_cast<double>(*ParseQuantity("1e3")), 1000.0);
  EXPECT_DOUBLE_EQ(static_cast<double>(*ParseQuantity(".5")), 0.5);
  EXPECT_LT(*ParseQuantity("2Gi"), *ParseQuantity("3G"));
  for (const char* bad : {"", "lots", "1 Gi", "1KB", "Gi", "1.2.3", "--1"}) {
    EXPECT_FALSE(ParseQuantity(bad)) << bad;
  }
  EXPECT_FALSE(ParseQuantity("1e999999"));
}

}  // namespace
}  // namespace buildcache::api
