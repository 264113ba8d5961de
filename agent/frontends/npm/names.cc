#include "agent/frontends/npm/names.h"

#include <arpa/inet.h>

#include <charconv>

namespace buildcache::npm {
namespace {

constexpr size_t kMaxPackageName = 214;
constexpr size_t kMaxFilename = 255;
constexpr size_t kMaxHostName = 253;

bool IsAsciiAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// What encodeURIComponent leaves unescaped.
bool IsUriComponentSafe(char c) {
  switch (c) {
    case '-':
    case '_':
    case '.':
    case '!':
    case '~':
    case '*':
    case '\'':
    case '(':
    case ')':
      return true;
    default:
      return IsAsciiAlnum(c);
  }
}

bool IsValidPart(std::string_view part) {
  if (part.empty() || part.front() == '.') return false;
  for (char c : part) {
    if (!IsUriComponentSafe(c)) return false;
  }
  return true;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

bool IsValidPort(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  return ec == std::errc() && end == port.data() + port.size() && value >= 1 && value <= 65535;
}

bool IsValidHostName(std::string_view host) {
  if (host.empty() || host.size() > kMaxHostName) return false;
  for (char c : host) {
    if (!IsAsciiAlnum(c) && c != '-' && c != '.' && c != '_') return false;
  }
  return host.front() != '.' && host.front() != '-';
}

}  // namespace

std::string PackageName::full() const { return scoped() ? "@" + scope + "/" + name : name; }

std::string PackageName::escaped() const { return scoped() ? "@" + scope + "%2f" + name : name; }

Result<PackageName> ParsePackageName(std::string_view name) {
  if (name.empty() || name.size() > kMaxPackageName) {
    return InvalidArgument("package name must be 1 to 214 characters");
  }
  PackageName out;
  if (name.front() == '@') {
    size_t slash = name.find('/');
    if (slash == std::string_view::npos) {
      return InvalidArgument("scoped package name must be @scope/name");
    }
    std::string_view scope = name.substr(1, slash - 1);
    std::string_view rest = name.substr(slash + 1);
    if (!IsValidPart(scope) || !IsValidPart(rest)) {
      return InvalidArgument("invalid scoped package name");
    }
    out.scope = std::string(scope);
    out.name = std::string(rest);
    return out;
  }
  if (!IsValidPart(name) || name.front() == '_') return InvalidArgument("invalid package name");
  if (EqualsIgnoreCase(name, "node_modules") || EqualsIgnoreCase(name, "favicon.ico")) {
    return InvalidArgument("reserved package name");
  }
  out.name = std::string(name);
  return out;
}

bool IsValidTarballFilename(std::string_view filename) {
  if (filename.empty() || filename.size() > kMaxFilename || filename.front() == '.') return false;
  for (char c : filename) {
    if (!IsAsciiAlnum(c) && c != '.' && c != '_' && c != '-' && c != '+' && c != '~') return false;
  }
  return true;
}

std::optional<std::string> TarballFilename(const upstream::Url& url) {
  std::string_view path = url.target;
  path = path.substr(0, path.find('?'));
  size_t slash = path.rfind('/');
  auto decoded = PercentDecode(path.substr(slash == std::string_view::npos ? 0 : slash + 1));
  if (!decoded.ok() || !IsValidTarballFilename(*decoded)) return std::nullopt;
  return std::move(decoded).value();
}

std::optional<std::string> BaseUrlFromHost(std::string_view host) {
  std::string_view name = host;
  std::string_view port;
  if (host.starts_with('[')) {
    size_t close = host.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    std::string literal(host.substr(1, close - 1));
    in6_addr addr{};
    if (literal.empty() || inet_pton(AF_INET6, literal.c_str(), &addr) != 1) return std::nullopt;
    std::string_view after = host.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
      if (!IsValidPort(port)) return std::nullopt;
    }
    return "http://" + std::string(host);
  }
  size_t colon = host.find(':');
  if (colon != std::string_view::npos) {
    name = host.substr(0, colon);
    port = host.substr(colon + 1);
    if (!IsValidPort(port)) return std::nullopt;
  }
  if (!IsValidHostName(name)) return std::nullopt;
  return "http://" + std::string(host);
}

}  // namespace buildcache::npm
