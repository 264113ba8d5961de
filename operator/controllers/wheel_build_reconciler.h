#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/kube/event_recorder.h"
#include "common/kube/kube_client.h"
#include "operator/api/wheelbuild.h"
#include "operator/controllers/reconciler.h"

namespace buildcache::controllers {

// wheelbuilds.buildcache.io/v1alpha1.
extern const kube::Resource kWheelBuilds;

struct WheelBuildReconcilerOptions {
  // The namespaces where the operator runs BuildCaches (ReconcilerOptions::namespaces); a
  // WheelBuild elsewhere is Failed without a pod. Empty: every namespace.
  std::vector<std::string> namespaces{};
  // A finished WheelBuild the agent did not delete is deleted this long after completion.
  std::chrono::seconds finished_ttl{std::chrono::hours(1)};
  // Any WheelBuild is deleted this long after creation + spec.deadlineSeconds (its agent died).
  std::chrono::seconds abandoned_grace{std::chrono::minutes(10)};
  std::function<std::chrono::system_clock::time_point()> now = std::chrono::system_clock::now;
};

// Level-based reconcile of one WheelBuild by "namespace/name" (operator/controllers/README.md,
// "Wheel builds"):
//   1. Gone or being deleted: done (the pod goes with it: it is owned).
//   2. Past its garbage-collection time (finished_ttl after completion when finished, else
//      abandoned_grace after creation + deadline): deleted.
//   3. Finished: nothing more (requeued for step 2).
//   4. A pod exists: it must be owned by this WheelBuild (else Failed); status mirrors it
//      (StatusFromPod); a pod whose image cannot be pulled is deleted once the build is Failed.
//   5. No pod: after one existed (status.podName), Failed; else the checks
//      (api::ValidateWheelBuild, the namespace, ValidateAgainstCache against the BuildCache and
//      its agent pods) and, when they pass, the pod is created (BuildWheelBuildPod). A refused
//      WheelBuild becomes Failed with the reason in status.message and gets no pod.
// Each phase change records an Event on the WheelBuild (Warning for Failed).
// Thread-safe as long as each key is reconciled by one thread at a time.
class WheelBuildReconciler {
 public:
  WheelBuildReconciler(kube::KubeClient* client, kube::EventRecorder* events,
                       WheelBuildReconcilerOptions options);

  // kSuccess with requeue_after set to when the object should be looked at again (its
  // garbage-collection time); kInvalid when it was refused (Failed); kError to retry.
  ReconcileOutcome Reconcile(const std::string& key);

 private:
  // When the object is to be deleted: finished_ttl after completion when it finished, else
  // abandoned_grace after creation + its deadline; nullopt when its timestamps do not say.
  std::optional<std::chrono::system_clock::time_point> CollectAt(
      const Json& object, const api::WheelBuildStatus& status) const;
  // Writes status when it changed and records an event for a phase change.
  Status WriteStatus(const Json& object, const api::WheelBuildStatus& old,
                     const api::WheelBuildStatus& status);
  ReconcileOutcome Fail(const Json& object, const api::WheelBuildStatus& old,
                        const std::string& reason, const std::string& message);
  ReconcileOutcome CreatePod(const Json& object, const api::WheelBuild& build,
                             const api::WheelBuildStatus& old);
  ReconcileOutcome Settled(const Json& object, const api::WheelBuildStatus& status) const;
  void Event(const Json& object, kube::EventType type, std::string_view reason,
             const std::string& note);
  bool Manages(const std::string& ns) const;

  kube::KubeClient* client_;
  kube::EventRecorder* events_;
  WheelBuildReconcilerOptions options_;
};

}  // namespace buildcache::controllers
