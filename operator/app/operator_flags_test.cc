#include "operator/app/operator_flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

namespace buildcache::op {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

Result<OperatorFlags> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "buildcache-operator");
  return ParseOperatorFlags(static_cast<int>(args.size()), args.data());
}

std::string ParseError(std::vector<const char*> args) {
  Result<OperatorFlags> r = Parse(std::move(args));
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  return r.status().message();
}

TEST(OperatorFlagsTest, DefaultsAsDocumented) {
  Result<OperatorFlags> r = Parse({"--agent-image", "agent:1"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const OperatorConfig& c = r->config;
  EXPECT_EQ(r->action, OperatorFlags::Action::kRun);
  EXPECT_EQ(c.agent_image, "agent:1");
  EXPECT_EQ(c.host_path_root, "/var/lib/buildcache");
  EXPECT_FALSE(c.leader_elect);
  EXPECT_EQ(c.lease_name, "buildcache-operator");
  EXPECT_EQ(c.lease_seconds, 15);
  EXPECT_EQ(c.metrics_addr, "0.0.0.0:8080");
  EXPECT_EQ(c.workers, 2);
  EXPECT_EQ(c.scrape_seconds, 30);
  EXPECT_EQ(c.log_level, log::Level::kInfo);
  EXPECT_EQ(c.webhook_listen, "");
  EXPECT_EQ(c.webhook_service, "buildcache-webhook");
  EXPECT_EQ(c.webhook_configuration, "buildcache");
  EXPECT_EQ(c.webhook_secret, "buildcache-webhook-tls");
}

// The chart's arguments (charts/buildcache/templates/deployment.yaml) and the tests' forms.
TEST(OperatorFlagsTest, EveryFlagInBothForms) {
  Result<OperatorFlags> r = Parse({"--kubeconfig",
                                   "/k",
                                   "--agent-image=a:1",
                                   "--namespace",
                                   "ns1",
                                   "--buildcache-namespaces=team-a, team-b,,",
                                   "--allowed-agent-images",
                                   "r/a,r/b",
                                   "--host-path-root=/data",
                                   "--go-sumdb-name",
                                   "sum.example",
                                   "--leader-elect=true",
                                   "--leader-election-namespace=sys",
                                   "--leader-election-id",
                                   "lease",
                                   "--leader-election-lease-seconds=30",
                                   "--metrics-addr",
                                   "127.0.0.1:0",
                                   "--workers=4",
                                   "--metrics-scrape-interval",
                                   "0",
                                   "--log-level=debug",
                                   "--webhook-listen",
                                   "0.0.0.0:9443",
                                   "--webhook-cert-dir=/certs",
                                   "--webhook-service",
                                   "svc",
                                   "--webhook-configuration=cfg",
                                   "--webhook-secret",
                                   "sec"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const OperatorConfig& c = r->config;
  EXPECT_EQ(c.kubeconfig, "/k");
  EXPECT_EQ(c.agent_image, "a:1");
  EXPECT_EQ(c.ns, "ns1");
  EXPECT_THAT(c.buildcache_namespaces, ElementsAre("team-a", "team-b"));
  EXPECT_THAT(c.allowed_agent_images, ElementsAre("r/a", "r/b"));
  EXPECT_EQ(c.host_path_root, "/data");
  EXPECT_EQ(c.go_sumdb_name, "sum.example");
  EXPECT_TRUE(c.leader_elect);
  EXPECT_EQ(c.lease_namespace, "sys");
  EXPECT_EQ(c.lease_name, "lease");
  EXPECT_EQ(c.lease_seconds, 30);
  EXPECT_EQ(c.metrics_addr, "127.0.0.1:0");
  EXPECT_EQ(c.workers, 4);
  EXPECT_EQ(c.scrape_seconds, 0);
  EXPECT_EQ(c.log_level, log::Level::kDebug);
  EXPECT_EQ(c.webhook_listen, "0.0.0.0:9443");
  EXPECT_EQ(c.webhook_cert_dir, "/certs");
  EXPECT_EQ(c.webhook_service, "svc");
  EXPECT_EQ(c.webhook_configuration, "cfg");
  EXPECT_EQ(c.webhook_secret, "sec");
}

TEST(OperatorFlagsTest, LeaderElectTakesOnlyAnInlineBool) {
  EXPECT_TRUE(Parse({"--agent-image=a", "--leader-elect"})->config.leader_elect);
  EXPECT_FALSE(Parse({"--agent-image=a", "--leader-elect=false"})->config.leader_elect);
  EXPECT_EQ(ParseError({"--agent-image=a", "--leader-elect=yes"}), "--leader-elect: true or false");
  // The next argument is not its value.
  EXPECT_THAT(ParseError({"--agent-image=a", "--leader-elect", "false"}),
              HasSubstr("unexpected argument \"false\""));
}

TEST(OperatorFlagsTest, EmptyValuesMeanNone) {
  Result<OperatorFlags> r = Parse({"--agent-image=a", "--namespace=", "--webhook-listen", ""});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->config.ns, "");
  EXPECT_EQ(r->config.webhook_listen, "");
}

TEST(OperatorFlagsTest, BadFlagsGetClearErrors) {
  EXPECT_EQ(ParseError({}), "--agent-image is required");
  EXPECT_EQ(ParseError({"--agent-image="}), "--agent-image is required");
  EXPECT_EQ(ParseError({"--agent-image=a", "--wokers=3"}), "unknown flag --wokers");
  EXPECT_EQ(ParseError({"--agent-image=a", "--workers"}), "--workers: needs a value");
  EXPECT_EQ(ParseError({"--agent-image=a", "--workers=0"}), "--workers: an integer >= 1");
  EXPECT_EQ(ParseError({"--agent-image=a", "--workers", "two"}), "--workers: an integer >= 1");
  EXPECT_EQ(ParseError({"--agent-image=a", "--leader-election-lease-seconds=2"}),
            "--leader-election-lease-seconds: an integer >= 3");
  EXPECT_EQ(ParseError({"--agent-image=a", "--metrics-scrape-interval=-1"}),
            "--metrics-scrape-interval: an integer >= 0 (seconds)");
  EXPECT_EQ(ParseError({"--agent-image=a", "--log-level=chatty"}),
            "--log-level: debug, info, warn or error");
  EXPECT_EQ(ParseError({"--agent-image=a", "--host-path-root=relative"}),
            "--host-path-root: an absolute directory");
  EXPECT_EQ(ParseError({"--agent-image=a", "--version=2"}), "--version: takes no value");
  EXPECT_EQ(ParseError({"--agent-image=a", "run"}), "unexpected argument \"run\"");
}

TEST(OperatorFlagsTest, HelpAndVersionWin) {
  EXPECT_EQ(Parse({"--workers=0", "-h"})->action, OperatorFlags::Action::kHelp);
  EXPECT_EQ(Parse({"--version", "--help"})->action, OperatorFlags::Action::kHelp);
  EXPECT_EQ(Parse({"--version"})->action, OperatorFlags::Action::kVersion);
  EXPECT_THAT(OperatorUsage(), HasSubstr("--webhook-secret NAME"));
  EXPECT_THAT(OperatorVersion(), HasSubstr("buildcache-operator "));
}

}  // namespace
}  // namespace buildcache::op
