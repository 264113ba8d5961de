#include "operator/controllers/policy.h"

#include <gtest/gtest.h>

namespace buildcache::controllers {
namespace {

api::BuildCache Cache(const std::string& ns, const std::string& name) {
  api::BuildCache cache;
  cache.ns = ns;
  cache.name = name;
  cache.spec.ecosystems.httpcache = api::HttpCache{};
  return cache;
}

const BuildOptions kBuild{.agent_image = "registry.example.internal/bc/agent:1.0"};

TEST(Policy, ImagesOutsideTheAllowedRepositoriesAreRefused) {
  const std::vector<std::string> repos = {"registry.example.internal/bc/agent"};
  for (const char* ok :
       {"registry.example.internal/bc/agent", "registry.example.internal/bc/agent:2",
        "registry.example.internal/bc/agent@sha256:abcd",
        "registry.example.internal/bc/agent:2@sha256:abcd"}) {
    EXPECT_TRUE(ImageAllowed(ok, repos)) << ok;
  }
  for (const char* bad :
       {"registry.example.internal/bc/agent-evil", "registry.example.internal/bc",
        "registry.example.internal/bc/agent/../x:1", "registry.example.internal/bc/agent:1/evil",
        "evil.example/agent:1", "registry.example.internal/bc/agent:",
        "registry.example.internal/bc/agent@", "", "busybox"}) {
    EXPECT_FALSE(ImageAllowed(bad, repos)) << bad;
  }
  EXPECT_FALSE(ImageAllowed("anything", {}));
}

TEST(Policy, ApplyPolicyRefusesImagesButAlwaysAllowsTheDefault) {
  SpecPolicy policy{.allowed_images = {"registry.example.internal/bc/agent"}};
  api::BuildCache cache = Cache("ci", "a");
  EXPECT_TRUE(ApplyPolicy(&cache, policy, kBuild).ok());  // no image: the default
  cache.spec.agent.image = "registry.example.internal/bc/agent:1.0";
  EXPECT_TRUE(ApplyPolicy(&cache, policy, kBuild).ok());
  cache.spec.agent.image = "attacker.example/rootkit:latest";
  Status s = ApplyPolicy(&cache, policy, kBuild);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("attacker.example/rootkit:latest"), std::string::npos);
  EXPECT_NE(s.message().find("registry.example.internal/bc/agent"), std::string::npos);
  // Without a list only the operator's own image runs.
  cache.spec.agent.image = kBuild.agent_image;
  EXPECT_TRUE(ApplyPolicy(&cache, SpecPolicy{}, kBuild).ok());
  cache.spec.agent.image = "registry.example.internal/bc/agent:2.0";
  EXPECT_FALSE(ApplyPolicy(&cache, SpecPolicy{}, kBuild).ok());
}

TEST(Policy, HostPathsMustLieBeneathTheRoot) {
  SpecPolicy policy;  // root /var/lib/buildcache
  api::BuildCache cache = Cache("ci", "a");
  EXPECT_TRUE(ApplyPolicy(&cache, policy, kBuild).ok());  // the default path
  for (const char* ok : {"/var/lib/buildcache/x", "/var/lib/buildcache//x/y/"}) {
    cache.spec.storage.host_path = ok;
    EXPECT_TRUE(ApplyPolicy(&cache, policy, kBuild).ok()) << ok;
  }
  for (const char* bad : {"/etc/kubernetes", "/var/lib/buildcache", "/var/lib/buildcache/",
                          "/var/lib/buildcache-other/x", "/var/lib/kubelet", "/"}) {
    cache.spec.storage.host_path = bad;
    Status s = ApplyPolicy(&cache, policy, kBuild);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << bad;
    EXPECT_NE(s.message().find("beneath /var/lib/buildcache"), std::string::npos) << s.message();
  }
  cache.spec.storage.host_path = "/srv/cache/x";
  EXPECT_TRUE(ApplyPolicy(&cache, SpecPolicy{.host_path_root = "/srv/cache"}, kBuild).ok());
}

TEST(Policy, SumdbOnTakesTheOperatorsNameOrIsRefused) {
  api::BuildCache cache = Cache("ci", "a");
  cache.spec.ecosystems.goproxy = api::GoProxy{{"https://proxy.example.internal", {}}, true, ""};
  Status s = ApplyPolicy(&cache, SpecPolicy{}, kBuild);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("sumdb: false to store modules unverified"), std::string::npos);
  ASSERT_TRUE(
      ApplyPolicy(&cache, SpecPolicy{.go_sumdb_name = "sum.example.internal"}, kBuild).ok());
  EXPECT_EQ(cache.spec.ecosystems.goproxy->sumdb_name, "sum.example.internal");
  cache.spec.ecosystems.goproxy->sumdb_name = "own.example.internal";  // the spec's name wins
  ASSERT_TRUE(
      ApplyPolicy(&cache, SpecPolicy{.go_sumdb_name = "sum.example.internal"}, kBuild).ok());
  EXPECT_EQ(cache.spec.ecosystems.goproxy->sumdb_name, "own.example.internal");
  cache.spec.ecosystems.goproxy->sumdb = false;
  cache.spec.ecosystems.goproxy->sumdb_name.clear();
  EXPECT_TRUE(ApplyPolicy(&cache, SpecPolicy{}, kBuild).ok());
}

TEST(Policy, OverlappingHostPaths) {
  EXPECT_TRUE(HostPathsOverlap("/var/lib/buildcache/a", "/var/lib/buildcache/a"));
  EXPECT_TRUE(HostPathsOverlap("/var/lib/buildcache/a", "/var/lib/buildcache/a/"));
  EXPECT_TRUE(HostPathsOverlap("/var/lib/buildcache/a", "/var/lib/buildcache//a"));
  EXPECT_TRUE(HostPathsOverlap("/var/lib/buildcache/a", "/var/lib/buildcache/a/store"));
  EXPECT_TRUE(HostPathsOverlap("/var/lib/buildcache", "/var/lib/buildcache/a"));
  EXPECT_FALSE(HostPathsOverlap("/var/lib/buildcache/a", "/var/lib/buildcache/ab"));
  EXPECT_FALSE(HostPathsOverlap("/var/lib/buildcache/a", "/var/lib/buildcache/b"));
}

TEST(Policy, TheFirstClaimKeepsTheDirectory) {
  HostPathClaim a{"ns1/a", "/var/lib/buildcache/shared", "2026-12-01T10:00:00Z"};
  HostPathClaim b{"ns2/b", "/var/lib/buildcache/shared/inner", "2026-12-01T11:00:00Z"};
  HostPathClaim c{"ns3/c", "/var/lib/buildcache/other", "2026-12-01T09:00:00Z"};
  std::vector<HostPathClaim> all = {a, b, c};
  EXPECT_FALSE(EarlierOverlappingClaim(a, all));
  ASSERT_TRUE(EarlierOverlappingClaim(b, all));
  EXPECT_EQ(EarlierOverlappingClaim(b, all)->key, "ns1/a");
  EXPECT_FALSE(EarlierOverlappingClaim(c, all));
  // Same creation second: the smaller key was first, consistently from both sides.
  HostPathClaim d{"ns0/d", "/var/lib/buildcache/shared", "2026-12-01T10:00:00Z"};
  all.push_back(d);
  EXPECT_EQ(EarlierOverlappingClaim(a, all)->key, "ns0/d");
  EXPECT_FALSE(EarlierOverlappingClaim(d, all));
}

TEST(Policy, ClaimOfAnObjectUsesTheDefaultPathWhenNoneIsGiven) {
  auto claim = ClaimOf(api::Json::parse(
      R"({"metadata":{"name":"a","namespace":"ci","creationTimestamp":"T"},"spec":{}})"));
  ASSERT_TRUE(claim);
  EXPECT_EQ(claim->key, "ci/a");
  EXPECT_EQ(claim->host_path, "/var/lib/buildcache/ci/a");
  claim = ClaimOf(api::Json::parse(
      R"({"metadata":{"name":"a","namespace":"ci"},"spec":{"storage":{"hostPath":"/x//y/"}}})"));
  ASSERT_TRUE(claim);
  EXPECT_EQ(claim->host_path, "/x/y");
  EXPECT_FALSE(ClaimOf(api::Json::parse(R"({"metadata":{"name":"a"}})")));
}

}  // namespace
}  // namespace buildcache::controllers
