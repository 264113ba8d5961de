#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status/status.h"

namespace buildcache::http {

// A small HTTPS client for JSON/REST APIs (the Kubernetes API server), built on cpprestsdk. No
// cpprestsdk header or exception leaves this library: callers see only these types and Status.
// cpprestsdk is archived upstream; keeping it behind this interface keeps it replaceable.

using RestHeaders = std::vector<std::pair<std::string, std::string>>;

struct RestClientOptions {
  // "https://host:port", optionally with a path prefix ("https://proxy/k8s/c1"); request targets
  // are appended to it. "http://" is accepted only without credentials (no token, no client
  // certificate), for plain local endpoints.
  std::string base_url{};

  // Certificate authorities that may sign the server's certificate, as a PEM file or PEM data.
  // When either is set only these CAs are trusted; when neither is, the system's CAs are.
  // Verification (chain and host name) is always on; there is no switch to turn it off.
  std::string ca_file{};
  std::string ca_pem{};

  // Client certificate (chain) and private key, each as a PEM file or PEM data. Files are read
  // again for every new connection, so a rotated certificate is picked up without a restart.
  std::string client_cert_file{};
  std::string client_cert_pem{};
  std::string client_key_file{};
  std::string client_key_pem{};

  // "Authorization: Bearer ..." from a fixed string, or from a file that is read again whenever
  // it changes (projected service-account tokens are rotated by the kubelet). The file wins when
  // both are set. A token file that cannot be read after it was read once keeps the last token.
  std::string bearer_token{};
  std::string bearer_token_file{};

  // Default bound on every wait for the server: connecting, the TLS handshake, the response
  // headers and each piece of the body (it is an inactivity timeout, restarted by each byte
  // received). A request can override it.
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};

  std::string user_agent = "buildcache";
};

struct RestRequest {
  std::string method = "GET";
  // Path and query, already percent-encoded: "/api/v1/namespaces/ns/pods?labelSelector=a%3Db".
  std::string target{};
  RestHeaders headers{};
  std::string body{};
  // Overrides RestClientOptions::timeout when non-zero.
  std::chrono::milliseconds timeout{0};
};

struct RestResponse {
  int status = 0;
  RestHeaders headers;
  std::string body{};

  // The value of a header by case-insensitive name; "" when absent.
  std::string_view header(std::string_view name) const;
};

// Receives the body of a streamed response piece by piece as it arrives. Returning false ends the
// stream early (the connection is closed); the Stream call then returns OK.
using ChunkHandler = std::function<bool(std::string_view chunk)>;
// Receives one line at a time (without the trailing "\n" or "\r\n"). Same return convention.
using LineHandler = std::function<bool(std::string_view line)>;

// Thread-safe: one client serves concurrent requests and streams (on separate connections).
class RestClient {
 public:
  // Checks the options (URL syntax, that PEM data and files parse, that the key matches the
  // certificate) and fails with kInvalidArgument, or kNotFound/kFailedPrecondition for files
  // that cannot be read, naming the option.
  static Result<std::unique_ptr<RestClient>> Create(RestClientOptions options);
  ~RestClient();
  RestClient(const RestClient&) = delete;
  RestClient& operator=(const RestClient&) = delete;

  // Sends a request and reads the whole response, whatever its status: an HTTP error status is a
  // successful call here (the caller interprets the body). Transport failures are kUnavailable
  // (connection refused, TLS verification failed, connection reset), a timeout is
  // kDeadlineExceeded, and a stop request through `stop` is kCancelled.
  Result<RestResponse> Do(const RestRequest& request, std::stop_token stop = {});

  // Sends a request and hands a 2xx response's body to on_chunk as it arrives. Returns, with the
  // status and headers (and an empty body), when the body ends or on_chunk returns false. A
  // non-2xx response is not streamed: its body is read whole and returned for the caller to
  // interpret. Errors as for Do; a stop request while streaming is kCancelled.
  Result<RestResponse> Stream(const RestRequest& request, const ChunkHandler& on_chunk,
                              std::stop_token stop = {});

  // Stream, split into lines; a final line without a newline is delivered too. A line longer
  // than max_line_bytes fails the call with kTooLarge.
  Result<RestResponse> StreamLines(const RestRequest& request, const LineHandler& on_line,
                                   std::stop_token stop = {},
                                   size_t max_line_bytes = size_t{64} << 20);

  const std::string& base_url() const;

 private:
  struct Impl;
  explicit RestClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Splits a byte stream into lines; a helper of StreamLines, exposed for tests.
class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line_bytes) : max_(max_line_bytes) {}

  // Calls on_line for each complete line in data (plus what was buffered before). Returns false
  // when on_line asked to stop; sets *too_long when a line exceeds the limit.
  bool Feed(std::string_view data, const LineHandler& on_line, bool* too_long);
  // Delivers a trailing partial line, if any. Returns on_line's result (true when none).
  bool Finish(const LineHandler& on_line);

 private:
  size_t max_;
  std::string partial_;
};

// Sets how many I/O threads cpprestsdk runs (its default is 40). Only main() should call it,
// before the first request; returns false when the pool already exists.
bool SetRestClientIoThreads(size_t threads);

// Percent-encodes a query parameter value or path segment (everything but unreserved
// characters A-Z a-z 0-9 - . _ ~).
std::string UrlEncode(std::string_view text);

}  // namespace buildcache::http
