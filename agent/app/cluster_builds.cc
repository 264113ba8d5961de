#include "agent/app/cluster_builds.h"

#include <algorithm>

#include "agent/frontends/pypi/pypi_frontend.h"
#include "common/log/log.h"

namespace buildcache::agent {
namespace {

// Bounds of the bookkeeping: builds with waiters, and pushes queued.
constexpr size_t kMaxWaitedBuilds = 4096;
constexpr size_t kMaxPushes = 4096;

}  // namespace

ClusterBuilds::ClusterBuilds(replication::Cluster& cluster, replication::PeerClient& client,
                             store::BlobStore& local)
    : cluster_(cluster), client_(client), local_(local) {
  pusher_ = std::thread([this] { PushLoop(); });
}

ClusterBuilds::~ClusterBuilds() {
  {
    MutexLock lock(mu_);
    stop_ = true;
    changed_.NotifyAll();
  }
  pusher_.join();
}

void ClusterBuilds::SetFrontend(pypi::PypiFrontend* frontend) { frontend_.store(frontend); }

Result<pypi::OwnerAnswer> ClusterBuilds::Offer(const pypi::SdistRef& sdist,
                                               const std::string& user_agent) {
  std::vector<std::string> owners = cluster_.Owners(sdist.store_key);
  pypi::OwnerAnswer answer;
  if (owners.empty() || owners.front() == cluster_.self()) {
    answer.here = true;
    return answer;
  }
  const std::string& owner = owners.front();
  if (!cluster_.IsLive(owner)) return Unavailable("owner " + owner + " is marked down");
  replication::PeerBuildCall call;
  call.project = sdist.project;
  call.filename = sdist.filename;
  call.sha256 = sdist.sha256;
  call.user_agent = user_agent;
  call.requester = cluster_.self();
  auto reply = client_.Build(owner, call);
  if (!reply.ok()) {
    if (reply.status().code() == StatusCode::kUnavailable ||
        reply.status().code() == StatusCode::kDeadlineExceeded) {
      cluster_.ReportFailure(owner);
    }
    return reply.status();
  }
  cluster_.ReportSuccess(owner);
  answer.owner = owner;
  answer.decision = reply->decision;
  return answer;
}

Result<replication::PeerBuildReply> ClusterBuilds::Serve(const replication::PeerBuildCall& call) {
  pypi::PypiFrontend* frontend = frontend_.load();
  if (frontend == nullptr) return Unavailable("the PyPI front end is not running yet");
  BC_ASSIGN_OR_RETURN(auto build, frontend->BuildForPeer(call.project, call.filename, call.sha256,
                                                         call.user_agent));
  // Only members get pushes: a caller cannot make this agent send to an address of its choice.
  std::vector<std::string> peers = cluster_.Peers();
  const bool member = std::find(peers.begin(), peers.end(), call.requester) != peers.end();
  log::Info("pypi build offer served", {{"project", call.project},
                                        {"sdist", call.filename},
                                        {"requester", call.requester},
                                        {"member", member},
                                        {"decision", build.decision},
                                        {"id", build.id}});
  if (member && build.decision == "built") {
    Enqueue(Push{call.requester, call.project, build.wheel});
  } else if (member && !build.id.empty() &&
             (build.decision == pypi::BuildDecisionName(pypi::BuildDecision::kStarted) ||
              build.decision == pypi::BuildDecisionName(pypi::BuildDecision::kDeduplicated))) {
    MutexLock lock(mu_);
    if (waiters_.size() < kMaxWaitedBuilds || waiters_.contains(build.id)) {
      waiters_[build.id].insert(call.requester);
    }
  }
  return replication::PeerBuildReply{build.decision, build.id, build.wheel};
}

void ClusterBuilds::OnFinished(const pypi::BuildRecord& record) {
  std::set<std::string> waiting;
  {
    MutexLock lock(mu_);
    auto it = waiters_.find(record.id);
    if (it == waiters_.end()) return;
    waiting = std::move(it->second);
    waiters_.erase(it);
  }
  if (record.state != pypi::BuildRecord::State::kSucceeded) return;
  for (const std::string& peer : waiting) Enqueue(Push{peer, record.project, record.wheel});
}

void ClusterBuilds::Enqueue(Push push) {
  MutexLock lock(mu_);
  if (pushes_.size() >= kMaxPushes) {
    log::Warn("pypi build push dropped", {{"peer", push.peer}, {"wheel", push.wheel}});
    return;
  }
  pushes_.push_back(std::move(push));
  changed_.NotifyAll();
}

void ClusterBuilds::PushLoop() {
  for (;;) {
    Push push;
    {
      MutexLock lock(mu_);
      while (pushes_.empty() && !stop_) changed_.Wait(mu_);
      if (stop_) return;
      push = std::move(pushes_.front());
      pushes_.pop_front();
    }
    PushOne(push);
  }
}

void ClusterBuilds::PushOne(const Push& push) {
  pypi::PypiFrontend* frontend = frontend_.load();
  if (frontend == nullptr) return;
  // The wheel before the list that names it: a peer that reads the list has the wheel.
  const std::string keys[] = {frontend->wheel_house().FileKey(push.project, push.wheel),
                              frontend->wheel_house().IndexKey(push.project)};
  for (const std::string& key : keys) {
    auto reader = local_.OpenForRelay(key);
    Result<bool> stored =
        reader.ok() ? client_.Put(push.peer, key, **reader) : Result<bool>(reader.status());
    if (!stored.ok()) {
      log::Warn("pypi build push failed",
                {{"peer", push.peer}, {"key", key}, {"error", stored.status().ToString()}});
      return;
    }
  }
  log::Info("pypi built wheel pushed", {{"peer", push.peer}, {"wheel", push.wheel}});
}

}  // namespace buildcache::agent
