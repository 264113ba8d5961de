#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/base/thread_annotations.h"
#include "common/kube/backoff.h"

namespace buildcache::kube {

using SteadyTime = std::chrono::steady_clock::time_point;

// Decides how long a key waits before it is retried. Implementations need not be thread-safe:
// WorkQueue calls them under its lock.
class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  // The delay for `key`, requeued at `now` after a failure.
  virtual Duration When(const std::string& key, SteadyTime now) = 0;
  // The key succeeded: forget its failures.
  virtual void Forget(const std::string& key) = 0;
  virtual int NumRequeues(const std::string& key) const = 0;
};

// Per key: base, 2*base, 4*base, ... up to max, by the number of failures since the last Forget.
class ItemExponentialRateLimiter : public RateLimiter {
 public:
  ItemExponentialRateLimiter(Duration base, Duration max) : base_(base), max_(max) {}

  // RateLimiter
  Duration When(const std::string& key, SteadyTime now) override;
  void Forget(const std::string& key) override;
  int NumRequeues(const std::string& key) const override;

 private:
  Duration base_, max_;
  std::unordered_map<std::string, int> failures_;
};

// A token bucket over all keys: bursts of up to `burst` retries, then `qps` per second; a retry
// that finds the bucket empty reserves the next token and waits for it.
class BucketRateLimiter : public RateLimiter {
 public:
  BucketRateLimiter(double qps, int burst) : qps_(qps), burst_(burst), tokens_(burst) {}

  // RateLimiter
  Duration When(const std::string& key, SteadyTime now) override;
  void Forget(const std::string&) override {}
  int NumRequeues(const std::string&) const override { return 0; }

 private:
  double qps_;
  int burst_;
  double tokens_;
  std::optional<SteadyTime> last_;
};

// The longest delay any of its limiters asks for.
class MaxOfRateLimiter : public RateLimiter {
 public:
  explicit MaxOfRateLimiter(std::vector<std::unique_ptr<RateLimiter>> limiters)
      : limiters_(std::move(limiters)) {}

  // RateLimiter
  Duration When(const std::string& key, SteadyTime now) override;
  void Forget(const std::string& key) override;
  int NumRequeues(const std::string& key) const override;

 private:
  std::vector<std::unique_ptr<RateLimiter>> limiters_;
};

// controller-runtime's default: per key 5ms doubling up to 1000s, and at most 10 retries per
// second (bursts of 100) over all keys.
std::unique_ptr<RateLimiter> DefaultControllerRateLimiter();

// A queue of object keys for controllers, with client-go's guarantees:
//  - a key is queued at most once however often it is added (dirty set) ...
//  - ... and is never handed to two workers at once: a key added while a worker processes it is
//    queued again when the worker calls Done;
//  - AddRateLimited delays a key by the rate limiter (failures back off), AddAfter by a fixed
//    time; a key waiting for its delay is not duplicated (the earliest time wins).
// Thread-safe. Workers loop on Get() ... Done(); Get returns nullopt once ShutDown is called.
class WorkQueue {
 public:
  explicit WorkQueue(std::unique_ptr<RateLimiter> limiter = DefaultControllerRateLimiter());
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void Add(const std::string& key);
  void AddAfter(const std::string& key, Duration delay);
  void AddRateLimited(const std::string& key);
  // The key was processed successfully: reset its backoff. (It does not remove a queued key.)
  void Forget(const std::string& key);
  int NumRequeues(const std::string& key);

  // Blocks until a key is ready (and marks it processing), or returns nullopt after ShutDown.
  std::optional<std::string> Get();
  // As Get, but gives up after timeout (nullopt).
  std::optional<std::string> GetFor(Duration timeout);
  // The worker is finished with key.
  void Done(const std::string& key);

  // Wakes every Get with nullopt and drops delayed keys. Further adds are ignored.
  void ShutDown();
  bool shutting_down() const;
  // Keys ready to be handed out (not those processing or waiting for a delay).
  size_t Len() const;

 private:
  void AddLocked(const std::string& key) REQUIRES(mu_);
  // Hands out the first ready key (the queue is not empty).
  std::string PopLocked() REQUIRES(mu_);
  void DelayLoop();

  mutable Mutex mu_;
  CondVar ready_cv_;
  CondVar delay_cv_;
  std::unique_ptr<RateLimiter> limiter_ PT_GUARDED_BY(mu_);
  std::deque<std::string> queue_ GUARDED_BY(mu_);
  std::unordered_set<std::string> dirty_ GUARDED_BY(mu_);
  std::unordered_set<std::string> processing_ GUARDED_BY(mu_);
  std::set<std::pair<SteadyTime, std::string>> waiting_ GUARDED_BY(mu_);
  std::unordered_map<std::string, SteadyTime> waiting_at_ GUARDED_BY(mu_);
  bool shutting_down_ GUARDED_BY(mu_) = false;
  std::thread delay_thread_;
};

}  // namespace buildcache::kube
