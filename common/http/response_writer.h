// The writing half of a server connection: the status line and headers (with the keep-alive
// decision), then the body as one buffer, a file range (sendfile) or a stream framed by
// Content-Length, chunked encoding or connection close. Internal to common/http.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/http/request_reader.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::http::server_internal {

// Writes the responses of one connection, one at a time. Used by the connection's thread only.
class ResponseWriter {
 public:
  enum class State {
    kPending,    // nothing sent yet; status and headers can still change
    kStreaming,  // head sent by Begin; Write and End follow
    kComplete,   // the whole response is sent
    kBroken,     // the connection is unusable (write failed, Abort, short file, close-delimited
                 // body); nothing more is sent and the connection closes after the handler
  };

  // `request` is the request being answered (for HEAD, HTTP/1.0 and whether its body leaves the
  // connection reusable); `stopping` turns keep-alive off. All are owned by the caller and
  // outlive the writer; fd stays owned by the caller.
  ResponseWriter(int fd, const ServerOptions& options, const RequestReader& request,
                 const std::atomic<bool>& stopping);

  // Forgets the last response; call before each request.
  void Reset();

  // Response's contract, for the connection to forward to.
  void SetStatus(int code) { status_ = code; }
  void SetHeader(std::string_view name, std::string_view value);
  Status Send(std::string_view body);
  Status SendFile(int fd, uint64_t offset, uint64_t length);
  Status Begin(std::optional<uint64_t> length);
  Status Write(std::string_view data);
  Status End();
  void Abort();
  // Marks the connection unusable without the reset Abort asks for: it closes normally after the
  // handler, leaving the response truncated.
  void MarkBroken() { state_ = State::kBroken; }

  // Replaces status and headers and sends `body`: the server's own answers.
  Status Reply(int code, std::string_view body);
  // Sends "100 Continue" unless the response has started; a failure breaks the connection.
  Status SendContinue();

  State state() const { return state_; }
  // Whether the connection serves another request after this response; decided when the head is
  // built.
  bool keep_alive() const { return keep_alive_; }
  // Asks for the connection to close after this response (like the handler's Connection: close).
  void RequestClose() { close_requested_ = true; }

 private:
  // How the body of a streamed response ends.
  enum class Framing {
    kLength,      // Content-Length: stream_remaining_ counts down to zero
    kChunked,     // chunked transfer encoding (HTTP/1.1, unknown length)
    kUntilClose,  // the connection closes after the body (HTTP/1.0 or a bodiless status)
  };

  // Builds the status line and headers into out_ and moves to `next`; `length` is the
  // Content-Length (nullopt = chunked or, for HTTP/1.0 clients, close-delimited).
  void BuildHead(std::optional<uint64_t> length, State next);
  Status StartError() const;
  // Marks the connection broken after a failed write of `what` and returns why.
  Status Broken(std::string_view what);

  const int fd_;
  const ServerOptions& options_;
  const RequestReader& request_;
  const std::atomic<bool>& stopping_;

  State state_ = State::kPending;
  int status_ = 200;
  std::string extra_headers_;
  std::string out_;
  bool close_requested_ = false;
  bool keep_alive_ = false;
  Framing framing_ = Framing::kLength;
  std::optional<uint64_t> stream_remaining_;
};

}  // namespace buildcache::http::server_internal
