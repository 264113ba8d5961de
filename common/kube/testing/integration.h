#pragma once

// For tests against a real API server (kube_integration_test, operator_integration_test).

#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <thread>

namespace buildcache::kube::testing {

// Polls until pred is true or timeout; returns pred's last value.
inline bool Eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

// Six random characters [a-z0-9], for names that must not collide between runs.
inline std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (int i = 0; i < 6; ++i) s += kChars[rng() % 36];
  return s;
}

}  // namespace buildcache::kube::testing
