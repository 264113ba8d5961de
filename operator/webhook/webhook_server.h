#pragma once

#include <memory>
#include <string>

#include "common/http/tls_server.h"
#include "operator/kube/event_recorder.h"
#include "operator/kube/kube_client.h"
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

// The BuildCache resource as the kube client addresses it.
const kube::Resource& BuildCacheResource();

// Serves one HTTP request: POST /mutate-pods (an AdmissionReview; the answer is always 200 with
// allowed=true, see Admit) and GET /healthz. Events go to `events` and counts to `metrics` when
// they are not null.
http::TlsResponse HandleWebhookRequest(const http::TlsRequest& request, CacheLookup& lookup,
                                       kube::EventRecorder* events,
                                       WebhookMetrics* metrics = nullptr);

struct WebhookServerOptions {
  std::string listen = "0.0.0.0:9443";
  // CertManager::Current (self-managed certificates) or FileCredentials (cert-manager).
  http::CredentialsSource credentials{};
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
