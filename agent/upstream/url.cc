#include "agent/upstream/url.h"

#include <cctype>
#include <charconv>
#include <string>

#include "common/net/host_port.h"

namespace buildcache::upstream {

namespace {

bool IsHostChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
         c == '~';
}

bool IsIpv6Char(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
}

// Printable ASCII without space: what may appear in a request-target as is.
bool IsTargetChar(char c) { return c > 0x20 && c < 0x7f; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && Lower(s.substr(0, prefix.size())) == prefix;
}

// RFC 3986 section 5.2.4.
std::string RemoveDotSegments(std::string_view in) {
  std::string out;
  while (!in.empty()) {
    if (in.starts_with("../")) {
      in.remove_prefix(3);
    } else if (in.starts_with("./")) {
      in.remove_prefix(2);
    } else if (in.starts_with("/./")) {
      in.remove_prefix(2);
    } else if (in == "/.") {
      in = "/";
    } else if (in.starts_with("/../") || in == "/..") {
      in = in.size() == 3 ? std::string_view("/") : in.substr(3);
      size_t slash = out.rfind('/');
      out.resize(slash == std::string::npos ? 0 : slash);
    } else if (in == "." || in == "..") {
      in = {};
    } else {
      size_t next = in.find('/', in.front() == '/' ? 1 : 0);
      if (next == std::string_view::npos) next = in.size();
      out.append(in.substr(0, next));
      in.remove_prefix(next);
    }
  }
  return out;
}

Status Bad(std::string_view url, std::string_view why) {
  // The URL itself may be hostile (it is not echoed whole into a log line or response).
  std::string shown(url.substr(0, 200));
  for (char& c : shown) {
    if (!IsTargetChar(c)) c = '?';
  }
  return InvalidArgument("bad upstream URL \"" + shown + "\": " + std::string(why));
}

}  // namespace

bool Url::ip_literal() const {
  if (host.find(':') != std::string::npos) return true;
  for (char c : host) {
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.') return false;
  }
  return !host.empty();
}

std::string Url::authority() const {
  std::string out = net::BracketHost(host);
  if (!default_port()) out += ":" + std::to_string(port);
  return out;
}

std::string Url::origin() const {
  return std::string(https ? "https://" : "http://") + net::HostPort(host, port).ToString();
}

std::string Url::Redacted() const {
  std::string path = target.substr(0, target.find('?'));
  return std::string(https ? "https://" : "http://") + authority() + path;
}

std::string Url::ToString() const {
  return std::string(https ? "https://" : "http://") + authority() + target;
}

Result<Url> ParseUrl(std::string_view url) {
  for (char c : url) {
    if (!IsTargetChar(c)) return Bad(url, "control character, space or non-ASCII byte");
  }
  Url out;
  std::string_view rest;
  if (StartsWithNoCase(url, "https://")) {
    out.https = true;
    rest = url.substr(8);
  } else if (StartsWithNoCase(url, "http://")) {
    rest = url.substr(7);
  } else {
    return Bad(url, "scheme must be http or https");
  }
  rest = rest.substr(0, rest.find('#'));
  size_t end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, end);
  std::string_view target = end == std::string_view::npos ? "" : rest.substr(end);

  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    out.userinfo = std::string(authority.substr(0, at));
    authority.remove_prefix(at + 1);
  }
  std::string_view host = authority;
  std::string_view port;
  if (authority.starts_with("[")) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return Bad(url, "unterminated IPv6 literal");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Bad(url, "junk after IPv6 literal");
      port = after.substr(1);
    }
    if (host.empty() || host.find(':') == std::string_view::npos) {
      return Bad(url, "bad IPv6 literal");
    }
    for (char c : host) {
      if (!IsIpv6Char(c)) return Bad(url, "bad IPv6 literal");
    }
  } else {
    if (size_t colon = authority.find(':'); colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    for (char c : host) {
      if (!IsHostChar(c)) return Bad(url, "bad character in host");
    }
  }
  if (host.empty()) return Bad(url, "no host");
  out.host = Lower(host);
  out.port = out.https ? 443 : 80;
  if (!port.empty()) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || ptr != port.data() + port.size() || value == 0 || value > 65535) {
      return Bad(url, "bad port");
    }
    out.port = static_cast<uint16_t>(value);
  }
  if (target.empty() || target.front() == '?') {
    out.target = "/" + std::string(target);
  } else {
    out.target = std::string(target);
  }
  return out;
}

Result<Url> ResolveReference(const Url& base, std::string_view ref) {
  for (char c : ref) {
    if (!IsTargetChar(c)) return Bad(ref, "control character, space or non-ASCII byte");
  }
  ref = ref.substr(0, ref.find('#'));
  if (StartsWithNoCase(ref, "http://") || StartsWithNoCase(ref, "https://")) return ParseUrl(ref);
  size_t colon = ref.find(':');
  if (colon != std::string_view::npos && ref.find_first_of("/?") > colon) {
    return Bad(ref, "scheme must be http or https");
  }
  if (ref.starts_with("//")) {
    return ParseUrl(std::string(base.https ? "https:" : "http:") + std::string(ref));
  }
  Url out = base;
  std::string_view base_path = std::string_view(base.target).substr(0, base.target.find('?'));
  if (ref.empty()) return out;
  if (ref.front() == '?') {
    out.target = std::string(base_path) + std::string(ref);
    return out;
  }
  std::string_view ref_path = ref.substr(0, ref.find('?'));
  std::string_view ref_query = ref.substr(ref_path.size());
  std::string merged;
  if (ref.front() == '/') {
    merged = std::string(ref_path);
  } else {
    merged = std::string(base_path.substr(0, base_path.rfind('/') + 1)) + std::string(ref_path);
  }
  out.target = RemoveDotSegments(merged);
  if (out.target.empty() || out.target.front() != '/') out.target.insert(0, "/");
  out.target += std::string(ref_query);
  return out;
}

Result<std::string> PercentDecode(std::string_view s) {
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return InvalidArgument("bad percent-escape");
    int hi = hex(s[i + 1]);
    int lo = hex(s[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return InvalidArgument("bad percent-escape");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

}  // namespace buildcache::upstream
