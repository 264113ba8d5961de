#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status/status.h"

namespace buildcache::http {

// A small HTTPS/1.1 server for control-plane endpoints (the operator's admission webhook): whole
// request bodies in memory, one thread per connection. Not for the data plane (see server.h).
// Boost.Asio/Beast and OpenSSL stay inside tls_server.cc.

// A serving certificate (chain) and its private key, PEM.
struct TlsCredentials {
  std::string cert_pem{};
  std::string key_pem{};
};

// Called for every new connection; the server rebuilds its TLS context when the answer changes,
// so rotated certificates are served without a restart. An error refuses that connection (and
// is logged); a source must be thread-safe.
using CredentialsSource = std::function<Result<TlsCredentials>()>;

struct TlsRequest {
  std::string method{};
  std::string target{};
  std::string content_type{};
  std::string body{};
};

struct TlsResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body{};
};

// Called on a connection thread; may block briefly. Must not throw.
using TlsHandler = std::function<TlsResponse(const TlsRequest&)>;

struct TlsServerOptions {
  std::string listen = "127.0.0.1:0";  // "host:port"; port 0 picks a free port
  CredentialsSource credentials{};
  size_t max_body_bytes = size_t{8} << 20;  // larger requests get 413
  // A connection that does not complete the handshake or a request within this time is closed.
  std::chrono::milliseconds io_timeout{std::chrono::seconds(30)};
  int max_connections = 256;  // more are closed right after accept
};

class TlsServer {
 public:
  // Binds, listens and serves on background threads. Fails when the address cannot be bound or
  // the first credentials cannot be loaded.
  static Result<std::unique_ptr<TlsServer>> Start(TlsServerOptions options, TlsHandler handler);
  ~TlsServer();
  TlsServer(const TlsServer&) = delete;
  TlsServer& operator=(const TlsServer&) = delete;

  uint16_t port() const;
  // Stops accepting and closes every connection. Idempotent; also called by the destructor.
  void Stop();

 private:
  struct Impl;
  explicit TlsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace buildcache::http
