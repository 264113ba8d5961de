#include "common/kube/work_queue.h"

#include <algorithm>
#include <cmath>

namespace buildcache::kube {

Duration ItemExponentialRateLimiter::When(const std::string& key, SteadyTime) {
  int exp = failures_[key]++;
  // 2^exp overflows quickly; past 62 doublings every sane max has long been reached.
  if (exp >= 62) return max_;
  double delay = static_cast<double>(base_.count()) * std::ldexp(1.0, exp);
  if (delay >= static_cast<double>(max_.count())) return max_;
  return Duration(static_cast<int64_t>(delay));
}

void ItemExponentialRateLimiter::Forget(const std::string& key) { failures_.erase(key); }

int ItemExponentialRateLimiter::NumRequeues(const std::string& key) const {
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

Duration BucketRateLimiter::When(const std::string&, SteadyTime now) {
  if (last_) {
    double elapsed = std::chrono::duration<double>(now - *last_).count();
    if (elapsed > 0) tokens_ = std::min(static_cast<double>(burst_), tokens_ + elapsed * qps_);
  }
  if (!last_ || now > *last_) last_ = now;
  tokens_ -= 1.0;  // take a token now, or reserve the next one (the bucket goes negative)
  if (tokens_ >= 0) return Duration::zero();
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(-tokens_ / qps_));
}

Duration MaxOfRateLimiter::When(const std::string& key, SteadyTime now) {
  Duration longest = Duration::zero();
  for (auto& limiter : limiters_) longest = std::max(longest, limiter->When(key, now));
  return longest;
}

void MaxOfRateLimiter::Forget(const std::string& key) {
  for (auto& limiter : limiters_) limiter->Forget(key);
}

int MaxOfRateLimiter::NumRequeues(const std::string& key) const {
  int most = 0;
  for (const auto& limiter : limiters_) most = std::max(most, limiter->NumRequeues(key));
  return most;
}

std::unique_ptr<RateLimiter> DefaultControllerRateLimiter() {
  std::vector<std::unique_ptr<RateLimiter>> limiters;
  limiters.push_back(std::make_unique<ItemExponentialRateLimiter>(std::chrono::milliseconds(5),
                                                                  std::chrono::seconds(1000)));
  limiters.push_back(std::make_unique<BucketRateLimiter>(10.0, 100));
  return std::make_unique<MaxOfRateLimiter>(std::move(limiters));
}

WorkQueue::WorkQueue(std::unique_ptr<RateLimiter> limiter) : limiter_(std::move(limiter)) {
  delay_thread_ = std::thread([this] { DelayLoop(); });
}

WorkQueue::~WorkQueue() {
  ShutDown();
  delay_thread_.join();
}

void WorkQueue::AddLocked(const std::string& key) {
  if (shutting_down_ || dirty_.count(key)) return;
  dirty_.insert(key);
  if (processing_.count(key)) return;  // Done() queues it again
  queue_.push_back(key);
  ready_cv_.NotifyOne();
}

void WorkQueue::Add(const std::string& key) {
  MutexLock lock(mu_);
  AddLocked(key);
}

void WorkQueue::AddAfter(const std::string& key, Duration delay) {
  MutexLock lock(mu_);
  if (shutting_down_) return;
  if (delay <= Duration::zero()) {
    AddLocked(key);
    return;
  }
  SteadyTime at = std::chrono::steady_clock::now() + delay;
  auto it = waiting_at_.find(key);
  if (it != waiting_at_.end()) {
    if (it->second <= at) return;  // already due earlier
    waiting_.erase({it->second, key});
  }
  waiting_at_[key] = at;
  waiting_.insert({at, key});
  delay_cv_.NotifyOne();
}

void WorkQueue::AddRateLimited(const std::string& key) {
  Duration delay;
  {
    MutexLock lock(mu_);
    if (shutting_down_) return;
    delay = limiter_->When(key, std::chrono::steady_clock::now());
  }
  AddAfter(key, delay);
}

void WorkQueue::Forget(const std::string& key) {
  MutexLock lock(mu_);
  limiter_->Forget(key);
}

int WorkQueue::NumRequeues(const std::string& key) {
  MutexLock lock(mu_);
  return limiter_->NumRequeues(key);
}

std::string WorkQueue::PopLocked() {
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  processing_.insert(key);
  dirty_.erase(key);
  return key;
}

std::optional<std::string> WorkQueue::Get() {
  MutexLock lock(mu_);
  while (queue_.empty() && !shutting_down_) ready_cv_.Wait(mu_);
  if (shutting_down_) return std::nullopt;
  return PopLocked();
}

std::optional<std::string> WorkQueue::GetFor(Duration timeout) {
  const SteadyTime deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(mu_);
  while (queue_.empty() && !shutting_down_) {
    if (!ready_cv_.WaitUntil(mu_, deadline) && queue_.empty() && !shutting_down_) {
      return std::nullopt;
    }
  }
  if (shutting_down_) return std::nullopt;
  return PopLocked();
}

void WorkQueue::Done(const std::string& key) {
  MutexLock lock(mu_);
  processing_.erase(key);
  if (dirty_.count(key) && !shutting_down_) {
    queue_.push_back(key);
    ready_cv_.NotifyOne();
  }
}

void WorkQueue::ShutDown() {
  MutexLock lock(mu_);
  shutting_down_ = true;
  waiting_.clear();
  waiting_at_.clear();
  ready_cv_.NotifyAll();
  delay_cv_.NotifyAll();
}

bool WorkQueue::shutting_down() const {
  MutexLock lock(mu_);
  return shutting_down_;
}

size_t WorkQueue::Len() const {
  MutexLock lock(mu_);
  return queue_.size();
}

void WorkQueue::DelayLoop() {
  MutexLock lock(mu_);
  while (!shutting_down_) {
    if (waiting_.empty()) {
      delay_cv_.Wait(mu_);
      continue;
    }
    SteadyTime next = waiting_.begin()->first;
    if (std::chrono::steady_clock::now() < next) {
      delay_cv_.WaitUntil(mu_, next);
      continue;
    }
    std::string key = waiting_.begin()->second;
    waiting_.erase(waiting_.begin());
    waiting_at_.erase(key);
    AddLocked(key);
  }
}

}  // namespace buildcache::kube
