#include "common/kube/event_recorder.h"

#include <gtest/gtest.h>

#include "common/kube/testing/unused_kube_client.h"

namespace buildcache::kube {
namespace {

using namespace std::chrono_literals;

// Counts Events created; MergePatch (series updates) is never reached: every note differs.
class CountingClient : public testing::UnusedKubeClient {
 public:
  Result<Json> Create(const Resource&, const Json& object) override {
    ++created;
    return object;
  }
  int created = 0;
};

Json BuildCache(const std::string& name) {
  return {{"apiVersion", "buildcache.io/v1alpha1"},
          {"kind", "BuildCache"},
          {"metadata", {{"name", name}, {"namespace", "ci"}, {"uid", "u-" + name}}}};
}

TEST(EventRecorder, WritesPerObjectAndReasonAreRateLimited) {
  CountingClient client;
  auto now = std::chrono::steady_clock::time_point{} + 1h;
  EventRecorder recorder(&client, {.instance = "t", .clock = [&] { return now; }});
  // What forged admission reviews cause: one Warning per review, each with its own text.
  int refused = 0;
  for (int i = 0; i < 200; ++i) {
    Status s = recorder.Record(BuildCache("ci"), EventType::kWarning, "NamespaceNotAllowed",
                               "Admit", "pod team-b/forged-" + std::to_string(i));
    if (s.code() == StatusCode::kResourceExhausted) ++refused;
  }
  EXPECT_EQ(client.created, 25);
  EXPECT_EQ(refused, 175);
  // Other reasons and other objects have buckets of their own.
  EXPECT_TRUE(
      recorder.Record(BuildCache("ci"), EventType::kNormal, "AllAgentsReady", "Reconcile", "ready")
          .ok());
  EXPECT_TRUE(
      recorder.Record(BuildCache("other"), EventType::kWarning, "NamespaceNotAllowed", "Admit", "x")
          .ok());
  EXPECT_EQ(client.created, 27);
  // One token per refill interval.
  now += 5min;
  EXPECT_TRUE(
      recorder.Record(BuildCache("ci"), EventType::kWarning, "NamespaceNotAllowed", "Admit", "a")
          .ok());
  EXPECT_FALSE(
      recorder.Record(BuildCache("ci"), EventType::kWarning, "NamespaceNotAllowed", "Admit", "b")
          .ok());
  EXPECT_EQ(client.created, 28);
}

}  // namespace
}  // namespace buildcache::kube
