#include "agent/frontends/goproxy/held_response.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

namespace buildcache::goproxy {

HeldBackResponse::HeldBackResponse(http::Response& inner, Check check,
                                   std::function<Status()> before_start,
                                   std::function<void(std::string_view)> on_body)
    : inner_(inner),
      check_(std::move(check)),
      before_start_(std::move(before_start)),
      on_body_(std::move(on_body)) {}

void HeldBackResponse::SetStatus(int code) {
  status_ = code;
  inner_.SetStatus(code);
}

void HeldBackResponse::SetHeader(std::string_view name, std::string_view value) {
  inner_.SetHeader(name, value);
}

Status HeldBackResponse::Send(std::string_view body) {
  if (!Held()) return inner_.Send(body);
  BC_RETURN_IF_ERROR(Begin(body.size()));
  BC_RETURN_IF_ERROR(Write(body));
  return End();
}

Status HeldBackResponse::SendFile(int fd, uint64_t offset, uint64_t length) {
  if (!Held()) return inner_.SendFile(fd, offset, length);
  BC_RETURN_IF_ERROR(Begin(length));
  std::string buf(std::min<uint64_t>(length, uint64_t{256} * 1024), '\0');
  for (uint64_t done = 0; done < length;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), length - done));
    ssize_t n = pread(fd, buf.data(), want, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      inner_.Abort();
      return DataLoss("file shorter than the response length");
    }
    BC_RETURN_IF_ERROR(Write(std::string_view(buf.data(), static_cast<size_t>(n))));
    done += static_cast<uint64_t>(n);
  }
  return End();
}

Status HeldBackResponse::Begin(std::optional<uint64_t> length) {
  if (Held() && before_start_) {
    if (Status s = before_start_(); !s.ok()) {
      outcome_ = s;
      return s;
    }
  }
  if (Held()) length_ = length;
  return inner_.Begin(length);
}

Status HeldBackResponse::Write(std::string_view data) {
  if (!Held()) return inner_.Write(data);
  if (data.empty()) return Status::Ok();
  sha_.Update(data);
  size_ += data.size();
  // The client gets the bytes before on_body's work on them (inflating a zip's files).
  Status sent = Forward(data);
  if (on_body_) on_body_(data);
  return sent;
}

Status HeldBackResponse::Forward(std::string_view data) {
  if (pending_) {
    const char byte = *pending_;
    pending_.reset();
    BC_RETURN_IF_ERROR(inner_.Write(std::string_view(&byte, 1)));
  }
  // With the length known only the piece that ends the body holds a byte back: one write a
  // piece. Without it every piece's last byte waits for the next piece.
  if (length_ && size_ < *length_) return inner_.Write(data);
  pending_ = data.back();
  data.remove_suffix(1);
  return inner_.Write(data);
}

Status HeldBackResponse::End() {
  if (!Held()) return inner_.End();
  outcome_ = check_(sha_.Finish(), size_);
  if (!outcome_.ok()) {
    inner_.Abort();
    return outcome_;
  }
  if (pending_) {
    const char byte = *pending_;
    pending_.reset();
    BC_RETURN_IF_ERROR(inner_.Write(std::string_view(&byte, 1)));
  }
  return inner_.End();
}

void HeldBackResponse::Abort() { inner_.Abort(); }

bool HeldBackResponse::started() const { return inner_.started(); }

}  // namespace buildcache::goproxy
