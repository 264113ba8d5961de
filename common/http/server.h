#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::http {

// One HTTP/1.1 request as seen by a handler. The body is not read until the handler asks for it,
// so uploads stream straight into the store without being buffered whole.
class Request {
 public:
  virtual ~Request() = default;

  virtual std::string_view method() const = 0;  // "GET", "PUT", ...
  // The raw request-target, e.g. "/npm/@scope%2fname?write=true" (not percent-decoded).
  virtual std::string_view target() const = 0;
  // target() up to '?' (still not decoded) and after it ("" when absent).
  std::string_view path() const;
  std::string_view query() const;

  // Header value by case-insensitive name; "" when absent.
  virtual std::string_view header(std::string_view name) const = 0;
  // The declared Content-Length, if any (chunked bodies have none).
  virtual std::optional<uint64_t> content_length() const = 0;
  // The peer's address as "ip:port".
  virtual std::string_view remote_address() const = 0;
  // remote_address() without the port ("ip", "[v6]"): the client per-client limits count.
  std::string_view client_ip() const;

  // Reads up to buf.size() bytes of the body into buf. Returns 0 at the end of the body.
  // Returns kTooLarge once more than the server's max body size has been read, kUnavailable
  // when the client went away or timed out, kDeadlineExceeded when the body came slower than
  // ServerOptions::body_timeout or min_body_rate allow (the server then answers 408 whatever
  // error status the handler sets, and closes the connection).
  virtual Result<size_t> ReadBody(std::span<char> buf) = 0;
};

// The response a handler writes. Exactly one of Send, SendFile or Begin/Write/End is used.
// For HEAD requests the server sends the headers (with Content-Length) and drops the body.
class Response {
 public:
  virtual ~Response() = default;

  virtual void SetStatus(int code) = 0;
  // Sets a header; Content-Length and Transfer-Encoding are managed by the server.
  virtual void SetHeader(std::string_view name, std::string_view value) = 0;

  // Sends the status line, headers and this whole body.
  virtual Status Send(std::string_view body) = 0;
  // Sends the status line, headers and `length` bytes of `fd` starting at `offset`, using
  // sendfile(2). The caller keeps ownership of fd.
  virtual Status SendFile(int fd, uint64_t offset, uint64_t length) = 0;

  // Streaming: Begin sends the status line and headers (Content-Length when length is known,
  // chunked otherwise); Write sends body bytes; End completes the response.
  virtual Status Begin(std::optional<uint64_t> length) = 0;
  virtual Status Write(std::string_view data) = 0;
  virtual Status End() = 0;

  // Closes the connection without completing the response, so the client sees a truncated
  // (failed) transfer instead of a complete wrong one. Used when a streamed body turns out bad.
  virtual void Abort() = 0;

  // True once the status line has been sent; after that an error can only Abort().
  virtual bool started() const = 0;
};

// Called on a server thread for every request. It may block (the server runs one thread per
// connection). If it returns without responding the server answers 500.
using Handler = std::function<void(Request&, Response&)>;

struct ServerOptions {
  // "host:port"; port 0 picks a free port (see Server::port()).
  std::string listen = "127.0.0.1:0";
  // Connections beyond this are refused with 503 (and Retry-After); they never wait.
  int max_connections = 1024;
  // Connections one client address (IP, any port) may hold at once; a further connection from it
  // is answered 429 Too Many Requests with Retry-After: 1 and closed, so one client cannot take
  // the connections every other client needs. 0 = no per-client limit.
  int max_connections_per_client = 0;
  // A connection with no complete request within this time is closed.
  std::chrono::milliseconds idle_timeout{60'000};
  // Largest accepted request header block; larger gets 431.
  size_t max_header_bytes = 16 * 1024;
  // Largest accepted request body; ReadBody fails with kTooLarge beyond it. 0 = unlimited.
  uint64_t max_body_bytes = 0;
  // A request body must have arrived completely within this time of the handler's first ReadBody;
  // later, ReadBody fails with kDeadlineExceeded and the client gets 408. 0 = no overall deadline
  // (idle_timeout still bounds each wait for bytes).
  std::chrono::milliseconds body_timeout{0};
  // Slowest accepted body, in bytes per second averaged from the first ReadBody: after
  // min_body_rate_grace, a body with fewer than min_body_rate * (elapsed - grace) bytes read fails
  // like a missed body_timeout. Ends uploads that trickle a byte at a time to hold a connection
  // and the store quota they reserved. 0 = no minimum rate.
  uint64_t min_body_rate = 0;
  std::chrono::milliseconds min_body_rate_grace{10'000};
  // Value of the Server response header.
  std::string server_name = "buildcache";
};

class Server {
 public:
  // Binds, listens and starts accepting on a background thread. Sets SIGPIPE to SIG_IGN if it
  // still has its default action (sendfile cannot suppress it per call).
  static Result<std::unique_ptr<Server>> Start(ServerOptions options, Handler handler);

  virtual ~Server() = default;
  // The bound port (useful with port 0).
  virtual uint16_t port() const = 0;
  // Stops accepting, lets in-flight requests finish for up to `grace`, then closes the rest.
  // Idempotent; also called by the destructor.
  virtual void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000)) = 0;
};

}  // namespace buildcache::http
