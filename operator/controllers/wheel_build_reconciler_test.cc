#include "operator/controllers/wheel_build_reconciler.h"

#include <gtest/gtest.h>

#include <string>

#include "common/kube/kube_time.h"
#include "common/kube/testing/memory_kube_client.h"

namespace buildcache::controllers {
namespace {

using kube::testing::MemoryKubeClient;
using namespace std::chrono_literals;

// 2026-12-07T03:00:00Z
const std::chrono::system_clock::time_point kNow = *kube::ParseTime("2026-12-07T03:00:00Z");

class WheelBuildReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client_.objects[MemoryKubeClient::Key(kBuildCaches, "builds", "ci")] = Json::parse(R"({
      "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
      "metadata": {"name": "ci", "namespace": "builds", "uid": "cache-uid"},
      "spec": {"storage": {"maxSize": "10Gi"},
               "ecosystems": {"pypi": {"upstream": "https://pypi.example.internal/simple",
                 "wheelHouse": true, "builders": [{"name": "py311", "image": "example.org/ci/python:3.11",
                               "python": "3.11", "libcVersion": "2.36"}]}}}})");
    client_.objects["pods/builds/buildcache-ci-abcde"] = Json::parse(R"({
      "metadata": {"name": "buildcache-ci-abcde", "namespace": "builds",
                   "labels": {"app.kubernetes.io/name": "buildcache-agent",
                              "app.kubernetes.io/instance": "ci"}},
      "status": {"phase": "Running", "podIP": "10.244.1.7"}})");
  }
  Json& PutBuild(Json changes = Json::object()) {
    Json build = Json::parse(R"({
      "apiVersion": "buildcache.io/v1alpha1", "kind": "WheelBuild",
      "metadata": {"name": "ci-0123456789abcdef", "namespace": "builds", "uid": "wb-uid",
                   "creationTimestamp": "2026-12-07T02:59:00Z"},
      "spec": {"buildCache": "ci", "builder": "py311", "buildId": "0123456789abcdef",
               "sdist": {"project": "bitarray", "version": "2.9.2",
                         "filename": "bitarray-2.9.2.tar.gz",
                         "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
               "agentURL": "http://10.244.1.7:8080",
               "uploadToken": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
               "deadlineSeconds": 900}})");
    build.merge_patch(changes);
    return client_.objects[BuildKey()] = build;
  }
  static std::string BuildKey() {
    return MemoryKubeClient::Key(kWheelBuilds, "builds", "ci-0123456789abcdef");
  }
  static std::string PodKey() { return "pods/builds/ci-0123456789abcdef"; }
  Json Status() { return client_.objects[BuildKey()].value("status", Json::object()); }

  MemoryKubeClient client_;
  std::chrono::system_clock::time_point now_ = kNow;
  WheelBuildReconciler reconciler_{&client_, nullptr, {.now = [this] { return now_; }}};
};

TEST_F(WheelBuildReconcilerTest, CreatesThePodAndMirrorsItToSuccess) {
  PutBuild();
  ReconcileOutcome out = reconciler_.Reconcile("builds/ci-0123456789abcdef");
  EXPECT_EQ(out.result, ReconcileResult::kSuccess) << out.status.ToString();
  ASSERT_TRUE(client_.objects.contains(PodKey()));
  EXPECT_EQ(client_.objects[PodKey()]["spec"]["containers"][0]["image"],
            "example.org/ci/python:3.11");
  EXPECT_EQ(Status()["phase"], "Pending");
  EXPECT_EQ(Status()["podName"], "ci-0123456789abcdef");
  // Looked at again when it would be collected as abandoned: creation + 900 s + 10 min.
  EXPECT_EQ(out.requeue_after, 60s * 24);

  client_.objects[PodKey()]["status"] = {{"phase", "Running"},
                                         {"startTime", "2026-12-07T03:00:01Z"}};
  EXPECT_EQ(reconciler_.Reconcile("builds/ci-0123456789abcdef").result, ReconcileResult::kSuccess);
  EXPECT_EQ(Status()["phase"], "Running");
  client_.objects[PodKey()]["status"]["phase"] = "Succeeded";
  now_ += 2min;
  out = reconciler_.Reconcile("builds/ci-0123456789abcdef");
  EXPECT_EQ(Status()["phase"], "Succeeded");
  EXPECT_EQ(Status()["completionTime"], "2026-12-07T03:02:00Z");
}

TEST_F(WheelBuildReconcilerTest, HostileBuildsFailWithoutAPod) {
  const std::pair<Json, std::string> cases[] = {
      {{{"spec", {{"agentURL", "http://10.0.0.66:8080"}}}},
       "Refused: agentURL http://10.0.0.66:8080 is not http://<pod IP>:8080"},
      {{{"spec", {{"builder", "py399"}}}}, "Refused: BuildCache \"ci\" has no pypi builder"},
      {{{"spec", {{"buildCache", "other"}}}, {"metadata", {{"name", "other-0123456789abcdef"}}}},
       ""},
      {{{"spec", {{"sdist", {{"project", "x\"; import os"}}}}}}, "InvalidSpec: WheelBuild"},
  };
  for (const auto& [changes, message] : cases) {
    client_.objects.erase(BuildKey());
    const Json build = PutBuild(changes);
    const std::string key = "builds/" + kube::NameOf(build);
    if (kube::NameOf(build) != "ci-0123456789abcdef") {
      client_.objects.erase(BuildKey());
      client_.objects[MemoryKubeClient::Key(kWheelBuilds, "builds", kube::NameOf(build))] = build;
    }
    ReconcileOutcome out = reconciler_.Reconcile(key);
    EXPECT_EQ(out.result, ReconcileResult::kInvalid) << changes;
    Json stored =
        client_.objects[MemoryKubeClient::Key(kWheelBuilds, "builds", kube::NameOf(build))];
    EXPECT_EQ(stored["status"]["phase"], "Failed") << changes;
    const std::string got = stored["status"].value("message", "");
    EXPECT_NE(got.find(message.empty() ? "Refused: BuildCache \"other\" not found in namespace "
                                         "builds"
                                       : message),
              std::string::npos)
        << got;
    EXPECT_FALSE(client_.objects.contains("pods/builds/" + kube::NameOf(build))) << changes;
  }
}

TEST_F(WheelBuildReconcilerTest, APodThatIsNotItsOwnIsNotAdopted) {
  PutBuild();
  client_.objects[PodKey()] = {{"metadata", {{"name", "ci-0123456789abcdef"}}},
                               {"status", {{"phase", "Running"}}}};
  EXPECT_EQ(reconciler_.Reconcile("builds/ci-0123456789abcdef").result, ReconcileResult::kInvalid);
  EXPECT_EQ(Status()["phase"], "Failed");
  EXPECT_NE(Status()["message"].get<std::string>().find("PodConflict"), std::string::npos);
}

TEST_F(WheelBuildReconcilerTest, AnImageThatCannotBePulledFailsAndDeletesThePod) {
  PutBuild();
  reconciler_.Reconcile("builds/ci-0123456789abcdef");
  client_.objects[PodKey()]["status"] = Json::parse(R"({"phase":"Pending","containerStatuses":[
      {"name":"build","state":{"waiting":{"reason":"ErrImagePull","message":"not found"}}}]})");
  reconciler_.Reconcile("builds/ci-0123456789abcdef");
  EXPECT_EQ(Status()["phase"], "Failed");
  EXPECT_EQ(Status()["message"], "builder image: ErrImagePull: not found");
  EXPECT_FALSE(client_.objects.contains(PodKey()));
  // Finished: the deleted pod is not reported again as PodDeleted.
  reconciler_.Reconcile("builds/ci-0123456789abcdef");
  EXPECT_EQ(Status()["message"], "builder image: ErrImagePull: not found");
}

TEST_F(WheelBuildReconcilerTest, GarbageCollectsFinishedAndAbandonedBuilds) {
  PutBuild({{"status", {{"phase", "Succeeded"}, {"completionTime", "2026-12-07T03:00:00Z"}}}});
  ReconcileOutcome out = reconciler_.Reconcile("builds/ci-0123456789abcdef");
  EXPECT_EQ(out.result, ReconcileResult::kSuccess);
  EXPECT_EQ(out.requeue_after, 1h);
  now_ += 1h;
  EXPECT_EQ(reconciler_.Reconcile("builds/ci-0123456789abcdef").result, ReconcileResult::kGone);
  EXPECT_FALSE(client_.objects.contains(BuildKey()));

  // Still "Running" (its agent died): collected deadline + 10 minutes after creation.
  now_ = kNow;
  PutBuild({{"status", {{"phase", "Running"}, {"podName", "ci-0123456789abcdef"}}}});
  client_.objects[PodKey()] = Json::parse(R"({"metadata": {"name": "ci-0123456789abcdef",
      "ownerReferences": [{"kind": "WheelBuild", "uid": "wb-uid", "controller": true}]},
      "status": {"phase": "Running"}})");
  now_ = kNow - 1min + 900s + 10min - 1s;
  reconciler_.Reconcile("builds/ci-0123456789abcdef");
  EXPECT_TRUE(client_.objects.contains(BuildKey()));
  now_ += 1s;
  EXPECT_EQ(reconciler_.Reconcile("builds/ci-0123456789abcdef").result, ReconcileResult::kGone);
  EXPECT_FALSE(client_.objects.contains(BuildKey()));
}

}  // namespace
}  // namespace buildcache::controllers
