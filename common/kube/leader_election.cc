#include "common/kube/leader_election.h"

#include <random>
#include <thread>

#include "common/kube/backoff.h"
#include "common/kube/kube_time.h"
#include "common/log/log.h"

namespace buildcache::kube {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

int64_t Seconds(milliseconds d) {
  return std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::seconds>(d).count());
}

std::string HolderOf(const Json& spec) { return StringAt(spec, {"holderIdentity"}); }

}  // namespace

Result<std::unique_ptr<LeaderElector>> LeaderElector::Create(KubeClient* client,
                                                             LeaderElectionConfig config) {
  if (client == nullptr) return InvalidArgument("leader election: no client");
  if (config.lease_namespace.empty() || config.lease_name.empty()) {
    return InvalidArgument("leader election: the lease namespace and name are required");
  }
  if (config.identity.empty()) return InvalidArgument("leader election: an identity is required");
  if (config.retry_period.count() <= 0) {
    return InvalidArgument("leader election: retry_period must be positive");
  }
  if (config.lease_duration <= config.renew_deadline) {
    return InvalidArgument("leader election: lease_duration must be longer than renew_deadline");
  }
  if (config.renew_deadline.count() <= config.retry_period.count() * 12 / 10) {
    return InvalidArgument(
        "leader election: renew_deadline must be longer than 1.2 * retry_period");
  }
  if (!config.on_started_leading) {
    return InvalidArgument("leader election: on_started_leading is required");
  }
  return std::unique_ptr<LeaderElector>(new LeaderElector(client, std::move(config)));
}

LeaderElector::LeaderElector(KubeClient* client, LeaderElectionConfig config)
    : client_(client), config_(std::move(config)) {}

bool LeaderElector::IsLeader() const {
  MutexLock lock(mu_);
  return leading_;
}

std::string LeaderElector::leader() const {
  MutexLock lock(mu_);
  return HolderOf(observed_spec_);
}

milliseconds LeaderElector::Jittered(milliseconds d) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> extra(0.0, 0.2);
  return milliseconds(static_cast<int64_t>(static_cast<double>(d.count()) * (1.0 + extra(rng))));
}

void LeaderElector::Observe(const Json& spec, const std::string& resource_version) {
  std::string holder;
  bool changed_leader = false;
  {
    MutexLock lock(mu_);
    if (spec != observed_spec_ || resource_version != observed_version_) {
      observed_spec_ = spec;
      observed_version_ = resource_version;
      observed_time_ = steady_clock::now();
    }
    holder = HolderOf(spec);
    if (holder != reported_leader_) {
      reported_leader_ = holder;
      changed_leader = !holder.empty();
    }
  }
  if (changed_leader) {
    log::Info("new leader observed",
              {{"lease", config_.lease_namespace + "/" + config_.lease_name}, {"leader", holder}});
    if (config_.on_new_leader) config_.on_new_leader(holder);
  }
}

bool LeaderElector::TryAcquireOrRenew() {
  const auto now_wall = std::chrono::system_clock::now();
  const std::string now_text = FormatMicroTime(now_wall);
  auto lease = client_->Get(resources::kLeases, config_.lease_namespace, config_.lease_name);
  if (!lease.ok()) {
    if (!IsNotFound(lease.status())) {
      log::Warn("lease read failed", {{"error", lease.status().ToString()}});
      return false;
    }
    Json fresh = {
        {"apiVersion", "coordination.k8s.io/v1"},
        {"kind", "Lease"},
        {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
        {"spec",
         {{"holderIdentity", config_.identity},
          {"leaseDurationSeconds", Seconds(config_.lease_duration)},
          {"acquireTime", now_text},
          {"renewTime", now_text},
          {"leaseTransitions", 0}}}};
    auto created = client_->Create(resources::kLeases, fresh);
    if (!created.ok()) {
      if (!IsAlreadyExists(created.status())) {
        log::Warn("lease create failed", {{"error", created.status().ToString()}});
      }
      return false;
    }
    Observe((*created)["spec"], ResourceVersionOf(*created));
    return true;
  }

  Json spec =
      lease->contains("spec") && (*lease)["spec"].is_object() ? (*lease)["spec"] : Json::object();
  Observe(spec, ResourceVersionOf(*lease));
  std::string holder = HolderOf(spec);
  bool mine = holder == config_.identity;
  if (!holder.empty() && !mine) {
    milliseconds duration = config_.lease_duration;
    if (spec.contains("leaseDurationSeconds") && spec["leaseDurationSeconds"].is_number_integer()) {
      duration = std::chrono::seconds(spec["leaseDurationSeconds"].get<int64_t>());
    }
    MutexLock lock(mu_);
    if (observed_time_ + duration > steady_clock::now()) return false;  // held, and not expired
  }

  int64_t transitions = 0;
  if (spec.contains("leaseTransitions") && spec["leaseTransitions"].is_number_integer()) {
    transitions = spec["leaseTransitions"].get<int64_t>();
  }
  Json next = spec;
  next["holderIdentity"] = config_.identity;
  next["leaseDurationSeconds"] = Seconds(config_.lease_duration);
  next["renewTime"] = now_text;
  if (!mine) {
    next["acquireTime"] = now_text;
    next["leaseTransitions"] = transitions + 1;
  }
  Json updated_lease = *lease;
  updated_lease["spec"] = next;  // keeps metadata.resourceVersion: a concurrent change conflicts
  auto updated = client_->Update(resources::kLeases, updated_lease);
  if (!updated.ok()) {
    if (!IsConflict(updated.status())) {
      log::Warn("lease update failed", {{"error", updated.status().ToString()}});
    }
    return false;
  }
  Observe((*updated)["spec"], ResourceVersionOf(*updated));
  return true;
}

void LeaderElector::Release() {
  auto lease = client_->Get(resources::kLeases, config_.lease_namespace, config_.lease_name);
  if (!lease.ok() || StringAt(*lease, {"spec", "holderIdentity"}) != config_.identity) return;
  std::string now_text = FormatMicroTime(std::chrono::system_clock::now());
  Json released = *lease;
  released["spec"]["holderIdentity"] = nullptr;
  released["spec"]["leaseDurationSeconds"] = 1;
  released["spec"]["renewTime"] = now_text;
  auto updated = client_->Update(resources::kLeases, released);
  if (!updated.ok()) {
    log::Warn("lease release failed", {{"error", updated.status().ToString()}});
    return;
  }
  log::Info("lease released", {{"lease", config_.lease_namespace + "/" + config_.lease_name},
                               {"identity", config_.identity}});
  Observe((*updated)["spec"], ResourceVersionOf(*updated));
}

void LeaderElector::Run(std::stop_token stop) {
  const std::string lease_name = config_.lease_namespace + "/" + config_.lease_name;
  // Campaign.
  while (!TryAcquireOrRenew()) {
    if (!SleepFor(Jittered(config_.retry_period), stop)) return;
  }
  if (stop.stop_requested()) {
    if (config_.release_on_cancel) Release();
    return;
  }
  {
    MutexLock lock(mu_);
    leading_ = true;
  }
  log::Info("became leader", {{"lease", lease_name}, {"identity", config_.identity}});
  std::stop_source leading;
  std::jthread worker([this, token = leading.get_token()] { config_.on_started_leading(token); });

  // Lead: renew every retry_period; give up after renew_deadline without a successful renewal.
  bool lost = false;
  while (!stop.stop_requested()) {
    if (!SleepFor(config_.retry_period, stop)) break;
    auto deadline = steady_clock::now() + config_.renew_deadline;
    bool renewed = false;
    while (!stop.stop_requested()) {
      if (TryAcquireOrRenew()) {
        renewed = true;
        break;
      }
      if (steady_clock::now() + config_.retry_period > deadline) break;
      if (!SleepFor(config_.retry_period, stop)) break;
    }
    if (stop.stop_requested()) break;
    if (!renewed) {
      lost = true;
      break;
    }
  }
  if (lost) {
    log::Warn("leadership lost", {{"lease", lease_name}, {"identity", config_.identity}});
  }
  {
    MutexLock lock(mu_);
    leading_ = false;
  }
  leading.request_stop();
  worker.join();
  if (!lost && config_.release_on_cancel) Release();
  if (config_.on_stopped_leading) config_.on_stopped_leading();
}

}  // namespace buildcache::kube
