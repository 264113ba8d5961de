#include "agent/app/agent.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "common/http/client.h"

namespace buildcache::agent {
namespace {

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("agent_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    config_.listen = "127.0.0.1:0";
    config_.store.data_dir = dir_.string();
    config_.store.max_size = 1 << 20;
    config_.httpcache.max_object_size = 64 << 10;
    ASSERT_TRUE(ValidateAgentConfig(config_).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Agent> StartAgent() {
    Result<std::unique_ptr<Agent>> agent = Agent::Start(config_);
    EXPECT_TRUE(agent.ok()) << agent.status().ToString();
    return agent.ok() ? std::move(agent).value() : nullptr;
  }

  http::ClientResponse Fetch(Agent& agent, std::string_view method, std::string_view path,
                             std::string_view body = {}) {
    Result<http::ClientResponse> r =
        http::Fetch(method, "http://" + agent.address() + std::string(path), {}, body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : http::ClientResponse{};
  }

  // The value of the sample line starting with `series ` in /metrics, or -1.
  double Sample(Agent& agent, const std::string& series) {
    std::string text = Fetch(agent, "GET", "/metrics").body;
    size_t pos = text.find("\n" + series + " ");
    if (pos == std::string::npos) return -1;
    return std::stod(text.substr(pos + series.size() + 2));
  }

  // Sample, asked again (for at most 2 s) until it reads want: a request is counted when its
  // handler returns, which can be just after the client has read the whole response.
  double SampleReaching(Agent& agent, const std::string& series, double want) {
    double got = Sample(agent, series);
    for (int i = 0; i < 200 && got != want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      got = Sample(agent, series);
    }
    return got;
  }

  std::filesystem::path dir_;
  AgentConfig config_;
};

TEST_F(AgentTest, ServesProbesAndStoresObjects) {
  auto agent = StartAgent();
  ASSERT_TRUE(agent);
  EXPECT_EQ(Fetch(*agent, "GET", "/healthz").status, 200);
  EXPECT_EQ(Fetch(*agent, "GET", "/readyz").status, 200);
  EXPECT_EQ(Fetch(*agent, "PUT", "/cache/ab/cdef", "object bytes").status / 100, 2);
  http::ClientResponse got = Fetch(*agent, "GET", "/cache/ab/cdef");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, "object bytes");
  EXPECT_EQ(Fetch(*agent, "GET", "/cache/ab/missing").status, 404);
}

TEST_F(AgentTest, MetricsCountHitsMissesAndBytes) {
  auto agent = StartAgent();
  ASSERT_TRUE(agent);
  ASSERT_EQ(Fetch(*agent, "PUT", "/cache/k1", std::string(1000, 'x')).status / 100, 2);
  Fetch(*agent, "GET", "/cache/k1");
  Fetch(*agent, "GET", "/cache/k1");
  Fetch(*agent, "GET", "/cache/nope");
  EXPECT_EQ(
      SampleReaching(*agent, R"(buildcache_requests_total{frontend="httpcache",result="hit"})", 2),
      2);
  EXPECT_EQ(
      SampleReaching(*agent, R"(buildcache_requests_total{frontend="httpcache",result="miss"})", 1),
      1);
  EXPECT_EQ(Sample(*agent, R"(buildcache_requests_total{frontend="httpcache",result="stored"})"),
            1);
  EXPECT_EQ(Sample(*agent, R"(buildcache_served_bytes_total{frontend="httpcache",source="local"})"),
            2000);
  EXPECT_EQ(Sample(*agent, R"(buildcache_received_bytes_total{frontend="httpcache"})"), 1000);
  EXPECT_EQ(Sample(*agent, "buildcache_store_bytes"), 1000);
  EXPECT_EQ(Sample(*agent, "buildcache_store_objects"), 1);
}

// buildcache-gocacheprog's requests are also counted as Go build-cache actions and outputs; other
// clients' CAS requests are not.
TEST_F(AgentTest, GoBuildCacheRequestsAreCountedByObject) {
  auto agent = StartAgent();
  ASSERT_TRUE(agent);
  const std::string action = "/cache/gocache/v1/a/" + std::string(64, 'a');
  const std::string entry = "v1 " + std::string(64, 'b') + " 5 1\n";
  ASSERT_EQ(Fetch(*agent, "PUT", action, entry).status / 100, 2);
  Fetch(*agent, "GET", action);
  Fetch(*agent, "GET", "/cache/gocache/v1/a/" + std::string(64, 'c'));
  const std::string output = "http://" + agent->address() + "/cas/" + std::string(64, 'd');
  EXPECT_EQ(http::Fetch("GET", output, {{"User-Agent", "buildcache-gocacheprog"}})->status, 404);
  EXPECT_EQ(http::Fetch("GET", output, {{"User-Agent", "bazel/7"}})->status, 404);
  const std::string prefix = "buildcache_gocache_requests_total";
  EXPECT_EQ(SampleReaching(*agent, prefix + R"({object="action",result="miss"})", 1), 1);
  EXPECT_EQ(Sample(*agent, prefix + R"({object="action",result="hit"})"), 1);
  EXPECT_EQ(Sample(*agent, prefix + R"({object="action",result="stored"})"), 1);
  EXPECT_EQ(SampleReaching(*agent, prefix + R"({object="output",result="miss"})", 1), 1);
  EXPECT_EQ(Sample(*agent, R"(buildcache_gocache_bytes_total{object="action",direction="served"})"),
            static_cast<double>(entry.size()));
  EXPECT_EQ(
      Sample(*agent, R"(buildcache_gocache_bytes_total{object="action",direction="received"})"),
      static_cast<double>(entry.size()));
}

TEST_F(AgentTest, ObjectsSurviveRestart) {
  {
    auto agent = StartAgent();
    ASSERT_TRUE(agent);
    ASSERT_EQ(Fetch(*agent, "PUT", "/cache/kept", "still here").status / 100, 2);
  }
  auto agent = StartAgent();
  ASSERT_TRUE(agent);
  EXPECT_EQ(Fetch(*agent, "GET", "/cache/kept").body, "still here");
}

TEST_F(AgentTest, QuotaEvictsAndIsCounted) {
  auto agent = StartAgent();
  ASSERT_TRUE(agent);
  // 20 distinct 60 KiB objects into a 1 MiB store: some must be evicted, the store stays within.
  for (int i = 0; i < 20; ++i) {
    std::string body(60 << 10, static_cast<char>('a' + i));
    ASSERT_EQ(Fetch(*agent, "PUT", "/cache/obj" + std::to_string(i), body).status / 100, 2);
  }
  EXPECT_LE(Sample(*agent, "buildcache_store_bytes"), 1 << 20);
  EXPECT_GE(Sample(*agent, "buildcache_store_evictions_total"), 3);
  EXPECT_EQ(Fetch(*agent, "GET", "/cache/obj19").status, 200);
  EXPECT_EQ(Fetch(*agent, "GET", "/cache/obj0").status, 404);
}

TEST_F(AgentTest, ObjectLargerThanLimitIs413) {
  auto agent = StartAgent();
  ASSERT_TRUE(agent);
  EXPECT_EQ(Fetch(*agent, "PUT", "/cache/big", std::string((64 << 10) + 1, 'x')).status, 413);
  EXPECT_EQ(Fetch(*agent, "GET", "/cache/big").status, 404);
}

}  // namespace
}  // namespace buildcache::agent
