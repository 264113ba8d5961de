#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <stop_token>

namespace buildcache::kube {

using Duration = std::chrono::nanoseconds;

struct BackoffOptions {
  Duration initial = std::chrono::milliseconds(800);
  Duration max = std::chrono::seconds(30);
  double factor = 2.0;
  // Each delay is stretched by a random amount up to this fraction of it (0.5: up to +50%), so
  // many clients that failed together do not retry together. The cap applies after jitter.
  double jitter = 0.5;
};

// Exponential backoff for retrying a failing operation (a list, a watch): initial, initial *
// factor, ... up to max, each with jitter. Not thread-safe.
class Backoff {
 public:
  explicit Backoff(BackoffOptions options = {}, uint64_t seed = std::random_device{}());

  // The delay to wait before the next attempt; each call grows the following one.
  Duration Next();
  // Back to the initial delay, after a success.
  void Reset();
  int attempts() const { return attempts_; }

 private:
  BackoffOptions options_;
  std::mt19937_64 rng_;
  double current_ns_;
  int attempts_ = 0;
};

// Waits for d, or until stop is requested. True when the whole time passed (stop not requested).
bool SleepFor(Duration d, std::stop_token stop);

}  // namespace buildcache::kube
