#include "agent/replication/fetch_policy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>

#include "agent/upstream/verifier.h"

namespace buildcache::replication {

Result<std::vector<std::string>> ResolveHost(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0) {
    return Unavailable("cannot resolve " + host + ": " + ::gai_strerror(rc));
  }
  std::vector<std::string> out;
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (ai->ai_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, text,
                  sizeof text);
    } else if (ai->ai_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, text,
                  sizeof text);
    } else {
      continue;
    }
    out.emplace_back(text);
  }
  ::freeaddrinfo(found);
  return out;
}

namespace {

bool InV4(uint32_t a, uint32_t net, int bits) {
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (a & mask) == (net & mask);
}

bool IsInternalV4(uint32_t a) {
  struct Range {
    uint32_t net;
    int bits;
  };
  static constexpr std::array<Range, 11> kInternal = {{
      {0x00000000, 8},   // "this network", 0.0.0.0
      {0x0A000000, 8},   // 10/8 private
      {0x64400000, 10},  // 100.64/10 carrier-grade NAT
      {0x7F000000, 8},   // loopback
      {0xA9FE0000, 16},  // 169.254/16 link-local (cloud metadata)
      {0xAC100000, 12},  // 172.16/12 private
      {0xC0000000, 24},  // 192.0.0/24 protocol assignments
      {0xC0A80000, 16},  // 192.168/16 private
      {0xC6120000, 15},  // 198.18/15 benchmarking
      {0xE0000000, 4},   // multicast
      {0xF0000000, 4},   // reserved, broadcast
  }};
  for (const Range& r : kInternal) {
    if (InV4(a, r.net, r.bits)) return true;
  }
  return false;
}

// No segment a server could resolve upwards: ".", "..", encoded or not, and no encoded '/' or
// '\\' (some servers decode them before routing).
bool SafePath(std::string_view path) {
  std::string lower;
  for (char c : path) {
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (lower.find("%2f") != std::string::npos || lower.find("%5c") != std::string::npos ||
      lower.find('\\') != std::string::npos) {
    return false;
  }
  size_t pos = 0;
  while (pos <= lower.size()) {
    size_t end = lower.find('/', pos);
    if (end == std::string::npos) end = lower.size();
    std::string segment = lower.substr(pos, end - pos);
    for (size_t at; (at = segment.find("%2e")) != std::string::npos;) segment.replace(at, 3, ".");
    if (segment == "." || segment == "..") return false;
    pos = end + 1;
  }
  return true;
}

std::string LastSegment(std::string_view url) {
  std::string_view path = url.substr(0, url.find_first_of("?#"));
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

}  // namespace

std::string ParentUrl(std::string_view url) {
  std::string_view path = url.substr(0, url.find_first_of("?#"));
  size_t scheme = path.find("://");
  size_t first = path.find('/', scheme == std::string_view::npos ? 0 : scheme + 3);
  if (first == std::string_view::npos) return std::string(path);
  while (path.size() > first + 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  if (slash < first) return std::string(path) + "/";
  return std::string(path.substr(0, slash + 1));
}

Status PeerFetchRules::Check(const std::string& frontend, const std::string& key,
                             const std::string& url,
                             const std::vector<std::string>& expected_raw) const {
  bool known = false;
  for (const PeerFetchRule& rule : rules_) {
    if (rule.frontend != frontend) continue;
    known = true;
    if (!key.starts_with(rule.key_prefix)) continue;
    const std::string rest = key.substr(rule.key_prefix.size());
    switch (rule.kind) {
      case PeerFetchRule::Kind::kUpstreamPath:
        if (url == rule.upstream + rest) return Status::Ok();
        return InvalidArgument("key " + key + " is not the " + frontend + " key of " + url);
      case PeerFetchRule::Kind::kFileName: {
        std::vector<std::string> segments;
        for (size_t pos = 0;;) {
          size_t slash = rest.find('/', pos);
          segments.push_back(rest.substr(pos, slash - pos));
          if (slash == std::string::npos) break;
          pos = slash + 1;
        }
        size_t need = rule.digest_segment ? 3 : 2;
        if (segments.size() < need) return InvalidArgument("key " + key + " is too short");
        if (rule.digest_segment) {
          const std::string& hex = segments.back();
          bool named = std::any_of(expected_raw.begin(), expected_raw.end(), [&](const auto& raw) {
            return raw.size() >= 16 && upstream::ToHex(raw.substr(0, 16)) == hex;
          });
          if (!named) return InvalidArgument("key " + key + " names no expected digest");
          segments.pop_back();
        }
        auto file = upstream::PercentDecode(LastSegment(url));
        if (file.ok() && *file == segments.back() + rule.suffix) return Status::Ok();
        return InvalidArgument("key " + key + " names another file than " + url);
      }
      case PeerFetchRule::Kind::kCrate: {
        size_t slash = rest.find('/');
        if (slash == std::string::npos) return InvalidArgument("key " + key + " is too short");
        auto parsed = upstream::ParseUrl(url);
        if (!parsed.ok()) return parsed.status();
        auto path = upstream::PercentDecode(parsed->target.substr(0, parsed->target.find('?')));
        if (!path.ok()) return path.status();
        std::string lower;
        for (char c : *path) {
          lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
        }
        if (lower.find(rest.substr(0, slash)) != std::string::npos &&
            lower.find(rest.substr(slash + 1)) != std::string::npos) {
          return Status::Ok();
        }
        return InvalidArgument("key " + key + " names another crate than " + url);
      }
    }
  }
  if (!known) return InvalidArgument("unknown front end \"" + frontend.substr(0, 32) + "\"");
  return InvalidArgument("a peer may not make this agent fetch " + frontend + " key " + key);
}

bool IsInternalAddress(const std::string& address) {
  in_addr v4{};
  if (::inet_pton(AF_INET, address.c_str(), &v4) == 1) return IsInternalV4(ntohl(v4.s_addr));
  in6_addr v6{};
  if (::inet_pton(AF_INET6, address.c_str(), &v6) != 1) return true;  // not an address: refuse
  const uint8_t* b = v6.s6_addr;
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(b, kMapped, 12) == 0) {
    return IsInternalV4(uint32_t{b[12]} << 24 | uint32_t{b[13]} << 16 | uint32_t{b[14]} << 8 |
                        b[15]);
  }
  // Only global unicast (2000::/3) leaves the site; everything else (loopback, unspecified,
  // link-local fe80::/10, unique local fc00::/7, multicast ff00::/8, ...) is internal.
  return (b[0] & 0xE0) != 0x20;
}

PeerFetchPolicy::PeerFetchPolicy(const std::vector<std::string>& upstream_prefixes,
                                 Resolver resolver)
    : resolver_(resolver ? std::move(resolver) : Resolver(ResolveHost)) {
  for (const std::string& u : upstream_prefixes) {
    std::string_view url = u;
    if (url.starts_with("sparse+")) url.remove_prefix(7);  // Cargo's index URL form
    auto parsed = upstream::ParseUrl(url);
    if (!parsed.ok()) continue;
    std::string path = parsed->target.substr(0, parsed->target.find('?'));
    if (!path.ends_with('/')) path += '/';
    prefixes_.insert({parsed->origin(), path});
  }
}

Status PeerFetchPolicy::Check(const upstream::Url& url) const {
  const std::string path = url.target.substr(0, url.target.find('?'));
  for (const auto& [origin, prefix] : prefixes_) {
    if (origin == url.origin() && path.starts_with(prefix) && SafePath(path)) return Status::Ok();
  }
  auto addresses = resolver_(url.host);
  if (!addresses.ok()) return PermissionDenied(addresses.status().message());
  if (addresses->empty()) return PermissionDenied("no address for " + url.host);
  for (const std::string& a : *addresses) {
    if (IsInternalAddress(a)) {
      return PermissionDenied("a peer may not make this agent fetch " + url.Redacted() + " (" + a +
                              " is an internal address and not a configured upstream)");
    }
  }
  return Status::Ok();
}

}  // namespace buildcache::replication
