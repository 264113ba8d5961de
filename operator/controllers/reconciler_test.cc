#include "operator/controllers/reconciler.h"

#include <gtest/gtest.h>

namespace buildcache::controllers {
namespace {

Json DaemonSet(int64_t generation, int64_t observed, int desired, int ready, int updated) {
  return {{"metadata", {{"generation", generation}}},
          {"status",
           {{"observedGeneration", observed},
            {"desiredNumberScheduled", desired},
            {"numberReady", ready},
            {"updatedNumberScheduled", updated}}}};
}

const api::Condition* Find(const api::BuildCacheStatus& status, const std::string& type) {
  for (const api::Condition& c : status.conditions) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

TEST(ComputeStatus, AllAgentsReadyIsReady) {
  api::BuildCacheStatus s = ComputeStatus(4, DaemonSet(2, 2, 3, 3, 3), {}, "T1");
  EXPECT_EQ(s.observed_generation, 4);
  EXPECT_EQ(s.desired_nodes, 3);
  EXPECT_EQ(s.ready_nodes, 3);
  EXPECT_EQ(Find(s, "Ready")->status, "True");
  EXPECT_EQ(Find(s, "Ready")->reason, "AllAgentsReady");
  EXPECT_EQ(Find(s, "Progressing")->status, "False");
  EXPECT_EQ(Find(s, "Degraded")->status, "False");
}

TEST(ComputeStatus, NoMatchingNodesIsNotReady) {
  api::BuildCacheStatus s = ComputeStatus(1, DaemonSet(1, 1, 0, 0, 0), {}, "T1");
  EXPECT_EQ(Find(s, "Ready")->status, "False");
  EXPECT_EQ(Find(s, "Ready")->reason, "NoNodes");
}

TEST(ComputeStatus, UnobservedTemplateIsProgressing) {
  api::BuildCacheStatus s = ComputeStatus(1, DaemonSet(3, 2, 2, 2, 2), {}, "T1");
  EXPECT_EQ(Find(s, "Ready")->reason, "AgentsNotReady");
  EXPECT_EQ(Find(s, "Progressing")->status, "True");
  EXPECT_EQ(Find(s, "Progressing")->reason, "RollingOut");
}

TEST(ComputeStatus, PartialRolloutIsProgressingAndNotReady) {
  api::BuildCacheStatus s = ComputeStatus(1, DaemonSet(2, 2, 4, 4, 1), {}, "T1");
  EXPECT_EQ(Find(s, "Ready")->status, "False");
  EXPECT_EQ(Find(s, "Progressing")->status, "True");
}

TEST(ComputeStatus, UnchangedConditionKeepsItsTransitionTime) {
  api::BuildCacheStatus first = ComputeStatus(1, DaemonSet(1, 1, 1, 0, 1), {}, "T1");
  api::BuildCacheStatus second = ComputeStatus(1, DaemonSet(1, 1, 1, 1, 1), first.conditions, "T2");
  EXPECT_EQ(Find(second, "Ready")->last_transition_time, "T2");        // False -> True
  EXPECT_EQ(Find(second, "Degraded")->last_transition_time, "T1");     // still False
  EXPECT_EQ(Find(second, "Progressing")->last_transition_time, "T1");  // still False
}

}  // namespace
}  // namespace buildcache::controllers
