#include "agent/app/pod_builds.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace buildcache::agent {
namespace {

TEST(PodBuildsTest, VariablesAreExpandedFromTheEnvironmentAndUnsetOnesNamed) {
  setenv("BC_POD_TEST_NS", "ci", 1);
  setenv("BC_POD_TEST_IP", "10.244.1.7", 1);
  unsetenv("BC_POD_TEST_UNSET");
  EXPECT_EQ(*ExpandEnv("$BC_POD_TEST_NS", "k"), "ci");
  EXPECT_EQ(*ExpandEnv("http://$(BC_POD_TEST_IP):8080", "k"), "http://10.244.1.7:8080");
  EXPECT_EQ(*ExpandEnv("plain", "k"), "plain");
  auto unset = ExpandEnv("http://$(BC_POD_TEST_UNSET):8080", "pypi.buildPods.agentUrl");
  ASSERT_FALSE(unset.ok());
  EXPECT_EQ(unset.status().message(),
            "pypi.buildPods.agentUrl: $BC_POD_TEST_UNSET is not set in the environment");
  EXPECT_FALSE(ExpandEnv("http://$(BC_POD_TEST_IP:8080", "k").ok());
  EXPECT_FALSE(ExpandEnv("http://$(a b):8080", "k").ok());
}

TEST(PodBuildsTest, TheAgentUrlMustBeHttpHostAndPortOnly) {
  setenv("BC_POD_TEST_IP", "10.244.1.7", 1);
  PypiBuildPodsConfig pods{
      .ns = "ci", .build_cache = "bc", .agent_url = "http://$(BC_POD_TEST_IP):8080"};
  auto ok = PodRunnerOptionsFrom(pods, "node-1");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->agent_url, "http://10.244.1.7:8080");
  EXPECT_EQ(ok->ns, "ci");
  EXPECT_EQ(ok->node, "node-1");
  for (const char* bad : {"http://user:pw@10.0.0.1:8080", "http://10.0.0.1:8080/pypi",
                          "http://10.0.0.1", "https://10.0.0.1:8080", "http://:8080"}) {
    pods.agent_url = bad;
    auto refused = PodRunnerOptionsFrom(pods, "");
    EXPECT_FALSE(refused.ok()) << bad;
    if (!refused.ok()) {
      EXPECT_NE(refused.status().message().find("pypi.buildPods.agentUrl"), std::string::npos);
    }
  }
}

TEST(PodBuildsTest, AnImageBuilderServesItsDeclaredPlatform) {
  PypiBuilderConfig b;
  b.name = "py311";
  b.image = "example.org/ci/python:3.11";
  b.platform = {.implementation = "CPython",
                .python = "3.11",
                .libc = "glibc",
                .libc_version = "2.36",
                .cpu = "x86_64"};
  pypi::BuilderSpec spec = ImageBuilderSpec(b);
  EXPECT_TRUE(spec.pod());
  EXPECT_EQ(spec.platform.Key(), "cp311-linux-x86_64-glibc2.36");
  EXPECT_EQ(spec.Provenance(), "py311 (example.org/ci/python:3.11)");
  pypi::ClientPlatform client = spec.platform;
  client.libc_minor = 40;  // a newer glibc runs the wheel
  EXPECT_TRUE(spec.Serves(client));
  client.libc_minor = 31;  // an older one may not
  EXPECT_FALSE(spec.Serves(client));
}

}  // namespace
}  // namespace buildcache::agent
