// buildcache-operator: runs the BuildCache controller (leader-elected) and serves /metrics,
// /healthz and /readyz. main() only parses flags and composes libraries; it stops cleanly on
// SIGTERM or SIGINT (giving up the leader lease so a standby takes over at once).
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/http/rest_client.h"
#include "common/http/router.h"
#include "common/http/server.h"
#include "common/log/log.h"
#include "common/metrics/metrics.h"
#include "operator/controllers/controller.h"
#include "operator/controllers/metrics_catalog.h"
#include "operator/controllers/reconciler.h"
#include "operator/kube/config.h"
#include "operator/kube/event_recorder.h"
#include "operator/kube/leader_election.h"
#include "operator/kube/rest_kube_client.h"
#include "operator/webhook/cert_manager.h"
#include "operator/webhook/webhook_metrics.h"
#include "operator/webhook/webhook_server.h"

using namespace buildcache;

namespace {

constexpr char kUsage[] = R"(Usage: buildcache-operator [flags]

  --kubeconfig PATH                  kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)
  --agent-image IMAGE                agent image for BuildCaches that name none (required)
  --namespace NS                     namespace to watch (default: all namespaces)
  --buildcache-namespaces NS,...     the only namespaces where BuildCaches are run (the operator's
                                     RBAC covers their DaemonSets, Services and ConfigMaps);
                                     others get condition NamespaceNotManaged (default: any)
  --allowed-agent-images REPO,...    image repositories spec.agent.image may name, with any tag
                                     or digest (default: only --agent-image)
  --host-path-root DIR               storage.hostPath must lie beneath it (default
                                     /var/lib/buildcache)
  --go-sumdb-name NAME               checksum database for goproxy.sumdb (on by default) when a
                                     BuildCache names none; without it such BuildCaches are refused
  --leader-elect[=true|false]        only the replica holding the lease reconciles (default false)
  --leader-election-namespace NS     namespace of the Lease (default: the kubeconfig's namespace)
  --leader-election-id NAME          name of the Lease (default buildcache-operator)
  --leader-election-lease-seconds N  lease duration (default 15; renew deadline 2/3 of it)
  --metrics-addr HOST:PORT           /metrics, /healthz, /readyz (default 0.0.0.0:8080; port 0 picks one)
  --workers N                        concurrent reconciles (default 2)
  --metrics-scrape-interval SECONDS  how often the leader reads every agent's /metrics for
                                     status.hitRatio (default 30; 0 turns it off)
  --log-level LEVEL                  debug, info, warn or error (default info)
  --webhook-listen HOST:PORT         serve the pod-wiring admission webhook (HTTPS) here;
                                     empty (the default) runs no webhook
  --webhook-cert-dir DIR             tls.crt and tls.key from cert-manager; without it the
                                     operator keeps its own CA and certificate in a Secret
  --webhook-service NAME             the webhook's Service, for the certificate's names
                                     (default buildcache-webhook)
  --webhook-configuration NAME       MutatingWebhookConfiguration whose caBundle is kept current
                                     (default buildcache)
  --webhook-secret NAME              Secret holding the generated CA and certificate
                                     (default buildcache-webhook-tls)
  --version                          print the version and exit
  --help
)";

struct Flags {
  std::string kubeconfig;
  std::string agent_image;
  std::string ns;
  std::vector<std::string> buildcache_namespaces;
  std::vector<std::string> allowed_agent_images;
  std::string host_path_root = "/var/lib/buildcache";
  std::string go_sumdb_name;
  bool leader_elect = false;
  std::string lease_namespace;
  std::string lease_name = "buildcache-operator";
  int lease_seconds = 15;
  std::string metrics_addr = "0.0.0.0:8080";
  int workers = 2;
  int scrape_seconds = 30;
  log::Level log_level = log::Level::kInfo;
  std::string webhook_listen;
  std::string webhook_cert_dir;
  std::string webhook_service = "buildcache-webhook";
  std::string webhook_configuration = "buildcache";
  std::string webhook_secret = "buildcache-webhook-tls";
  bool help = false;
  bool version = false;
};

bool ParseInt(std::string_view text, int min, int* out) {
  char* end = nullptr;
  std::string s(text);
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < min || v > 1000000) return false;
  *out = static_cast<int>(v);
  return true;
}

// "a, b,,c" -> {"a", "b", "c"}.
std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = std::min(text.find(',', start), text.size());
    std::string_view item = text.substr(start, end - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) out.emplace_back(item);
    start = end + 1;
  }
  return out;
}

// Accepts "--flag value" and "--flag=value". Returns an error message, or "".
std::string ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg == "--help" || arg == "-h") {
      f->help = true;
      continue;
    }
    if (arg == "--version") {
      f->version = true;
      continue;
    }
    if (arg == "--leader-elect") {
      if (has_value && value != "true" && value != "false") return "--leader-elect: true or false";
      f->leader_elect = !has_value || value == "true";
      continue;
    }
    static constexpr std::string_view kValueFlags[] = {"--kubeconfig",
                                                       "--agent-image",
                                                       "--namespace",
                                                       "--buildcache-namespaces",
                                                       "--allowed-agent-images",
                                                       "--host-path-root",
                                                       "--go-sumdb-name",
                                                       "--leader-election-namespace",
                                                       "--leader-election-id",
                                                       "--leader-election-lease-seconds",
                                                       "--metrics-addr",
                                                       "--workers",
                                                       "--metrics-scrape-interval",
                                                       "--log-level",
                                                       "--webhook-listen",
                                                       "--webhook-cert-dir",
                                                       "--webhook-service",
                                                       "--webhook-configuration",
                                                       "--webhook-secret"};
    if (std::find(std::begin(kValueFlags), std::end(kValueFlags), arg) == std::end(kValueFlags)) {
      return "unknown flag " + arg;
    }
    if (!has_value) {
      if (i + 1 >= argc) return arg + ": needs a value";
      value = argv[++i];
    }
    if (arg == "--kubeconfig") {
      f->kubeconfig = value;
    } else if (arg == "--agent-image") {
      f->agent_image = value;
    } else if (arg == "--namespace") {
      f->ns = value;
    } else if (arg == "--buildcache-namespaces") {
      f->buildcache_namespaces = SplitList(value);
    } else if (arg == "--allowed-agent-images") {
      f->allowed_agent_images = SplitList(value);
    } else if (arg == "--host-path-root") {
      if (value.empty() || value.front() != '/') return arg + ": an absolute directory";
      f->host_path_root = value;
    } else if (arg == "--go-sumdb-name") {
      f->go_sumdb_name = value;
    } else if (arg == "--leader-election-namespace") {
      f->lease_namespace = value;
    } else if (arg == "--leader-election-id") {
      f->lease_name = value;
    } else if (arg == "--leader-election-lease-seconds") {
      if (!ParseInt(value, 3, &f->lease_seconds)) return arg + ": an integer >= 3";
    } else if (arg == "--metrics-addr") {
      f->metrics_addr = value;
    } else if (arg == "--workers") {
      if (!ParseInt(value, 1, &f->workers)) return arg + ": an integer >= 1";
    } else if (arg == "--metrics-scrape-interval") {
      if (!ParseInt(value, 0, &f->scrape_seconds)) return arg + ": an integer >= 0 (seconds)";
    } else if (arg == "--log-level") {
      if (!log::ParseLevel(value, &f->log_level)) return arg + ": debug, info, warn or error";
    } else if (arg == "--webhook-listen") {
      f->webhook_listen = value;
    } else if (arg == "--webhook-cert-dir") {
      f->webhook_cert_dir = value;
    } else if (arg == "--webhook-service") {
      f->webhook_service = value;
    } else if (arg == "--webhook-configuration") {
      f->webhook_configuration = value;
    } else if (arg == "--webhook-secret") {
      f->webhook_secret = value;
    }
  }
  if (!f->help && !f->version && f->agent_image.empty()) return "--agent-image is required";
  return "";
}

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

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (std::string error = ParseFlags(argc, argv, &flags); !error.empty()) {
    std::fprintf(stderr, "buildcache-operator: %s\n\n%s", error.c_str(), kUsage);
    return 2;
  }
  if (flags.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (flags.version) {
    std::printf("buildcache-operator %s\n", BC_OPERATOR_VERSION);
    return 0;
  }
  log::SetLevel(flags.log_level);

  // Block the stop signals in every thread; this one waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // Watches hold a connection each; a few threads serve them all.
  http::SetRestClientIoThreads(4);
  Result<kube::KubeConfig> kubeconfig = kube::LoadDefaultConfig(flags.kubeconfig);
  if (!kubeconfig.ok()) {
    log::Error("kubeconfig failed", {{"error", kubeconfig.status().ToString()}});
    return 1;
  }
  Result<std::unique_ptr<kube::RestKubeClient>> client = kube::RestKubeClient::Create(*kubeconfig);
  if (!client.ok()) {
    log::Error("kube client failed", {{"error", client.status().ToString()}});
    return 1;
  }
  const std::string identity = Identity();
  log::Info("starting", {{"identity", identity},
                         {"api_server", kubeconfig->server},
                         {"namespace", flags.ns.empty() ? "*" : flags.ns},
                         {"leader_elect", flags.leader_elect}});

  metrics::Registry registry;
  controllers::OperatorMetrics operator_metrics(registry);
  kube::EventRecorder events(client->get(), {.instance = identity});
  // The scraper gets a client of its own: its requests must not queue behind the workers'.
  std::unique_ptr<kube::RestKubeClient> scrape_client;
  std::unique_ptr<controllers::HitRatioScraper> scraper;
  if (flags.scrape_seconds > 0) {
    Result<std::unique_ptr<kube::RestKubeClient>> sc =
        kube::RestKubeClient::Create(*kubeconfig, {.user_agent = "buildcache-operator/scraper"});
    if (!sc.ok()) {
      log::Error("scraper client failed", {{"error", sc.status().ToString()}});
      return 1;
    }
    scrape_client = std::move(sc).value();
    scraper = std::make_unique<controllers::HitRatioScraper>(scrape_client.get(),
                                                             controllers::HitRatioScraperOptions{});
  }
  // The operator's namespace (in a cluster: its ServiceAccount's) is where its pods scrape the
  // agents from, which the agents' NetworkPolicies admit.
  controllers::ReconcilerOptions reconciler_options{
      .build = {.agent_image = flags.agent_image,
                .operator_namespace = (*client)->default_namespace()},
      .policy = {.allowed_images = flags.allowed_agent_images,
                 .host_path_root = flags.host_path_root,
                 .go_sumdb_name = flags.go_sumdb_name},
      .namespaces = flags.buildcache_namespaces};
  if (scraper) {
    reconciler_options.hit_stats = [s = scraper.get()](const std::string& key) {
      return s->Get(key);
    };
  }
  controllers::Reconciler reconciler(client->get(), &events, std::move(reconciler_options));
  controllers::BuildCacheController controller(
      client->get(), &reconciler, &operator_metrics,
      {.ns = flags.ns,
       .namespaces = flags.buildcache_namespaces,
       .workers = flags.workers,
       .scraper = scraper.get(),
       .scrape_interval = std::chrono::seconds(flags.scrape_seconds)});

  std::unique_ptr<kube::LeaderElector> elector;
  std::atomic<bool> stopping{false};
  std::atomic<int> exit_code{0};
  if (flags.leader_elect) {
    kube::LeaderElectionConfig le;
    le.lease_namespace =
        flags.lease_namespace.empty() ? (*client)->default_namespace() : flags.lease_namespace;
    le.lease_name = flags.lease_name;
    le.identity = identity;
    le.lease_duration = std::chrono::seconds(flags.lease_seconds);
    le.renew_deadline = le.lease_duration * 2 / 3;
    le.retry_period = le.lease_duration / 7;
    le.on_started_leading = [&](std::stop_token leading) {
      log::Info("leading", {{"identity", identity}});
      operator_metrics.leader.With().Set(1);
      controller.Run(leading);
    };
    le.on_stopped_leading = [&] {
      operator_metrics.leader.With().Set(0);
      if (!stopping.load()) {
        // The controller cannot be restarted in-process; exit so the pod restarts and campaigns
        // again, as client-go controllers do.
        log::Error("leadership lost", {{"identity", identity}});
        exit_code = 1;
        kill(getpid(), SIGTERM);
      }
    };
    le.on_new_leader = [](const std::string& leader) {
      log::Info("leader", {{"identity", leader}});
    };
    Result<std::unique_ptr<kube::LeaderElector>> created =
        kube::LeaderElector::Create(client->get(), std::move(le));
    if (!created.ok()) {
      log::Error("leader election failed", {{"error", created.status().ToString()}});
      return 2;
    }
    elector = std::move(created).value();
  }

  // /metrics, /healthz and /readyz. A standby replica is ready: it serves (the webhook, metrics)
  // and takes over when the leader goes; the leader is ready once its caches have synced.
  http::Router router;
  router.Add("GET", "/healthz", [](http::Request&, http::Response& resp) {
    Reply(resp, 200, "text/plain; charset=utf-8", "ok\n");
  });
  router.Add("GET", "/readyz", [&](http::Request&, http::Response& resp) {
    const bool standby = elector != nullptr && !elector->IsLeader();
    if (standby || controller.synced()) {
      Reply(resp, 200, "text/plain; charset=utf-8", "ready\n");
    } else {
      Reply(resp, 503, "text/plain; charset=utf-8", "not ready\n");
    }
  });
  router.Add("GET", "/metrics", [&](http::Request&, http::Response& resp) {
    operator_metrics.queue_depth.With().Set(static_cast<double>(controller.queue_depth()));
    Reply(resp, 200, metrics::kContentType, registry.Render());
  });
  http::ServerOptions server_options;
  server_options.listen = flags.metrics_addr;
  server_options.server_name = "buildcache-operator";
  Result<std::unique_ptr<http::Server>> server =
      http::Server::Start(server_options, router.AsHandler());
  if (!server.ok()) {
    log::Error("metrics server failed", {{"error", server.status().ToString()}});
    return 1;
  }
  const std::string host = flags.metrics_addr.substr(0, flags.metrics_addr.rfind(':'));
  log::Info("metrics listening", {{"address", host + ":" + std::to_string((*server)->port())}});

  // Servers that every replica runs, leader or not: the admission webhook.
  std::unique_ptr<kube::RestKubeClient> webhook_client;
  std::unique_ptr<webhook::WebhookMetrics> webhook_metrics;
  std::unique_ptr<webhook::InformerCacheLookup> webhook_lookup;
  std::unique_ptr<webhook::CertManager> certs;
  std::jthread cert_renewal;
  std::unique_ptr<webhook::WebhookServer> webhook_server;
  if (!flags.webhook_listen.empty()) {
    Result<std::unique_ptr<kube::RestKubeClient>> wc = kube::RestKubeClient::Create(
        *kubeconfig,
        {.user_agent = "buildcache-operator/webhook", .timeout = std::chrono::seconds(4)});
    if (!wc.ok()) {
      log::Error("webhook client failed", {{"error", wc.status().ToString()}});
      return 1;
    }
    webhook_client = std::move(wc).value();
    webhook_metrics = std::make_unique<webhook::WebhookMetrics>(registry);
    webhook_lookup = std::make_unique<webhook::InformerCacheLookup>(webhook_client.get());
    // Not waited for: until the watches have listed, reviews read through to the API server.
    webhook_lookup->Start();
    webhook::WebhookServerOptions webhook_options;
    webhook_options.listen = flags.webhook_listen;
    if (!flags.webhook_cert_dir.empty()) {  // cert-manager mode
      webhook_options.credentials = webhook::FileCredentials(flags.webhook_cert_dir + "/tls.crt",
                                                             flags.webhook_cert_dir + "/tls.key");
    } else {
      const std::string ns = (*client)->default_namespace();
      webhook::CertManagerOptions cert_options;
      cert_options.ns = ns;
      cert_options.secret_name = flags.webhook_secret;
      cert_options.webhook_configuration = flags.webhook_configuration;
      cert_options.dns_names = {flags.webhook_service + "." + ns + ".svc",
                                flags.webhook_service + "." + ns + ".svc.cluster.local"};
      certs = std::make_unique<webhook::CertManager>(client->get(), cert_options);
      // Serving needs a certificate; Run keeps the caBundle current afterwards.
      while (true) {
        Status s = certs->Sync();
        if (certs->Current().ok()) break;
        log::Warn("webhook certificate sync failed", {{"error", s.ToString()}});
        sigset_t pending;
        if (sigpending(&pending) == 0 &&
            (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT))) {
          return 0;
        }
        std::this_thread::sleep_for(std::chrono::seconds(5));
      }
      webhook_options.credentials = [c = certs.get()] { return c->Current(); };
      cert_renewal = std::jthread([c = certs.get()](std::stop_token stop) { c->Run(stop); });
    }
    Result<std::unique_ptr<webhook::WebhookServer>> started = webhook::WebhookServer::Start(
        std::move(webhook_options), webhook_lookup.get(), &events, webhook_metrics.get());
    if (!started.ok()) {
      log::Error("webhook server failed", {{"error", started.status().ToString()}});
      return 1;
    }
    webhook_server = std::move(started).value();
  }

  // The controllers: under leader election only the leader runs them.
  std::jthread runner([&](std::stop_token stop) {
    if (elector) {
      elector->Run(stop);
    } else {
      operator_metrics.leader.With().Set(1);
      controller.Run(stop);
    }
  });

  int sig = 0;
  sigwait(&stop_signals, &sig);
  stopping = true;
  log::Info("stopping", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  runner.request_stop();
  runner.join();
  if (webhook_server) webhook_server->Stop();
  cert_renewal.request_stop();
  (*server)->Stop(std::chrono::seconds(2));
  log::Info("stopped", {{"exit_code", exit_code.load()}});
  return exit_code.load();
}
