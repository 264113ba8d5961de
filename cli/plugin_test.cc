#include "cli/plugin.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>

#include "common/kube/api_error.h"
#include "common/kube/kube_time.h"
#include "common/kube/testing/memory_kube_client.h"

namespace buildcache::cli {
namespace {

using ::testing::HasSubstr;

using MemoryKube = kube::testing::MemoryKubeClient;

Json CacheObject(const std::string& ns, const std::string& name) {
  return Json::parse(R"({
    "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
    "metadata": {"name": ")" +
                     name + R"(", "namespace": ")" + ns + R"(",
                 "creationTimestamp": "2026-11-28T10:00:00Z"},
    "spec": {
      "storage": {"maxSize": "200Gi"},
      "ecosystems": {"pypi": {"upstream": "https://pypi.example.internal/simple"},
                     "goproxy": {"upstream": "https://goproxy.example.internal"}},
      "directories": [{"name": "gobuild", "mountPath": "/root/.cache/go-build", "maxSize": "5Gi"}]
    },
    "status": {
      "conditions": [{"type": "Ready", "status": "True", "reason": "AllAgentsReady",
                      "message": "", "lastTransitionTime": "2026-11-28T10:01:00Z"}],
      "nodes": {"desired": 3, "ready": 2},
      "hitRatio": "0.75",
      "ecosystems": [{"name": "pypi", "hitRatio": "0.9", "lookups": 10}],
      "identity": "off"
    }
  })");
}

std::chrono::system_clock::time_point At(const char* text) { return *kube::ParseTime(text); }

Result<Options> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "kubectl-buildcache");
  return ParseArgs(static_cast<int>(args.size()), args.data());
}

TEST(ParseArgs, StatusWithNamespaceAndJson) {
  Result<Options> o = Parse({"status", "ci", "-n", "ci-system", "-o", "json"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->command, Command::kStatus);
  EXPECT_EQ(o->name, "ci");
  EXPECT_EQ(o->ns, "ci-system");
  EXPECT_EQ(o->output, OutputFormat::kJson);
}

TEST(ParseArgs, EnvWithUseAndFormatInEqualsForm) {
  Result<Options> o = Parse({"env", "--use=pypi,gobuild", "ci", "--format=github"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->command, Command::kEnv);
  EXPECT_EQ(o->use, "pypi,gobuild");
  EXPECT_EQ(o->env_format, EnvFormat::kGithub);
}

TEST(ParseArgs, BadInputIsRejectedWithAMessage) {
  EXPECT_THAT(Parse({}).status().message(), HasSubstr("missing command"));
  EXPECT_THAT(Parse({"frobnicate"}).status().message(), HasSubstr("unknown command"));
  EXPECT_THAT(Parse({"env"}).status().message(), HasSubstr("exactly one"));
  EXPECT_THAT(Parse({"status", "-n"}).status().message(), HasSubstr("needs a value"));
  EXPECT_THAT(Parse({"status", "--bogus"}).status().message(), HasSubstr("unknown flag"));
  EXPECT_THAT(Parse({"status", "-o", "yaml"}).status().message(), HasSubstr("table or json"));
  EXPECT_THAT(Parse({"env", "ci", "--format", "ini"}).status().message(), HasSubstr("dotenv"));
  EXPECT_THAT(Parse({"status", "ci", "-A"}).status().message(), HasSubstr("all-namespaces"));
  EXPECT_THAT(Parse({"status", "--use", "pypi"}).status().message(), HasSubstr("env only"));
}

TEST(Summarize, ReadsConditionsNodesAndRatios) {
  CacheSummary s = Summarize(CacheObject("ci-system", "ci"));
  EXPECT_EQ(s.ns, "ci-system");
  EXPECT_EQ(s.ready, "True");
  EXPECT_EQ(s.nodes_ready, 2);
  EXPECT_EQ(s.nodes_desired, 3);
  EXPECT_EQ(s.max_size, "200Gi");
  EXPECT_EQ(s.hit_ratio, "0.75");
  ASSERT_EQ(s.ecosystems.size(), 1u);
  EXPECT_EQ(s.ecosystems[0].lookups, 10);
}

TEST(Summarize, ToleratesMalformedStatus) {
  Json object = CacheObject("ci-system", "ci");
  object["status"] = {{"conditions", "nope"}, {"nodes", 7}, {"hitRatio", 0.5}};
  CacheSummary s = Summarize(object);
  EXPECT_EQ(s.ready, "");
  EXPECT_EQ(s.nodes_ready, 0);
  EXPECT_EQ(s.hit_ratio, "");
}

TEST(FormatAge, UsesKubectlUnits) {
  auto t = At("2026-11-28T10:00:00Z");
  EXPECT_EQ(FormatAge(t, t + std::chrono::seconds(45)), "45s");
  EXPECT_EQ(FormatAge(t, t + std::chrono::minutes(12)), "12m");
  EXPECT_EQ(FormatAge(t, t + std::chrono::hours(5)), "5h");
  EXPECT_EQ(FormatAge(t, t + std::chrono::hours(24 * 3)), "3d");
  EXPECT_EQ(FormatAge(t, t - std::chrono::seconds(5)), "0s");
  EXPECT_EQ(FormatAge(std::nullopt, t), "<unknown>");
}

TEST(RunCommand, StatusTableHasOneAlignedRowPerCache) {
  MemoryKube kube;
  kube.objects["buildcaches/ci-system/ci"] = CacheObject("ci-system", "ci");
  Json bare = CacheObject("team-a", "cold");
  bare.erase("status");
  kube.objects["buildcaches/team-a/cold"] = bare;
  Options o;
  o.command = Command::kStatus;
  o.all_namespaces = true;
  Result<std::string> out = cli::Run(o, kube, "default", At("2026-11-28T12:00:00Z"));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(
      *out,
      "NAMESPACE   NAME   READY    NODES   MAX SIZE   HIT RATIO   ECOSYSTEMS   IDENTITY   AGE\n"
      "ci-system   ci     True     2/3     200Gi      0.75        pypi=0.9     off        2h\n"
      "team-a      cold   <none>   0/0     200Gi      <none>      <none>       <none>     2h\n");
}

TEST(RunCommand, StatusShowsTheTopNamespacesByBytesSaved) {
  MemoryKube kube;
  Json object = CacheObject("ci-system", "ci");
  object["status"]["topNamespaces"] = Json::parse(R"json([
    {"name": "team-a", "savedBytes": 1610612736, "hitRatio": "0.94", "lookups": 1200},
    {"name": "(other)", "savedBytes": 3072, "hitRatio": "0.5", "lookups": 8}])json");
  kube.objects["buildcaches/ci-system/ci"] = object;
  Options o;
  o.command = Command::kStatus;
  o.name = "ci";
  o.ns = "ci-system";
  Result<std::string> out = cli::Run(o, kube, "default", At("2026-11-28T12:00:00Z"));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_THAT(*out, HasSubstr("\n\n"
                              "CACHE   CALLER NAMESPACE   SAVED    HIT RATIO   LOOKUPS\n"
                              "ci      team-a             1.5GiB   0.94        1200\n"
                              "ci      (other)            3.0KiB   0.5         8\n"));
  o.output = OutputFormat::kJson;
  out = cli::Run(o, kube, "default", At("2026-11-28T12:00:00Z"));
  ASSERT_TRUE(out.ok());
  Json json = Json::parse(*out);
  EXPECT_EQ(json["items"][0]["topNamespaces"][0]["savedBytes"], 1610612736);
  EXPECT_EQ(json["items"][0]["topNamespaces"][1]["name"], "(other)");
}

TEST(FormatBytes, UsesBinaryUnits) {
  EXPECT_EQ(FormatBytes(0), "0B");
  EXPECT_EQ(FormatBytes(1023), "1023B");
  EXPECT_EQ(FormatBytes(1536), "1.5KiB");
  EXPECT_EQ(FormatBytes(int64_t{5} << 40), "5.0TiB");
}

TEST(RunCommand, UnknownBuildCacheIsNotFound) {
  MemoryKube kube;
  Options o;
  o.command = Command::kStatus;
  o.name = "nope";
  Result<std::string> out = cli::Run(o, kube, "ci-system", At("2026-11-28T12:00:00Z"));
  EXPECT_EQ(out.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(out.status().message(), "BuildCache \"nope\" in namespace \"ci-system\" not found");
  o.command = Command::kEnv;
  EXPECT_EQ(cli::Run(o, kube, "ci-system", {}).status().code(), StatusCode::kNotFound);
}

TEST(RunCommand, UnreachableServerKeepsItsCode) {
  MemoryKube kube;
  kube.fail_with = Unavailable("connection refused\nsecond line");
  Options o;
  o.command = Command::kStatus;
  Result<std::string> out = cli::Run(o, kube, "ci-system", {});
  EXPECT_EQ(out.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(out.status().message().find('\n'), std::string::npos);
}

TEST(RunCommand, EnvMatchesTheWebhooksCacheEnv) {
  MemoryKube kube;
  kube.objects["buildcaches/ci-system/ci"] = CacheObject("ci-system", "ci");
  Options o;
  o.command = Command::kEnv;
  o.name = "ci";
  o.env_format = EnvFormat::kDotenv;
  o.use = "goproxy, gobuild";
  Result<std::string> out = cli::Run(o, kube, "ci-system", {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out,
            "# BuildCache ci-system/ci: agent http://buildcache-ci.ci-system.svc\n"
            "GOPROXY=http://buildcache-ci.ci-system.svc/gomod\n"
            "GOCACHE=/root/.cache/go-build\n");
}

TEST(RunCommand, EnvRejectsACacheTheBuildCacheDoesNotOffer) {
  MemoryKube kube;
  kube.objects["buildcaches/ci-system/ci"] = CacheObject("ci-system", "ci");
  Options o;
  o.command = Command::kEnv;
  o.name = "ci";
  o.use = "pypi,npm";
  Result<std::string> out = cli::Run(o, kube, "ci-system", {});
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("offers only pypi,goproxy,gobuild"));
  EXPECT_THAT(out.status().message(), HasSubstr("\"npm\""));
}

TEST(RenderEnv, ShellQuotesEverything) {
  Result<std::string> out =
      RenderEnv({{"A", "it's $HOME"}, {"B", "x y"}}, EnvFormat::kShell, "note");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "# note\nexport A='it'\\''s $HOME'\nexport B='x y'\n");
}

TEST(RenderEnv, GithubUsesAHeredocForMultiLineValues) {
  Result<std::string> out = RenderEnv({{"A", "1"}, {"B", "x\nBUILDCACHE_EOF\ny"}},
                                      EnvFormat::kGithub, "comments are not allowed here");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "A=1\nB<<BUILDCACHE_EOF_\nx\nBUILDCACHE_EOF\ny\nBUILDCACHE_EOF_\n");
}

TEST(RenderEnv, DotenvRefusesNewlines) {
  EXPECT_EQ(RenderEnv({{"A", "x\ny"}}, EnvFormat::kDotenv, "").status().code(),
            StatusCode::kInvalidArgument);
}

TEST(ParseArgs, PurgeNeedsANameAndAKey) {
  Result<Options> o = Parse({"purge", "ci", "-n", "ci-system", "--key", "httpcache/a/b"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->command, Command::kPurge);
  EXPECT_EQ(o->name, "ci");
  EXPECT_EQ(o->key, "httpcache/a/b");
  EXPECT_THAT(Parse({"purge", "ci"}).status().message(), HasSubstr("--key"));
  EXPECT_THAT(Parse({"purge", "--key", "k"}).status().message(), HasSubstr("one BuildCache NAME"));
  EXPECT_THAT(Parse({"status", "--key", "k"}).status().message(), HasSubstr("purge only"));
}

TEST(ParseArgs, PurgeByPrefixNeedsANonEmptyPrefixAndNotAKeyToo) {
  Result<Options> o = Parse({"purge", "ci", "--prefix", "pypi/"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->prefix, std::optional<std::string>("pypi/"));
  EXPECT_TRUE(o->key.empty());
  EXPECT_THAT(Parse({"purge", "ci", "--prefix", ""}).status().message(), HasSubstr("non-empty"));
  EXPECT_THAT(Parse({"purge", "ci", "--prefix="}).status().message(), HasSubstr("non-empty"));
  EXPECT_THAT(Parse({"purge", "ci", "--prefix", "a", "--key", "b"}).status().message(),
              HasSubstr("--key KEY or --prefix PREFIX"));
  EXPECT_THAT(Parse({"status", "--prefix", "a"}).status().message(), HasSubstr("purge only"));
}

// The admin Secret, the DaemonSet and its pods, by name; List answers the pods.
// The agents' pods are listed whatever the selector (which the test checks).
class PurgeKube : public kube::testing::MemoryKubeClient {
 public:
  Json pods = Json::array();

  Result<Json> List(const kube::Resource& r, const std::string& ns,
                    const kube::ListOptions& options) override {
    BC_RETURN_IF_ERROR(kube::testing::MemoryKubeClient::List(r, ns, options).status());
    return Json{{"metadata", Json::object()}, {"items", pods}};
  }
};

class FakeProxy : public AgentProxy {
 public:
  std::map<std::string, Result<Answer>> answers;  // by pod
  std::vector<std::string> calls;                 // "pod:port path token"
  // When set, answers every call instead of `answers`.
  std::function<Result<Answer>(const std::string& pod, const std::string& path)> respond;
  Result<Answer> Post(const std::string& ns, const std::string& pod, int port,
                      const std::string& path,
                      const std::vector<std::pair<std::string, std::string>>& headers) override {
    std::string token;
    for (const auto& [name, value] : headers) {
      if (name == "X-Buildcache-Admin-Token") token = value;
    }
    calls.push_back(ns + "/" + pod + ":" + std::to_string(port) + " " + path + " " + token);
    if (respond) return respond(pod, path);
    auto it = answers.find(pod);
    return it != answers.end() ? it->second : Result<Answer>(Unavailable("no route"));
  }
};

class PurgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kube_.objects["secrets/ci-system/buildcache-ci-admin"] = {
        {"data", {{"token", "c2VjcmV0"}}}};  // "secret"
    kube_.objects["daemonsets/ci-system/buildcache-ci"] = Json::parse(R"({"spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/instance": "ci"}},
        "template": {"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}}
    }})");
    kube_.pods = Json::parse(R"([
        {"metadata": {"name": "buildcache-ci-b"}, "spec": {"nodeName": "node-2"}},
        {"metadata": {"name": "buildcache-ci-a"}, "spec": {"nodeName": "node-1"}}])");
    options_.command = Command::kPurge;
    options_.name = "ci";
    options_.key = "httpcache/ccache/ab/x y";
  }
  PurgeKube kube_;
  FakeProxy proxy_;
  Options options_;
};

TEST_F(PurgeTest, EveryAgentIsCalledWithTheTokenAndReported) {
  proxy_.answers.emplace("buildcache-ci-a", AgentProxy::Answer{200, R"({"removed":true})"});
  proxy_.answers.emplace("buildcache-ci-b", AgentProxy::Answer{200, R"({"removed":false})"});
  Result<PurgeReport> report = RunPurge(options_, kube_, proxy_, "ci-system");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_FALSE(report->failed);
  EXPECT_EQ(report->text,
            "buildcache-ci-a (node node-1): removed\n"
            "buildcache-ci-b (node node-2): not stored\n");
  EXPECT_EQ(kube_.last_list.label_selector, "app.kubernetes.io/instance=ci");
  EXPECT_EQ(proxy_.calls,
            (std::vector<std::string>{
                "ci-system/buildcache-ci-a:8080 /admin/purge?key=httpcache%2Fccache%2Fab%2Fx%20y "
                "secret",
                "ci-system/buildcache-ci-b:8080 /admin/purge?key=httpcache%2Fccache%2Fab%2Fx%20y "
                "secret"}));
}

TEST_F(PurgeTest, AnAgentThatFailsFailsThePurgeAndTheOthersAreStillCalled) {
  proxy_.answers.emplace("buildcache-ci-a", AgentProxy::Answer{403, "admin: wrong token"});
  proxy_.answers.emplace("buildcache-ci-b", AgentProxy::Answer{200, R"({"removed":true})"});
  Result<PurgeReport> report = RunPurge(options_, kube_, proxy_, "ci-system");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->failed);
  EXPECT_THAT(report->text, HasSubstr("buildcache-ci-a (node node-1): failed: HTTP 403"));
  EXPECT_THAT(report->text, HasSubstr("buildcache-ci-b (node node-2): removed"));

  proxy_.answers.erase("buildcache-ci-a");  // unreachable
  report = RunPurge(options_, kube_, proxy_, "ci-system");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->failed);
  EXPECT_THAT(report->text, HasSubstr("failed: no route"));
}

TEST_F(PurgeTest, PrefixPurgeFollowsNextOnEveryAgentAndReportsTheCount) {
  options_.key.clear();
  options_.prefix = "pypi/file/evil pkg";
  proxy_.respond = [](const std::string& pod, const std::string& path) {
    if (path.find("&after=") == std::string::npos) {
      return Result<AgentProxy::Answer>(
          AgentProxy::Answer{200, R"({"removed":10000,"next":"ab/c","unnamed":0})"});
    }
    if (pod == "buildcache-ci-b") {
      return Result<AgentProxy::Answer>(
          AgentProxy::Answer{200, R"({"removed":3,"next":"","unnamed":4})"});
    }
    return Result<AgentProxy::Answer>(
        AgentProxy::Answer{200, R"({"removed":0,"next":"","unnamed":0})"});
  };
  Result<PurgeReport> report = RunPurge(options_, kube_, proxy_, "ci-system");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_FALSE(report->failed);
  EXPECT_EQ(report->text,
            "buildcache-ci-a (node node-1): removed 10000 keys\n"
            "buildcache-ci-b (node node-2): removed 10003 keys (4 keys stored before key names "
            "were recorded could not be checked)\n");
  const std::string first = "/admin/purge?prefix=pypi%2Ffile%2Fevil%20pkg";
  EXPECT_EQ(proxy_.calls, (std::vector<std::string>{
                              "ci-system/buildcache-ci-a:8080 " + first + " secret",
                              "ci-system/buildcache-ci-a:8080 " + first + "&after=ab%2Fc secret",
                              "ci-system/buildcache-ci-b:8080 " + first + " secret",
                              "ci-system/buildcache-ci-b:8080 " + first + "&after=ab%2Fc secret",
                          }));
}

TEST_F(PurgeTest, PrefixPurgeThatNeverEndsIsBoundedAndFails) {
  options_.key.clear();
  options_.prefix = "p/";
  proxy_.respond = [](const std::string&, const std::string&) {
    return Result<AgentProxy::Answer>(AgentProxy::Answer{200, R"({"removed":1,"next":"x"})"});
  };
  Result<PurgeReport> report = RunPurge(options_, kube_, proxy_, "ci-system");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->failed);
  EXPECT_THAT(report->text, HasSubstr("more left after 1000 calls"));
  EXPECT_EQ(proxy_.calls.size(), 2u * kMaxPurgeCallsPerAgent);
}

TEST_F(PurgeTest, WithoutTheAdminSecretNoAgentIsCalled) {
  kube_.objects.erase("secrets/ci-system/buildcache-ci-admin");
  Result<PurgeReport> report = RunPurge(options_, kube_, proxy_, "ci-system");
  EXPECT_THAT(report.status().message(), HasSubstr("buildcache-ci-admin not found"));
  EXPECT_TRUE(proxy_.calls.empty());
  kube_.objects["secrets/ci-system/buildcache-ci-admin"] = {{"data", Json::object()}};
  EXPECT_THAT(RunPurge(options_, kube_, proxy_, "ci-system").status().message(),
              HasSubstr("holds no token"));
  EXPECT_TRUE(proxy_.calls.empty());
}

}  // namespace
}  // namespace buildcache::cli
