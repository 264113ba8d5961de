#include "agent/replication/fetch_policy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <cstring>

namespace buildcache::replication {
namespace {

Result<std::vector<std::string>> SystemResolve(const std::string& host) {
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

}  // namespace

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

PeerFetchPolicy::PeerFetchPolicy(const std::vector<std::string>& upstream_urls, Resolver resolver)
    : resolver_(resolver ? std::move(resolver) : Resolver(SystemResolve)) {
  for (const std::string& u : upstream_urls) {
    std::string_view url = u;
    if (url.starts_with("sparse+")) url.remove_prefix(7);  // Cargo's index URL form
    if (auto parsed = upstream::ParseUrl(url); parsed.ok()) origins_.insert(parsed->origin());
  }
}

Status PeerFetchPolicy::Check(const upstream::Url& url) const {
  if (origins_.contains(url.origin())) return Status::Ok();
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
