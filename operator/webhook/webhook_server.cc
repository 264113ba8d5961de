#include "operator/webhook/webhook_server.h"

#include "common/log/log.h"

namespace buildcache::webhook {

const kube::Resource& BuildCacheResource() {
  static const kube::Resource kResource{api::kGroup, api::kVersion, api::kPlural, api::kKind, true};
  return kResource;
}

Result<api::BuildCache> KubeCacheLookup::GetBuildCache(const std::string& ns,
                                                       const std::string& name) {
  BC_ASSIGN_OR_RETURN(Json object, client_->Get(BuildCacheResource(), ns, name));
  return api::FromJson(object);
}

namespace {

std::map<std::string, std::string> LabelsOf(const Json& object) {
  std::map<std::string, std::string> labels;
  const Json& meta = object.contains("metadata") ? object["metadata"] : Json::object();
  if (meta.contains("labels") && meta["labels"].is_object()) {
    for (const auto& [k, v] : meta["labels"].items()) {
      if (v.is_string()) labels[k] = v.get<std::string>();
    }
  }
  return labels;
}

}  // namespace

Result<std::map<std::string, std::string>> KubeCacheLookup::NamespaceLabels(const std::string& ns) {
  BC_ASSIGN_OR_RETURN(Json object, client_->Get(kube::resources::kNamespaces, "", ns));
  return LabelsOf(object);
}

InformerCacheLookup::InformerCacheLookup(kube::KubeClient* client)
    : fallback_(client),
      buildcaches_(client, BuildCacheResource()),
      namespaces_(client, kube::resources::kNamespaces) {}

InformerCacheLookup::~InformerCacheLookup() {
  buildcaches_.Stop();
  namespaces_.Stop();
}

void InformerCacheLookup::Start() {
  buildcaches_.Start();
  namespaces_.Start();
}

bool InformerCacheLookup::WaitForSync(std::chrono::milliseconds timeout) const {
  return buildcaches_.WaitForSync(timeout) && namespaces_.WaitForSync(timeout);
}

Result<api::BuildCache> InformerCacheLookup::GetBuildCache(const std::string& ns,
                                                           const std::string& name) {
  const std::string key = ns + "/" + name;
  std::optional<Json> object = buildcaches_.Get(key);
  if (!object) return fallback_.GetBuildCache(ns, name);
  const std::string version = kube::ResourceVersionOf(*object);
  {
    MutexLock lock(mu_);
    auto it = converted_.find(key);
    if (it != converted_.end() && it->second.first == version) return it->second.second;
  }
  BC_ASSIGN_OR_RETURN(api::BuildCache cache, api::FromJson(*object));
  MutexLock lock(mu_);
  // Bounded by the BuildCaches that exist: a deleted one's entry is replaced or dropped here.
  if (converted_.size() > 4 * (buildcaches_.ListKeys().size() + 16)) converted_.clear();
  converted_[key] = {version, cache};
  return cache;
}

Result<std::map<std::string, std::string>> InformerCacheLookup::NamespaceLabels(
    const std::string& ns) {
  std::optional<Json> object = namespaces_.Get(ns);
  if (!object) return fallback_.NamespaceLabels(ns);
  return LabelsOf(*object);
}

http::TlsResponse HandleWebhookRequest(const http::TlsRequest& request, CacheLookup& lookup,
                                       kube::EventRecorder* events, WebhookMetrics* metrics,
                                       const MutatorOptions& mutator) {
  const auto start = std::chrono::steady_clock::now();
  std::string path = request.target.substr(0, request.target.find('?'));
  if (path == kHealthzPath) return {200, "text/plain", "ok\n"};
  if (path != kMutatePodsPath) return {404, "text/plain", "not found\n"};
  if (request.method != "POST") return {405, "text/plain", "POST an AdmissionReview\n"};

  // Fail open: whatever goes wrong, the pod is admitted (unchanged).
  Json review = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  AdmissionResult result;
  try {
    result = Admit(review.is_discarded() ? Json::object() : review, lookup, mutator);
  } catch (const std::exception& e) {
    log::Error("admission review failed", {{"error", e.what()}});
    std::string uid;
    if (review.is_object() && review.contains("request") && review["request"].is_object()) {
      uid = review["request"].value("uid", "");
    }
    result.outcome = AdmissionOutcome::kFailed;
    result.review = {{"apiVersion", "admission.k8s.io/v1"},
                     {"kind", "AdmissionReview"},
                     {"response",
                      {{"uid", uid},
                       {"allowed", true},
                       {"warnings", {"buildcache: internal error; pod admitted without caches"}}}}};
  }
  if (metrics != nullptr) {
    metrics->admissions.With({std::string(AdmissionOutcomeName(result.outcome))}).Inc();
    metrics->admission_duration.With().Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const Json& response = result.review["response"];
  log::Info("pod admitted",
            {{"uid", response.value("uid", "")},
             {"mutated", result.mutated},
             {"warnings", static_cast<uint64_t>(
                              response.contains("warnings") ? response["warnings"].size() : 0)}});
  if (result.event && events != nullptr) {
    // Record logs its own failures; the answer does not wait on anything but this one request.
    (void)events->Record(result.event->object, kube::EventType::kWarning, result.event->reason,
                         "AdmitPod", result.event->note);
  }
  return {200, "application/json", result.review.dump()};
}

Result<std::unique_ptr<WebhookServer>> WebhookServer::Start(WebhookServerOptions options,
                                                            CacheLookup* lookup,
                                                            kube::EventRecorder* events,
                                                            WebhookMetrics* metrics) {
  http::TlsServerOptions tls;
  tls.listen = options.listen;
  tls.credentials = std::move(options.credentials);
  BC_ASSIGN_OR_RETURN(
      auto server,
      http::TlsServer::Start(std::move(tls), [lookup, events, metrics, mutator = options.mutator](
                                                 const http::TlsRequest& r) {
        return HandleWebhookRequest(r, *lookup, events, metrics, mutator);
      }));
  return std::unique_ptr<WebhookServer>(new WebhookServer(std::move(server)));
}

}  // namespace buildcache::webhook
