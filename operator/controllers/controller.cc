#include "operator/controllers/controller.h"

#include <algorithm>
#include <exception>
#include <map>
#include <thread>
#include <vector>

#include "common/kube/backoff.h"
#include "common/log/log.h"

namespace buildcache::controllers {

BuildCacheController::BuildCacheController(kube::KubeClient* client, Reconciler* reconciler,
                                           OperatorMetrics* metrics, ControllerOptions options)
    : client_(client), reconciler_(reconciler), metrics_(metrics), options_(std::move(options)) {
  buildcaches_ = std::make_unique<kube::Informer>(client_, kBuildCaches,
                                                  kube::InformerOptions{.ns = options_.ns});
  buildcaches_->AddEventHandlers({
      .on_add = [this](const Json& o) { Enqueue(o); },
      .on_update = [this](const Json&, const Json& o) { Enqueue(o); },
      // A BuildCache refused for a hostPath conflict runs once the one holding the path is gone.
      .on_delete =
          [this](const Json& o) {
            Enqueue(o);
            for (const std::string& key : buildcaches_->ListKeys()) queue_.Add(key);
          },
  });
  std::vector<std::string> owned_namespaces = options_.namespaces;
  if (owned_namespaces.empty()) owned_namespaces.push_back(options_.ns);
  for (const std::string& ns : owned_namespaces) {
    for (const kube::Resource* resource :
         {&kube::resources::kDaemonSets, &kube::resources::kConfigMaps,
          &kube::resources::kServices}) {
      auto informer = std::make_unique<kube::Informer>(
          client_, *resource,
          kube::InformerOptions{
              .ns = ns,
              .label_selector = std::string("app.kubernetes.io/managed-by=") + kManagedBy});
      informer->AddEventHandlers({
          .on_add = [this](const Json& o) { EnqueueOwner(o); },
          .on_update = [this](const Json&, const Json& o) { EnqueueOwner(o); },
          .on_delete = [this](const Json& o) { EnqueueOwner(o); },
      });
      owned_.push_back(std::move(informer));
    }
  }
  namespaces_ = std::make_unique<kube::Informer>(client_, kube::resources::kNamespaces,
                                                 kube::InformerOptions{});
  namespaces_->AddEventHandlers({
      .on_add = [this](const Json& o) { OnNamespace(nullptr, &o); },
      .on_update = [this](const Json& old, const Json& o) { OnNamespace(&old, &o); },
      .on_delete = [this](const Json& o) { OnNamespace(&o, nullptr); },
  });
}

BuildCacheController::~BuildCacheController() {
  queue_.ShutDown();
  buildcaches_->Stop();
  for (auto& informer : owned_) informer->Stop();
  namespaces_->Stop();
}

void BuildCacheController::Enqueue(const Json& object) { queue_.Add(kube::ObjectKey(object)); }

void BuildCacheController::EnqueueOwner(const Json& daemonset) {
  const Json& refs = daemonset["metadata"].value("ownerReferences", Json::array());
  for (const Json& ref : refs) {
    if (ref.value("kind", "") == api::kKind && ref.value("apiVersion", "") == api::kApiVersion &&
        ref.value("controller", false)) {
      queue_.Add(kube::ObjectKey(kube::NamespaceOf(daemonset), ref.value("name", "")));
    }
  }
}

void BuildCacheController::OnNamespace(const Json* old, const Json* now) {
  auto labels_of = [](const Json* ns) {
    std::map<std::string, std::string> labels;
    if (ns == nullptr) return labels;
    const Json& meta = ns->value("metadata", Json::object());
    const Json& l = meta.is_object() ? meta.value("labels", Json::object()) : Json();
    if (!l.is_object()) return labels;
    for (const auto& [k, v] : l.items()) {
      if (v.is_string()) labels[k] = v.get<std::string>();
    }
    return labels;
  };
  const std::map<std::string, std::string> before = labels_of(old), after = labels_of(now);
  if (old != nullptr && now != nullptr && before == after) return;  // status, annotations, ...
  for (const Json& object : buildcaches_->List()) {
    Result<api::BuildCache> cache = api::FromJson(object);
    if (!cache.ok()) continue;  // refused anyway; its reconcile reports why
    const std::optional<api::TrustedWriters>& writers = cache->spec.access.trusted_writers;
    if (!writers || !writers->namespace_selector) continue;
    const bool matched = old != nullptr && writers->namespace_selector->Matches(before);
    const bool matches = now != nullptr && writers->namespace_selector->Matches(after);
    if (matched == matches) continue;
    log::Info("namespace labels changed trusted writers",
              {{"namespace", kube::NameOf(now != nullptr ? *now : *old)},
               {"buildcache", kube::ObjectKey(object)},
               {"trusted", matches}});
    queue_.Add(kube::ObjectKey(object));
  }
}

void BuildCacheController::Worker() {
  while (std::optional<std::string> key = queue_.Get()) {
    const auto start = std::chrono::steady_clock::now();
    ReconcileOutcome outcome;
    const bool hits_only = key->starts_with(kHitStatsKeyPrefix);
    try {
      outcome = hits_only ? reconciler_->UpdateHitStats(key->substr(kHitStatsKeyPrefix.size()))
                          : reconciler_->Reconcile(*key);
    } catch (const std::exception& e) {
      // An object of a shape the reconciler did not expect (nlohmann::json type errors): retried
      // with backoff like any failure, never a crash.
      outcome = {ReconcileResult::kError, Internal(std::string("reconcile: ") + e.what())};
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics_->reconcile_duration.With().Observe(seconds);
    metrics_->reconciles.With({std::string(ReconcileResultName(outcome.result))}).Inc();
    switch (outcome.result) {
      case ReconcileResult::kError:
        log::Warn("reconcile failed", {{"key", *key},
                                       {"error", outcome.status.ToString()},
                                       {"retries", queue_.NumRequeues(*key)}});
        queue_.AddRateLimited(*key);
        break;
      case ReconcileResult::kInvalid:
        log::Warn("buildcache refused", {{"key", *key}, {"error", outcome.status.ToString()}});
        queue_.Forget(*key);
        break;
      case ReconcileResult::kSuccess:
        log::Info("reconciled", {{"key", *key}, {"seconds", seconds}});
        queue_.Forget(*key);
        if (!hits_only) {
          queue_.AddAfter(*key, outcome.requeue_after.count() > 0
                                    ? std::min(outcome.requeue_after, options_.resync)
                                    : options_.resync);
        }
        break;
      case ReconcileResult::kGone:
        queue_.Forget(*key);
        break;
    }
    queue_.Done(*key);
    metrics_->queue_depth.With().Set(static_cast<double>(queue_.Len()));
  }
}

void BuildCacheController::Run(std::stop_token stop) {
  log::Info("controller starting", {{"namespace", options_.ns.empty() ? "*" : options_.ns}});
  buildcaches_->Start();
  for (auto& informer : owned_) informer->Start();
  namespaces_->Start();
  while (!stop.stop_requested()) {
    bool synced = buildcaches_->WaitForSync(std::chrono::milliseconds(200));
    for (auto& informer : owned_) {
      synced = synced && informer->WaitForSync(std::chrono::milliseconds(200));
    }
    if (synced) break;
  }
  if (!stop.stop_requested()) {
    synced_ = true;
    log::Info("controller synced", {{"buildcaches", buildcaches_->ListKeys().size()}});
  }
  std::vector<std::thread> workers;
  for (int i = 0; i < options_.workers && !stop.stop_requested(); ++i) {
    workers.emplace_back([this] { Worker(); });
  }
  std::jthread scraper;
  if (options_.scraper != nullptr && !stop.stop_requested()) {
    scraper = std::jthread([this, stop] {
      while (!stop.stop_requested()) {
        options_.scraper->ScrapeAll(buildcaches_->List(), [this](const std::string& key) {
          queue_.Add(std::string(kHitStatsKeyPrefix) + key);
        });
        kube::SleepFor(options_.scrape_interval, stop);
      }
    });
  }
  while (!stop.stop_requested()) {
    kube::SleepFor(std::chrono::seconds(1), stop);
    metrics_->queue_depth.With().Set(static_cast<double>(queue_.Len()));
  }
  if (scraper.joinable()) scraper.join();
  queue_.ShutDown();
  for (std::thread& t : workers) t.join();
  buildcaches_->Stop();
  for (auto& informer : owned_) informer->Stop();
  namespaces_->Stop();
  log::Info("controller stopped");
}

}  // namespace buildcache::controllers
