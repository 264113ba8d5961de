#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/kube/config.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"
#include "operator/app/operator_flags.h"
#include "operator/controllers/metrics_catalog.h"

namespace buildcache::http {
class Router;
class Server;
}  // namespace buildcache::http
namespace buildcache::kube {
class EventRecorder;
class LeaderElector;
class RestKubeClient;
}  // namespace buildcache::kube
namespace buildcache::controllers {
class BuildCacheController;
class HitRatioScraper;
class Reconciler;
class WheelBuildController;
class WheelBuildReconciler;
}  // namespace buildcache::controllers
namespace buildcache::webhook {
class CertManager;
class InformerCacheLookup;
class WebhookMetrics;
class WebhookServer;
}  // namespace buildcache::webhook

namespace buildcache::op {

// What the process around an Operator provides (main() wires them to its signals; tests leave
// them empty).
struct OperatorHooks {
  // Called once, on the leader elector's thread, when this replica loses the lease while running.
  // The controller cannot restart in-process, so main() exits and the pod campaigns again, as
  // client-go controllers do. Empty: the operator just stops reconciling.
  std::function<void()> on_leadership_lost;
  // Polled while Start waits for the webhook certificate (retrying every 5 s); true makes Start
  // give up with kCancelled. Empty: Start waits until the certificate exists.
  std::function<bool()> cancelled;
};

// The operator with every component wired: the BuildCache controller (under leader election
// when config.leader_elect), the hit-ratio scraper, the /metrics, /healthz and /readyz server and
// the admission webhook (config.webhook_listen). main() parses flags and runs one of these;
// tests start them in-process against a real API server. Components are built here and nowhere
// else.
class Operator {
 public:
  // Connects to the API server (config.kubeconfig), starts the metrics server (logging "metrics
  // listening" with the bound address) and the webhook, then the controllers on a thread of their
  // own. With the webhook and no cert dir it first waits until its certificate Secret is synced.
  // Failures are logged and returned: kInvalidArgument for leader-election settings the elector
  // refuses, kCancelled when hooks.cancelled ended the wait for the certificate, other codes for
  // everything that depends on the environment (kubeconfig, API server, ports).
  static Result<std::unique_ptr<Operator>> Start(const OperatorConfig& config,
                                                 OperatorHooks hooks = {});
  ~Operator();

  // Stops the controllers (giving up the lease), the webhook and the metrics server (in-flight
  // requests get 2 s). Idempotent.
  void Stop();

  // "HOST:PORT" of the metrics server as bound (the port is real when config asked for 0).
  const std::string& metrics_address() const { return metrics_address_; }
  // 1 once leadership was lost while running (what main() exits with), else 0.
  int exit_code() const { return exit_code_.load(); }
  metrics::Registry& registry() { return registry_; }

 private:
  explicit Operator(OperatorConfig config, OperatorHooks hooks);
  Status Connect();
  Status BuildController();
  Status StartLeaderElection();
  Status StartMetricsServer();
  Status StartWebhook();
  // Serving the webhook needs a certificate: syncs the Secret until one exists.
  Status WaitForWebhookCertificate();
  void StartControllers();
  // Runs both controllers until stop (the leader's term, or the operator's life).
  void RunControllers(std::stop_token stop);

  const OperatorConfig config_;
  const OperatorHooks hooks_;
  const std::string identity_;
  kube::KubeConfig kubeconfig_;
  std::unique_ptr<kube::RestKubeClient> client_;
  metrics::Registry registry_;
  controllers::OperatorMetrics metrics_;
  std::unique_ptr<kube::EventRecorder> events_;
  // The scraper has a client of its own: its requests must not queue behind the workers'.
  std::unique_ptr<kube::RestKubeClient> scrape_client_;
  std::unique_ptr<controllers::HitRatioScraper> scraper_;
  std::unique_ptr<controllers::Reconciler> reconciler_;
  std::unique_ptr<controllers::BuildCacheController> controller_;
  // WheelBuilds -> builder pods; runs beside controller_ (same leadership).
  std::unique_ptr<controllers::WheelBuildReconciler> wheel_build_reconciler_;
  std::unique_ptr<controllers::WheelBuildController> wheel_build_controller_;
  std::unique_ptr<kube::LeaderElector> elector_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> exit_code_{0};
  // /metrics, /healthz, /readyz: the router outlives the server that calls it.
  std::unique_ptr<http::Router> router_;
  std::unique_ptr<http::Server> server_;
  std::string metrics_address_;
  // Servers that every replica runs, leader or not: the admission webhook.
  std::unique_ptr<kube::RestKubeClient> webhook_client_;
  std::unique_ptr<webhook::WebhookMetrics> webhook_metrics_;
  std::unique_ptr<webhook::InformerCacheLookup> webhook_lookup_;
  std::unique_ptr<webhook::CertManager> certs_;
  std::jthread cert_renewal_;
  std::unique_ptr<webhook::WebhookServer> webhook_server_;
  // The controllers (under leader election, the elector); joined first on Stop.
  std::jthread runner_;
};

}  // namespace buildcache::op
