#pragma once

// Internal to the upstream layer: at most one in-flight operation per key. The first caller for a
// key leads (does the work and publishes a result); callers arriving meanwhile wait for that
// result instead of repeating the work.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::upstream {

// T must be constructible from a Status (the result published when a leader leaves without one).
template <typename T>
class Coalescer {
 public:
  class Flight {
   public:
    // Waits for the leader's result; nullopt after `timeout`.
    std::optional<T> Wait(std::chrono::milliseconds timeout) {
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      MutexLock lock(mu_);
      while (!result_.has_value()) {
        if (!cv_.WaitUntil(mu_, deadline) && !result_.has_value()) return std::nullopt;
      }
      return result_;
    }

   private:
    friend class Coalescer;
    Mutex mu_;
    CondVar cv_;
    std::optional<T> result_ GUARDED_BY(mu_);
  };

  // Held by the leader. Publishing ends the flight: later callers start a new one. A ticket
  // destroyed without Publish publishes an internal error so waiters never hang.
  class Leadership {
   public:
    Leadership(Coalescer* owner, std::string key, std::shared_ptr<Flight> flight)
        : owner_(owner), key_(std::move(key)), flight_(std::move(flight)) {}
    Leadership(Leadership&& other) noexcept
        : owner_(std::exchange(other.owner_, nullptr)),
          key_(std::move(other.key_)),
          flight_(std::move(other.flight_)) {}
    Leadership& operator=(Leadership&&) = delete;
    ~Leadership() {
      if (owner_ != nullptr) Publish(T(Internal("in-flight upstream operation abandoned")));
    }

    void Publish(T result) {
      if (owner_ == nullptr) return;
      {
        MutexLock lock(owner_->mu_);
        auto it = owner_->flights_.find(key_);
        if (it != owner_->flights_.end() && it->second == flight_) owner_->flights_.erase(it);
      }
      {
        MutexLock lock(flight_->mu_);
        flight_->result_ = std::move(result);
      }
      flight_->cv_.NotifyAll();
      owner_ = nullptr;
    }

   private:
    Coalescer* owner_;
    std::string key_;
    std::shared_ptr<Flight> flight_;
  };

  // Either makes the caller the leader for key (a Leadership) or returns the flight to wait on.
  struct Joined {
    std::optional<Leadership> leadership;
    std::shared_ptr<Flight> flight;  // set when the caller is a waiter
  };

  Joined Join(std::string_view key) {
    MutexLock lock(mu_);
    auto it = flights_.find(key);
    if (it != flights_.end()) return Joined{std::nullopt, it->second};
    auto flight = std::make_shared<Flight>();
    flights_.emplace(std::string(key), flight);
    return Joined{Leadership(this, std::string(key), std::move(flight)), nullptr};
  }

 private:
  Mutex mu_;
  std::map<std::string, std::shared_ptr<Flight>, std::less<>> flights_ GUARDED_BY(mu_);
};

}  // namespace buildcache::upstream
