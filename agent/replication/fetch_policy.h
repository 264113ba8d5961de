#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "agent/upstream/url.h"
#include "common/status/status.h"

namespace buildcache::replication {

// Which URLs this agent fetches when a peer asks it to (the peer protocol's Fetch). A peer names
// the URL itself, and the answer is streamed back to it, so without a check anyone who reaches
// the peer port could read internal endpoints through the agent: the cloud metadata service, the
// API server, services on the node's loopback. Allowed:
// - a URL on the origin (scheme, host, port) of an upstream this agent is configured with;
// - any other URL whose host resolves to no internal address (IsInternalAddress; package files
//   often live on another host than the index, and hosting moves).
// Everything else is kPermissionDenied, which the asking agent takes as "fetch it yourself".
// Applied to every redirect too (upstream::FetchOptions::check_target). Residual risk: a host
// whose DNS answer changes between this check and the fetcher's own lookup.
class PeerFetchPolicy {
 public:
  // The addresses a host name resolves to (getaddrinfo by default), as text.
  using Resolver = std::function<Result<std::vector<std::string>>(const std::string& host)>;

  // upstream_urls: the configured upstream base URLs; entries that do not parse are ignored.
  explicit PeerFetchPolicy(const std::vector<std::string>& upstream_urls, Resolver resolver = {});

  Status Check(const upstream::Url& url) const;

 private:
  std::set<std::string> origins_;
  Resolver resolver_;
};

// Whether an IPv4 or IPv6 address (text) is one a peer must not reach through this agent:
// loopback, private (RFC 1918), link-local (cloud metadata), carrier-grade NAT, unspecified,
// "this network", protocol-assignment, benchmarking, multicast and reserved IPv4 ranges; every
// IPv6 address outside global unicast 2000::/3 (loopback, link-local, unique local, multicast);
// IPv4-mapped IPv6 addresses by their IPv4 address. Text that is not an address counts as
// internal.
bool IsInternalAddress(const std::string& address);

}  // namespace buildcache::replication
