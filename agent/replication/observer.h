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
};

}  // namespace buildcache::replication
