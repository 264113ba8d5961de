#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include "common/base/thread_annotations.h"
#include "common/kube/kube_client.h"

namespace buildcache::kube {

struct LeaderElectionConfig {
  // The coordination.k8s.io/v1 Lease that is the lock.
  std::string lease_namespace{};
  std::string lease_name{};
  // This candidate's identity, unique among candidates (pod name plus a random suffix).
  std::string identity{};

  // How long a lease lasts without renewal before another candidate may take it. Candidates
  // measure it on their own clock from the moment they saw the lease change, so clock skew
  // between machines does not matter.
  std::chrono::milliseconds lease_duration{std::chrono::seconds(15)};
  // How long the leader keeps retrying a failed renewal before it gives up leadership. Must be
  // shorter than lease_duration so it stops acting before anyone else may start.
  std::chrono::milliseconds renew_deadline{std::chrono::seconds(10)};
  // The pause between attempts to acquire or renew (each stretched by up to 20% jitter).
  std::chrono::milliseconds retry_period{std::chrono::seconds(2)};
  // On shutdown (stop requested while leading), give the lease up so a successor need not wait
  // for it to expire.
  bool release_on_cancel = true;

  // Runs on its own thread when this candidate becomes leader; `leading` is stop-requested when
  // leadership ends (lost or shut down), and Run waits for it to return.
  std::function<void(std::stop_token leading)> on_started_leading{};
  // Called after leading ends (after on_started_leading returned).
  std::function<void()> on_stopped_leading{};
  // Called whenever the observed leader changes (also to this candidate's own identity).
  std::function<void(const std::string& identity)> on_new_leader{};
};

// Leader election over a Lease, with client-go's algorithm: a candidate takes the lease when it is
// free, released, or not renewed for lease_duration; the leader renews it every retry_period and
// stops leading when it could not renew for renew_deadline. Updates are optimistic (the Lease's
// resourceVersion), so two candidates never both win the same round.
class LeaderElector {
 public:
  // Checks the configuration: names and identity set, lease_duration > renew_deadline >
  // 1.2 * retry_period > 0, on_started_leading set.
  static Result<std::unique_ptr<LeaderElector>> Create(KubeClient* client,
                                                       LeaderElectionConfig config);

  // Campaigns until leader, then leads until leadership is lost or stop is requested. Returns
  // after leading ended (or when stopped before ever leading). Call at most once.
  void Run(std::stop_token stop);

  bool IsLeader() const;
  // The identity holding the lease as last observed ("" when none or unknown).
  std::string leader() const;

 private:
  LeaderElector(KubeClient* client, LeaderElectionConfig config);

  // One attempt to take or renew the lease. True when this candidate holds it afterwards.
  bool TryAcquireOrRenew();
  void Release();
  std::chrono::milliseconds Jittered(std::chrono::milliseconds d);
  void Observe(const Json& spec, const std::string& resource_version);

  KubeClient* client_;
  LeaderElectionConfig config_;

  mutable Mutex mu_;
  Json observed_spec_ GUARDED_BY(mu_);            // the Lease spec as last seen
  std::string observed_version_ GUARDED_BY(mu_);  // its resourceVersion
  // When it last changed, on our clock.
  std::chrono::steady_clock::time_point observed_time_ GUARDED_BY(mu_);
  std::string reported_leader_ GUARDED_BY(mu_);
  bool leading_ GUARDED_BY(mu_) = false;
};

}  // namespace buildcache::kube
