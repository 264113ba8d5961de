#include "operator/controllers/wheel_build_reconciler.h"

#include <algorithm>

#include "common/kube/kube_time.h"
#include "common/log/log.h"
#include "operator/controllers/owned_objects.h"
#include "operator/controllers/wheel_build_pod.h"

namespace buildcache::controllers {

const kube::Resource kWheelBuilds{api::kGroup, api::kVersion, api::kWheelBuildPlural,
                                  api::kWheelBuildKind, true};

namespace {

using kube::EventType;

std::string LabelSelectorText(const Json& labels) {
  std::string out;
  for (const auto& [k, v] : labels.items()) {
    out += (out.empty() ? "" : ",") + k + "=" + v.get<std::string>();
  }
  return out;
}

bool OwnedBy(const Json& pod, const std::string& uid) {
  const Json& meta = pod.value("metadata", Json::object());
  const Json refs = meta.is_object() ? meta.value("ownerReferences", Json::array()) : Json();
  if (!refs.is_array()) return false;
  return std::any_of(refs.begin(), refs.end(), [&](const Json& ref) {
    return ref.is_object() && ref.value("uid", "") == uid && ref.value("controller", false) &&
           ref.value("kind", "") == api::kWheelBuildKind;
  });
}

}  // namespace

WheelBuildReconciler::WheelBuildReconciler(kube::KubeClient* client, kube::EventRecorder* events,
                                           WheelBuildReconcilerOptions options)
    : client_(client), events_(events), options_(std::move(options)) {}

bool WheelBuildReconciler::Manages(const std::string& ns) const {
  return options_.namespaces.empty() ||
         std::find(options_.namespaces.begin(), options_.namespaces.end(), ns) !=
             options_.namespaces.end();
}

void WheelBuildReconciler::Event(const Json& object, EventType type, std::string_view reason,
                                 const std::string& note) {
  if (events_ == nullptr) return;
  Json ref = object;
  ref["apiVersion"] = api::kApiVersion;
  ref["kind"] = api::kWheelBuildKind;
  (void)events_->Record(ref, type, reason, "Build", note);
}

std::optional<std::chrono::system_clock::time_point> WheelBuildReconciler::CollectAt(
    const Json& object, const api::WheelBuildStatus& status) const {
  if (status.Finished() && !status.completion_time.empty()) {
    if (auto done = kube::ParseTime(status.completion_time); done.ok()) {
      return *done + options_.finished_ttl;
    }
  }
  const Json& deadline = object.contains("spec") && object["spec"].is_object()
                             ? object["spec"].value("deadlineSeconds", Json())
                             : Json();
  const std::string created = kube::StringAt(object, {"metadata", "creationTimestamp"});
  if (auto c = kube::ParseTime(created); c.ok()) {
    const int64_t seconds =
        deadline.is_number_integer()
            ? std::clamp(deadline.get<int64_t>(), int64_t{0}, api::kMaxBuildDeadlineSeconds)
            : api::kMaxBuildDeadlineSeconds;
    return *c + std::chrono::seconds(seconds) + options_.abandoned_grace;
  }
  return std::nullopt;
}

ReconcileOutcome WheelBuildReconciler::Settled(const Json& object,
                                               const api::WheelBuildStatus& status) const {
  ReconcileOutcome out{ReconcileResult::kSuccess, Status::Ok()};
  if (auto at = CollectAt(object, status)) {
    auto left = std::chrono::ceil<std::chrono::seconds>(*at - options_.now());
    out.requeue_after = std::max(left, std::chrono::seconds(1));
  }
  return out;
}

Status WheelBuildReconciler::WriteStatus(const Json& object, const api::WheelBuildStatus& old,
                                         const api::WheelBuildStatus& status) {
  if (status == old) return Status::Ok();
  Result<Json> written =
      client_->MergePatch(kWheelBuilds, kube::NamespaceOf(object), kube::NameOf(object),
                          api::WheelBuildStatusToJson(status), "status");
  if (!written.ok()) return written.status().WithContext("write status");
  if (status.phase != old.phase) {
    log::Info(
        "wheel build phase",
        {{"key", kube::ObjectKey(object)}, {"phase", status.phase}, {"message", status.message}});
    if (status.phase == api::kPhaseFailed) {
      Event(object, EventType::kWarning, "Failed", status.message);
    } else {
      Event(object, EventType::kNormal, status.phase,
            "builder pod " + status.pod_name + " is " + status.phase);
    }
  }
  return Status::Ok();
}

ReconcileOutcome WheelBuildReconciler::Fail(const Json& object, const api::WheelBuildStatus& old,
                                            const std::string& reason, const std::string& message) {
  api::WheelBuildStatus status = old;
  status.phase = api::kPhaseFailed;
  // status.message holds at most 4096 bytes (the CRD).
  status.message = (reason + ": " + message).substr(0, 4000);
  if (status.completion_time.empty()) status.completion_time = kube::FormatTime(options_.now());
  if (Status s = WriteStatus(object, old, status); !s.ok()) return {ReconcileResult::kError, s};
  log::Warn("wheel build refused",
            {{"key", kube::ObjectKey(object)}, {"reason", reason}, {"message", message}});
  ReconcileOutcome out = Settled(object, status);
  out.result = ReconcileResult::kInvalid;
  out.status = FailedPrecondition(status.message);
  return out;
}

ReconcileOutcome WheelBuildReconciler::Reconcile(const std::string& key) {
  std::string ns, name;
  kube::SplitObjectKey(key, &ns, &name);
  Result<Json> got = client_->Get(kWheelBuilds, ns, name);
  if (!got.ok()) {
    if (kube::IsNotFound(got.status())) return {ReconcileResult::kGone, Status::Ok()};
    return {ReconcileResult::kError, got.status().WithContext("get WheelBuild")};
  }
  const Json& object = *got;
  if (!kube::StringAt(object, {"metadata", "deletionTimestamp"}).empty()) {
    return {ReconcileResult::kGone, Status::Ok()};
  }
  const api::WheelBuildStatus old = api::WheelBuildStatusFromJson(object);
  if (auto at = CollectAt(object, old); at && *at <= options_.now()) {
    Status s = client_->Delete(
        kWheelBuilds, ns, name,
        {.propagation_policy = "Background", .precondition_uid = kube::UidOf(object)});
    if (!s.ok() && !kube::IsNotFound(s)) return {ReconcileResult::kError, s};
    log::Info("wheel build collected", {{"key", key}, {"phase", old.phase}});
    return {ReconcileResult::kGone, Status::Ok()};
  }
  if (old.Finished()) return Settled(object, old);

  Result<api::WheelBuild> build = api::WheelBuildFromJson(object);
  if (!build.ok()) return Fail(object, old, "InvalidSpec", build.status().message());
  if (!Manages(ns)) {
    return Fail(object, old, "NamespaceNotManaged",
                "the operator runs no BuildCaches in namespace " + ns);
  }

  Result<Json> pod = client_->Get(kube::resources::kPods, ns, name);
  if (!pod.ok() && !kube::IsNotFound(pod.status())) {
    return {ReconcileResult::kError, pod.status().WithContext("get Pod")};
  }
  if (!pod.ok()) {
    if (!old.pod_name.empty()) {
      return Fail(object, old, "PodDeleted",
                  "builder pod " + old.pod_name + " was deleted before the build finished");
    }
    return CreatePod(object, *build, old);
  }
  if (!OwnedBy(*pod, build->uid)) {
    return Fail(object, old, "PodConflict",
                "a pod named " + name + " exists and is not this WheelBuild's");
  }
  api::WheelBuildStatus status = StatusFromPod(*pod, old, kube::FormatTime(options_.now()));
  if (status.phase == api::kPhaseFailed) {
    const std::string pod_phase = kube::StringAt(*pod, {"status", "phase"});
    if (pod_phase != "Failed" && pod_phase != "Succeeded") {
      // An image that cannot be pulled: stop the kubelet's retries now rather than at the
      // deadline.
      Status s =
          client_->Delete(kube::resources::kPods, ns, name, {.propagation_policy = "Background"});
      if (!s.ok() && !kube::IsNotFound(s)) return {ReconcileResult::kError, s};
    }
  }
  if (Status s = WriteStatus(object, old, status); !s.ok()) return {ReconcileResult::kError, s};
  return Settled(object, status);
}

ReconcileOutcome WheelBuildReconciler::CreatePod(const Json& object, const api::WheelBuild& build,
                                                 const api::WheelBuildStatus& old) {
  std::optional<api::BuildCache> cache;
  Result<Json> cache_json = client_->Get(kBuildCaches, build.ns, build.spec.build_cache);
  if (cache_json.ok()) {
    Result<api::BuildCache> parsed = api::FromJson(*cache_json);
    if (!parsed.ok()) return Fail(object, old, "InvalidBuildCache", parsed.status().message());
    cache = std::move(parsed).value();
  } else if (!kube::IsNotFound(cache_json.status())) {
    return {ReconcileResult::kError, cache_json.status().WithContext("get BuildCache")};
  }
  std::vector<Json> agent_pods;
  if (cache) {
    Result<Json> listed =
        client_->List(kube::resources::kPods, build.ns,
                      {.label_selector = LabelSelectorText(SelectorLabels(*cache))});
    if (!listed.ok()) return {ReconcileResult::kError, listed.status().WithContext("list pods")};
    for (const Json& p : listed->value("items", Json::array())) agent_pods.push_back(p);
  }
  Result<const api::PypiBuilder*> builder =
      ValidateAgainstCache(build, cache ? &*cache : nullptr, agent_pods);
  if (!builder.ok()) return Fail(object, old, "Refused", builder.status().message());

  Result<Json> created =
      client_->Create(kube::resources::kPods, BuildWheelBuildPod(build, *cache, **builder));
  if (!created.ok()) {
    if (kube::IsAlreadyExists(created.status())) {
      return {ReconcileResult::kError, created.status()};  // the next reconcile reads it
    }
    const std::optional<kube::ApiError> error = kube::GetApiError(created.status());
    const int code = error ? error->code : 0;
    if (code == 403 || code == 422 || code == 400) {
      // Pod Security admission, a quota or a malformed image name: retrying cannot help.
      return Fail(object, old, "PodRejected", created.status().message());
    }
    return {ReconcileResult::kError, created.status().WithContext("create Pod")};
  }
  Event(object, EventType::kNormal, "PodCreated",
        "builder pod " + build.name + " runs " + (*builder)->image + " (builder " +
            (*builder)->name + ")");
  api::WheelBuildStatus status = old;
  status.phase = api::kPhasePending;
  status.pod_name = build.name;
  status.message.clear();
  if (Status s = WriteStatus(object, old, status); !s.ok()) return {ReconcileResult::kError, s};
  return Settled(object, status);
}

}  // namespace buildcache::controllers
