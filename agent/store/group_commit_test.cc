// GroupCommitQueue alone, with a fake apply: every operation is applied exactly once, in
// submission order, in batches no larger than the cap, and concurrent submitters share batches.

#include "agent/store/group_commit.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace buildcache::store {
namespace {

struct FakeOp {
  int id = 0;
  int applied = 0;  // times apply saw this op
};

TEST(store_GroupCommitTest, SingleSubmitIsAppliedAloneOnTheCallingThread) {
  std::vector<std::vector<int>> batches;
  std::thread::id applier;
  GroupCommitQueue<FakeOp> queue(8, [&](const std::vector<FakeOp*>& batch) {
    applier = std::this_thread::get_id();
    batches.emplace_back();
    for (FakeOp* op : batch) {
      ++op->applied;
      batches.back().push_back(op->id);
    }
  });
  FakeOp op{7};
  queue.Submit(&op);
  EXPECT_EQ(op.applied, 1);
  EXPECT_EQ(applier, std::this_thread::get_id());
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0], std::vector<int>{7});
}

TEST(store_GroupCommitTest, ConcurrentSubmitsShareBatchesAppliedOnceInOrder) {
  constexpr int kThreads = 16;
  constexpr int kPerThread = 200;
  constexpr size_t kMaxBatch = 5;
  std::mutex mu;  // apply runs one batch at a time; this checks that it never overlaps
  std::atomic<int> in_apply{0};
  std::atomic<bool> overlapped{false};
  std::vector<size_t> sizes;
  std::vector<FakeOp*> order;
  GroupCommitQueue<FakeOp> queue(kMaxBatch, [&](const std::vector<FakeOp*>& batch) {
    if (in_apply.fetch_add(1) != 0) overlapped = true;
    // Slow enough that other submitters queue up behind the running batch.
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    {
      std::lock_guard lock(mu);
      sizes.push_back(batch.size());
      for (FakeOp* op : batch) {
        ++op->applied;
        order.push_back(op);
      }
    }
    in_apply.fetch_sub(1);
  });
  std::vector<std::vector<FakeOp>> ops(kThreads, std::vector<FakeOp>(kPerThread));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        ops[t][i].id = t * kPerThread + i;
        queue.Submit(&ops[t][i]);
        // Submit returned: the op has been applied.
        EXPECT_EQ(ops[t][i].applied, 1);
      }
    });
  }
  for (std::thread& t : threads) t.join();

  EXPECT_FALSE(overlapped);
  ASSERT_EQ(order.size(), size_t{kThreads * kPerThread});
  size_t largest = 0;
  for (size_t s : sizes) {
    EXPECT_GE(s, 1u);
    EXPECT_LE(s, kMaxBatch);
    largest = std::max(largest, s);
  }
  EXPECT_GT(largest, 1u) << "no two submitters ever shared a batch";
  EXPECT_LT(sizes.size(), order.size());
  // Each thread's ops were applied in the order that thread submitted them.
  std::vector<int> last(kThreads, -1);
  for (FakeOp* op : order) {
    EXPECT_EQ(op->applied, 1);
    int t = op->id / kPerThread;
    EXPECT_GT(op->id, last[t]);
    last[t] = op->id;
  }
}

}  // namespace
}  // namespace buildcache::store
