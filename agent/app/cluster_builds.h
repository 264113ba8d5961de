#pragma once

// The agent's side of one wheel build per (sdist, platform) in the cluster
// (agent/frontends/pypi/build_scheduler.h): a build this agent would start is offered to the
// sdist's rendezvous owner over the peer protocol (Offer); builds peers offer are answered by
// the PyPI front end (Serve); and when a build peers asked for succeeded, its wheel and the
// project's wheel-house list are pushed to them (OnFinished), so their clients see the wheel
// without waiting for anything else.

#include <atomic>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "agent/frontends/pypi/build_scheduler.h"
#include "agent/frontends/pypi/wheel_builder.h"
#include "agent/replication/membership.h"
#include "agent/replication/peer_client.h"
#include "agent/store/blob_store.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::pypi {
class PypiFrontend;
}

namespace buildcache::agent {

class ClusterBuilds {
 public:
  // `local` is the agent's local store (pushes read from it). All three must outlive this.
  ClusterBuilds(replication::Cluster& cluster, replication::PeerClient& client,
                store::BlobStore& local);
  // Stops the push thread (pushes still queued are dropped: the requesters' next offer asks
  // again, and replication reaches the owners anyway).
  ~ClusterBuilds();

  // The front end that answers offers (Serve answers kUnavailable before it is set).
  void SetFrontend(pypi::PypiFrontend* frontend);

  // pypi::OfferFn: `here` when this agent is the first owner of the sdist's store key; an error
  // when the owner is marked down or the call failed (the caller then builds itself).
  Result<pypi::OwnerAnswer> Offer(const pypi::SdistRef& sdist, const std::string& user_agent);

  // replication::PeerServerHooks::build. The requester is remembered (when it is a member) for
  // the build's wheel to be pushed to it; with "built", the wheel is pushed at once.
  Result<replication::PeerBuildReply> Serve(const replication::PeerBuildCall& call);

  // pypi::WheelBuildOptions::on_finished.
  void OnFinished(const pypi::BuildRecord& record);

 private:
  struct Push {
    std::string peer;
    std::string project;
    std::string wheel;
  };
  void Enqueue(Push push) EXCLUDES(mu_);
  void PushLoop() EXCLUDES(mu_);
  void PushOne(const Push& push);

  replication::Cluster& cluster_;
  replication::PeerClient& client_;
  store::BlobStore& local_;
  std::atomic<pypi::PypiFrontend*> frontend_{nullptr};

  Mutex mu_;
  CondVar changed_;
  // Peers waiting for a build, by build id.
  std::map<std::string, std::set<std::string>> waiters_ GUARDED_BY(mu_);
  std::deque<Push> pushes_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread pusher_;
};

}  // namespace buildcache::agent
