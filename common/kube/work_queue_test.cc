#include "common/kube/work_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace buildcache::kube {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<RateLimiter> NoDelay() {
  return std::make_unique<ItemExponentialRateLimiter>(Duration::zero(), Duration::zero());
}

TEST(ItemExponentialRateLimiterTest, DoublesPerKeyUntilForgotten) {
  ItemExponentialRateLimiter limiter(5ms, 1s);
  SteadyTime now{};
  EXPECT_EQ(limiter.When("a", now), 5ms);
  EXPECT_EQ(limiter.When("a", now), 10ms);
  EXPECT_EQ(limiter.When("a", now), 20ms);
  EXPECT_EQ(limiter.When("b", now), 5ms);
  EXPECT_EQ(limiter.NumRequeues("a"), 3);
  for (int i = 0; i < 10; ++i) limiter.When("a", now);
  EXPECT_EQ(limiter.When("a", now), 1s);
  for (int i = 0; i < 100; ++i) limiter.When("a", now);  // no overflow
  EXPECT_EQ(limiter.When("a", now), 1s);
  limiter.Forget("a");
  EXPECT_EQ(limiter.NumRequeues("a"), 0);
  EXPECT_EQ(limiter.When("a", now), 5ms);
}

TEST(BucketRateLimiterTest, BurstThenSteadyRate) {
  BucketRateLimiter limiter(10.0, 3);
  SteadyTime t0{};
  EXPECT_EQ(limiter.When("a", t0), Duration::zero());
  EXPECT_EQ(limiter.When("b", t0), Duration::zero());
  EXPECT_EQ(limiter.When("c", t0), Duration::zero());
  // The bucket is empty: each further request reserves the next token, 100ms apart.
  EXPECT_EQ(limiter.When("d", t0), 100ms);
  EXPECT_EQ(limiter.When("e", t0), 200ms);
  // A second later the debt is paid and 8 tokens accrued, capped at the burst of 3.
  SteadyTime t1 = t0 + 1s;
  EXPECT_EQ(limiter.When("f", t1), Duration::zero());
  EXPECT_EQ(limiter.When("g", t1), Duration::zero());
  EXPECT_EQ(limiter.When("h", t1), Duration::zero());
  EXPECT_EQ(limiter.When("i", t1), 100ms);
}

TEST(MaxOfRateLimiterTest, TakesTheLongestDelay) {
  auto limiter = DefaultControllerRateLimiter();
  SteadyTime now{};
  // Per item 5ms, 10ms, ...; the bucket (burst 100) does not bite yet.
  EXPECT_EQ(limiter->When("a", now), 5ms);
  EXPECT_EQ(limiter->When("a", now), 10ms);
  // 98 more distinct keys at the same instant empty the bucket; then the overall limit wins.
  for (int i = 0; i < 98; ++i) limiter->When("k" + std::to_string(i), now);
  EXPECT_EQ(limiter->When("fresh", now), 100ms);
  EXPECT_EQ(limiter->NumRequeues("a"), 2);
  limiter->Forget("a");
  EXPECT_EQ(limiter->NumRequeues("a"), 0);
}

TEST(WorkQueueTest, AddingAQueuedKeyAgainDoesNotDuplicateIt) {
  WorkQueue q(NoDelay());
  q.Add("a");
  q.Add("b");
  q.Add("a");
  EXPECT_EQ(q.Len(), 2u);
  EXPECT_EQ(q.Get(), "a");
  EXPECT_EQ(q.Get(), "b");
  EXPECT_EQ(q.GetFor(10ms), std::nullopt);
}

TEST(WorkQueueTest, KeyAddedWhileProcessingIsRequeuedOnDoneNotHandedOutTwice) {
  WorkQueue q(NoDelay());
  q.Add("a");
  auto key = q.Get();
  ASSERT_EQ(key, "a");
  q.Add("a");  // changed again while a worker has it
  q.Add("a");
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_EQ(q.GetFor(20ms), std::nullopt);  // a second worker must not get it now
  q.Done("a");
  EXPECT_EQ(q.Len(), 1u);
  EXPECT_EQ(q.Get(), "a");
  q.Done("a");
  EXPECT_EQ(q.GetFor(10ms), std::nullopt);
}

TEST(WorkQueueTest, AddAfterDelaysAndKeepsTheEarliestTime) {
  WorkQueue q(NoDelay());
  auto start = std::chrono::steady_clock::now();
  q.AddAfter("a", 300ms);
  q.AddAfter("a", 50ms);   // earlier wins
  q.AddAfter("a", 500ms);  // later is ignored
  auto key = q.GetFor(2s);
  auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(key, "a");
  EXPECT_GE(waited, 50ms);
  EXPECT_LT(waited, 280ms);
  q.Done("a");
  EXPECT_EQ(q.GetFor(600ms), std::nullopt);  // the other delays were folded into the first
}

TEST(WorkQueueTest, RateLimitedRequeuesBackOffUntilForgotten) {
  WorkQueue q(std::make_unique<ItemExponentialRateLimiter>(40ms, 10s));
  auto timed_get = [&] {
    auto start = std::chrono::steady_clock::now();
    auto key = q.GetFor(5s);
    EXPECT_EQ(key, "a");
    q.Done("a");
    return std::chrono::steady_clock::now() - start;
  };
  q.AddRateLimited("a");
  EXPECT_GE(timed_get(), 40ms);
  q.AddRateLimited("a");
  EXPECT_GE(timed_get(), 80ms);
  q.AddRateLimited("a");
  EXPECT_GE(timed_get(), 160ms);
  EXPECT_EQ(q.NumRequeues("a"), 3);
  q.Forget("a");
  EXPECT_EQ(q.NumRequeues("a"), 0);
  q.AddRateLimited("a");
  EXPECT_LT(timed_get(), 150ms);
}

TEST(WorkQueueTest, ShutDownWakesBlockedWorkers) {
  WorkQueue q(NoDelay());
  std::atomic<int> woke{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 3; ++i) {
    workers.emplace_back([&] {
      if (!q.Get()) ++woke;
    });
  }
  std::this_thread::sleep_for(50ms);
  q.ShutDown();
  for (auto& w : workers) w.join();
  EXPECT_EQ(woke, 3);
  q.Add("late");
  EXPECT_EQ(q.Len(), 0u);
  EXPECT_TRUE(q.shutting_down());
}

TEST(WorkQueueTest, ConcurrentWorkersNeverShareAKey) {
  WorkQueue q(NoDelay());
  std::mutex mu;
  std::set<std::string> in_flight;
  std::atomic<bool> overlap{false};
  std::atomic<int> processed{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      while (auto key = q.Get()) {
        {
          std::lock_guard lock(mu);
          if (!in_flight.insert(*key).second) overlap = true;
        }
        std::this_thread::sleep_for(1ms);
        {
          std::lock_guard lock(mu);
          in_flight.erase(*key);
        }
        ++processed;
        q.Done(*key);
      }
    });
  }
  for (int i = 0; i < 400; ++i) q.Add("k" + std::to_string(i % 5));
  std::this_thread::sleep_for(200ms);
  q.ShutDown();
  for (auto& w : workers) w.join();
  EXPECT_FALSE(overlap);
  EXPECT_GE(processed, 5);
}

}  // namespace
}  // namespace buildcache::kube
