#include "gocacheprog/agent_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "common/net/host_port.h"
#include "gocacheprog/token_file.h"

namespace buildcache::gocacheprog {

namespace {

using Clock = std::chrono::steady_clock;

// Closes the descriptor on every exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

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

std::optional<uint64_t> ParseDecimal(std::string_view s, int base = 10) {
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

// Decodes a chunked body (RFC 9112 section 7.1); trailers are ignored.
Result<std::string> Dechunk(std::string_view in) {
  std::string out;
  for (;;) {
    size_t eol = in.find("\r\n");
    if (eol == std::string_view::npos) return Unavailable("truncated chunked body");
    std::string_view size_line = in.substr(0, eol);
    if (size_t semi = size_line.find(';'); semi != std::string_view::npos) {
      size_line = size_line.substr(0, semi);
    }
    auto size = ParseDecimal(size_line, 16);
    if (!size) return Unavailable("bad chunk size");
    in.remove_prefix(eol + 2);
    if (*size == 0) return out;
    if (in.size() < *size + 2) return Unavailable("truncated chunk");
    out.append(in.substr(0, *size));
    in.remove_prefix(*size + 2);
  }
}

// RFC 1123 host name: dot-separated labels of [A-Za-z0-9-], not starting or ending with '-'.
bool IsDnsName(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    std::string_view label = name.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    start = dot + 1;
  }
  return true;
}

}  // namespace

Result<AgentAddress> ParseAgentUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) return InvalidArgument("agent URL must start with http://");
  std::string_view rest = url.substr(kScheme.size());
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) {
    return InvalidArgument("agent URL must be http://ADDR:PORT without a path");
  }
  Result<net::HostPort> parsed = net::HostPort::Parse(rest);
  if (!parsed.ok()) return parsed.status().WithContext("agent URL");
  if (parsed->port() == 0) return InvalidArgument("agent URL: bad port '0'");
  const std::string& host = parsed->host();
  const uint16_t port_num = parsed->port();
  AgentAddress a;
  a.host_header = std::string(rest);
  std::string h(host == "localhost" ? std::string_view("127.0.0.1") : host);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
  if (inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port_num);
    a.addr_len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port_num);
    a.addr_len = sizeof(sockaddr_in6);
  } else if (IsDnsName(h)) {
    a.name = h;
    a.port = port_num;
  } else {
    return InvalidArgument("agent URL: '" + h + "' is neither an IP address nor a DNS name");
  }
  return a;
}

Status ResolveAgentHost(AgentAddress& address) {
  if (address.name.empty()) return Status::Ok();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(address.port);
  int rc = getaddrinfo(address.name.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    return Unavailable("cannot resolve " + address.name + ": " + gai_strerror(rc));
  }
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
        ai->ai_addrlen <= sizeof(address.addr)) {
      memcpy(&address.addr, ai->ai_addr, ai->ai_addrlen);
      address.addr_len = static_cast<socklen_t>(ai->ai_addrlen);
      break;
    }
  }
  freeaddrinfo(found);
  if (address.addr_len == 0) return Unavailable("no IP address for " + address.name);
  return Status::Ok();
}

Result<std::string> ReadToken(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Unavailable("cannot read the token file " + path + ": " + strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  const char* kSpace = " \t\r\n";
  size_t b = token.find_first_not_of(kSpace);
  if (b == std::string::npos) return NotFound("the token file " + path + " is empty");
  token = token.substr(b, token.find_last_not_of(kSpace) - b + 1);
  // A header value must not be able to end the header (or start another one).
  for (char c : token) {
    if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f) {
      return InvalidArgument("the token file " + path + " holds a control character or space");
    }
  }
  return token;
}

AgentClient::AgentClient(AgentAddress address, std::chrono::milliseconds timeout, uint64_t max_body,
                         std::string token_file)
    : address_(std::move(address)),
      timeout_(timeout),
      max_body_(max_body),
      token_(token_file.empty() ? nullptr : std::make_unique<TokenFile>(std::move(token_file))) {}

AgentClient::~AgentClient() = default;

Result<AgentAddress> AgentClient::Address() {
  std::call_once(resolve_once_, [this] {
    AgentAddress a = address_;
    Status s = ResolveAgentHost(a);
    resolved_ = s.ok() ? Result<AgentAddress>(std::move(a)) : Result<AgentAddress>(s);
  });
  return *resolved_;
}

Result<HttpResult> AgentClient::Get(std::string_view path) { return RoundTrip("GET", path, {}); }

Result<HttpResult> AgentClient::Put(std::string_view path, std::string_view body) {
  return RoundTrip("PUT", path, body);
}

Result<HttpResult> AgentClient::RoundTrip(std::string_view method, std::string_view path,
                                          std::string_view body) {
  BC_ASSIGN_OR_RETURN(AgentAddress address, Address());
  std::string authorization;
  if (token_) {
    BC_ASSIGN_OR_RETURN(std::string token, token_->Current());
    authorization = "Authorization: Bearer " + token + "\r\n";
  }
  const Clock::time_point deadline = Clock::now() + timeout_;
  Fd fd(socket(address.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return ErrnoStatus(errno, "socket");
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&address.addr), address.addr_len) != 0) {
    if (errno != EINPROGRESS) return Unavailable(std::string("connect: ") + strerror(errno));
    BC_RETURN_IF_ERROR(WaitFor(fd.get(), POLLOUT, deadline));
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return Unavailable(std::string("connect: ") + strerror(err));
  }

  std::string head =
      std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: " + address_.host_header +
      "\r\nUser-Agent: buildcache-gocacheprog\r\nConnection: close\r\n" + authorization;
  if (method == "PUT") {
    head +=
        "Content-Type: application/octet-stream\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n";
  }
  head += "\r\n";
  for (std::string_view part : {std::string_view(head), body}) {
    while (!part.empty()) {
      ssize_t n = send(fd.get(), part.data(), part.size(), MSG_NOSIGNAL);
      if (n > 0) {
        part.remove_prefix(static_cast<size_t>(n));
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        BC_RETURN_IF_ERROR(WaitFor(fd.get(), POLLOUT, deadline));
      } else {
        // The agent may answer (413, 400) and close before taking the whole body; read that.
        break;
      }
    }
  }

  std::string raw;
  char buf[64 * 1024];
  const uint64_t max_raw = max_body_ + 64 * 1024;
  for (;;) {
    ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n > 0) {
      raw.append(buf, static_cast<size_t>(n));
      if (raw.size() > max_raw) return Unavailable("agent response larger than the limit");
    } else if (n == 0) {
      break;
    } else if (errno == EAGAIN || errno == EINTR) {
      BC_RETURN_IF_ERROR(WaitFor(fd.get(), POLLIN, deadline));
    } else {
      if (!raw.empty() && errno == ECONNRESET) break;
      return Unavailable(std::string("recv: ") + strerror(errno));
    }
  }

  size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos || !raw.starts_with("HTTP/1.")) {
    return Unavailable("malformed HTTP response from the agent");
  }
  HttpResult result;
  auto code = ParseDecimal(std::string_view(raw).substr(9, 3));
  if (!code || *code < 100 || *code > 599) return Unavailable("bad HTTP status line");
  result.status = static_cast<int>(*code);
  std::optional<uint64_t> content_length;
  bool chunked = false;
  std::string_view headers = std::string_view(raw).substr(0, header_end);
  size_t pos = headers.find("\r\n");
  while (pos != std::string_view::npos) {
    size_t next = headers.find("\r\n", pos + 2);
    std::string_view line = headers.substr(
        pos + 2, next == std::string_view::npos ? std::string_view::npos : next - pos - 2);
    pos = next;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
    if (EqualsIgnoreCase(name, "content-length")) content_length = ParseDecimal(value);
    if (EqualsIgnoreCase(name, "transfer-encoding") && EqualsIgnoreCase(value, "chunked")) {
      chunked = true;
    }
  }
  std::string_view body_in = std::string_view(raw).substr(header_end + 4);
  if (method == "HEAD") return result;
  if (chunked) {
    BC_ASSIGN_OR_RETURN(result.body, Dechunk(body_in));
  } else if (content_length) {
    if (body_in.size() < *content_length) return Unavailable("agent response body truncated");
    result.body = std::string(body_in.substr(0, *content_length));
  } else {
    result.body = std::string(body_in);
  }
  if (result.body.size() > max_body_) return Unavailable("agent response larger than the limit");
  return result;
}

}  // namespace buildcache::gocacheprog
