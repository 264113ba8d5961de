#pragma once

#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/upstream/url.h"
#include "common/status/status.h"

namespace buildcache::replication {

// Which URLs this agent fetches when a peer asks it to (the peer protocol's Fetch). A peer names
// the URL itself, and the answer is streamed back to it, so without a check anyone who reaches
// the peer port could read internal endpoints through the agent: the cloud metadata service, the
// API server, services on the node's loopback, other repositories of an internal registry.
// Allowed:
// - a URL under a configured upstream prefix: the same origin (scheme, host, port) and a path
//   below the prefix's path, with no "." or ".." segment and no encoded '/' or '\\' (which a
//   server could resolve outside the prefix). The agent configures each front end's upstream
//   URL, and for PyPI and Cargo its parent directory too (files and crate downloads live beside
//   the index: ".../simple/" and ".../packages/", ".../index/" and ".../api/v1/crates/");
// - any other URL whose host resolves to no internal address (IsInternalAddress; package files
//   often live on another host than the index, and hosting moves).
// Everything else is kPermissionDenied, which the asking agent takes as "fetch it yourself".
// Applied to every redirect too (upstream::FetchOptions::check_target). Residual risk: a host
// whose DNS answer changes between this check and the fetcher's own lookup.
class PeerFetchPolicy {
 public:
  // The addresses a host name resolves to (getaddrinfo by default), as text.
  using Resolver = std::function<Result<std::vector<std::string>>(const std::string& host)>;

  // upstream_prefixes: URL prefixes that may be fetched (see above; a "sparse+" prefix is
  // dropped); entries that do not parse are ignored.
  explicit PeerFetchPolicy(const std::vector<std::string>& upstream_prefixes,
                           Resolver resolver = {});

  Status Check(const upstream::Url& url) const;

 private:
  std::set<std::pair<std::string, std::string>> prefixes_;  // (origin, path ending in '/')
  Resolver resolver_;
};

// The URL of the directory above url's last path segment ("https://h/a/simple/" and
// "https://h/a/simple" give "https://h/a/"); url itself when it has no such parent.
std::string ParentUrl(std::string_view url);

// What a peer may ask this agent to fetch, by front end. The front end must be one this agent
// runs (the label also names metrics, so a peer cannot make up new series), and the store key
// must be the one that front end gives the URL, so an object fetched for a peer lands under the
// name the front end itself would look it up by.
struct PeerFetchRule {
  enum class Kind {
    // key = key_prefix + P and url = upstream + P (Maven repository paths).
    kUpstreamPath,
    // key = key_prefix + D/F[/H]: the URL's last path segment (percent-decoded, without query)
    // is F + suffix; with digest_segment, H is the hex of the first 16 bytes of one expected
    // digest (PyPI files and core metadata, npm tarballs).
    kFileName,
    // key = key_prefix + CRATE/VERSION: the URL's decoded path holds both (Cargo downloads,
    // whose URL template is the registry's).
    kCrate,
  };
  std::string frontend;
  std::string key_prefix;
  Kind kind = Kind::kFileName;
  std::string upstream;  // kUpstreamPath
  std::string suffix;    // kFileName
  bool digest_segment = false;
};

class PeerFetchRules {
 public:
  explicit PeerFetchRules(std::vector<PeerFetchRule> rules) : rules_(std::move(rules)) {}
  // OK when a rule of artifact.frontend admits its key and URL; kInvalidArgument naming what is
  // wrong otherwise (an unknown front end, a key no rule covers, a key that does not fit the URL).
  Status Check(const std::string& frontend, const std::string& key, const std::string& url,
               const std::vector<std::string>& expected_raw) const;

 private:
  std::vector<PeerFetchRule> rules_;
};

// Whether an IPv4 or IPv6 address (text) is one a peer must not reach through this agent:
// loopback, private (RFC 1918), link-local (cloud metadata), carrier-grade NAT, unspecified,
// "this network", protocol-assignment, benchmarking, multicast and reserved IPv4 ranges; every
// IPv6 address outside global unicast 2000::/3 (loopback, link-local, unique local, multicast);
// IPv4-mapped IPv6 addresses by their IPv4 address. Text that is not an address counts as
// internal.
bool IsInternalAddress(const std::string& address);

// The addresses (text) `host` resolves to through getaddrinfo; a literal address resolves to
// itself. kUnavailable when it does not resolve.
Result<std::vector<std::string>> ResolveHost(const std::string& host);

}  // namespace buildcache::replication
