// The Operator in-process against a real kube-apiserver and etcd with the BuildCache CRD
// installed. Run by tests/integration/test_operator_kube.py, which starts the control plane and
// sets KUBECONFIG (admin).

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

#include "common/http/client.h"
#include "common/kube/config.h"
#include "common/kube/rest_kube_client.h"
#include "common/kube/testing/integration.h"
#include "operator/app/operator.h"
#include "operator/controllers/reconciler.h"

namespace buildcache::op {
namespace {

using namespace std::chrono_literals;

constexpr char kAgentImage[] = "buildcache-agent:in-process";

using kube::testing::RandomSuffix;

bool Eventually(const std::function<bool()>& pred) {
  return kube::testing::Eventually(pred, std::chrono::seconds(30));
}

kube::Json BuildCache(const std::string& ns, const std::string& name) {
  return {{"apiVersion", "buildcache.io/v1alpha1"},
          {"kind", "BuildCache"},
          {"metadata", {{"name", name}, {"namespace", ns}}},
          {"spec",
           {{"storage", {{"maxSize", "1Gi"}, {"reclaimPolicy", "Delete"}}},
            {"ecosystems", {{"httpcache", kube::Json::object()}}}}}};
}

class OperatorIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* kubeconfig = std::getenv("KUBECONFIG");
    ASSERT_NE(kubeconfig, nullptr) << "KUBECONFIG is not set: run through "
                                      "tests/integration/test_operator_kube.py";
    kubeconfig_ = kubeconfig;
    auto config = kube::LoadKubeConfigFile(kubeconfig_);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    auto client = kube::RestKubeClient::Create(*config);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(client).value();
    ns_ = "operator-app-" + RandomSuffix();
    auto created = client_->Create(
        kube::resources::kNamespaces,
        {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", ns_}}}});
    ASSERT_TRUE(created.ok()) << created.status().ToString();
  }

  OperatorConfig Config() const {
    OperatorConfig config;
    config.kubeconfig = kubeconfig_;
    config.agent_image = kAgentImage;
    config.ns = ns_;
    config.metrics_addr = "127.0.0.1:0";
    config.scrape_seconds = 0;
    return config;
  }

  // The agent image of DaemonSet buildcache-NAME, or "" while there is none.
  std::string AgentImage(const std::string& name) {
    auto ds = client_->Get(kube::resources::kDaemonSets, ns_, "buildcache-" + name);
    if (!ds.ok()) return "";
    return (*ds)["spec"]["template"]["spec"]["containers"][0].value("image", "");
  }

  int Get(const std::string& address, const std::string& path) {
    auto resp = http::Fetch("GET", "http://" + address + path, {}, {}, {.timeout = 5s});
    return resp.ok() ? resp->status : 0;
  }

  std::string kubeconfig_;
  std::unique_ptr<kube::RestKubeClient> client_;
  std::string ns_;
};

TEST_F(OperatorIntegrationTest, ReconcilesStopsAndStartsAgain) {
  // First run: a BuildCache becomes a DaemonSet.
  auto first = Operator::Start(Config());
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const std::string first_address = (*first)->metrics_address();
  EXPECT_TRUE(Eventually([&] { return Get(first_address, "/readyz") == 200; }));
  EXPECT_EQ(Get(first_address, "/healthz"), 200);
  ASSERT_TRUE(client_->Create(controllers::kBuildCaches, BuildCache(ns_, "one")).ok());
  EXPECT_TRUE(Eventually([&] { return AgentImage("one") == kAgentImage; }));
  (*first)->Stop();
  (*first)->Stop();  // idempotent
  EXPECT_EQ((*first)->exit_code(), 0);
  EXPECT_EQ(Get(first_address, "/healthz"), 0) << "still serving after Stop";

  // While nothing runs, the DaemonSet goes and a second BuildCache arrives: nothing reconciles.
  ASSERT_TRUE(client_->Delete(kube::resources::kDaemonSets, ns_, "buildcache-one").ok());
  ASSERT_TRUE(client_->Create(controllers::kBuildCaches, BuildCache(ns_, "two")).ok());
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(AgentImage("two"), "");
  first->reset();

  // A second Operator in the same process picks both up.
  auto second = Operator::Start(Config());
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_TRUE(Eventually([&] { return AgentImage("one") == kAgentImage; }));
  EXPECT_TRUE(Eventually([&] { return AgentImage("two") == kAgentImage; }));
  EXPECT_TRUE(Eventually([&] { return Get((*second)->metrics_address(), "/readyz") == 200; }));
  (*second)->Stop();
  EXPECT_EQ(Get((*second)->metrics_address(), "/metrics"), 0);
}

TEST_F(OperatorIntegrationTest, LeaderTakesTheLeaseAndGivesItUpOnStop) {
  OperatorConfig config = Config();
  config.leader_elect = true;
  config.lease_namespace = ns_;
  config.lease_name = "in-process";
  config.lease_seconds = 15;
  auto running = Operator::Start(config);
  ASSERT_TRUE(running.ok()) << running.status().ToString();
  auto holder = [&] {
    auto lease = client_->Get(kube::resources::kLeases, ns_, "in-process");
    if (!lease.ok()) return std::string("<none>");
    const kube::Json& h = (*lease)["spec"]["holderIdentity"];
    return h.is_string() ? h.get<std::string>() : std::string();
  };
  EXPECT_TRUE(Eventually([&] { return !holder().empty() && holder() != "<none>"; }));
  ASSERT_TRUE(client_->Create(controllers::kBuildCaches, BuildCache(ns_, "led")).ok());
  EXPECT_TRUE(Eventually([&] { return AgentImage("led") == kAgentImage; }));
  (*running)->Stop();
  EXPECT_EQ(holder(), "") << "the lease is released at once on Stop";
  EXPECT_EQ((*running)->exit_code(), 0);
}

TEST_F(OperatorIntegrationTest, RefusedLeaderElectionSettingsAreInvalidArgument) {
  OperatorConfig config = Config();
  config.leader_elect = true;
  config.lease_name = "";
  auto running = Operator::Start(config);
  ASSERT_FALSE(running.ok());
  EXPECT_EQ(running.status().code(), StatusCode::kInvalidArgument) << running.status().ToString();
}

TEST_F(OperatorIntegrationTest, UnreadableKubeconfigIsNotAUsageError) {
  OperatorConfig config = Config();
  config.kubeconfig = "/nonexistent/kubeconfig";
  auto running = Operator::Start(config);
  ASSERT_FALSE(running.ok());
  EXPECT_NE(running.status().code(), StatusCode::kInvalidArgument) << running.status().ToString();
}

}  // namespace
}  // namespace buildcache::op
