#include "agent/app/scope_attribution.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "agent/app/agent.h"
#include "agent/app/instrumented_handler.h"
#include "common/http/client.h"

namespace buildcache::agent {
namespace {

using identity::Caller;

Caller Scoped(std::string scope) { return Caller{std::move(scope), "t", false, false}; }

TEST(ScopeLabels, TheFirstLimitScopesKeepTheirNameAndLaterOnesAreOther) {
  ScopeLabels labels(3);
  EXPECT_EQ(labels.For(Scoped("a")), "a");
  EXPECT_EQ(labels.For(Scoped("b")), "b");
  EXPECT_EQ(labels.For(Scoped("a")), "a");
  EXPECT_EQ(labels.For(Scoped("c")), "c");
  EXPECT_EQ(labels.For(Scoped("d")), "(other)");
  EXPECT_EQ(labels.For(Scoped("e")), "(other)");
  // Admitted scopes keep their value for good: their counters never move to (other).
  EXPECT_EQ(labels.For(Scoped("b")), "b");
  EXPECT_EQ(labels.admitted(), 3u);
  // Callers without a scope take no place under the limit.
  EXPECT_EQ(labels.For(Caller::Anonymous()), "(anonymous)");
  EXPECT_EQ(labels.For(Caller::Unrestricted()), "(unscoped)");
  EXPECT_EQ(labels.admitted(), 3u);
}

TEST(ScopeLabels, ReservedValuesAreNoScopeNameAndLimitZeroCountsEveryScopeAsOther) {
  for (std::string_view reserved :
       {ScopeLabels::kAnonymous, ScopeLabels::kUnscoped, ScopeLabels::kOther}) {
    EXPECT_FALSE(identity::IsScopeName(reserved)) << reserved;
  }
  ScopeLabels none(0);
  EXPECT_EQ(none.For(Scoped("a")), "(other)");
  EXPECT_EQ(none.admitted(), 0u);
}

// A request with a method only.
class FakeRequest final : public http::Request {
 public:
  explicit FakeRequest(std::string method) : method_(std::move(method)) {}
  std::string_view method() const override { return method_; }
  std::string_view target() const override { return "/cache/key"; }
  std::string_view header(std::string_view) const override { return {}; }
  std::optional<uint64_t> content_length() const override { return std::nullopt; }
  std::string_view remote_address() const override { return "10.0.0.7:5555"; }
  Result<size_t> ReadBody(std::span<char>) override { return size_t{0}; }

 private:
  std::string method_;
};

class NullResponse final : public http::Response {
 public:
  void SetStatus(int) override {}
  void SetHeader(std::string_view, std::string_view) override {}
  Status Send(std::string_view) override { return Status::Ok(); }
  Status SendFile(int, uint64_t, uint64_t) override { return Status::Ok(); }
  Status Begin(std::optional<uint64_t>) override { return Status::Ok(); }
  Status Write(std::string_view) override { return Status::Ok(); }
  Status End() override { return Status::Ok(); }
  void Abort() override {}
  bool started() const override { return false; }
};

class AttributeTest : public ::testing::Test {
 protected:
  // Runs one request through Attribute with a handler answering `status` from `source` with
  // `body`.
  void Serve(std::string method, const Caller& caller, int status, std::string source,
             std::string body) {
    identity::CallerHandler handler =
        Attribute(ScopeAttribution{labels_, requests_, bytes_},
                  [&](http::Request&, http::Response& resp, const Caller&) {
                    resp.SetStatus(status);
                    if (!source.empty()) resp.SetHeader(http::kSourceHeader, source);
                    (void)resp.Send(body);
                  });
    FakeRequest req(std::move(method));
    NullResponse resp;
    handler(req, resp, caller);
  }
  double Requests(const std::string& scope, const std::string& result) {
    return requests_.With({scope, result}).Value();
  }
  double Bytes(const std::string& scope, const std::string& result) {
    return bytes_.With({scope, result}).Value();
  }

  metrics::Registry registry_;
  metrics::Family<metrics::Counter>& requests_ =
      registry_.AddCounter("scope_requests_total", "r", {"scope", "result"});
  metrics::Family<metrics::Counter>& bytes_ =
      registry_.AddCounter("scope_bytes_total", "b", {"scope", "result"});
  ScopeLabels labels_{10};
};

TEST_F(AttributeTest, LookupsCountAsHitFromTheCacheAndMissFromUpstreamOr404) {
  Serve("GET", Scoped("team-a"), 200, "local", "12345");
  Serve("GET", Scoped("team-a"), 200, "peer", "123");
  Serve("GET", Scoped("team-a"), 200, "upstream", "1234567");
  Serve("GET", Scoped("team-a"), 404, "", "not found\n");
  Serve("HEAD", Scoped("team-b"), 200, "", "");
  Serve("GET", Scoped("team-b"), 304, "", "");
  EXPECT_EQ(Requests("team-a", "hit"), 2);
  EXPECT_EQ(Requests("team-a", "miss"), 2);
  EXPECT_EQ(Bytes("team-a", "hit"), 8);
  EXPECT_EQ(Bytes("team-a", "miss"), 7);  // the upstream body; a 404's error text is no content
  EXPECT_EQ(Requests("team-b", "hit"), 2);
}

TEST_F(AttributeTest, WritesAndRefusalsAreNotAttributed) {
  Serve("PUT", Scoped("team-a"), 201, "", "");
  Serve("DELETE", Scoped("team-a"), 204, "", "");
  Serve("GET", Scoped("team-a"), 403, "", "forbidden\n");
  Serve("GET", Scoped("team-a"), 500, "", "broken\n");
  EXPECT_EQ(labels_.admitted(), 0u);
  EXPECT_EQ(registry_.Render().find("team-a"), std::string::npos) << registry_.Render();
}

// A real agent with a tokens file: callers are told apart by their tokens only.
class ScopeAttributionAgentTest : public ::testing::Test {
 protected:
  static constexpr int kLimit = 10;
  static constexpr int kCallers = 10 * kLimit;

  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("scope_attribution_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream tokens(dir_ / "tokens.yaml");
    tokens << "tokens:\n  - {token: \"" << Token("release")
           << "\", scope: release, trustedWriter: true}\n";
    for (int i = 0; i < kCallers; ++i) {
      tokens << "  - {token: \"" << Token(Ns(i)) << "\", scope: " << Ns(i) << "}\n";
    }
    tokens.close();
    config_.listen = "127.0.0.1:0";
    config_.store.data_dir = (dir_ / "data").string();
    config_.store.max_size = 4 << 20;
    config_.httpcache.max_object_size = 64 << 10;
    config_.identity.tokens_file = (dir_ / "tokens.yaml").string();
    config_.identity.attribution_limit = kLimit;
    ASSERT_TRUE(ValidateAgentConfig(config_).ok());
    auto agent = Agent::Start(config_);
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    agent_ = std::move(agent).value();
  }
  void TearDown() override {
    agent_.reset();
    std::filesystem::remove_all(dir_);
  }

  static std::string Ns(int i) { return "ns-" + std::to_string(i); }
  static std::string Token(const std::string& scope) { return "token-of-" + scope + "-0123456789"; }

  http::ClientResponse Fetch(std::string_view method, std::string_view path,
                             http::HeaderList headers, std::string_view body = {}) {
    auto r = http::Fetch(method, "http://" + agent_->address() + std::string(path), headers, body);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : http::ClientResponse{};
  }
  static http::HeaderList As(const std::string& scope) {
    return {{"Authorization", "Bearer " + Token(scope)}};
  }

  // scope label value -> {result -> value} of one family in /metrics.
  std::map<std::string, std::map<std::string, double>> Family(const std::string& name) {
    std::map<std::string, std::map<std::string, double>> out;
    std::string text = agent_->registry().Render();
    const std::string prefix = name + "{scope=\"";
    for (size_t pos = text.find(prefix); pos != std::string::npos;
         pos = text.find(prefix, pos + 1)) {
      size_t scope_end = text.find('"', pos + prefix.size());
      std::string scope = text.substr(pos + prefix.size(), scope_end - pos - prefix.size());
      size_t result_start = text.find("result=\"", scope_end) + 8;
      std::string result = text.substr(result_start, text.find('"', result_start) - result_start);
      out[scope][result] = std::stod(text.substr(text.find("} ", result_start) + 2));
    }
    return out;
  }

  // Family(name), asked again (for at most 5 s) until its `scope`/`result` reads want: a request
  // is counted when its handler returns, which can be just after the client read the response.
  std::map<std::string, std::map<std::string, double>> FamilyReaching(const std::string& name,
                                                                      const std::string& scope,
                                                                      const std::string& result,
                                                                      double want) {
    auto got = Family(name);
    for (int i = 0; i < 500 && got[scope][result] != want; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      got = Family(name);
    }
    return got;
  }

  std::filesystem::path dir_;
  AgentConfig config_;
  std::unique_ptr<Agent> agent_;
};

TEST_F(ScopeAttributionAgentTest, TenTimesTheLimitOfCallersYieldAtMostLimitPlusOneValues) {
  const std::string object = "shared object bytes";
  ASSERT_EQ(Fetch("PUT", "/cache/shared/key", As("release"), object).status / 100, 2);
  for (int i = 0; i < kCallers; ++i) {
    ASSERT_EQ(Fetch("GET", "/cache/shared/key", As(Ns(i))).status, 200) << i;
    ASSERT_EQ(Fetch("GET", "/cache/never/stored", As(Ns(i))).status, 404) << i;
  }
  auto requests =
      FamilyReaching("buildcache_scope_requests_total", "(other)", "miss", kCallers - kLimit);
  EXPECT_LE(requests.size(), size_t{kLimit + 1});
  double hits = 0;
  for (int i = 0; i < kLimit; ++i) {
    EXPECT_EQ(requests[Ns(i)]["hit"], 1) << Ns(i);
    EXPECT_EQ(requests[Ns(i)]["miss"], 1) << Ns(i);
  }
  for (auto& [scope, results] : requests) hits += results["hit"];
  EXPECT_EQ(hits, kCallers);
  EXPECT_EQ(requests["(other)"]["hit"], kCallers - kLimit);
  EXPECT_EQ(requests["(other)"]["miss"], kCallers - kLimit);
  auto bytes = Family("buildcache_scope_bytes_total");
  EXPECT_LE(bytes.size(), size_t{kLimit + 1});
  EXPECT_EQ(bytes[Ns(0)]["hit"], static_cast<double>(object.size()));
  EXPECT_EQ(bytes["(other)"]["hit"], static_cast<double>(object.size() * (kCallers - kLimit)));
}

TEST_F(ScopeAttributionAgentTest, NothingTheClientSendsNamesItsScope) {
  const std::string object = "x";
  ASSERT_EQ(Fetch("PUT", "/cache/k", As("release"), object).status / 100, 2);
  // Headers a proxy or an impersonating client might use, from a known caller and an anonymous
  // one: the scope comes from the token (or its absence) only.
  http::HeaderList forged = {{"X-Buildcache-Scope", "forged-a"},
                             {"X-Forwarded-For", "10.9.9.9"},
                             {"Forwarded", "for=10.9.9.9"},
                             {"Impersonate-User", "forged-b"},
                             {"X-Remote-User", "forged-c"}};
  http::HeaderList as_ns0 = forged;
  as_ns0.emplace_back("Authorization", "Bearer " + Token(Ns(0)));
  EXPECT_EQ(Fetch("GET", "/cache/k", as_ns0).status, 200);
  EXPECT_EQ(Fetch("GET", "/cache/k", forged).status, 200);
  // A token no entry has, and Basic credentials naming a scope: refused, never attributed.
  EXPECT_EQ(
      Fetch("GET", "/cache/k", {{"Authorization", "Bearer forged-d-0123456789abcdef"}}).status,
      401);
  EXPECT_EQ(
      Fetch("GET", "/cache/k", {{"Authorization", "Basic Zm9yZ2VkLWU6"}}).status,  // forged-e:
      401);
  auto requests = FamilyReaching("buildcache_scope_requests_total", "(anonymous)", "hit", 1);
  EXPECT_EQ(requests[Ns(0)]["hit"], 1);
  EXPECT_EQ(requests["(anonymous)"]["hit"], 1);
  EXPECT_EQ(requests.size(), 2u);
  EXPECT_EQ(agent_->registry().Render().find("forged"), std::string::npos);
}

}  // namespace
}  // namespace buildcache::agent
