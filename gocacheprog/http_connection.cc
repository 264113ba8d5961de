#include "gocacheprog/http_connection.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <optional>
#include <utility>

namespace buildcache::gocacheprog {

namespace {

// Waits until fd is ready for `events` or the deadline passes.
Status WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return DeadlineExceeded("agent did not answer in time");
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n > 0) return Status::Ok();
    if (n < 0 && errno != EINTR) return ErrnoStatus(errno, "poll");
  }
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (tolower(static_cast<unsigned char>(a[i])) != tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::optional<uint64_t> ParseNumber(std::string_view s, int base = 10) {
  if (s.empty() || s.size() > 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (base == 16 && c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  return v;
}

// Decodes a chunked body (RFC 9112 section 7.1) from the start of `in`; trailers are skipped.
// Returns the bytes of `in` the body took, or nullopt while it is incomplete; appends the data
// to *out (cleared first).
Result<std::optional<size_t>> Dechunk(std::string_view in, uint64_t max_body, std::string* out) {
  out->clear();
  size_t pos = 0;
  for (;;) {
    size_t eol = in.find("\r\n", pos);
    if (eol == std::string_view::npos) return std::optional<size_t>();
    std::string_view size_line = in.substr(pos, eol - pos);
    if (size_t semi = size_line.find(';'); semi != std::string_view::npos) {
      size_line = size_line.substr(0, semi);
    }
    while (!size_line.empty() && size_line.back() == ' ') size_line.remove_suffix(1);
    auto size = ParseNumber(size_line, 16);
    if (!size) return Unavailable("bad chunk size from the agent");
    pos = eol + 2;
    if (*size == 0) {
      // Trailer lines, then the blank line.
      for (;;) {
        size_t end = in.find("\r\n", pos);
        if (end == std::string_view::npos) return std::optional<size_t>();
        if (end == pos) return std::optional<size_t>(end + 2);
        pos = end + 2;
      }
    }
    if (out->size() + *size > max_body) return Unavailable("agent response larger than the limit");
    if (in.size() - pos < *size + 2) return std::optional<size_t>();
    if (in.substr(pos + *size, 2) != "\r\n") return Unavailable("bad chunk from the agent");
    out->append(in.substr(pos, *size));
    pos += *size + 2;
  }
}

// The response head: status, framing and whether the agent keeps the connection.
struct Head {
  int status = 0;
  std::optional<uint64_t> content_length;
  bool chunked = false;
  bool keep_alive = true;
};

Result<Head> ParseHead(std::string_view head) {
  if (!head.starts_with("HTTP/1.") || head.size() < 12) {
    return Unavailable("malformed HTTP response from the agent");
  }
  Head h;
  auto code = ParseNumber(head.substr(9, 3));
  if (!code || *code < 100 || *code > 599) return Unavailable("bad HTTP status line");
  h.status = static_cast<int>(*code);
  h.keep_alive = head[7] == '1';  // HTTP/1.0 closes unless it says otherwise; treat it as closing
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos) {
    size_t next = head.find("\r\n", pos + 2);
    std::string_view line = head.substr(
        pos + 2, next == std::string_view::npos ? std::string_view::npos : next - pos - 2);
    pos = next;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
      value.remove_prefix(1);
    }
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (EqualsIgnoreCase(name, "content-length")) {
      h.content_length = ParseNumber(value);
      if (!h.content_length) return Unavailable("bad Content-Length from the agent");
    } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
      if (!EqualsIgnoreCase(value, "chunked")) {
        return Unavailable("unsupported Transfer-Encoding from the agent");
      }
      h.chunked = true;
    } else if (EqualsIgnoreCase(name, "connection") && EqualsIgnoreCase(value, "close")) {
      h.keep_alive = false;
    }
  }
  return h;
}

// Sends every part; sets *sent_any once a byte went out. Stops at the first failure.
Status SendAll(int fd, std::initializer_list<std::string_view> parts, Clock::time_point deadline,
               bool* sent_any) {
  for (std::string_view part : parts) {
    while (!part.empty()) {
      ssize_t n = send(fd, part.data(), part.size(), MSG_NOSIGNAL);
      if (n > 0) {
        *sent_any = true;
        part.remove_prefix(static_cast<size_t>(n));
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        BC_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline));
      } else {
        return Unavailable(std::string("send: ") + (n < 0 ? strerror(errno) : "no progress"));
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Result<fs::UniqueFd> ConnectTo(const sockaddr_storage& addr, socklen_t addr_len,
                               Clock::time_point deadline) {
  fs::UniqueFd fd(socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoStatus(errno, "socket");
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0) {
    if (errno != EINPROGRESS) return Unavailable(std::string("connect: ") + strerror(errno));
    BC_RETURN_IF_ERROR(WaitFor(fd.get(), POLLOUT, deadline));
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return Unavailable(std::string("connect: ") + strerror(err));
  }
  return fd;
}

Exchange RoundTripOn(int fd, std::string_view method, std::string_view head, std::string_view body,
                     Clock::time_point deadline, uint64_t max_body) {
  Exchange ex;
  // A failed send may still have an answer waiting (the agent refused the body early): read it.
  const Status sent = SendAll(fd, {head, body}, deadline, &ex.sent_any);
  if (sent.code() == StatusCode::kDeadlineExceeded) {
    ex.result = sent;
    return ex;
  }

  std::string raw;
  std::optional<Head> parsed;
  size_t body_start = 0;
  bool eof = false;
  const uint64_t max_raw = max_body + 64 * 1024;
  char buf[64 * 1024];
  for (;;) {
    if (!parsed) {
      if (size_t end = raw.find("\r\n\r\n"); end != std::string::npos) {
        auto h = ParseHead(std::string_view(raw).substr(0, end));
        if (!h.ok()) {
          ex.result = h.status();
          return ex;
        }
        parsed = *h;
        body_start = end + 4;
        if (parsed->content_length && *parsed->content_length > max_body) {
          ex.result = Unavailable("agent response larger than the limit");
          return ex;
        }
      }
    }
    if (parsed) {
      std::string_view in = std::string_view(raw).substr(body_start);
      HttpResult result;
      result.status = parsed->status;
      std::optional<size_t> used;
      const bool no_body = method == "HEAD" || parsed->status == 204 || parsed->status == 304 ||
                           parsed->status < 200;
      if (no_body) {
        used = 0;
      } else if (parsed->chunked) {
        auto done = Dechunk(in, max_body, &result.body);
        if (!done.ok()) {
          ex.result = done.status();
          return ex;
        }
        used = *done;
      } else if (parsed->content_length) {
        if (in.size() >= *parsed->content_length) {
          used = *parsed->content_length;
          result.body = std::string(in.substr(0, *used));
        }
      } else if (eof) {
        used = in.size();
        result.body = std::string(in);
        parsed->keep_alive = false;  // framed by the end of the connection
      }
      if (used) {
        // Reusable only when the whole request went out and nothing follows the response.
        ex.reusable = parsed->keep_alive && sent.ok() && !eof && in.size() == *used;
        ex.result = std::move(result);
        return ex;
      }
      if (eof) {
        ex.result = Unavailable("agent response body truncated");
        return ex;
      }
    } else if (eof) {
      ex.result = raw.empty() ? Unavailable("agent closed the connection without an answer")
                              : Unavailable("malformed HTTP response from the agent");
      return ex;
    }
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      raw.append(buf, static_cast<size_t>(n));
      if (raw.size() > max_raw) {
        ex.result = Unavailable("agent response larger than the limit");
        return ex;
      }
    } else if (n == 0) {
      eof = true;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (Status s = WaitFor(fd, POLLIN, deadline); !s.ok()) {
        ex.result = s;
        return ex;
      }
    } else if (errno == ECONNRESET && !raw.empty()) {
      eof = true;  // what arrived before the reset may be a whole answer
    } else {
      ex.result = Unavailable(std::string("recv: ") + strerror(errno));
      return ex;
    }
  }
}

bool MaySendAgain(std::string_view method, const Exchange& ex) {
  if (ex.result.ok() || ex.result.status().code() == StatusCode::kDeadlineExceeded) return false;
  return method == "GET" || !ex.sent_any;
}

ConnectionPool::ConnectionPool(size_t max_idle, std::chrono::milliseconds max_idle_time)
    : max_idle_(max_idle), max_idle_time_(max_idle_time) {}

fs::UniqueFd ConnectionPool::Take() {
  const Clock::time_point now = Clock::now();
  for (;;) {
    Idle c;
    {
      MutexLock lock(mu_);
      if (idle_.empty()) return fs::UniqueFd();
      c = std::move(idle_.back());
      idle_.pop_back();
    }
    if (now - c.since > max_idle_time_) continue;  // closed by ~UniqueFd
    // An idle keep-alive connection has nothing to read: readiness means the agent closed or
    // reset it (or sent something unasked for), and a request sent on it would be lost.
    pollfd p{c.fd.get(), POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) != 0) continue;
    return std::move(c.fd);
  }
}

void ConnectionPool::Park(fs::UniqueFd fd) {
  MutexLock lock(mu_);
  if (idle_.size() >= max_idle_) return;  // closed by ~UniqueFd
  idle_.push_back(Idle{std::move(fd), Clock::now()});
}

size_t ConnectionPool::idle() const {
  MutexLock lock(mu_);
  return idle_.size();
}

}  // namespace buildcache::gocacheprog
