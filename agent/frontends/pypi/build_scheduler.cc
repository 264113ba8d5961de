#include "agent/frontends/pypi/build_scheduler.h"

#include "common/log/log.h"

namespace buildcache::pypi {

BuildScheduler::BuildScheduler(WheelBuilder& builder, OfferFn offer, size_t max_pending)
    : builder_(builder), offer_(std::move(offer)), max_pending_(max_pending) {
  thread_ = std::thread([this] { Run(); });
}

BuildScheduler::~BuildScheduler() {
  {
    MutexLock lock(mu_);
    stop_ = true;
    changed_.NotifyAll();
  }
  thread_.join();
}

void BuildScheduler::Schedule(const SdistRef& sdist, const ClientPlatform& platform,
                              std::string user_agent) {
  Offer offer{sdist, platform, std::move(user_agent), sdist.sha256 + "\n" + platform.Key()};
  {
    MutexLock lock(mu_);
    if (pending_.contains(offer.key)) return;
    if (queue_.size() < max_pending_ && !stop_) {
      pending_.insert(offer.key);
      queue_.push_back(std::move(offer));
      changed_.NotifyAll();
      return;
    }
  }
  BuildHere(offer, "too many offers waiting");
}

void BuildScheduler::Run() {
  for (;;) {
    Offer offer;
    {
      MutexLock lock(mu_);
      while (queue_.empty() && !stop_) changed_.Wait(mu_);
      if (stop_) return;
      offer = std::move(queue_.front());
      queue_.pop_front();
      ++busy_;
    }
    Decide(offer);
    MutexLock lock(mu_);
    --busy_;
    pending_.erase(offer.key);
    changed_.NotifyAll();
  }
}

void BuildScheduler::Decide(const Offer& offer) {
  Result<OwnerAnswer> answer = offer_(offer.sdist, offer.user_agent);
  if (!answer.ok()) {
    BuildHere(offer, "the owner could not be asked: " + answer.status().ToString());
    return;
  }
  if (answer->here) {
    BuildHere(offer, "");
    return;
  }
  // The owner cannot build it now: this agent does, as it would without a cluster.
  if (answer->decision == BuildDecisionName(BuildDecision::kNoBuilder) ||
      answer->decision == BuildDecisionName(BuildDecision::kQueueFull)) {
    BuildHere(offer, "the owner answered " + answer->decision);
    return;
  }
  log::Info("pypi build offered", {{"project", offer.sdist.project},
                                   {"version", offer.sdist.version},
                                   {"sdist_sha256", offer.sdist.sha256},
                                   {"platform", offer.platform.Key()},
                                   {"owner", answer->owner},
                                   {"decision", answer->decision}});
}

void BuildScheduler::BuildHere(const Offer& offer, std::string_view why) {
  BuildDecision decision = builder_.Request(offer.sdist, offer.platform);
  if (why.empty()) return;
  log::Info("pypi build kept here", {{"project", offer.sdist.project},
                                     {"version", offer.sdist.version},
                                     {"sdist_sha256", offer.sdist.sha256},
                                     {"reason", std::string(why)},
                                     {"decision", std::string(BuildDecisionName(decision))}});
}

bool BuildScheduler::WaitIdle(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(mu_);
  while (!queue_.empty() || busy_ > 0) {
    if (!changed_.WaitUntil(mu_, deadline) && std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
  }
  return true;
}

}  // namespace buildcache::pypi
