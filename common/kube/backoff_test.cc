#include "common/kube/backoff.h"

#include <gtest/gtest.h>

namespace buildcache::kube {
namespace {

using std::chrono::milliseconds;

TEST(BackoffTest, DoublesUpToTheCapWithoutJitter) {
  Backoff b({.initial = milliseconds(100), .max = milliseconds(1000), .factor = 2.0, .jitter = 0});
  EXPECT_EQ(b.Next(), milliseconds(100));
  EXPECT_EQ(b.Next(), milliseconds(200));
  EXPECT_EQ(b.Next(), milliseconds(400));
  EXPECT_EQ(b.Next(), milliseconds(800));
  EXPECT_EQ(b.Next(), milliseconds(1000));
  EXPECT_EQ(b.Next(), milliseconds(1000));
  EXPECT_EQ(b.attempts(), 6);
}

TEST(BackoffTest, ResetStartsOver) {
  Backoff b({.initial = milliseconds(10), .max = milliseconds(1000), .factor = 3.0, .jitter = 0});
  b.Next();
  b.Next();
  b.Reset();
  EXPECT_EQ(b.Next(), milliseconds(10));
  EXPECT_EQ(b.attempts(), 1);
}

TEST(BackoffTest, JitterStretchesWithinBoundsAndNeverPastTheCap) {
  Backoff b({.initial = milliseconds(100), .max = milliseconds(350), .factor = 2.0, .jitter = 0.5},
            /*seed=*/42);
  bool stretched = false;
  Duration base = milliseconds(100);
  for (int i = 0; i < 6; ++i) {
    Duration d = b.Next();
    Duration capped_base = std::min<Duration>(base, milliseconds(350));
    EXPECT_GE(d, capped_base);
    EXPECT_LE(d, std::min<Duration>(capped_base * 3 / 2, milliseconds(350)));
    if (d != capped_base) stretched = true;
    base *= 2;
  }
  EXPECT_TRUE(stretched);
}

TEST(BackoffTest, DifferentSeedsSpreadRetries) {
  Backoff a({.jitter = 1.0}, 1), b({.jitter = 1.0}, 2);
  EXPECT_NE(a.Next(), b.Next());
}

}  // namespace
}  // namespace buildcache::kube
