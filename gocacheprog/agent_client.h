#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::gocacheprog {

// Where the agent listens: "http://ADDR:PORT" where ADDR is a numeric IPv4 address, a bracketed
// IPv6 address, or "localhost" (127.0.0.1). Host names are refused on purpose: the client is a
// static binary, and glibc's getaddrinfo needs NSS modules a static binary cannot load, so in
// Kubernetes the webhook passes the node's IP (status.hostIP) rather than a name.
struct AgentAddress {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::string host_header;  // ADDR:PORT as written
};
Result<AgentAddress> ParseAgentUrl(std::string_view url);

// A response with its status code; the body is read whole (objects are bounded by max_body).
struct HttpResult {
  int status = 0;
  std::string body;
};

// A minimal HTTP/1.1 client for the agent's build-cache API: one connection per request
// ("Connection: close"), every step bounded by the timeout. Transport failures (refused, reset,
// timed out, malformed response) are Unavailable or DeadlineExceeded; any HTTP status is a
// successful HttpResult. Not thread-safe.
class AgentClient {
 public:
  AgentClient(AgentAddress address, std::chrono::milliseconds timeout, uint64_t max_body);

  Result<HttpResult> Get(std::string_view path);
  Result<HttpResult> Put(std::string_view path, std::string_view body);

 private:
  Result<HttpResult> RoundTrip(std::string_view method, std::string_view path,
                               std::string_view body);

  AgentAddress address_;
  std::chrono::milliseconds timeout_;
  uint64_t max_body_;
};

}  // namespace buildcache::gocacheprog
