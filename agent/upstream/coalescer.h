#pragma once

// At most one in-flight operation per key: the first caller for a key leads (does the work and
// publishes a result); callers arriving meanwhile wait for that result instead of repeating the
// work, holding nothing while they wait. A leader that reports progress (bytes arriving) is waited
// for as long as it makes progress. Used by the upstream layer's caches, and by front ends that
// coalesce work of their own around them (goproxy's fetch-and-verify of a .mod or .zip).

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
    // Waits for the leader's result; nullopt once the leader went `patience` without progress:
    // since the later of the flight's start and its last Leadership::Progress. A leader that
    // never reports progress is waited for `patience` from its start.
    std::optional<T> Wait(std::chrono::milliseconds patience) {
      MutexLock lock(mu_);
      while (!result_.has_value()) {
        if (!cv_.WaitUntil(mu_, progressed_ + patience) && !result_.has_value() &&
            progressed_ + patience <= std::chrono::steady_clock::now()) {
          return std::nullopt;
        }
      }
      return result_;
    }

   private:
    friend class Coalescer;
    Mutex mu_;
    CondVar cv_;
    std::optional<T> result_ GUARDED_BY(mu_);
    std::chrono::steady_clock::time_point progressed_ GUARDED_BY(mu_) =
        std::chrono::steady_clock::now();
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

    // The work moved forward (bytes arrived): the waiters' patience starts over. Cheap enough
    // for every piece of a body (no notification: a waiter finds it when its deadline passes).
    void Progress() {
      if (owner_ == nullptr) return;
      MutexLock lock(flight_->mu_);
      flight_->progressed_ = std::chrono::steady_clock::now();
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
