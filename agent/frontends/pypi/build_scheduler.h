#pragma once

// One wheel build per (sdist, platform) in a cluster: the sdist's rendezvous owner schedules it.
// When a client here downloads an sdist that would start a build, the scheduler offers the build
// to the owner (OfferFn, the peer protocol's Build call, wired by the agent); the owner builds it
// or joins the build already running, and pushes the wheel and the project's wheel-house list
// back when it is done. This agent builds it itself when it is the owner, when the owner cannot
// be asked (down, unreachable: a miss is never worse than without a cluster), and when the owner
// has no builder for the platform or its queue is full. Where a build then runs (a local
// sandbox, a builder pod) is the WheelBuilder's business, not this class's.

#include <chrono>
#include <deque>
#include <functional>
#include <set>
#include <string>
#include <thread>

#include "agent/frontends/pypi/platform.h"
#include "agent/frontends/pypi/wheel_builder.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::pypi {

// What the sdist's owner said to an offered build.
struct OwnerAnswer {
  bool here = false;     // this agent is the owner: build here (owner and decision unset)
  std::string owner;     // the owner asked
  std::string decision;  // its answer: a BuildDecisionName, or "built" (a fitting wheel exists)
};

// Offers the build of `sdist` for the client with `user_agent` to the sdist's owner. Blocking
// (called on the scheduler's thread); an error when the owner could not be asked.
using OfferFn =
    std::function<Result<OwnerAnswer>(const SdistRef& sdist, const std::string& user_agent)>;

class BuildScheduler {
 public:
  // The builder must outlive the scheduler. max_pending bounds the offers waiting for the
  // thread; beyond it an offer is built here at once.
  BuildScheduler(WheelBuilder& builder, OfferFn offer, size_t max_pending = 256);
  // Finishes the offer being made (bounded by the peer call's deadline), drops the rest.
  ~BuildScheduler();

  // Returns at once; the offer runs on the scheduler's thread. An offer of the same sdist and
  // platform already waiting is not queued twice.
  void Schedule(const SdistRef& sdist, const ClientPlatform& platform, std::string user_agent)
      EXCLUDES(mu_);

  // Waits until no offer is waiting or being made (tests). False on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout) EXCLUDES(mu_);

 private:
  struct Offer {
    SdistRef sdist;
    ClientPlatform platform;
    std::string user_agent;
    std::string key;  // sha256 and platform: the pending set's key
  };
  void Run() EXCLUDES(mu_);
  void Decide(const Offer& offer);
  void BuildHere(const Offer& offer, std::string_view why);

  WheelBuilder& builder_;
  const OfferFn offer_;
  const size_t max_pending_;
  Mutex mu_;
  CondVar changed_;
  std::deque<Offer> queue_ GUARDED_BY(mu_);
  std::set<std::string> pending_ GUARDED_BY(mu_);
  size_t busy_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace buildcache::pypi
