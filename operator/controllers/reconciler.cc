#include "operator/controllers/reconciler.h"

#include <algorithm>
#include <utility>

#include "common/kube/api_error.h"
#include "common/kube/kube_time.h"
#include "common/log/log.h"
#include "operator/controllers/admin_token.h"
#include "operator/controllers/agent_identity.h"
#include "operator/controllers/upstream_secrets.h"
#include "operator/controllers/wheel_build_pod.h"

namespace buildcache::controllers {

const kube::Resource kBuildCaches{api::kGroup, api::kVersion, api::kPlural, api::kKind, true};
const kube::Resource kClusterRoleBindings{"rbac.authorization.k8s.io", "v1", "clusterrolebindings",
                                          "ClusterRoleBinding", false};
const kube::Resource kRoleBindings{"rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding",
                                   true};

namespace {

using kube::EventType;

// The status as stored, read without validating the spec (an invalid spec still has a status).
api::BuildCacheStatus StoredStatus(const Json& object) {
  api::BuildCacheStatus status;
  if (!object.contains("status") || !object["status"].is_object()) return status;
  const Json& st = object["status"];
  status.observed_generation = st.value("observedGeneration", int64_t{0});
  if (st.contains("conditions") && st["conditions"].is_array()) {
    for (const Json& c : st["conditions"]) {
      if (!c.is_object()) continue;
      status.conditions.push_back({c.value("type", ""), c.value("status", ""),
                                   c.value("reason", ""), c.value("message", ""),
                                   c.value("lastTransitionTime", ""),
                                   c.value("observedGeneration", int64_t{0})});
    }
  }
  if (st.contains("nodes") && st["nodes"].is_object()) {
    status.desired_nodes = st["nodes"].value("desired", 0);
    status.ready_nodes = st["nodes"].value("ready", 0);
  }
  status.hit_ratio = st.value("hitRatio", "");
  status.identity = st.value("identity", "");
  if (st.contains("ecosystems") && st["ecosystems"].is_array()) {
    for (const Json& e : st["ecosystems"]) {
      if (!e.is_object()) continue;
      const Json& lookups = e.value("lookups", Json());
      status.ecosystems.push_back(
          {e.value("name", ""), e.value("hitRatio", ""),
           lookups.is_number_integer() ? lookups.get<int64_t>() : int64_t{0}});
    }
  }
  status.top_namespaces = api::TopNamespacesFromJson(st);
  return status;
}

int64_t GenerationOf(const Json& object) {
  if (!object.contains("metadata")) return 0;
  return object["metadata"].value("generation", int64_t{0});
}

std::vector<std::string> FinalizersOf(const Json& object) {
  std::vector<std::string> out;
  if (object.contains("metadata") && object["metadata"].contains("finalizers") &&
      object["metadata"]["finalizers"].is_array()) {
    for (const Json& f : object["metadata"]["finalizers"]) {
      if (f.is_string()) out.push_back(f.get<std::string>());
    }
  }
  return out;
}

int32_t IntAt(const Json& object, const char* field) {
  if (!object.contains("status") || !object["status"].is_object()) return 0;
  const Json& v = object["status"].value(field, Json());
  return v.is_number_integer() ? v.get<int32_t>() : 0;
}

}  // namespace

std::string_view ReconcileResultName(ReconcileResult result) {
  switch (result) {
    case ReconcileResult::kSuccess:
      return "success";
    case ReconcileResult::kError:
      return "error";
    case ReconcileResult::kInvalid:
      return "invalid";
    case ReconcileResult::kGone:
      return "gone";
  }
  return "unknown";
}

void SetCondition(std::vector<api::Condition>* conditions, api::Condition condition,
                  const std::vector<api::Condition>& previous) {
  for (const api::Condition& old : previous) {
    if (old.type == condition.type && old.status == condition.status &&
        !old.last_transition_time.empty()) {
      condition.last_transition_time = old.last_transition_time;
    }
  }
  for (api::Condition& c : *conditions) {
    if (c.type == condition.type) {
      c = std::move(condition);
      return;
    }
  }
  conditions->push_back(std::move(condition));
}

api::BuildCacheStatus ComputeStatus(int64_t generation, const Json& daemonset,
                                    const std::vector<api::Condition>& previous,
                                    const std::string& now) {
  api::BuildCacheStatus status;
  status.observed_generation = generation;
  const int32_t desired = IntAt(daemonset, "desiredNumberScheduled");
  const int32_t ready = IntAt(daemonset, "numberReady");
  const int32_t updated = IntAt(daemonset, "updatedNumberScheduled");
  const int64_t ds_generation = GenerationOf(daemonset);
  const int64_t ds_observed = daemonset.contains("status") && daemonset["status"].is_object()
                                  ? daemonset["status"].value("observedGeneration", int64_t{0})
                                  : 0;
  status.desired_nodes = desired;
  status.ready_nodes = ready;

  const bool template_seen = ds_observed >= ds_generation && ds_generation > 0;
  const bool rolled_out = template_seen && updated >= desired;
  auto cond = [&](const char* type, bool value, std::string reason, std::string message) {
    SetCondition(
        &status.conditions,
        {type, value ? "True" : "False", std::move(reason), std::move(message), now, generation},
        previous);
  };
  const std::string counts =
      std::to_string(ready) + " of " + std::to_string(desired) + " agents ready";
  if (!template_seen) {
    cond("Ready", false, "AgentsNotReady",
         "waiting for the DaemonSet controller to observe the agent DaemonSet; " + counts);
  } else if (desired == 0) {
    cond("Ready", false, "NoNodes", "no node matches the nodeSelector and tolerations");
  } else if (ready < desired || !rolled_out) {
    cond("Ready", false, "AgentsNotReady", counts);
  } else {
    cond("Ready", true, "AllAgentsReady", counts);
  }
  if (rolled_out) {
    cond("Progressing", false, "RolloutComplete", "every agent runs the current configuration");
  } else {
    cond("Progressing", true, "RollingOut",
         std::to_string(updated) + " of " + std::to_string(desired) +
             " agents run the current configuration");
  }
  cond("Degraded", false, "AsExpected", "the agent objects match the spec");
  return status;
}

Reconciler::Reconciler(kube::KubeClient* client, kube::EventRecorder* events,
                       ReconcilerOptions options)
    : client_(client), events_(events), options_(std::move(options)) {}

void Reconciler::Event(const Json& object, EventType type, std::string_view reason,
                       const std::string& note) {
  if (events_ == nullptr) return;
  Json ref = object;
  ref["apiVersion"] = api::kApiVersion;
  ref["kind"] = api::kKind;
  (void)events_->Record(ref, type, reason, "Reconcile", note);
}

Status Reconciler::WriteStatus(const Json& object, const api::BuildCacheStatus& status) {
  Json wanted = api::StatusToJson(status);
  if (wanted == api::StatusToJson(StoredStatus(object))) return Status::Ok();
  Result<Json> written = client_->MergePatch(kBuildCaches, kube::NamespaceOf(object),
                                             kube::NameOf(object), {{"status", wanted}}, "status");
  if (!written.ok()) return written.status().WithContext("write status");
  return Status::Ok();
}

void Reconciler::ReportFailure(const Json& object, const std::string& reason,
                               const std::string& message) {
  api::BuildCacheStatus old = StoredStatus(object);
  api::BuildCacheStatus status = old;
  const std::string now = kube::FormatTime(options_.now());
  const int64_t generation = GenerationOf(object);
  status.observed_generation = generation;
  SetCondition(&status.conditions, {"Ready", "False", reason, message, now, generation},
               old.conditions);
  SetCondition(&status.conditions, {"Degraded", "True", reason, message, now, generation},
               old.conditions);
  if (Status s = WriteStatus(object, status); !s.ok()) {
    log::Warn("status write failed", {{"key", kube::ObjectKey(object)}, {"error", s.ToString()}});
  }
  Event(object, EventType::kWarning, reason, message);
}

std::variant<Json, ReconcileOutcome> Reconciler::GetBuildCache(const std::string& key) {
  std::string ns, name;
  kube::SplitObjectKey(key, &ns, &name);
  Result<Json> got = client_->Get(kBuildCaches, ns, name);
  if (got.ok()) return std::move(got).value();
  if (kube::IsNotFound(got.status())) return ReconcileOutcome{ReconcileResult::kGone, Status::Ok()};
  return ReconcileOutcome{ReconcileResult::kError, got.status().WithContext("get BuildCache")};
}

ReconcileOutcome Reconciler::Reconcile(const std::string& key) {
  auto got = GetBuildCache(key);
  if (auto* stop = std::get_if<ReconcileOutcome>(&got)) return *stop;
  Json object = std::get<Json>(std::move(got));
  object["apiVersion"] = api::kApiVersion;
  object["kind"] = api::kKind;

  if (object["metadata"].contains("deletionTimestamp")) return Finalize(object);
  // Before the finalizer: the operator has no rights on this namespace's agent objects, so it
  // neither creates any nor has any to clean up.
  if (!Manages(kube::NamespaceOf(object))) return RefuseNamespace(object);
  if (std::optional<ReconcileOutcome> stop = EnsureFinalizer(object)) return *stop;

  Result<api::BuildCache> cache = api::FromJson(object);
  if (!cache.ok()) {
    ReportFailure(object, "InvalidSpec", cache.status().message());
    return {ReconcileResult::kInvalid, cache.status()};
  }
  if (std::optional<ReconcileOutcome> stop = CheckAdmissible(object, *cache)) return *stop;
  if (Status s = ResolveTrustedNamespaces(&*cache); !s.ok()) {
    return {ReconcileResult::kError, s.WithContext("list namespaces for trustedWriters")};
  }

  std::string peer_tls_hash;
  if (cache->spec.replication.mutual_tls) {
    Result<std::string> synced = SyncPeerTls(*cache);
    if (!synced.ok()) return WriteFailure(object, "peer certificates", synced.status());
    peer_tls_hash = *synced;
  }
  if (Status s = SyncAdminToken(*cache); !s.ok()) return WriteFailure(object, "admin token", s);

  // Missing credentials do not stop the agents: they serve everything else, and the kubelet
  // mounts the Secret when it appears.
  const std::vector<std::string> credential_problems = CheckUpstreamSecrets(*cache);
  auto applied = ApplyOwnedObjects(object, *cache, peer_tls_hash);
  if (auto* stop = std::get_if<ReconcileOutcome>(&applied)) return *stop;
  ReconcileOutcome outcome =
      UpdateStatus(key, object, *cache, std::get<Json>(applied), credential_problems);
  if (outcome.result == ReconcileResult::kSuccess && !credential_problems.empty()) {
    outcome.requeue_after = std::chrono::seconds(30);
  }
  return outcome;
}

std::vector<std::string> Reconciler::CheckUpstreamSecrets(const api::BuildCache& cache) {
  std::vector<std::string> problems;
  for (const auto& [ecosystem, ref] : UpstreamSecretRefs(cache)) {
    Result<Json> got = client_->Get(kube::resources::kSecrets, cache.ns, ref.name);
    std::string problem;
    if (got.ok()) {
      problem = UpstreamSecretProblem(cache, ecosystem, ref, *got);
    } else if (kube::IsNotFound(got.status())) {
      problem = UpstreamSecretProblem(cache, ecosystem, ref, Json::object());
    } else {
      problem = "spec.ecosystems." + ecosystem + ".upstreamSecretRef: Secret " + cache.ns + "/" +
                ref.name + " could not be looked up: " + got.status().message();
    }
    if (!problem.empty()) problems.push_back(std::move(problem));
  }
  return problems;
}

ReconcileOutcome Reconciler::RefuseNamespace(const Json& object) {
  std::string managed;
  for (const std::string& ns : options_.namespaces) managed += (managed.empty() ? "" : ", ") + ns;
  Status why = PermissionDenied("BuildCaches are run only in the namespaces " + managed +
                                " (the chart's rbac.buildCacheNamespaces); create it in one "
                                "of them");
  ReportFailure(object, "NamespaceNotManaged", why.message());
  return {ReconcileResult::kInvalid, why};
}

std::optional<ReconcileOutcome> Reconciler::EnsureFinalizer(Json& object) {
  std::vector<std::string> finalizers = FinalizersOf(object);
  if (std::find(finalizers.begin(), finalizers.end(), kFinalizer) != finalizers.end()) {
    return std::nullopt;
  }
  finalizers.push_back(kFinalizer);
  // The resourceVersion makes the patch fail (conflict, retried) if the list changed meanwhile.
  Json patch = {
      {"metadata",
       {{"finalizers", finalizers}, {"resourceVersion", kube::ResourceVersionOf(object)}}}};
  Result<Json> patched =
      client_->MergePatch(kBuildCaches, kube::NamespaceOf(object), kube::NameOf(object), patch);
  if (!patched.ok()) {
    return ReconcileOutcome{ReconcileResult::kError, patched.status().WithContext("add finalizer")};
  }
  object = std::move(patched).value();
  object["apiVersion"] = api::kApiVersion;
  object["kind"] = api::kKind;
  return std::nullopt;
}

std::optional<ReconcileOutcome> Reconciler::CheckAdmissible(const Json& object,
                                                            api::BuildCache& cache) {
  if (Status s = ApplyPolicy(&cache, options_.policy, options_.build); !s.ok()) {
    return Refuse(object, cache,
                  s.code() == StatusCode::kPermissionDenied ? "NotAllowed" : "SumdbNotNamed", s);
  }
  std::optional<HostPathClaim> mine = ClaimOf(object);
  if (!mine) return std::nullopt;
  Result<std::vector<HostPathClaim>> claims = ListClaims();
  if (!claims.ok()) return ReconcileOutcome{ReconcileResult::kError, claims.status()};
  std::optional<HostPathClaim> first = EarlierOverlappingClaim(*mine, *claims);
  if (!first) return std::nullopt;
  return Refuse(
      object, cache, "HostPathConflict",
      FailedPrecondition("storage.hostPath " + mine->host_path + " overlaps " + first->host_path +
                         " of BuildCache " + first->key +
                         ", which claimed it first: two agents on one node directory lose each "
                         "other's data; give this BuildCache a hostPath of its own (or none, for "
                         "the default) by creating it anew"));
}

ReconcileOutcome Reconciler::WriteFailure(const Json& object, const std::string& what,
                                          const Status& s) {
  // The API server refused the object itself (a node selector or toleration that is no valid
  // label, say): retrying cannot help until the spec changes.
  if (kube::IsInvalid(s)) {
    ReportFailure(object, "ObjectRejected", what + ": " + s.message());
    return {ReconcileResult::kInvalid, s};
  }
  ReportFailure(object, "ApplyFailed", what + ": " + s.message());
  return {ReconcileResult::kError, s.WithContext(what)};
}

std::variant<Json, ReconcileOutcome> Reconciler::ApplyOwnedObjects(
    const Json& object, const api::BuildCache& cache, const std::string& peer_tls_hash) {
  const kube::ApplyOptions apply{options_.field_manager, /*force=*/true};
  Json daemonset;
  std::vector<std::pair<const kube::Resource*, Json>> objects = {
      {&kube::resources::kConfigMaps, BuildConfigMap(cache)},
      {&kube::resources::kServices, BuildPeerService(cache)},
      {&kube::resources::kServices, BuildService(cache)},
      {&kube::resources::kDaemonSets, BuildDaemonSet(cache, options_.build, peer_tls_hash)},
  };
  if (cache.spec.access.network_policy) {
    objects.emplace_back(&kube::resources::kNetworkPolicies,
                         BuildNetworkPolicy(cache, options_.build));
  } else {
    // Turned off (or never on): NotFound is the usual answer.
    Status s = client_->Delete(kube::resources::kNetworkPolicies, cache.ns,
                               NetworkPolicyName(cache), {.propagation_policy = "Background"});
    if (!s.ok() && !kube::IsNotFound(s)) {
      ReportFailure(object, "ApplyFailed", "delete NetworkPolicy: " + s.message());
      return ReconcileOutcome{ReconcileResult::kError, s.WithContext("delete NetworkPolicy")};
    }
  }
  if (HasPodBuilders(cache)) {
    // Before the DaemonSet: its agents create WheelBuilds as soon as they run.
    objects.insert(objects.begin(),
                   {{&kRoleBindings, BuildAgentWheelBuildRoleBinding(
                                         cache, options_.build.WheelBuildClusterRole())},
                    {&kube::resources::kNetworkPolicies, BuildWheelBuildersNetworkPolicy(cache)}});
  } else {
    for (const auto& [resource, object_name] :
         {std::pair{&kRoleBindings, AgentWheelBuildRoleBindingName(cache)},
          std::pair{&kube::resources::kNetworkPolicies, WheelBuildersNetworkPolicyName(cache)}}) {
      Status s =
          client_->Delete(*resource, cache.ns, object_name, {.propagation_policy = "Background"});
      if (!s.ok() && !kube::IsNotFound(s)) {
        ReportFailure(object, "ApplyFailed",
                      "delete " + resource->Describe() + " " + object_name + ": " + s.message());
        return ReconcileOutcome{ReconcileResult::kError, s.WithContext("delete " + object_name)};
      }
    }
  }
  if (cache.spec.access.IdentityEnabled() || HasPodBuilders(cache)) {
    // The ServiceAccount before the DaemonSet whose pods run as it.
    objects.insert(objects.begin(),
                   {&kube::resources::kServiceAccounts, BuildAgentServiceAccount(cache)});
  }
  if (cache.spec.access.IdentityEnabled()) {
    objects.insert(
        objects.begin() + 1,
        {&kClusterRoleBindings, BuildAgentRoleBinding(cache, options_.build.agent_cluster_role)});
  } else if (Status s = client_->Delete(kClusterRoleBindings, "", AgentRoleBindingName(cache),
                                        {.propagation_policy = "Background"});
             !s.ok() && !kube::IsNotFound(s)) {
    // Turned off (or never on): the agents lose their rights on pods.
    ReportFailure(object, "ApplyFailed", "delete ClusterRoleBinding: " + s.message());
    return ReconcileOutcome{ReconcileResult::kError, s.WithContext("delete ClusterRoleBinding")};
  }
  for (const auto& [resource, wanted] : objects) {
    Result<Json> applied = client_->Apply(*resource, wanted, apply);
    if (!applied.ok()) {
      return WriteFailure(object,
                          "apply " + wanted["kind"].get<std::string>() + " " + kube::NameOf(wanted),
                          applied.status());
    }
    if (resource == &kube::resources::kDaemonSets) daemonset = std::move(applied).value();
  }
  return daemonset;
}

ReconcileOutcome Reconciler::UpdateStatus(const std::string& key, const Json& object,
                                          const api::BuildCache& cache, const Json& daemonset,
                                          const std::vector<std::string>& credential_problems) {
  api::BuildCacheStatus old = StoredStatus(object);
  const std::string now = kube::FormatTime(options_.now());
  api::BuildCacheStatus status = ComputeStatus(cache.generation, daemonset, old.conditions, now);
  if (!UpstreamSecretRefs(cache).empty()) {
    std::string problems;
    for (const std::string& p : credential_problems) problems += (problems.empty() ? "" : "; ") + p;
    SetCondition(&status.conditions,
                 problems.empty()
                     ? api::Condition{"UpstreamCredentials", "True", "SecretsFound",
                                      "every upstreamSecretRef names a Secret with its keys", now,
                                      cache.generation}
                     : api::Condition{"UpstreamCredentials", "False", "SecretNotFound", problems,
                                      now, cache.generation},
                 old.conditions);
  }
  status.identity = IdentityMode(cache);
  status.hit_ratio = old.hit_ratio;
  status.ecosystems = old.ecosystems;
  status.top_namespaces = old.top_namespaces;
  if (options_.hit_stats) {
    if (std::optional<HitStats> hits = options_.hit_stats(key)) {
      status.hit_ratio = hits->hit_ratio;
      status.ecosystems = hits->ecosystems;
      status.top_namespaces = hits->top_namespaces;
    }
  }
  if (Status s = WriteStatus(object, status); !s.ok()) return {ReconcileResult::kError, s};

  // An event for each change of readiness (not for every reconcile).
  auto status_of = [](const api::BuildCacheStatus& st, const char* type) {
    for (const api::Condition& c : st.conditions) {
      if (c.type == type) return c;
    }
    return api::Condition{};
  };
  api::Condition ready = status_of(status, "Ready");
  api::Condition old_ready = status_of(old, "Ready");
  if (ready.status != old_ready.status || ready.reason != old_ready.reason) {
    Event(object, EventType::kNormal, ready.reason, ready.message);
  }
  api::Condition credentials = status_of(status, "UpstreamCredentials");
  api::Condition old_credentials = status_of(old, "UpstreamCredentials");
  if (credentials.status == "False" &&
      (old_credentials.status != "False" || credentials.message != old_credentials.message)) {
    Event(object, EventType::kWarning, credentials.reason, credentials.message);
  }
  log::Debug("reconciled", {{"key", key},
                            {"generation", cache.generation},
                            {"desired", status.desired_nodes},
                            {"ready", status.ready_nodes}});
  return {ReconcileResult::kSuccess, Status::Ok()};
}

ReconcileOutcome Reconciler::Refuse(const Json& object, const api::BuildCache& cache,
                                    const std::string& reason, const Status& why) {
  ReportFailure(object, reason, why.message());
  Status s = client_->Delete(kube::resources::kDaemonSets, cache.ns, DaemonSetName(cache),
                             {.propagation_policy = "Background"});
  if (!s.ok() && !kube::IsNotFound(s)) {
    return {ReconcileResult::kError, s.WithContext("delete the DaemonSet of a refused BuildCache")};
  }
  return {ReconcileResult::kInvalid, why};
}

Status Reconciler::ResolveTrustedNamespaces(api::BuildCache* cache) {
  std::optional<api::TrustedWriters>& writers = cache->spec.access.trusted_writers;
  if (!writers || !writers->namespace_selector) return Status::Ok();
  Result<Json> list = client_->List(kube::resources::kNamespaces, "");
  if (!list.ok()) return list.status();
  writers->namespaces.clear();
  for (const Json& ns : list->value("items", Json::array())) {
    std::map<std::string, std::string> labels;
    const Json meta = ns.value("metadata", Json::object());
    const Json ns_labels = meta.value("labels", Json::object());
    for (const auto& [k, v] : ns_labels.items()) {
      if (v.is_string()) labels[k] = v.get<std::string>();
    }
    if (writers->namespace_selector->Matches(labels)) {
      writers->namespaces.push_back(meta.value("name", ""));
    }
  }
  std::sort(writers->namespaces.begin(), writers->namespaces.end());
  return Status::Ok();
}

bool Reconciler::Manages(const std::string& ns) const {
  return options_.namespaces.empty() ||
         std::find(options_.namespaces.begin(), options_.namespaces.end(), ns) !=
             options_.namespaces.end();
}

Result<std::vector<HostPathClaim>> Reconciler::ListClaims() {
  std::vector<HostPathClaim> claims;
  kube::ListOptions list{.limit = 500};
  do {
    Result<Json> page = client_->List(kBuildCaches, "", list);
    if (!page.ok()) return page.status().WithContext("list BuildCaches for the hostPath check");
    for (const Json& item : page->value("items", Json::array())) {
      if (std::optional<HostPathClaim> claim = ClaimOf(item)) claims.push_back(std::move(*claim));
    }
    const Json& meta = page->value("metadata", Json::object());
    list.continue_token = meta.is_object() ? meta.value("continue", "") : "";
  } while (!list.continue_token.empty());
  return claims;
}

ReconcileOutcome Reconciler::UpdateHitStats(const std::string& key) {
  if (!options_.hit_stats) return {ReconcileResult::kSuccess, Status::Ok()};
  std::optional<HitStats> hits = options_.hit_stats(key);
  if (!hits) return {ReconcileResult::kSuccess, Status::Ok()};
  auto got = GetBuildCache(key);
  if (auto* stop = std::get_if<ReconcileOutcome>(&got)) return *stop;
  const Json& object = std::get<Json>(got);
  if (object["metadata"].contains("deletionTimestamp")) {
    return {ReconcileResult::kGone, Status::Ok()};
  }
  api::BuildCacheStatus status = StoredStatus(object);
  if (status.observed_generation == 0) return {ReconcileResult::kSuccess, Status::Ok()};
  const Json before = api::StatusToJson(status);
  status.hit_ratio = hits->hit_ratio;
  status.ecosystems = hits->ecosystems;
  status.top_namespaces = hits->top_namespaces;
  Json wanted = api::StatusToJson(status);
  if (wanted == before) return {ReconcileResult::kSuccess, Status::Ok()};
  Json patch = {{"metadata", {{"resourceVersion", kube::ResourceVersionOf(object)}}},
                {"status",
                 {{"hitRatio", status.hit_ratio.empty() ? Json() : Json(status.hit_ratio)},
                  {"ecosystems", wanted.value("ecosystems", Json())},
                  {"topNamespaces", wanted.value("topNamespaces", Json())}}}};
  Result<Json> written = client_->MergePatch(kBuildCaches, kube::NamespaceOf(object),
                                             kube::NameOf(object), patch, "status");
  if (!written.ok()) {
    return {ReconcileResult::kError, written.status().WithContext("write hit ratio")};
  }
  return {ReconcileResult::kSuccess, Status::Ok()};
}

Result<std::string> Reconciler::SyncPeerTls(const api::BuildCache& cache) {
  auto read = [&](const kube::Resource& resource, const std::string& name) -> Result<Json> {
    Result<Json> got = client_->Get(resource, cache.ns, name);
    if (got.ok()) return got;
    if (kube::IsNotFound(got.status())) return Json::object();
    return got.status().WithContext("get " + name);
  };
  BC_ASSIGN_OR_RETURN(Json ca_secret, read(kube::resources::kSecrets, PeerCaSecretName(cache)));
  BC_ASSIGN_OR_RETURN(Json tls_secret, read(kube::resources::kSecrets, PeerTlsSecretName(cache)));
  BC_ASSIGN_OR_RETURN(Json daemonset, read(kube::resources::kDaemonSets, DaemonSetName(cache)));
  const PeerTlsState current = PeerTlsFromSecrets(ca_secret, tls_secret);

  // Every agent runs with the current bundle: the template carries its hash and the rollout is
  // complete (the same test as the Progressing condition).
  const bool template_current =
      kube::StringAt(daemonset, {"spec", "template", "metadata", "annotations",
                                 kPeerTlsHashAnnotation}) == PeerTlsHash(current);
  const int64_t generation = GenerationOf(daemonset);
  const int64_t observed = daemonset.contains("status") && daemonset["status"].is_object()
                               ? daemonset["status"].value("observedGeneration", int64_t{0})
                               : 0;
  const bool rolled_out =
      template_current && generation > 0 && observed >= generation &&
      IntAt(daemonset, "updatedNumberScheduled") >= IntAt(daemonset, "desiredNumberScheduled");
  BC_ASSIGN_OR_RETURN(PeerTlsState next,
                      NextPeerTls(cache, current, options_.now(), rolled_out, options_.peer_tls));

  const kube::ApplyOptions apply{options_.field_manager, /*force=*/true};
  const bool ca_missing = ca_secret.empty(), tls_missing = tls_secret.empty();
  if (!(next == current) || ca_missing || tls_missing) {
    // The CA first: a crash between the two writes leaves a leaf the next pass reissues.
    for (const Json& wanted : {BuildPeerCaSecret(cache, next), BuildPeerTlsSecret(cache, next)}) {
      Result<Json> applied = client_->Apply(kube::resources::kSecrets, wanted, apply);
      if (!applied.ok()) {
        return applied.status().WithContext("apply Secret " + kube::NameOf(wanted));
      }
    }
  }
  return PeerTlsHash(next);
}

Status Reconciler::SyncAdminToken(const api::BuildCache& cache) {
  Result<Json> got = client_->Get(kube::resources::kSecrets, cache.ns, AdminSecretName(cache));
  if (got.ok() && !AdminTokenFromSecret(*got).empty()) return Status::Ok();
  if (!got.ok() && !kube::IsNotFound(got.status())) {
    return got.status().WithContext("get " + AdminSecretName(cache));
  }
  BC_ASSIGN_OR_RETURN(std::string token, NewAdminToken());
  const kube::ApplyOptions apply{options_.field_manager, /*force=*/true};
  Result<Json> applied =
      client_->Apply(kube::resources::kSecrets, BuildAdminSecret(cache, token), apply);
  if (!applied.ok()) return applied.status().WithContext("apply Secret " + AdminSecretName(cache));
  return Status::Ok();
}

ReconcileOutcome Reconciler::Finalize(const Json& object) {
  std::vector<std::string> finalizers = FinalizersOf(object);
  auto it = std::find(finalizers.begin(), finalizers.end(), kFinalizer);
  if (it == finalizers.end()) return {ReconcileResult::kGone, Status::Ok()};

  const std::string ns = kube::NamespaceOf(object);
  const std::string name = kube::NameOf(object);
  api::BuildCache cache;
  cache.name = name;
  cache.ns = ns;
  // Deleted explicitly, in the background, so the agents stop even where no garbage collector
  // runs; NotFound means already gone.
  const std::pair<const kube::Resource*, std::string> owned[] = {
      {&kube::resources::kDaemonSets, DaemonSetName(cache)},
      {&kube::resources::kServices, ServiceName(cache)},
      {&kube::resources::kServices, PeerServiceName(cache)},
      {&kube::resources::kConfigMaps, ConfigMapName(cache)},
      {&kube::resources::kNetworkPolicies, NetworkPolicyName(cache)},
      {&kube::resources::kSecrets, PeerTlsSecretName(cache)},
      {&kube::resources::kSecrets, PeerCaSecretName(cache)},
      {&kube::resources::kSecrets, AdminSecretName(cache)},
      {&kube::resources::kServiceAccounts, AgentServiceAccountName(cache)},
      {&kClusterRoleBindings, AgentRoleBindingName(cache)},
      {&kRoleBindings, AgentWheelBuildRoleBindingName(cache)},
      {&kube::resources::kNetworkPolicies, WheelBuildersNetworkPolicyName(cache)},
  };
  for (const auto& [resource, object_name] : owned) {
    if (!Manages(ns)) break;  // none created here (and no rights to delete)
    Status s = client_->Delete(*resource, ns, object_name, {.propagation_policy = "Background"});
    if (!s.ok() && !kube::IsNotFound(s)) {
      Event(object, EventType::kWarning, "CleanupFailed",
            "delete " + resource->Describe() + " " + object_name + ": " + s.message());
      return {ReconcileResult::kError, s.WithContext("delete " + object_name)};
    }
  }

  const Json& storage = object["spec"].value("storage", Json::object());
  if (storage.value("reclaimPolicy", "Retain") == "Delete") {
    std::string host_path = storage.value("hostPath", api::DefaultHostPath(ns, name));
    Event(object, EventType::kWarning, "DataNotReclaimed",
          "storage.reclaimPolicy is Delete, but the operator does not delete node data: remove " +
              host_path + " on the nodes that ran an agent");
  }

  finalizers.erase(it);
  Json patch = {
      {"metadata",
       {{"finalizers", finalizers}, {"resourceVersion", kube::ResourceVersionOf(object)}}}};
  Result<Json> patched =
      client_->MergePatch(kBuildCaches, kube::NamespaceOf(object), kube::NameOf(object), patch);
  if (!patched.ok() && !kube::IsNotFound(patched.status())) {
    return {ReconcileResult::kError, patched.status().WithContext("remove finalizer")};
  }
  Event(object, EventType::kNormal, "CleanedUp", "agent objects deleted, finalizer removed");
  log::Info("buildcache finalized", {{"key", kube::ObjectKey(object)}});
  return {ReconcileResult::kGone, Status::Ok()};
}

}  // namespace buildcache::controllers
