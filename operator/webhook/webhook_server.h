#pragma once

#include <map>
#include <memory>
#include <string>

#include "common/base/thread_annotations.h"
#include "common/http/tls_server.h"
#include "common/kube/event_recorder.h"
#include "common/kube/informer.h"
#include "common/kube/kube_client.h"
#include "operator/webhook/pod_mutator.h"
#include "operator/webhook/webhook_metrics.h"

namespace buildcache::webhook {

inline constexpr char kMutatePodsPath[] = "/mutate-pods";
inline constexpr char kHealthzPath[] = "/healthz";

// BuildCaches and namespaces read from the API server on every review (the webhook's timeout
// bounds each read; no cache, so access changes apply to the next pod).
class KubeCacheLookup : public CacheLookup {
 public:
  explicit KubeCacheLookup(kube::KubeClient* client) : client_(client) {}

  // CacheLookup
  Result<api::BuildCache> GetBuildCache(const std::string& ns, const std::string& name) override;
  Result<std::map<std::string, std::string>> NamespaceLabels(const std::string& ns) override;

 private:
  kube::KubeClient* client_;
};

// BuildCaches and namespaces from watch caches (informers over every namespace), so a review
// costs no API request: the webhook answers within milliseconds even when the API server is
// busy (it is the API server that waits on the webhook). An object not in the cache (created a
// moment ago, or before the first list) is read from the API server through KubeCacheLookup,
// so a new BuildCache is never missed; changes to cached ones apply once their watch event
// arrives. Converted BuildCaches are kept per resourceVersion (FromJson validates every field).
class InformerCacheLookup : public CacheLookup {
 public:
  explicit InformerCacheLookup(kube::KubeClient* client);
  ~InformerCacheLookup() override;

  // Starts the watches; WaitForSync(timeout) is true once both have listed.
  void Start();
  bool WaitForSync(std::chrono::milliseconds timeout) const;

  // CacheLookup
  Result<api::BuildCache> GetBuildCache(const std::string& ns, const std::string& name) override;
  Result<std::map<std::string, std::string>> NamespaceLabels(const std::string& ns) override;

 private:
  KubeCacheLookup fallback_;
  kube::Informer buildcaches_;
  kube::Informer namespaces_;
  Mutex mu_;
  // key -> (resourceVersion, converted)
  std::map<std::string, std::pair<std::string, api::BuildCache>> converted_ GUARDED_BY(mu_);
};

// The BuildCache resource as the kube client addresses it.
const kube::Resource& BuildCacheResource();

// Serves one HTTP request: POST /mutate-pods (an AdmissionReview; the answer is always 200 with
// allowed=true, see Admit) and GET /healthz. Events go to `events` and counts to `metrics` when
// they are not null.
http::TlsResponse HandleWebhookRequest(const http::TlsRequest& request, CacheLookup& lookup,
                                       kube::EventRecorder* events,
                                       WebhookMetrics* metrics = nullptr,
                                       const MutatorOptions& mutator = {});

struct WebhookServerOptions {
  std::string listen = "0.0.0.0:9443";
  // CertManager::Current (self-managed certificates) or FileCredentials (cert-manager).
  http::CredentialsSource credentials{};
  // Passed to Admit (the gocacheprog init container's default image).
  MutatorOptions mutator{};
};

// The admission webhook's HTTPS server. `lookup`, `events` and `metrics` (either may be null)
// must outlive it.
class WebhookServer {
 public:
  static Result<std::unique_ptr<WebhookServer>> Start(WebhookServerOptions options,
                                                      CacheLookup* lookup,
                                                      kube::EventRecorder* events,
                                                      WebhookMetrics* metrics = nullptr);
  uint16_t port() const { return server_->port(); }
  void Stop() { server_->Stop(); }

 private:
  explicit WebhookServer(std::unique_ptr<http::TlsServer> server) : server_(std::move(server)) {}
  std::unique_ptr<http::TlsServer> server_;
};

}  // namespace buildcache::webhook
