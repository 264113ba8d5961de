#include "operator/controllers/hit_ratio.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "common/http/server.h"
#include "common/kube/testing/unused_kube_client.h"

namespace buildcache::controllers {
namespace {

// What an agent serves, trimmed to the families the parser reads plus neighbours it must skip.
constexpr char kAgentMetrics[] = R"(# HELP buildcache_requests_total Requests handled.
# TYPE buildcache_requests_total counter
buildcache_requests_total{frontend="httpcache",result="hit"} 9
buildcache_requests_total{frontend="httpcache",result="miss"} 1
buildcache_requests_total{frontend="httpcache",result="stored"} 4
buildcache_requests_total{frontend="pypi",result="hit"} 20
buildcache_requests_total{frontend="pypi",result="miss"} 0
buildcache_requests_total{frontend="goproxy",result="stored"} 3
buildcache_requests_total_created{frontend="pypi",result="hit"} 1700000000
# TYPE buildcache_upstream_requests_total counter
buildcache_upstream_requests_total{frontend="pypi",outcome="ok"} 5
buildcache_upstream_requests_total{frontend="pypi",outcome="error"} 7
buildcache_upstream_bytes_total{frontend="pypi"} 123456
)";

TEST(HitRatio, ParsesRequestAndUpstreamCounters) {
  Result<AgentCounts> counts = ParseAgentMetrics(kAgentMetrics);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(counts->size(), 2u);  // goproxy has no lookups
  EXPECT_EQ(counts->at("httpcache"), (FrontendCounts{9, 1, 0}));
  EXPECT_EQ(counts->at("pypi"), (FrontendCounts{20, 0, 5}));
}

// Two agents' per-namespace families: "team-a" on both, (other) beyond one agent's cap.
constexpr char kScopeMetricsA[] = R"m(# TYPE buildcache_scope_requests_total counter
buildcache_scope_requests_total{scope="team-a",result="hit"} 3
buildcache_scope_requests_total{scope="team-a",result="miss"} 1
buildcache_scope_requests_total{scope="(anonymous)",result="hit"} 1
buildcache_scope_requests_total{scope="quiet",result="miss"} 4
# TYPE buildcache_scope_bytes_total counter
buildcache_scope_bytes_total{scope="team-a",result="hit"} 3000
buildcache_scope_bytes_total{scope="team-a",result="miss"} 99999
buildcache_scope_bytes_total{scope="(anonymous)",result="hit"} 10
buildcache_scope_bytes_total{scope="quiet",result="miss"} 5000
)m";
constexpr char kScopeMetricsB[] = R"m(buildcache_scope_requests_total{scope="team-a",result="hit"} 1
buildcache_scope_requests_total{scope="(other)",result="hit"} 8
buildcache_scope_requests_total{scope="t1",result="hit"} 1
buildcache_scope_requests_total{scope="t2",result="hit"} 1
buildcache_scope_requests_total{scope="t3",result="hit"} 1
buildcache_scope_bytes_total{scope="team-a",result="hit"} 1000
buildcache_scope_bytes_total{scope="(other)",result="hit"} 8000
buildcache_scope_bytes_total{scope="t1",result="hit"} 5
buildcache_scope_bytes_total{scope="t2",result="hit"} 5
buildcache_scope_bytes_total{scope="t3",result="hit"} 4
)m";

TEST(HitRatio, TopNamespacesAreSummedOverAgentsRankedBySavedBytesAndBounded) {
  ScopeTotals a, b, total;
  ASSERT_TRUE(ParseAgentMetrics(kScopeMetricsA, &a).ok());
  ASSERT_TRUE(ParseAgentMetrics(kScopeMetricsB, &b).ok());
  EXPECT_EQ(a.at("team-a"), (ScopeCounts{3, 1, 3000}));
  AddCounts(total, a);
  AddCounts(total, b);
  HitStats stats = ComputeHitStats({}, total);
  // "quiet" saved nothing; t3 is sixth of six that saved bytes.
  ASSERT_EQ(stats.top_namespaces.size(), api::kMaxTopNamespaces);
  EXPECT_EQ(stats.top_namespaces[0], (api::NamespaceStatus{"(other)", 8000, "1.00", 8}));
  EXPECT_EQ(stats.top_namespaces[1], (api::NamespaceStatus{"team-a", 4000, "0.80", 5}));
  EXPECT_EQ(stats.top_namespaces[2].name, "(anonymous)");
  EXPECT_EQ(stats.top_namespaces[3].name, "t1");  // ties: more lookups, then by name
  EXPECT_EQ(stats.top_namespaces[4].name, "t2");
  // Without the out parameter the scope families are skipped as before.
  Result<AgentCounts> plain = ParseAgentMetrics(kScopeMetricsA);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->empty());
}

TEST(HitRatio, MalformedScopeSampleIsAnError) {
  ScopeTotals scopes;
  EXPECT_FALSE(
      ParseAgentMetrics("buildcache_scope_bytes_total{scope=\"x\",result=\"hit\"} -1\n", &scopes)
          .ok());
}

TEST(HitRatio, FetchedFromUpstreamIsNotAHit) {
  HitStats stats = ComputeHitStats(*ParseAgentMetrics(kAgentMetrics));
  // httpcache 9 of 10; pypi (20 - 5) of 20; overall 24 of 30.
  EXPECT_EQ(stats.hit_ratio, "0.80");
  ASSERT_EQ(stats.ecosystems.size(), 2u);
  EXPECT_EQ(stats.ecosystems[0], (api::EcosystemStatus{"httpcache", "0.90", 10}));
  EXPECT_EQ(stats.ecosystems[1], (api::EcosystemStatus{"pypi", "0.75", 20}));
}

TEST(HitRatio, AgentsAreSummedBeforeTheRatio) {
  AgentCounts total;
  AddCounts(total, {{"httpcache", {1, 0, 0}}});
  AddCounts(total, {{"httpcache", {0, 3, 0}}});
  EXPECT_EQ(ComputeHitStats(total).hit_ratio, "0.25");  // not the mean of 1.00 and 0.00
}

TEST(HitRatio, NoLookupsIsUnknownNotZero) {
  EXPECT_EQ(ComputeHitStats({}).hit_ratio, "");
  Result<AgentCounts> counts =
      ParseAgentMetrics("buildcache_requests_total{frontend=\"httpcache\",result=\"stored\"} 2\n");
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(ComputeHitStats(*counts).hit_ratio, "");
  EXPECT_TRUE(ComputeHitStats(*counts).ecosystems.empty());
}

TEST(HitRatio, MoreFetchesThanHitsClampsToZero) {
  EXPECT_EQ(ComputeHitStats({{"pypi", {2, 0, 6}}}).hit_ratio, "0.00");
}

TEST(HitRatio, RatioHasTwoDecimalsRounded) {
  EXPECT_EQ(FormatRatio(0.9449), "0.94");
  EXPECT_EQ(FormatRatio(0.9951), "1.00");
  EXPECT_EQ(FormatRatio(1.5), "1.00");
  EXPECT_EQ(FormatRatio(-1), "0.00");
}

TEST(HitRatio, EscapedLabelValuesAreRead) {
  Result<AgentCounts> counts = ParseAgentMetrics(
      "buildcache_requests_total{result=\"hit\",frontend=\"a\\\"b\"} 3 1700000000000\n");
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  EXPECT_EQ(counts->at("a\"b").hits, 3);
}

TEST(HitRatio, MalformedSampleIsAnErrorNamingTheLine) {
  for (const char* text : {"buildcache_requests_total{frontend=\"x\",result=\"hit\"} lots\n",
                           "buildcache_requests_total{frontend=\"x\n",
                           "# ok\nbuildcache_upstream_requests_total{frontend=\"x\"} -1\n"}) {
    Result<AgentCounts> counts = ParseAgentMetrics(text);
    ASSERT_FALSE(counts.ok()) << text;
    EXPECT_NE(counts.status().message().find("metrics line"), std::string::npos);
  }
}

TEST(HitRatio, MetricsUrlsComeFromTheHttpPortOfEverySlice) {
  const std::vector<Json> slices = {
      Json::parse(R"({"addressType": "IPv4",
        "ports": [{"name": "peer", "port": 8081}, {"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false}},
                      {"addresses": ["10.0.0.2"]}]})"),
      Json::parse(R"({"addressType": "IPv6", "ports": [{"name": "http", "port": 9000}],
        "endpoints": [{"addresses": ["fd00::5"]}]})"),
      // A duplicate address (slices overlap while the controller rewrites them) and a slice
      // without the http port.
      Json::parse(R"({"addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.0.0.2"]}]})"),
      Json::parse(R"({"addressType": "IPv4", "ports": [{"name": "peer", "port": 8081}],
        "endpoints": [{"addresses": ["10.0.0.3"]}]})"),
  };
  EXPECT_EQ(MetricsUrls(slices), (std::vector<std::string>{"http://10.0.0.1:8080/metrics",
                                                           "http://10.0.0.2:8080/metrics",
                                                           "http://[fd00::5]:9000/metrics"}));
}

// Answers List(endpointslices) with the slices it holds; nothing else is used by the scraper.
class SlicesKubeClient : public kube::testing::UnusedKubeClient {
 public:
  Json slices = Json::array();
  Result<Json> List(const kube::Resource&, const std::string&, const kube::ListOptions&) override {
    return Json{{"items", slices}};
  }
};

TEST(HitRatio, AgentsOfOneBuildCacheAreScrapedAtTheSameTime) {
  // Each agent answers only once all of them have been asked: scraped one after another, each
  // request but the last would run into the 3 s client timeout, and only one agent would count.
  constexpr int kAgents = 4;
  std::mutex mu;
  std::condition_variable cv;
  int asked = 0;
  http::Handler handler = [&](http::Request&, http::Response& response) {
    {
      std::unique_lock lock(mu);
      ++asked;
      cv.notify_all();
      if (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return asked >= kAgents; })) {
        response.SetStatus(503);
        (void)response.Send("asked one at a time\n");
        return;
      }
    }
    response.SetStatus(200);
    (void)response.Send(
        "buildcache_requests_total{frontend=\"pypi\",result=\"hit\"} 3\n"
        "buildcache_requests_total{frontend=\"pypi\",result=\"miss\"} 1\n");
  };
  std::vector<std::unique_ptr<http::Server>> agents;
  SlicesKubeClient kube;
  for (int i = 0; i < kAgents; ++i) {
    auto server = http::Server::Start({}, handler);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    kube.slices.push_back(
        Json{{"addressType", "IPv4"},
             {"ports", Json::array({Json{{"name", "http"}, {"port", (*server)->port()}}})},
             {"endpoints", Json::array({Json{{"addresses", Json::array({"127.0.0.1"})}}})}});
    agents.push_back(std::move(server).value());
  }
  HitRatioScraperOptions options;
  options.timeout = std::chrono::seconds(3);
  HitRatioScraper scraper(&kube, options);
  Json cache = {{"metadata", {{"namespace", "ci"}, {"name", "main"}}}};
  std::vector<std::string> changed;
  scraper.ScrapeAll({cache}, [&](const std::string& key) { changed.push_back(key); });
  EXPECT_EQ(changed, std::vector<std::string>{"ci/main"});
  std::optional<HitStats> stats = scraper.Get("ci/main");
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->hit_ratio, "0.75");  // 12 hits of 16 lookups, summed over the four agents
  ASSERT_EQ(stats->ecosystems.size(), 1u);
  EXPECT_EQ(stats->ecosystems[0], (api::EcosystemStatus{"pypi", "0.75", 16}));
}

}  // namespace
}  // namespace buildcache::controllers
