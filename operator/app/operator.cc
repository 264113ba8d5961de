#include "operator/app/operator.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string_view>
#include <utility>

#include "common/http/router.h"
#include "common/http/server.h"
#include "common/kube/event_recorder.h"
#include "common/kube/leader_election.h"
#include "common/kube/rest_kube_client.h"
#include "common/log/log.h"
#include "common/net/host_port.h"
#include "operator/controllers/controller.h"
#include "operator/controllers/hit_ratio.h"
#include "operator/controllers/reconciler.h"
#include "operator/controllers/wheel_build_controller.h"
#include "operator/controllers/wheel_build_reconciler.h"
#include "operator/webhook/cert_manager.h"
#include "operator/webhook/webhook_metrics.h"
#include "operator/webhook/webhook_server.h"

namespace buildcache::op {
namespace {

// HOSTNAME_RANDOM: unique per process, recognisable per pod in the Lease and in events.
std::string Identity() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::random_device rd;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", rd());
  return std::string(host) + "_" + suffix;
}

void Reply(http::Response& resp, int code, std::string_view type, std::string_view body) {
  resp.SetStatus(code);
  resp.SetHeader("Content-Type", type);
  (void)resp.Send(body);
}

Result<std::unique_ptr<kube::RestKubeClient>> Client(const kube::KubeConfig& kubeconfig,
                                                     std::string_view what,
                                                     kube::RestKubeClientOptions options) {
  Result<std::unique_ptr<kube::RestKubeClient>> client =
      kube::RestKubeClient::Create(kubeconfig, std::move(options));
  if (!client.ok()) {
    log::Error(std::string(what) + " failed", {{"error", client.status().ToString()}});
  }
  return client;
}

}  // namespace

Operator::Operator(OperatorConfig config, OperatorHooks hooks)
    : config_(std::move(config)),
      hooks_(std::move(hooks)),
      identity_(Identity()),
      metrics_(registry_) {}

Result<std::unique_ptr<Operator>> Operator::Start(const OperatorConfig& config,
                                                  OperatorHooks hooks) {
  // Only refused leader-election settings are the caller's error (kInvalidArgument); the other
  // steps fail for reasons of the environment, whatever code their component reports.
  auto environment = [](Status s) {
    return s.code() == StatusCode::kInvalidArgument
               ? Status(StatusCode::kFailedPrecondition, s.message())
               : s;
  };
  std::unique_ptr<Operator> op(new Operator(config, std::move(hooks)));
  BC_RETURN_IF_ERROR(environment(op->Connect()));
  BC_RETURN_IF_ERROR(environment(op->BuildController()));
  BC_RETURN_IF_ERROR(op->StartLeaderElection());
  BC_RETURN_IF_ERROR(environment(op->StartMetricsServer()));
  BC_RETURN_IF_ERROR(environment(op->StartWebhook()));
  op->StartControllers();
  return op;
}

Operator::~Operator() { Stop(); }

Status Operator::Connect() {
  Result<kube::KubeConfig> kubeconfig = kube::LoadDefaultConfig(config_.kubeconfig);
  if (!kubeconfig.ok()) {
    log::Error("kubeconfig failed", {{"error", kubeconfig.status().ToString()}});
    return kubeconfig.status();
  }
  kubeconfig_ = std::move(kubeconfig).value();
  BC_ASSIGN_OR_RETURN(client_, Client(kubeconfig_, "kube client", {}));
  log::Info("starting", {{"identity", identity_},
                         {"api_server", kubeconfig_.server},
                         {"namespace", config_.ns.empty() ? "*" : config_.ns},
                         {"leader_elect", config_.leader_elect}});
  events_ = std::make_unique<kube::EventRecorder>(
      client_.get(), kube::EventRecorderOptions{.instance = identity_});
  return Status::Ok();
}

Status Operator::BuildController() {
  if (config_.scrape_seconds > 0) {
    BC_ASSIGN_OR_RETURN(scrape_client_, Client(kubeconfig_, "scraper client",
                                               {.user_agent = "buildcache-operator/scraper"}));
    scraper_ = std::make_unique<controllers::HitRatioScraper>(
        scrape_client_.get(), controllers::HitRatioScraperOptions{});
  }
  // The operator's namespace (in a cluster: its ServiceAccount's) is where its pods scrape the
  // agents from, which the agents' NetworkPolicies admit.
  controllers::ReconcilerOptions reconciler_options{
      .build = {.agent_image = config_.agent_image,
                .operator_namespace = client_->default_namespace(),
                .agent_cluster_role = config_.agent_cluster_role},
      .policy = {.allowed_images = config_.allowed_agent_images,
                 .host_path_root = config_.host_path_root,
                 .go_sumdb_name = config_.go_sumdb_name},
      .namespaces = config_.buildcache_namespaces};
  if (scraper_) {
    reconciler_options.hit_stats = [s = scraper_.get()](const std::string& key) {
      return s->Get(key);
    };
  }
  reconciler_ = std::make_unique<controllers::Reconciler>(client_.get(), events_.get(),
                                                          std::move(reconciler_options));
  controller_ = std::make_unique<controllers::BuildCacheController>(
      client_.get(), reconciler_.get(), &metrics_,
      controllers::ControllerOptions{
          .ns = config_.ns,
          .namespaces = config_.buildcache_namespaces,
          .workers = config_.workers,
          .scraper = scraper_.get(),
          .scrape_interval = std::chrono::seconds(config_.scrape_seconds)});
  wheel_build_reconciler_ = std::make_unique<controllers::WheelBuildReconciler>(
      client_.get(), events_.get(),
      controllers::WheelBuildReconcilerOptions{.namespaces = config_.buildcache_namespaces});
  wheel_build_controller_ = std::make_unique<controllers::WheelBuildController>(
      client_.get(), wheel_build_reconciler_.get(), &metrics_,
      controllers::WheelBuildControllerOptions{.ns = config_.ns,
                                               .namespaces = config_.buildcache_namespaces});
  return Status::Ok();
}

Status Operator::StartLeaderElection() {
  if (!config_.leader_elect) return Status::Ok();
  kube::LeaderElectionConfig le;
  le.lease_namespace =
      config_.lease_namespace.empty() ? client_->default_namespace() : config_.lease_namespace;
  le.lease_name = config_.lease_name;
  le.identity = identity_;
  le.lease_duration = std::chrono::seconds(config_.lease_seconds);
  le.renew_deadline = le.lease_duration * 2 / 3;
  le.retry_period = le.lease_duration / 7;
  le.on_started_leading = [this](std::stop_token leading) {
    log::Info("leading", {{"identity", identity_}});
    metrics_.leader.With().Set(1);
    RunControllers(leading);
  };
  le.on_stopped_leading = [this] {
    metrics_.leader.With().Set(0);
    if (!stopping_.load()) {
      log::Error("leadership lost", {{"identity", identity_}});
      exit_code_ = 1;
      if (hooks_.on_leadership_lost) hooks_.on_leadership_lost();
    }
  };
  le.on_new_leader = [](const std::string& leader) { log::Info("leader", {{"identity", leader}}); };
  Result<std::unique_ptr<kube::LeaderElector>> created =
      kube::LeaderElector::Create(client_.get(), std::move(le));
  if (!created.ok()) {
    log::Error("leader election failed", {{"error", created.status().ToString()}});
    return created.status();
  }
  elector_ = std::move(created).value();
  return Status::Ok();
}

// /metrics, /healthz and /readyz. A standby replica is ready: it serves (the webhook, metrics)
// and takes over when the leader goes; the leader is ready once its caches have synced.
Status Operator::StartMetricsServer() {
  router_ = std::make_unique<http::Router>();
  http::Router& router = *router_;
  router.Add("GET", "/healthz", [](http::Request&, http::Response& resp) {
    Reply(resp, 200, "text/plain; charset=utf-8", "ok\n");
  });
  router.Add("GET", "/readyz", [this](http::Request&, http::Response& resp) {
    const bool standby = elector_ != nullptr && !elector_->IsLeader();
    if (standby || controller_->synced()) {
      Reply(resp, 200, "text/plain; charset=utf-8", "ready\n");
    } else {
      Reply(resp, 503, "text/plain; charset=utf-8", "not ready\n");
    }
  });
  router.Add("GET", "/metrics", [this](http::Request&, http::Response& resp) {
    metrics_.queue_depth.With().Set(static_cast<double>(controller_->queue_depth()));
    metrics_.wheel_build_queue_depth.With().Set(
        static_cast<double>(wheel_build_controller_->queue_depth()));
    Reply(resp, 200, metrics::kContentType, registry_.Render());
  });
  http::ServerOptions server_options;
  server_options.listen = config_.metrics_addr;
  server_options.server_name = "buildcache-operator";
  Result<std::unique_ptr<http::Server>> server =
      http::Server::Start(server_options, router.AsHandler());
  if (!server.ok()) {
    log::Error("metrics server failed", {{"error", server.status().ToString()}});
    return server.status();
  }
  server_ = std::move(server).value();
  metrics_address_ = net::WithPort(config_.metrics_addr, server_->port());
  log::Info("metrics listening", {{"address", metrics_address_}});
  return Status::Ok();
}

Status Operator::StartWebhook() {
  if (config_.webhook_listen.empty()) return Status::Ok();
  BC_ASSIGN_OR_RETURN(webhook_client_, Client(kubeconfig_, "webhook client",
                                              {.user_agent = "buildcache-operator/webhook",
                                               .timeout = std::chrono::seconds(4)}));
  webhook_metrics_ = std::make_unique<webhook::WebhookMetrics>(registry_);
  webhook_lookup_ = std::make_unique<webhook::InformerCacheLookup>(webhook_client_.get());
  // Not waited for: until the watches have listed, reviews read through to the API server.
  webhook_lookup_->Start();
  webhook::WebhookServerOptions webhook_options;
  webhook_options.listen = config_.webhook_listen;
  webhook_options.mutator.default_agent_image = config_.agent_image;
  if (!config_.webhook_cert_dir.empty()) {  // cert-manager mode
    webhook_options.credentials = webhook::FileCredentials(config_.webhook_cert_dir + "/tls.crt",
                                                           config_.webhook_cert_dir + "/tls.key");
  } else {
    BC_RETURN_IF_ERROR(WaitForWebhookCertificate());
    webhook_options.credentials = [c = certs_.get()] { return c->Current(); };
    // Sync made the certificate; Run keeps it and the caBundle current.
    cert_renewal_ = std::jthread([c = certs_.get()](std::stop_token stop) { c->Run(stop); });
  }
  Result<std::unique_ptr<webhook::WebhookServer>> started = webhook::WebhookServer::Start(
      std::move(webhook_options), webhook_lookup_.get(), events_.get(), webhook_metrics_.get());
  if (!started.ok()) {
    log::Error("webhook server failed", {{"error", started.status().ToString()}});
    return started.status();
  }
  webhook_server_ = std::move(started).value();
  return Status::Ok();
}

Status Operator::WaitForWebhookCertificate() {
  const std::string ns = client_->default_namespace();
  webhook::CertManagerOptions cert_options;
  cert_options.ns = ns;
  cert_options.secret_name = config_.webhook_secret;
  cert_options.webhook_configuration = config_.webhook_configuration;
  cert_options.dns_names = {config_.webhook_service + "." + ns + ".svc",
                            config_.webhook_service + "." + ns + ".svc.cluster.local"};
  certs_ = std::make_unique<webhook::CertManager>(client_.get(), cert_options);
  while (true) {
    Status s = certs_->Sync();
    if (certs_->Current().ok()) return Status::Ok();
    log::Warn("webhook certificate sync failed", {{"error", s.ToString()}});
    if (hooks_.cancelled && hooks_.cancelled()) {
      return Cancelled("stopped while waiting for the webhook certificate");
    }
    std::this_thread::sleep_for(std::chrono::seconds(5));
  }
}

// The controllers: under leader election only the leader runs them.
void Operator::StartControllers() {
  runner_ = std::jthread([this](std::stop_token stop) {
    if (elector_) {
      elector_->Run(stop);
    } else {
      metrics_.leader.With().Set(1);
      RunControllers(stop);
    }
  });
}

void Operator::RunControllers(std::stop_token stop) {
  std::jthread wheel_builds([this, stop] { wheel_build_controller_->Run(stop); });
  controller_->Run(stop);
}

void Operator::Stop() {
  if (stopping_.exchange(true)) return;
  if (runner_.joinable()) {
    runner_.request_stop();
    runner_.join();
  }
  if (webhook_server_) webhook_server_->Stop();
  cert_renewal_.request_stop();
  if (server_) server_->Stop(std::chrono::seconds(2));
}

}  // namespace buildcache::op
