#include "common/net/host_port.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

#include "common/text/quote.h"

namespace buildcache::net {

namespace {

using text::Quote;

constexpr size_t kMaxQuoted = 100;

std::string Q(std::string_view s) { return Quote(s, {.max_chars = kMaxQuoted}); }

Status Bad(std::string_view text, std::string_view what) {
  return InvalidArgument(std::string(what) + " in " + Q(text) +
                         " (expected HOST:PORT, e.g. 127.0.0.1:8080, [::1]:8080 or "
                         "example.com:8080)");
}

std::optional<uint16_t> ParsePortNumber(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned port = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), port);
  if (ec != std::errc() || end != s.data() + s.size() || port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

bool IsIpv6Literal(std::string_view host) {
  if (host.empty() || host.size() >= INET6_ADDRSTRLEN) return false;
  in6_addr addr{};
  return inet_pton(AF_INET6, std::string(host).c_str(), &addr) == 1;
}

// Only the characters of an IPv6 address (hex digits, ':', '.' of an embedded IPv4 address).
bool LooksLikeIpv6(std::string_view host) {
  return std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
           c == '.';
  });
}

}  // namespace

std::string RedactUserinfo(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const size_t start = scheme_end + 3;
  const size_t end = std::min(url.find_first_of("/?#", start), url.size());
  const size_t at = url.substr(start, end - start).rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  return std::string(url.substr(0, start)) + "***" + std::string(url.substr(start + at));
}

bool IsHostName(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    char c = host[i];
    if (c == '.') {
      if (label == 0 || host[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c == '-' && label > 0);
    if (!ok || ++label > 63) return false;
  }
  return host.back() != '-';
}

Result<HostPort> HostPort::Parse(std::string_view text) { return Parse(text, false, std::nullopt); }

Result<HostPort> HostPort::ParseListen(std::string_view text) {
  return Parse(text, true, std::nullopt);
}

Result<HostPort> HostPort::ParseWithDefaultPort(std::string_view text, uint16_t default_port) {
  return Parse(text, false, default_port);
}

Result<HostPort> HostPort::Parse(std::string_view text, bool allow_empty_host,
                                 std::optional<uint16_t> default_port) {
  if (text.empty()) return InvalidArgument("empty address (expected HOST:PORT)");
  std::string_view host;
  std::optional<std::string_view> port;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return Bad(text, "unterminated IPv6 address");
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return Bad(text, "unexpected " + Q(rest) + " after ']'");
      port = rest.substr(1);
    }
    if (!IsIpv6Literal(host)) return Bad(text, "invalid IPv6 address " + Q(host));
  } else {
    size_t colon = text.rfind(':');
    if (colon != std::string_view::npos) {
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
      if (host.find(':') != std::string_view::npos) {
        return Bad(text, LooksLikeIpv6(host) ? std::string("IPv6 address without brackets")
                                             : "invalid host " + Q(host));
      }
    } else {
      host = text;
    }
    if (!(host.empty() && allow_empty_host) && !IsHostName(host)) {
      return Bad(text, host.empty() ? std::string("missing host") : "invalid host " + Q(host));
    }
  }
  uint16_t number = 0;
  if (port) {
    std::optional<uint16_t> parsed = ParsePortNumber(*port);
    if (!parsed) return Bad(text, "invalid port " + Q(*port) + " (expected 0-65535)");
    number = *parsed;
  } else if (default_port) {
    number = *default_port;
  } else {
    return Bad(text, "missing port");
  }
  return HostPort(std::string(host), number);
}

std::string HostPort::BracketedHost() const { return BracketHost(host_); }

std::string BracketHost(std::string_view host) {
  if (host.find(':') == std::string_view::npos) return std::string(host);
  return "[" + std::string(host) + "]";
}

std::string_view BareHost(std::string_view address) {
  if (address.starts_with('[')) {
    size_t close = address.find(']');
    return close == std::string_view::npos ? std::string_view() : address.substr(1, close - 1);
  }
  return HostOf(address);
}

std::string HostPort::ToString() const { return BracketedHost() + ":" + std::to_string(port_); }

std::string_view HostOf(std::string_view host_port) {
  if (host_port.starts_with('[')) {
    size_t close = host_port.find(']');
    return close == std::string_view::npos ? host_port : host_port.substr(0, close + 1);
  }
  size_t colon = host_port.rfind(':');
  if (colon == std::string_view::npos || host_port.find(':') != colon) return host_port;
  return host_port.substr(0, colon);
}

std::string WithPort(std::string_view host_port, uint16_t port) {
  Result<HostPort> parsed = HostPort::ParseListen(host_port);
  if (parsed.ok()) return HostPort(parsed->host(), port).ToString();
  return std::string(HostOf(host_port)) + ":" + std::to_string(port);
}

}  // namespace buildcache::net
