#pragma once

// The agent client's transport: one HTTP/1.1 request and response on a connected socket, and a
// small pool of idle keep-alive connections to reuse. Kept free of any HTTP library so the
// binary stays static and small (see gocacheprog/CMakeLists.txt).

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/thread_annotations.h"
#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::gocacheprog {

using Clock = std::chrono::steady_clock;

// A response with its status code; the body is read whole (objects are bounded by max_body).
struct HttpResult {
  int status = 0;
  std::string body;
};

// A non-blocking TCP connection to addr, established before deadline. Unavailable when refused
// or unreachable, DeadlineExceeded when it takes too long.
Result<fs::UniqueFd> ConnectTo(const sockaddr_storage& addr, socklen_t addr_len,
                               Clock::time_point deadline);

// What one exchange did, besides its result: a caller deciding whether to try again needs to know
// whether any request byte reached the socket, and whether the connection may carry another
// request.
struct Exchange {
  Result<HttpResult> result = Unavailable("no exchange");
  bool sent_any = false;  // at least one byte of the request was handed to the socket
  bool reusable = false;  // the response was complete and framed; the agent keeps the connection
};

// Sends `head` (the request line and headers, ending with the blank line) and `body` on fd, then
// reads one response framed by Content-Length or chunked encoding (or, with neither, by the end of
// the connection, which is then not reusable), every step bounded by deadline. A body larger than
// max_body is a failure. When the agent answers before it took the whole body (an early 413 or
// 400), that answer is returned (not reusable). Transport failures are Unavailable or
// DeadlineExceeded; any HTTP status is a successful HttpResult. `method` "HEAD" reads no body.
Exchange RoundTripOn(int fd, std::string_view method, std::string_view head, std::string_view body,
                     Clock::time_point deadline, uint64_t max_body);

// After `ex` failed on a connection taken from the pool (which the agent may have closed just as
// the request reached it): whether the request may be sent again on a new connection. A GET may
// (it is idempotent), unless it ran out of time; any other method only when none of it was sent.
bool MaySendAgain(std::string_view method, const Exchange& ex);

// Idle keep-alive connections to one agent, at most max_idle of them, each kept at most
// max_idle_time (shorter than the agent's own idle timeout, server.idleTimeout, 60 s by default,
// so the client usually drops an idle connection before the agent closes it). Thread-safe.
class ConnectionPool {
 public:
  ConnectionPool(size_t max_idle, std::chrono::milliseconds max_idle_time);
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // The most recently parked connection that is still usable, or an invalid fd when there is
  // none. Connections idle for longer than max_idle_time, and connections the agent has closed or
  // reset (or that have unexpected bytes waiting), are closed and skipped.
  fs::UniqueFd Take();
  // Keeps fd for a later Take, or closes it when max_idle connections are parked already.
  void Park(fs::UniqueFd fd);
  size_t idle() const;

 private:
  struct Idle {
    fs::UniqueFd fd;
    Clock::time_point since;
  };
  const size_t max_idle_;
  const std::chrono::milliseconds max_idle_time_;
  mutable Mutex mu_;
  std::vector<Idle> idle_ GUARDED_BY(mu_);  // most recently parked last
};

}  // namespace buildcache::gocacheprog
