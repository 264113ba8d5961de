#include "agent/replication/caller_gate.h"

#include <arpa/inet.h>

#include <cstring>

#include "agent/replication/fetch_policy.h"
#include "common/net/host_port.h"

namespace buildcache::replication {

namespace {

std::string PercentDecode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      auto hex = [](char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      int hi = hex(in[i + 1]);
      int lo = hex(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi << 4 | lo));
        i += 2;
        continue;
      }
    }
    out.push_back(in[i]);
  }
  return out;
}

// The canonical text of an address, IPv4-mapped IPv6 as IPv4; "" when not an address.
std::string Canonical(const std::string& address) {
  in_addr v4{};
  char text[INET6_ADDRSTRLEN] = {};
  if (::inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    ::inet_ntop(AF_INET, &v4, text, sizeof text);
    return text;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, address.c_str(), &v6) != 1) return "";
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(v6.s6_addr, kMapped, 12) == 0) {
    std::memcpy(&v4, v6.s6_addr + 12, 4);
    ::inet_ntop(AF_INET, &v4, text, sizeof text);
    return text;
  }
  ::inet_ntop(AF_INET6, &v6, text, sizeof text);
  return text;
}

// HOST of HOST:PORT or [V6]:PORT.
std::string HostOf(const std::string& member) { return std::string(net::BareHost(member)); }

}  // namespace

std::string CallerAddress(std::string_view grpc_peer) {
  std::string peer = PercentDecode(grpc_peer);
  std::string_view rest = peer;
  if (!rest.starts_with("ipv4:") && !rest.starts_with("ipv6:")) return "";
  rest.remove_prefix(5);
  std::string host(net::BareHost(rest));
  size_t zone = host.find('%');
  if (zone != std::string::npos) host.resize(zone);
  return Canonical(host);
}

MemberAddresses::MemberAddresses(std::function<std::vector<std::string>()> members,
                                 Resolver resolver, std::chrono::milliseconds refresh)
    : members_(std::move(members)),
      resolver_(resolver ? std::move(resolver) : Resolver(ResolveHost)),
      refresh_(refresh) {}

bool MemberAddresses::Admits(const std::string& address) {
  const std::string canonical = Canonical(address);
  if (canonical.empty()) return false;
  MutexLock lock(mu_);
  if (addresses_.contains(canonical)) return true;
  const auto now = std::chrono::steady_clock::now();
  if (ever_ && now - refreshed_ < refresh_) return false;
  Refresh();
  refreshed_ = now;
  ever_ = true;
  return addresses_.contains(canonical);
}

void MemberAddresses::Refresh() {
  std::set<std::string> fresh;
  bool failed = false;
  for (const std::string& member : members_()) {
    const std::string host = HostOf(member);
    if (host.empty()) continue;
    if (std::string literal = Canonical(host); !literal.empty()) {
      fresh.insert(literal);
      continue;
    }
    auto resolved = resolver_(host);
    if (!resolved.ok()) {
      failed = true;
      continue;
    }
    for (const std::string& a : *resolved) {
      if (std::string c = Canonical(a); !c.empty()) fresh.insert(c);
    }
  }
  // A name that does not resolve right now keeps what the last refresh admitted.
  if (failed) fresh.insert(addresses_.begin(), addresses_.end());
  addresses_ = std::move(fresh);
}

}  // namespace buildcache::replication
