#include "common/http/response_writer.h"

#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/http/server_io.h"

namespace buildcache::http::server_internal {

ResponseWriter::ResponseWriter(int fd, const ServerOptions& options, const RequestReader& request,
                               const std::atomic<bool>& stopping)
    : fd_(fd), options_(options), request_(request), stopping_(stopping) {
  out_.reserve(512);
  extra_headers_.reserve(256);
}

void ResponseWriter::Reset() {
  state_ = State::kPending;
  status_ = 200;
  extra_headers_.clear();
  close_requested_ = false;
  keep_alive_ = false;
  framing_ = Framing::kLength;
  stream_remaining_.reset();
}

void ResponseWriter::BuildHead(std::optional<uint64_t> length, State next) {
  // A body that came too slowly is the client's fault whatever the handler made of the failed
  // read (a store error, a 5xx): say so.
  if (request_.body_late() && status_ >= 400) status_ = 408;
  const bool http10 = request_.http10();
  keep_alive_ = request_.client_keep_alive() && !close_requested_ &&
                !stopping_.load(std::memory_order_relaxed) && request_.ReusableAfterResponse();
  out_.clear();
  out_.append("HTTP/1.1 ");
  AppendUint(out_, static_cast<uint64_t>(status_));
  out_.push_back(' ');
  out_.append(ReasonPhrase(status_));
  out_.append("\r\nServer: ");
  out_.append(options_.server_name);
  out_.append("\r\n");
  out_.append(DateHeader());
  const bool no_body = status_ == 204 || status_ == 304 || (status_ >= 100 && status_ < 200);
  if (!no_body) {
    if (length) {
      out_.append("Content-Length: ");
      AppendUint(out_, *length);
      out_.append("\r\n");
    } else if (!http10) {
      out_.append("Transfer-Encoding: chunked\r\n");
    } else {
      keep_alive_ = false;  // HTTP/1.0 without a length: the body ends at connection close
    }
  }
  if (length) {
    framing_ = Framing::kLength;
  } else {
    framing_ = !no_body && !http10 ? Framing::kChunked : Framing::kUntilClose;
  }
  out_.append(extra_headers_);
  if (!keep_alive_) {
    out_.append("Connection: close\r\n");
  } else if (http10) {
    out_.append("Connection: keep-alive\r\n");
  }
  out_.append("\r\n");
  state_ = next;
}

void ResponseWriter::SetHeader(std::string_view name, std::string_view value) {
  if (state_ != State::kPending || name.empty() || HasCrLf(name) || HasCrLf(value) ||
      name.find(':') != std::string_view::npos) {
    return;
  }
  if (IEquals(name, "Content-Length") || IEquals(name, "Transfer-Encoding") ||
      IEquals(name, "Date") || IEquals(name, "Server")) {
    return;
  }
  if (IEquals(name, "Connection")) {
    if (IEquals(value, "close")) close_requested_ = true;
    return;
  }
  extra_headers_.append(name);
  extra_headers_.append(": ");
  extra_headers_.append(value);
  extra_headers_.append("\r\n");
}

Status ResponseWriter::StartError() const { return FailedPrecondition("response already started"); }

Status ResponseWriter::Broken(std::string_view what) {
  int err = errno;
  state_ = State::kBroken;
  shutdown(fd_, SHUT_RDWR);
  return Unavailable(std::string(what) + ": " + std::strerror(err));
}

Status ResponseWriter::Reply(int code, std::string_view body) {
  status_ = code;
  extra_headers_.clear();
  return Send(body);
}

Status ResponseWriter::SendContinue() {
  if (state_ != State::kPending) return Status::Ok();
  if (!WriteAll(fd_, "HTTP/1.1 100 Continue\r\n\r\n")) return Broken("send 100 Continue");
  return Status::Ok();
}

Status ResponseWriter::Send(std::string_view body) {
  if (state_ != State::kPending) return StartError();
  BuildHead(body.size(), State::kComplete);
  iovec iov[2];
  iov[0] = {out_.data(), out_.size()};
  int count = 1;
  const bool no_body = status_ == 204 || status_ == 304;
  if (!request_.head_request() && !no_body && !body.empty()) {
    iov[1] = {const_cast<char*>(body.data()), body.size()};
    count = 2;
  }
  if (!WriteAllV(fd_, iov, count)) return Broken("send response");
  return Status::Ok();
}

Status ResponseWriter::SendFile(int fd, uint64_t offset, uint64_t length) {
  if (state_ != State::kPending) return StartError();
  BuildHead(length, State::kComplete);
  if (request_.head_request() || length == 0) {
    if (!WriteAll(fd_, out_)) return Broken("send response");
    return Status::Ok();
  }
  // MSG_MORE holds the header back so it leaves in the same segment as the first file bytes.
  if (!WriteAll(fd_, out_, MSG_MORE)) return Broken("send response");
  auto off = static_cast<off_t>(offset);
  uint64_t left = length;
  while (left > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(left, 1ull << 30));
    ssize_t n = sendfile(fd_, fd, &off, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Broken("sendfile");
    }
    if (n == 0) {
      // The file is shorter than promised: never let the client take a short body as complete.
      state_ = State::kBroken;
      shutdown(fd_, SHUT_RDWR);
      return DataLoss("file shorter than the response length");
    }
    left -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status ResponseWriter::Begin(std::optional<uint64_t> length) {
  if (state_ != State::kPending) return StartError();
  BuildHead(length, State::kStreaming);
  stream_remaining_ = length;
  if (!WriteAll(fd_, out_)) return Broken("send response");
  return Status::Ok();
}

Status ResponseWriter::Write(std::string_view data) {
  if (state_ == State::kBroken) return Unavailable("connection closed");
  if (state_ != State::kStreaming) return FailedPrecondition("Write outside Begin/End");
  if (stream_remaining_) {
    if (data.size() > *stream_remaining_) {
      Abort();
      return Internal("response body longer than its Content-Length");
    }
    *stream_remaining_ -= data.size();
  }
  if (request_.head_request() || data.empty()) return Status::Ok();
  if (framing_ == Framing::kChunked) {
    char size_line[24];
    auto r = std::to_chars(size_line, size_line + 20, data.size(), 16);
    *r.ptr++ = '\r';
    *r.ptr++ = '\n';
    iovec iov[3] = {{size_line, static_cast<size_t>(r.ptr - size_line)},
                    {const_cast<char*>(data.data()), data.size()},
                    {const_cast<char*>("\r\n"), 2}};
    if (!WriteAllV(fd_, iov, 3)) return Broken("send body");
    return Status::Ok();
  }
  if (!WriteAll(fd_, data)) return Broken("send body");
  return Status::Ok();
}

Status ResponseWriter::End() {
  if (state_ == State::kBroken) return Unavailable("connection closed");
  if (state_ != State::kStreaming) return FailedPrecondition("End outside Begin");
  const bool head = request_.head_request();
  if (stream_remaining_ && *stream_remaining_ != 0 && !head) {
    Abort();
    return Internal("response body shorter than its Content-Length");
  }
  state_ = State::kComplete;
  if (head) return Status::Ok();
  if (framing_ == Framing::kChunked && !WriteAll(fd_, "0\r\n\r\n")) return Broken("send body");
  if (framing_ == Framing::kUntilClose) {
    // The body ends at connection close (HTTP/1.0 without a length, or a bodiless status).
    state_ = State::kBroken;
    shutdown(fd_, SHUT_WR);
  }
  return Status::Ok();
}

void ResponseWriter::Abort() {
  state_ = State::kBroken;
  // The connection is closed with an RST (not a FIN) once the handler returns, so the client
  // cannot mistake a truncated body for a complete one.
  linger l{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

}  // namespace buildcache::http::server_internal
