#pragma once

#include "agent/replication/membership.h"
#include "agent/replication/observer.h"
#include "agent/replication/peer_client.h"
#include "agent/upstream/upstream.h"

namespace buildcache::replication {

// upstream::PeerSource over the cluster: an artifact is fetched upstream by its first live owner
// only. Any other agent sends Fetch to the owners in rendezvous order (skipping those marked down)
// until one streams it; reaching itself in that order means it is the first live owner and
// fetches itself (kFailedPrecondition). A peer failing mid-stream hands over to the next owner,
// skipping the bytes already delivered. A Fetch served for a peer never forwards further. An
// artifact without an expected digest is never asked for (kFailedPrecondition at once): owners
// refuse to fetch what they cannot verify.
class ClusterPeerSource : public upstream::PeerSource {
 public:
  ClusterPeerSource(Cluster& cluster, PeerClient& client, ReplicationObserver observer);

  Status Fetch(const upstream::Artifact& artifact,
               const std::function<Status(const upstream::UpstreamResponse&)>& on_head,
               const std::function<Status(std::string_view)>& on_data) override;

 private:
  Cluster& cluster_;
  PeerClient& client_;
  ReplicationObserver observer_;
};

}  // namespace buildcache::replication
