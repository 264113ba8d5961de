#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

namespace buildcache::replication {

// What the agent's metrics catalog counts; the replication layer stays free of metrics. Every
// member may be empty; called without locks held.
struct ReplicationObserver {
  // One request to a peer for an object this agent lacks (Get or Fetch): "hit" (streamed and
  // verified), "miss" (the peer does not have it) or "error" (unreachable, timed out, bad data).
  std::function<void(std::string_view outcome)> on_peer_request;
  // Object bytes moved between this agent and a peer: direction "in" or "out".
  std::function<void(std::string_view direction, std::string_view peer, uint64_t bytes)> on_bytes;
  // A peer sent bytes that do not match the digest or size it announced.
  std::function<void(std::string_view peer)> on_corrupt;
  // One push of a new object to an owner finished: "stored", "declined" (the owner had it or no
  // room), "error" (to be retried) or "dropped" (the queue was full or retries ran out).
  std::function<void(std::string_view outcome)> on_push;
  // The peer server refused a call: call is the RPC ("Has", "Get", "Fetch", "Put",
  // "GetManifest"); reason is "not_member" (the caller's address is no member's), "bad_key" (a
  // Put whose bytes cannot be what the key names), "unverifiable" (a Fetch without a digest) or
  // "bad_request" (a Fetch whose front end, key or URL this agent would not use).
  std::function<void(std::string_view call, std::string_view reason)> on_refused;
};

}  // namespace buildcache::replication
