#include "common/base/check.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/base/thread_annotations.h"

namespace buildcache {
namespace {

TEST(CheckTest, PassingConditionDoesNothing) {
  int evaluated = 0;
  CHECK(++evaluated == 1) << "never printed";
  EXPECT_EQ(evaluated, 1);
}

TEST(CheckDeathTest, FailingConditionPrintsWhatAndWhereThenAborts) {
  const int size = 3;
  EXPECT_DEATH(CHECK(size == 4) << "size was " << size,
               "check_test.cc:[0-9]+: CHECK\\(size == 4\\) failed: size was 3");
}

TEST(MutexTest, CondVarWaitsUntilNotified) {
  Mutex mu;
  CondVar cv;
  bool ready = false;
  std::thread t([&] {
    MutexLock lock(mu);
    ready = true;
    cv.NotifyAll();
  });
  {
    MutexLock lock(mu);
    for (int i = 0; i < 100 && !ready; ++i) cv.WaitFor(mu, std::chrono::milliseconds(100));
    EXPECT_TRUE(ready);
  }
  t.join();
}

}  // namespace
}  // namespace buildcache
