// Group commit: many threads each submit one operation; the first waiting thread applies everything
// queued so far in one go (for LmdbStore: one index transaction and its syncs), the others wait
// for the batch that holds theirs. Operations are applied in submission order.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <utility>
#include <vector>

#include "common/base/thread_annotations.h"

namespace buildcache::store {

template <class Op>
class GroupCommitQueue {
 public:
  // apply(batch) runs on one submitting thread, without the queue's lock, for at most max_batch
  // operations at a time; one batch at a time. It reports results through the operations.
  using ApplyFn = std::function<void(const std::vector<Op*>&)>;

  GroupCommitQueue(size_t max_batch, ApplyFn apply)
      : max_batch_(max_batch), apply_(std::move(apply)) {}
  GroupCommitQueue(const GroupCommitQueue&) = delete;
  GroupCommitQueue& operator=(const GroupCommitQueue&) = delete;

  // Queues op and returns once a batch holding it has been applied (by this or another thread).
  void Submit(Op* op) EXCLUDES(mu_) {
    Entry self{op};
    mu_.Lock();
    queue_.push_back(&self);
    while (!self.done && queue_.front() != &self) {
      cv_.Wait(mu_);
    }
    if (self.done) {
      mu_.Unlock();
      return;
    }
    // This thread leads: the front of the queue is its own entry, and no other batch is running
    // (a batch leaves the queue only once applied).
    std::vector<Op*> batch;
    for (Entry* e : queue_) {
      if (batch.size() == max_batch_) {
        break;
      }
      batch.push_back(e->op);
    }
    mu_.Unlock();
    apply_(batch);
    mu_.Lock();
    for (size_t i = 0; i < batch.size(); ++i) {
      queue_.front()->done = true;
      queue_.pop_front();
    }
    cv_.NotifyAll();
    mu_.Unlock();
  }

 private:
  struct Entry {
    Op* op;
    bool done = false;  // guarded by mu_
  };

  const size_t max_batch_;
  const ApplyFn apply_;
  Mutex mu_;
  CondVar cv_;
  std::deque<Entry*> queue_ GUARDED_BY(mu_);
};

}  // namespace buildcache::store
