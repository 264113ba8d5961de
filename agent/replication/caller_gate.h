#pragma once

#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::replication {

// The caller's address in a gRPC peer string ("ipv4:10.0.0.7:41234", "ipv6:[::1]:41234", also
// percent-encoded): the address without port and brackets, an IPv4-mapped IPv6 address as
// IPv4. "" for anything else (unix sockets, garbage).
std::string CallerAddress(std::string_view grpc_peer);

// Which source addresses belong to members of this agent's cluster: the peer port's admission
// rule when replication runs without TLS (PeerServerOptions::admit). Members are HOST:PORT as
// membership lists them (addresses, or names resolved here); an address is admitted when one of
// them resolves to it. What this relies on: that a source address cannot be forged on the
// network between the agents (no spoofing across the pod network; true for TCP, whose handshake
// needs the answer to reach the claimed address) and that only agents get member addresses (the
// membership source: static list, peers file, or the DNS name of the agents' headless Service,
// which lists the agent pods' IPs). Anything that shares a member's address (another process on
// the same host or in the same pod network namespace; on loopback every local process) is
// admitted too. Thread-safe.
class MemberAddresses {
 public:
  using Resolver = std::function<Result<std::vector<std::string>>(const std::string& host)>;

  // members: the current member list (called on a refresh). resolver: host -> addresses
  // (ResolveHost by default). An address not known is looked up again at most once per
  // `refresh` (so a new member is admitted soon after it joins, and refused callers cannot make
  // the agent resolve names at their rate).
  MemberAddresses(std::function<std::vector<std::string>()> members, Resolver resolver = {},
                  std::chrono::milliseconds refresh = std::chrono::seconds(1));

  bool Admits(const std::string& address);

 private:
  void Refresh() REQUIRES(mu_);

  std::function<std::vector<std::string>()> members_;
  Resolver resolver_;
  std::chrono::milliseconds refresh_;
  Mutex mu_;
  std::set<std::string> addresses_ GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point refreshed_ GUARDED_BY(mu_);
  bool ever_ GUARDED_BY(mu_) = false;
};

}  // namespace buildcache::replication
