#include "operator/controllers/wheel_build_controller.h"

#include <exception>
#include <thread>

#include "common/kube/backoff.h"
#include "common/log/log.h"
#include "operator/controllers/wheel_build_pod.h"

namespace buildcache::controllers {

WheelBuildController::WheelBuildController(kube::KubeClient* client,
                                           WheelBuildReconciler* reconciler,
                                           OperatorMetrics* metrics,
                                           WheelBuildControllerOptions options)
    : client_(client), reconciler_(reconciler), metrics_(metrics), options_(std::move(options)) {
  std::vector<std::string> namespaces = options_.namespaces;
  if (namespaces.empty()) namespaces.push_back(options_.ns);
  for (const std::string& ns : namespaces) {
    auto builds =
        std::make_unique<kube::Informer>(client_, kWheelBuilds, kube::InformerOptions{.ns = ns});
    builds->AddEventHandlers({
        .on_add = [this](const Json& o) { queue_.Add(kube::ObjectKey(o)); },
        .on_update = [this](const Json&, const Json& o) { queue_.Add(kube::ObjectKey(o)); },
        .on_delete = [this](const Json& o) { queue_.Add(kube::ObjectKey(o)); },
    });
    informers_.push_back(std::move(builds));
    auto pods = std::make_unique<kube::Informer>(
        client_, kube::resources::kPods,
        kube::InformerOptions{.ns = ns,
                              .label_selector = std::string("app.kubernetes.io/component=") +
                                                kWheelBuilderComponent});
    pods->AddEventHandlers({
        .on_add = [this](const Json& o) { EnqueueOwner(o); },
        .on_update = [this](const Json&, const Json& o) { EnqueueOwner(o); },
        .on_delete = [this](const Json& o) { EnqueueOwner(o); },
    });
    informers_.push_back(std::move(pods));
  }
}

WheelBuildController::~WheelBuildController() {
  queue_.ShutDown();
  for (auto& informer : informers_) informer->Stop();
}

void WheelBuildController::EnqueueOwner(const Json& pod) {
  const Json& meta = pod.value("metadata", Json::object());
  const Json refs = meta.is_object() ? meta.value("ownerReferences", Json::array()) : Json();
  if (!refs.is_array()) return;
  for (const Json& ref : refs) {
    if (ref.is_object() && ref.value("kind", "") == api::kWheelBuildKind &&
        ref.value("apiVersion", "") == api::kApiVersion && ref.value("controller", false)) {
      queue_.Add(kube::ObjectKey(kube::NamespaceOf(pod), ref.value("name", "")));
    }
  }
}

void WheelBuildController::Worker() {
  while (std::optional<std::string> key = queue_.Get()) {
    ReconcileOutcome outcome;
    try {
      outcome = reconciler_->Reconcile(*key);
    } catch (const std::exception& e) {
      outcome = {ReconcileResult::kError, Internal(std::string("reconcile: ") + e.what())};
    }
    metrics_->wheel_build_reconciles.With({std::string(ReconcileResultName(outcome.result))}).Inc();
    switch (outcome.result) {
      case ReconcileResult::kError:
        log::Warn("wheel build reconcile failed", {{"key", *key},
                                                   {"error", outcome.status.ToString()},
                                                   {"retries", queue_.NumRequeues(*key)}});
        queue_.AddRateLimited(*key);
        break;
      case ReconcileResult::kSuccess:
      case ReconcileResult::kInvalid:
        queue_.Forget(*key);
        if (outcome.requeue_after.count() > 0) queue_.AddAfter(*key, outcome.requeue_after);
        break;
      case ReconcileResult::kGone:
        queue_.Forget(*key);
        break;
    }
    queue_.Done(*key);
    metrics_->wheel_build_queue_depth.With().Set(static_cast<double>(queue_.Len()));
  }
}

void WheelBuildController::Run(std::stop_token stop) {
  log::Info("wheel build controller starting",
            {{"namespace", options_.ns.empty() ? "*" : options_.ns}});
  for (auto& informer : informers_) informer->Start();
  std::vector<std::thread> workers;
  for (int i = 0; i < options_.workers && !stop.stop_requested(); ++i) {
    workers.emplace_back([this] { Worker(); });
  }
  while (!stop.stop_requested()) {
    if (!synced_.load()) {
      bool synced = true;
      for (auto& informer : informers_) synced = synced && informer->HasSynced();
      if (synced) {
        synced_ = true;
        log::Info("wheel build controller synced");
      }
    }
    kube::SleepFor(std::chrono::milliseconds(500), stop);
  }
  queue_.ShutDown();
  for (std::thread& t : workers) t.join();
  for (auto& informer : informers_) informer->Stop();
  log::Info("wheel build controller stopped");
}

}  // namespace buildcache::controllers
