#pragma once

// A request on its own thread, with the time its answer was complete: for tests of requests that
// wait on each other (a HEAD joining a streamed miss, a second GET of a slow artifact).
// Header-only; for tests only.

#include <chrono>
#include <functional>
#include <thread>
#include <utility>

#include "common/http/client.h"
#include "common/status/status.h"

namespace buildcache::upstream::testing {

class TimedRequest {
 public:
  // Runs send() on a new thread at once.
  explicit TimedRequest(std::function<Result<http::ClientResponse>()> send)
      : thread_([this, send = std::move(send)] {
          result_ = send();
          done_ = std::chrono::steady_clock::now();
        }) {}
  TimedRequest(const TimedRequest&) = delete;
  TimedRequest& operator=(const TimedRequest&) = delete;
  ~TimedRequest() {
    if (thread_.joinable()) thread_.join();
  }
  // Waits for the answer; how long after `since` it was complete.
  std::chrono::milliseconds Join(std::chrono::steady_clock::time_point since) {
    thread_.join();
    return std::chrono::duration_cast<std::chrono::milliseconds>(done_ - since);
  }
  // The answer; read it after Join.
  const Result<http::ClientResponse>& result() const { return result_; }

 private:
  Result<http::ClientResponse> result_ = Internal("not answered");
  std::chrono::steady_clock::time_point done_;
  std::thread thread_;  // last: it starts once the members it writes exist
};

}  // namespace buildcache::upstream::testing
