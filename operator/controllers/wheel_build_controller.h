#pragma once

#include <atomic>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "common/kube/informer.h"
#include "common/kube/kube_client.h"
#include "common/kube/work_queue.h"
#include "operator/controllers/metrics_catalog.h"
#include "operator/controllers/wheel_build_reconciler.h"

namespace buildcache::controllers {

struct WheelBuildControllerOptions {
  std::string ns{};  // the namespace to watch; "" for all
  // When set, WheelBuilds and builder pods are watched in these namespaces only (the operator's
  // RBAC may not reach others).
  std::vector<std::string> namespaces{};
  int workers = 1;
};

// The WheelBuild controller: informers on WheelBuilds and on builder pods (labelled
// app.kubernetes.io/component=wheel-builder, mapped to their controlling WheelBuild) feed a
// WorkQueue of WheelBuild keys; workers hand each to the WheelBuildReconciler. Errors are retried
// with per-key backoff; every key is looked at again when the reconciler asks (its
// garbage-collection time). Runs beside the BuildCache controller, under the same leadership.
class WheelBuildController {
 public:
  // metrics outlives the controller.
  WheelBuildController(kube::KubeClient* client, WheelBuildReconciler* reconciler,
                       OperatorMetrics* metrics, WheelBuildControllerOptions options);
  ~WheelBuildController();

  // Runs until stop is requested. Call at most once. A cluster without the WheelBuild CRD only
  // logs the informer's failed lists (retried with backoff).
  void Run(std::stop_token stop);

  bool synced() const { return synced_.load(); }
  size_t queue_depth() const { return queue_.Len(); }

 private:
  void EnqueueOwner(const Json& pod);
  void Worker();

  kube::KubeClient* client_;
  WheelBuildReconciler* reconciler_;
  OperatorMetrics* metrics_;
  WheelBuildControllerOptions options_;
  kube::WorkQueue queue_;
  std::vector<std::unique_ptr<kube::Informer>> informers_;
  std::atomic<bool> synced_{false};
};

}  // namespace buildcache::controllers
