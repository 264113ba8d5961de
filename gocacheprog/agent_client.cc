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
                         std::string token_file, size_t max_idle,
                         std::chrono::milliseconds max_idle_time)
    : address_(std::move(address)),
      timeout_(timeout),
      max_body_(max_body),
      token_(token_file.empty() ? nullptr : std::make_unique<TokenFile>(std::move(token_file))),
      pool_(max_idle, max_idle_time) {}

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
  std::string head = std::string(method) + " " + std::string(path) +
                     " HTTP/1.1\r\nHost: " + address_.host_header +
                     "\r\nUser-Agent: buildcache-gocacheprog\r\n" + authorization;
  if (method == "PUT") {
    head +=
        "Content-Type: application/octet-stream\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n";
  }
  head += "\r\n";
  const Clock::time_point deadline = Clock::now() + timeout_;
  for (int attempt = 0;; ++attempt) {
    fs::UniqueFd fd = attempt == 0 ? pool_.Take() : fs::UniqueFd();
    const bool reused = fd.valid();
    if (!reused) {
      BC_ASSIGN_OR_RETURN(fd, ConnectTo(address.addr, address.addr_len, deadline));
      connections_opened_.fetch_add(1);
    }
    Exchange ex = RoundTripOn(fd.get(), method, head, body, deadline, max_body_);
    if (ex.result.ok()) {
      if (ex.reusable) pool_.Park(std::move(fd));
      return std::move(ex.result);
    }
    // A new connection that fails is the agent's answer; a reused one may have been closed by the
    // agent just before the request reached it.
    if (!reused || attempt > 0 || !MaySendAgain(method, ex)) return ex.result.status();
    retries_.fetch_add(1);
  }
}

}  // namespace buildcache::gocacheprog
