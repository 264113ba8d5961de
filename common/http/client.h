#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status/status.h"

namespace buildcache::http {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct ClientResponse {
  int status = 0;
  HeaderList headers;
  std::string body;

  // Header value by case-insensitive name; "" when absent.
  std::string_view header(std::string_view name) const;
};

struct ClientOptions {
  // Bounds connecting and each read or write on the socket (a silent server gives kUnavailable
  // "... timed out" after this long).
  std::chrono::milliseconds timeout{30'000};
  // Responses with a larger body fail with kTooLarge.
  uint64_t max_body_bytes = uint64_t{1} << 32;
};

// A blocking HTTP/1.1 client over one kept-alive connection (plain HTTP only), built on Beast.
// Meant for tests and simple internal calls; not thread-safe (use one per thread).
class Client {
 public:
  // Connects lazily to host:port on the first Fetch, and again after the server closes.
  Client(std::string host, uint16_t port, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends one request for `target` ("/path?query") and reads the whole response. A body, when
  // given (or for PUT/POST), is sent with Content-Length. Transport failures are kUnavailable;
  // a request that fails on a reused connection before any response byte is retried once on a
  // new connection.
  Result<ClientResponse> Fetch(std::string_view method, std::string_view target,
                               const HeaderList& headers = {}, std::string_view body = {});

  // Drops the connection (the next Fetch reconnects).
  void Close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One request on a fresh connection to an "http://host:port/path?query" URL.
Result<ClientResponse> Fetch(std::string_view method, std::string_view url,
                             const HeaderList& headers = {}, std::string_view body = {},
                             ClientOptions options = {});

}  // namespace buildcache::http
