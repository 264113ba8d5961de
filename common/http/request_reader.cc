#include "common/http/request_reader.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>

#include "common/http/server_io.h"

namespace buildcache::http::server_internal {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

void RequestParser::on_request_impl(bhttp::verb, string_view method_str, string_view target_str,
                                    int v, error_code&) {
  method = {method_str.data(), method_str.size()};
  target = {target_str.data(), target_str.size()};
  version = v;
}

void RequestParser::on_field_impl(bhttp::field f, string_view name, string_view value,
                                  error_code& ec) {
  if (fields->size() >= kMaxFields) {
    too_many_fields = true;
    ec = bhttp::error::header_limit;
    return;
  }
  if (f == bhttp::field::transfer_encoding) has_transfer_encoding = true;
  fields->push_back({{name.data(), name.size()}, {value.data(), value.size()}});
}

size_t RequestParser::on_body_impl(string_view, error_code& ec) {
  // Content-Length bodies are read by the connection directly, never through the parser.
  ec = bhttp::error::bad_transfer_encoding;
  return 0;
}

size_t RequestParser::on_chunk_body_impl(uint64_t, string_view body, error_code&) {
  size_t n = std::min(body.size(), sink_cap - sink_len);
  std::memcpy(sink + sink_len, body.data(), n);
  sink_len += n;
  return n;
}

RequestReader::RequestReader(int fd, const ServerOptions& options,
                             std::function<Status()> send_continue)
    : fd_(fd), options_(options), send_continue_(std::move(send_continue)) {
  buf_cap_ = options.max_header_bytes + kBodyBufferBytes;
  buf_ = std::make_unique<char[]>(buf_cap_);
  fields_.reserve(32);
}

std::string_view RequestReader::header(std::string_view name) const {
  for (const auto& f : fields_) {
    if (IEquals(f.name, name)) return f.value;
  }
  return {};
}

void RequestReader::Reset() {
  // Move pipelined bytes of the next request to the front: header views point into buf_ and must
  // stay put while a request is handled, so this is the only place buf_ is compacted wholesale.
  if (buf_pos_ > 0) {
    std::memmove(buf_.get(), buf_.get() + buf_pos_, buf_len_ - buf_pos_);
    buf_len_ -= buf_pos_;
    buf_pos_ = 0;
  }
  fields_.clear();
  parser_.emplace();
  parser_->fields = &fields_;
  parser_->header_limit(
      static_cast<uint32_t>(std::min<size_t>(options_.max_header_bytes, UINT32_MAX)));
  // Not boost::none: Beast 1.74 compares Content-Length against the optional and would reject every
  // body. The server enforces max_body_bytes itself in ReadBody.
  parser_->body_limit(std::numeric_limits<uint64_t>::max());
  parser_->eager(false);
  declared_length_.reset();
  http10_ = false;
  head_request_ = false;
  client_keep_alive_ = false;
  expect_continue_ = false;
  chunked_ = false;
  body_remaining_ = 0;
  body_read_ = 0;
  body_done_ = true;
  body_failed_ = false;
  body_late_ = false;
  body_start_.reset();
  if (body_timer_set_) {
    SetTimeout(fd_, SO_RCVTIMEO, options_.idle_timeout);
    body_timer_set_ = false;
  }
}

ssize_t RequestReader::Fill() {
  for (;;) {
    ssize_t n = recv(fd_, buf_.get() + buf_len_, buf_cap_ - buf_len_, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) buf_len_ += static_cast<size_t>(n);
    return n;
  }
}

RequestReader::HeadResult RequestReader::ReadHead(const std::function<bool()>& claim) {
  HeadResult result = ParseHead(claim);
  if (result != HeadResult::kRequest) return result;
  if (parser_->target.empty() || (parser_->has_transfer_encoding && !parser_->chunked())) {
    return HeadResult::kBad;
  }
  StartBody();
  return HeadResult::kRequest;
}

RequestReader::HeadResult RequestReader::ParseHead(const std::function<bool()>& claim) {
  const auto timeout = options_.idle_timeout;
  std::chrono::steady_clock::time_point deadline{};
  bool timeout_changed = false;
  bool first = true;
  HeadResult result = HeadResult::kBad;
  for (;;) {
    if (buf_pos_ < buf_len_) {
      if (first) {
        if (!claim()) {
          result = HeadResult::kClosed;
          break;
        }
        first = false;
      }
      beast::error_code ec;
      size_t used =
          parser_->put(boost::asio::const_buffer(buf_.get() + buf_pos_, buf_len_ - buf_pos_), ec);
      buf_pos_ += used;
      if (!ec) {
        if (parser_->is_header_done()) {
          result = HeadResult::kRequest;
          break;
        }
        continue;
      }
      if (ec == bhttp::error::header_limit) {
        result = HeadResult::kHeaderTooLarge;
        break;
      }
      if (ec != bhttp::error::need_more) {
        result = HeadResult::kBad;
        break;
      }
      if (buf_len_ == buf_cap_) {
        result = HeadResult::kHeaderTooLarge;
        break;
      }
    }
    // The whole header block must arrive within idle_timeout of its first byte (slowloris).
    if (!first) {
      auto now = std::chrono::steady_clock::now();
      if (deadline == std::chrono::steady_clock::time_point{}) deadline = now + timeout;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      if (left.count() <= 0) {
        result = HeadResult::kTimeout;
        break;
      }
      SetTimeout(fd_, SO_RCVTIMEO, left);
      timeout_changed = true;
    }
    ssize_t n = Fill();
    if (n == 0) {
      // EOF between requests is a normal close; EOF inside a request head is a truncated request.
      result = first ? HeadResult::kClosed : HeadResult::kBad;
      break;
    }
    if (n < 0) {
      bool timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
      result = timed_out && !first ? HeadResult::kTimeout : HeadResult::kClosed;
      break;
    }
  }
  if (timeout_changed) SetTimeout(fd_, SO_RCVTIMEO, timeout);
  return result;
}

void RequestReader::StartBody() {
  body_base_ = buf_pos_;
  http10_ = parser_->version < 11;
  client_keep_alive_ = parser_->keep_alive();
  head_request_ = parser_->method == "HEAD";
  if (parser_->chunked()) {
    chunked_ = true;
    body_done_ = false;
  } else if (auto cl = parser_->content_length()) {
    declared_length_ = *cl;
    body_remaining_ = *cl;
    body_done_ = *cl == 0;
  }
  if (!body_done_ && !http10_) expect_continue_ = IEquals(header("Expect"), "100-continue");
  const bool body_buffered =
      !chunked_ && body_remaining_ <= static_cast<uint64_t>(buf_len_ - buf_pos_);
  if (!body_done_ && !body_buffered && !expect_continue_) AckNow();
}

void RequestReader::AckNow() {
  // Fails harmlessly on a socket that is not TCP.
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

bool RequestReader::ReusableAfterResponse() const {
  if (body_failed_) return false;
  if (body_done_) return true;
  return !chunked_ && !expect_continue_ && body_remaining_ <= kDrainLimit;
}

Result<size_t> RequestReader::ReadBody(std::span<char> buf) {
  if (body_late_) return DeadlineExceeded("request body arrived too slowly");
  if (body_failed_) return Unavailable("request body unavailable");
  if (body_done_ || buf.empty()) return size_t{0};
  if (!body_start_) body_start_ = std::chrono::steady_clock::now();
  const uint64_t max = options_.max_body_bytes;
  if (max > 0 && declared_length_ && *declared_length_ > max) {
    body_failed_ = true;
    return TooLarge("request body exceeds " + std::to_string(max) + " bytes");
  }
  if (expect_continue_) {
    expect_continue_ = false;
    if (Status s = send_continue_(); !s.ok()) {
      body_failed_ = true;
      return s;
    }
    // Sending "100 Continue" can put the socket back into delayed-ACK mode (see AckNow).
    AckNow();
  }
  if (chunked_) return ReadChunked(buf);
  return ReadLength(buf);
}

Result<size_t> RequestReader::ReadLength(std::span<char> buf) {
  size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), body_remaining_));
  size_t n;
  if (buf_pos_ < buf_len_) {
    n = std::min(want, buf_len_ - buf_pos_);
    std::memcpy(buf.data(), buf_.get() + buf_pos_, n);
    buf_pos_ += n;
  } else {
    // Nothing buffered: read straight into the caller's buffer.
    if (!ArmBodyTimer()) return BodyLate();
    ssize_t r;
    do {
      r = recv(fd_, buf.data(), want, 0);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) {
      int err = errno;
      if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK) && !ArmBodyTimer()) return BodyLate();
      body_failed_ = true;
      if (r == 0) return Unavailable("client closed the connection mid-body");
      return Unavailable(std::string("reading request body: ") + std::strerror(err));
    }
    n = static_cast<size_t>(r);
  }
  body_remaining_ -= n;
  body_read_ += n;
  if (body_remaining_ == 0) body_done_ = true;
  return n;
}

Result<size_t> RequestReader::ReadChunked(std::span<char> buf) {
  const uint64_t max = options_.max_body_bytes;
  for (;;) {
    if (buf_pos_ < buf_len_) {
      parser_->sink = buf.data();
      parser_->sink_len = 0;
      parser_->sink_cap = buf.size();
      beast::error_code ec;
      size_t used =
          parser_->put(boost::asio::const_buffer(buf_.get() + buf_pos_, buf_len_ - buf_pos_), ec);
      buf_pos_ += used;
      size_t got = parser_->sink_len;
      parser_->sink = nullptr;
      if (ec && ec != bhttp::error::need_more) {
        body_failed_ = true;
        return InvalidArgument("malformed chunked request body");
      }
      if (parser_->is_done()) body_done_ = true;
      if (got > 0) {
        body_read_ += got;
        if (max > 0 && body_read_ > max) {
          body_failed_ = true;
          return TooLarge("request body exceeds " + std::to_string(max) + " bytes");
        }
        return got;
      }
      if (body_done_) return size_t{0};
      if (used > 0 && !ec) continue;  // consumed a chunk header; parse on
    }
    // Need more bytes: keep the header block in place, compact the body area behind it.
    if (buf_pos_ > body_base_) {
      std::memmove(buf_.get() + body_base_, buf_.get() + buf_pos_, buf_len_ - buf_pos_);
      buf_len_ -= buf_pos_ - body_base_;
      buf_pos_ = body_base_;
    }
    if (buf_len_ == buf_cap_) {
      body_failed_ = true;
      return InvalidArgument("chunk header too long");
    }
    if (!ArmBodyTimer()) return BodyLate();
    ssize_t n = Fill();
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !ArmBodyTimer()) return BodyLate();
      body_failed_ = true;
      return Unavailable(n == 0 ? "client closed the connection mid-body"
                                : "reading request body timed out or failed");
    }
  }
}

bool RequestReader::ArmBodyTimer() {
  const ServerOptions& o = options_;
  if (o.body_timeout.count() <= 0 && o.min_body_rate == 0) return true;
  using std::chrono::milliseconds;
  const auto now = std::chrono::steady_clock::now();
  const auto start = body_start_.value_or(now);
  auto late_at = now + o.idle_timeout;
  if (o.body_timeout.count() > 0) late_at = std::min(late_at, start + o.body_timeout);
  if (o.min_body_rate > 0) {
    // body_read_ bytes are enough until start + grace + body_read_ / rate.
    auto earned = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(static_cast<double>(body_read_) /
                                      static_cast<double>(o.min_body_rate)));
    late_at = std::min(late_at, start + o.min_body_rate_grace + earned);
  }
  if (late_at <= now) return false;
  // Rounded up, so the receive timeout never fires before the body is actually late.
  auto left = std::chrono::ceil<milliseconds>(late_at - now);
  SetTimeout(fd_, SO_RCVTIMEO, left);
  body_timer_set_ = true;
  return true;
}

Status RequestReader::BodyLate() {
  body_late_ = true;
  body_failed_ = true;
  const ServerOptions& o = options_;
  std::string why = "request body too slow: " + std::to_string(body_read_) + " bytes";
  if (declared_length_) why += " of " + std::to_string(*declared_length_);
  why += " received (limits: body within " + std::to_string(o.body_timeout.count()) +
         " ms, at least " + std::to_string(o.min_body_rate) + " bytes/s)";
  return DeadlineExceeded(why);
}

bool RequestReader::DrainBody() {
  char scratch[8192];
  while (!body_done_) {
    auto r = ReadBody(scratch);
    if (!r.ok() || *r == 0) return body_done_;
  }
  return true;
}

}  // namespace buildcache::http::server_internal
