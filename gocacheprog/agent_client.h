#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/status/status.h"
#include "gocacheprog/http_connection.h"

namespace buildcache::gocacheprog {
class TokenFile;
}  // namespace buildcache::gocacheprog

namespace buildcache::gocacheprog {

// Where the agent listens: "http://HOST:PORT" where HOST is a numeric IPv4 address, a bracketed
// IPv6 address, "localhost" (127.0.0.1) or a DNS name (in Kubernetes the agent's node-local
// Service, "buildcache-NAME.NAMESPACE.svc"). A name is resolved when the agent is first asked
// (ResolveAgentHost), never at start, so an unresolvable name is an unreachable agent (the build
// goes on with the local cache), not a failed start. The binary is static: glibc (2.34 and newer)
// has its "files" and "dns" host lookups built in, so /etc/hosts and /etc/resolv.conf work
// without any NSS module in the image.
struct AgentAddress {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;  // 0 while `name` is unresolved
  std::string name;        // the DNS name to resolve; "" for a numeric address
  uint16_t port = 0;
  std::string host_header;  // HOST:PORT as written
};
Result<AgentAddress> ParseAgentUrl(std::string_view url);
// Fills addr/addr_len of a named address (first IPv4 or IPv6 answer of getaddrinfo); a no-op for a
// numeric one. Unavailable when the name does not resolve.
Status ResolveAgentHost(AgentAddress& address);

// Reads a bearer token from `path` (surrounding whitespace trimmed): a projected ServiceAccount
// token or a token of the agent's tokens file. Empty file: NotFound.
Result<std::string> ReadToken(const std::string& path);

// A minimal HTTP/1.1 client for the agent's build-cache API. Connections are kept alive and
// reused (a pool of at most max_idle idle ones, ConnectionPool), so a build's hundreds of small
// requests do not each pay a connect and a new agent thread. When a reused connection fails (the
// agent closed it while it sat idle, or restarted), a GET is sent once more on a new connection;
// a PUT only when none of it was sent. Every request is bounded by the timeout. Transport
// failures (refused, reset, timed out, malformed response, a name that does not resolve) are
// Unavailable or DeadlineExceeded; any HTTP status is a successful HttpResult. With a token file,
// every request carries "Authorization: Bearer <token>" from the file as it is at that request
// (TokenFile: read again when it changes, so a rotated projected token is picked up); an unreadable
// token file is a transport failure (Unavailable), because the agent would refuse the writes.
// Thread-safe: the name is resolved once, by the first request.
class AgentClient {
 public:
  // max_idle: connections kept open between requests (the caller's worker threads);
  // max_idle_time: how long one may sit unused before it is closed instead of reused.
  AgentClient(AgentAddress address, std::chrono::milliseconds timeout, uint64_t max_body,
              std::string token_file = "", size_t max_idle = 8,
              std::chrono::milliseconds max_idle_time = std::chrono::seconds(30));
  ~AgentClient();

  Result<HttpResult> Get(std::string_view path);
  Result<HttpResult> Put(std::string_view path, std::string_view body);

  // Connections opened so far, and requests sent again after a reused connection failed.
  uint64_t connections_opened() const { return connections_opened_.load(); }
  uint64_t retries() const { return retries_.load(); }

 private:
  Result<HttpResult> RoundTrip(std::string_view method, std::string_view path,
                               std::string_view body);

  // The resolved address (resolving a name at most once per run).
  Result<AgentAddress> Address();

  AgentAddress address_;
  std::chrono::milliseconds timeout_;
  uint64_t max_body_;
  std::unique_ptr<TokenFile> token_;  // null without a token file
  ConnectionPool pool_;
  std::atomic<uint64_t> connections_opened_{0};
  std::atomic<uint64_t> retries_{0};
  std::once_flag resolve_once_;
  std::optional<Result<AgentAddress>> resolved_;  // written once under resolve_once_
};

}  // namespace buildcache::gocacheprog
