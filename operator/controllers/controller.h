#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "common/kube/informer.h"
#include "common/kube/kube_client.h"
#include "common/kube/work_queue.h"
#include "operator/controllers/hit_ratio.h"
#include "operator/controllers/metrics_catalog.h"
#include "operator/controllers/reconciler.h"

namespace buildcache::controllers {

struct ControllerOptions {
  std::string ns{};  // the namespace to watch; "" for all
  // When set, the owned objects (DaemonSets, ConfigMaps, Services) are watched in these
  // namespaces only (the operator's RBAC may not reach others; ReconcilerOptions::namespaces).
  std::vector<std::string> namespaces{};
  int workers = 2;
  // Every BuildCache is reconciled again this long after its last successful reconcile, so drift
  // in objects no informer watches (ConfigMap, Services) is corrected too.
  std::chrono::seconds resync{std::chrono::minutes(10)};
  // When set, a thread of its own scrapes every BuildCache's agents this often and queues the
  // BuildCaches whose hit ratio changed (the Reconciler reads the scraper's latest stats), so
  // slow or unreachable agents never hold up a reconcile.
  HitRatioScraper* scraper = nullptr;
  std::chrono::milliseconds scrape_interval{std::chrono::seconds(30)};
};

// The BuildCache controller: informers on BuildCaches and on the objects the operator manages
// (DaemonSets, ConfigMaps, Services) feed a WorkQueue of BuildCache keys ("namespace/name");
// workers hand each key to the Reconciler. A failed reconcile is retried with the queue's per-key
// exponential backoff; a refused spec (kInvalid) is not retried until the BuildCache changes.
class BuildCacheController {
 public:
  // Queue keys with this prefix ("hits:NS/NAME") only write the hit ratio
  // (Reconciler::UpdateHitStats): a scrape does not re-apply every BuildCache's objects.
  static constexpr std::string_view kHitStatsKeyPrefix = "hits:";

  BuildCacheController(kube::KubeClient* client, Reconciler* reconciler, OperatorMetrics* metrics,
                       ControllerOptions options);
  ~BuildCacheController();

  // Runs until stop is requested: starts the informers, waits for their first lists, runs the
  // workers; on stop shuts the queue down and waits for the workers. Call at most once.
  void Run(std::stop_token stop);

  // True once every informer has listed (and so every BuildCache is queued).
  bool synced() const { return synced_.load(); }
  size_t queue_depth() const { return queue_.Len(); }

 private:
  void Enqueue(const Json& object);
  void EnqueueOwner(const Json& daemonset);
  // A namespace was added (old null), changed or deleted (now null): queues the BuildCaches whose
  // spec.access.trustedWriters.namespaceSelector matched it before and does not now, or the
  // reverse (the reconciler renders that selector into the agents' namespace list).
  void OnNamespace(const Json* old, const Json* now);
  void Worker();

  kube::KubeClient* client_;
  Reconciler* reconciler_;
  OperatorMetrics* metrics_;
  ControllerOptions options_;
  kube::WorkQueue queue_;
  std::unique_ptr<kube::Informer> buildcaches_;
  // DaemonSets, ConfigMaps and Services labelled managed-by=buildcache-operator: a change (a
  // manual edit, or DaemonSet status) queues the owning BuildCache.
  std::vector<std::unique_ptr<kube::Informer>> owned_;
  // Every namespace: a label change reaches the agents' identity configuration promptly rather
  // than at the next resync. Not part of synced(): the BuildCaches are queued at start anyway.
  std::unique_ptr<kube::Informer> namespaces_;
  std::atomic<bool> synced_{false};
};

}  // namespace buildcache::controllers
