// The reading half of a server connection: request heads through Beast's basic_parser, then the
// body on demand (Content-Length bodies straight into the handler's buffer, chunked bodies through
// the parser), under the body deadline and minimum rate of ServerOptions. Internal to common/http.
#pragma once

#include <boost/beast/http/basic_parser.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::http::server_internal {

// Beast's push parser. Header fields are kept as views into the connection buffer, which is not
// moved while the request is handled. Chunked body bytes are copied into `sink`.
class RequestParser final : public boost::beast::http::basic_parser<true> {
 public:
  struct Field {
    std::string_view name, value;
  };

  std::string_view method, target;
  int version = 11;
  std::vector<Field>* fields = nullptr;
  bool too_many_fields = false;
  bool has_transfer_encoding = false;
  // Chunked body output for the current put(): filled up to sink_cap.
  char* sink = nullptr;
  size_t sink_len = 0;
  size_t sink_cap = 0;

 private:
  using string_view = boost::beast::string_view;
  using error_code = boost::beast::error_code;

  void on_request_impl(boost::beast::http::verb, string_view method_str, string_view target_str,
                       int v, error_code&) override;
  void on_response_impl(int, string_view, int, error_code&) override {}
  void on_field_impl(boost::beast::http::field f, string_view name, string_view value,
                     error_code& ec) override;
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<uint64_t>&, error_code&) override {}
  size_t on_body_impl(string_view, error_code& ec) override;
  void on_chunk_header_impl(uint64_t, string_view, error_code&) override {}
  size_t on_chunk_body_impl(uint64_t, string_view body, error_code&) override;
  void on_finish_impl(error_code&) override {}
};

// Reads the requests of one connection, one at a time. Used by the connection's thread only.
class RequestReader {
 public:
  enum class HeadResult { kRequest, kClosed, kBad, kHeaderTooLarge, kTimeout };

  // `send_continue` answers "100 Continue" when the handler first reads a body the client holds
  // back until asked (Expect: 100-continue); a non-OK status from it fails that read. fd stays
  // owned by the caller.
  RequestReader(int fd, const ServerOptions& options, std::function<Status()> send_continue);

  // Forgets the last request and moves pipelined bytes of the next one to the buffer's front.
  // Call before every ReadHead; views from the last request become invalid.
  void Reset();
  // Reads and parses the next request head. `claim` runs once, when the first byte of the request
  // is there; when it returns false (the server is closing the idle connection) this returns
  // kClosed. The whole head must arrive within idle_timeout of its first byte. kBad also covers
  // an empty target and a Transfer-Encoding other than chunked.
  HeadResult ReadHead(const std::function<bool()>& claim);

  // The request read by the last successful ReadHead.
  std::string_view method() const { return parser_->method; }
  std::string_view target() const { return parser_->target; }
  std::string_view header(std::string_view name) const;
  std::optional<uint64_t> content_length() const { return declared_length_; }
  bool http10() const { return http10_; }
  bool head_request() const { return head_request_; }
  bool client_keep_alive() const { return client_keep_alive_; }

  // Request::ReadBody's contract.
  Result<size_t> ReadBody(std::span<char> buf);
  // Reads and drops the rest of the body. True when all of it was read.
  bool DrainBody();

  bool body_done() const { return body_done_; }
  // The body missed body_timeout or min_body_rate: the response becomes 408.
  bool body_late() const { return body_late_; }
  // Whether the connection can serve another request once the response is sent, as far as the
  // body is concerned: it did not fail, and what is left of it is small and actually coming (a
  // client waiting for a 100 Continue that was never sent may not send it at all).
  bool ReusableAfterResponse() const;

 private:
  // Fills the buffer from the socket at buf_len_; returns bytes read, 0 on EOF, -1 on error or
  // timeout (errno EAGAIN for timeout).
  ssize_t Fill();
  HeadResult ParseHead(const std::function<bool()>& claim);
  void StartBody();
  // Acknowledges what was received at once and leaves delayed-ACK mode (TCP_QUICKACK). Called
  // when a request head has arrived and its body is still to come. A server that has just answered
  // on a keep-alive connection is in delayed-ACK mode, so the kernel holds the head's ACK for up to
  // 40 ms; a client that writes the head and the body separately without TCP_NODELAY (ccache's
  // HTTP storage, cpp-httplib's default) cannot send a small body before that ACK (Nagle), and so
  // every such PUT would wait the whole delay. Delayed-ACK mode only comes back when the server
  // sends again, so once per body suffices (and once more after a 100 Continue).
  void AckNow();
  Result<size_t> ReadChunked(std::span<char> buf);
  Result<size_t> ReadLength(std::span<char> buf);
  // Bounds the next wait for body bytes by body_timeout and min_body_rate: sets SO_RCVTIMEO to
  // what is left (at most idle_timeout) and returns true, or returns false when the body is late.
  bool ArmBodyTimer();
  Status BodyLate();

  const int fd_;
  const ServerOptions& options_;
  const std::function<Status()> send_continue_;

  std::unique_ptr<char[]> buf_;
  size_t buf_cap_;
  size_t buf_len_ = 0;    // valid bytes in buf_
  size_t buf_pos_ = 0;    // next unparsed/unread byte
  size_t body_base_ = 0;  // end of the header block; body bytes are compacted to here

  std::optional<RequestParser> parser_;
  std::vector<RequestParser::Field> fields_;
  std::optional<uint64_t> declared_length_;
  bool http10_ = false;
  bool head_request_ = false;
  bool client_keep_alive_ = false;
  bool expect_continue_ = false;

  bool chunked_ = false;
  uint64_t body_remaining_ = 0;  // Content-Length bytes not yet read
  uint64_t body_read_ = 0;
  bool body_done_ = true;
  bool body_failed_ = false;
  bool body_late_ = false;
  bool body_timer_set_ = false;  // SO_RCVTIMEO differs from idle_timeout
  std::optional<std::chrono::steady_clock::time_point> body_start_;
};

}  // namespace buildcache::http::server_internal
