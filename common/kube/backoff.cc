#include "common/kube/backoff.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

namespace buildcache::kube {

Backoff::Backoff(BackoffOptions options, uint64_t seed)
    : options_(options), rng_(seed), current_ns_(static_cast<double>(options.initial.count())) {
  options_.factor = std::max(1.0, options_.factor);
  options_.jitter = std::max(0.0, options_.jitter);
}

Duration Backoff::Next() {
  double base = std::min(current_ns_, static_cast<double>(options_.max.count()));
  double stretched = base;
  if (options_.jitter > 0) {
    std::uniform_real_distribution<double> extra(0.0, options_.jitter);
    stretched = base * (1.0 + extra(rng_));
  }
  stretched = std::min(stretched, static_cast<double>(options_.max.count()));
  current_ns_ = std::min(current_ns_ * options_.factor, static_cast<double>(options_.max.count()));
  ++attempts_;
  return Duration(static_cast<int64_t>(stretched));
}

void Backoff::Reset() {
  current_ns_ = static_cast<double>(options_.initial.count());
  attempts_ = 0;
}

bool SleepFor(Duration d, std::stop_token stop) {
  // The mutex guards nothing: it is what a condition variable waits with.
  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock lock(mu);
  cv.wait_for(lock, stop, d, [] { return false; });
  return !stop.stop_requested();
}

}  // namespace buildcache::kube
