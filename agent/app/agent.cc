#include "agent/app/agent.h"

#include <utility>

#include "agent/app/instrumented_handler.h"
#include "agent/frontends/cargo/cargo_frontend.h"
#include "agent/frontends/goproxy/goproxy_frontend.h"
#include "agent/frontends/httpcache/httpcache.h"
#include "agent/frontends/maven/maven_frontend.h"
#include "agent/frontends/npm/npm_frontend.h"
#include "agent/frontends/pypi/pypi_frontend.h"
#include "agent/store/lmdb_store.h"
#include "agent/upstream/upstream.h"
#include "common/log/log.h"

namespace buildcache::agent {
namespace {

void Reply(http::Response& resp, int code, std::string_view content_type, std::string_view body) {
  resp.SetStatus(code);
  resp.SetHeader("Content-Type", content_type);
  resp.SetHeader("Cache-Control", "no-store");
  (void)resp.Send(body);
}

}  // namespace

Agent::Agent() : metrics_(registry_) {}

Agent::~Agent() { Stop(); }

Result<std::unique_ptr<Agent>> Agent::Start(const AgentConfig& config) {
  std::unique_ptr<Agent> agent(new Agent());
  AgentMetrics& m = agent->metrics_;

  store::LmdbStoreOptions store_options;
  store_options.data_dir = config.store.data_dir;
  store_options.max_bytes = config.store.max_size;
  store_options.verify_reads = config.store.verify_reads == VerifyReads::kAlways
                                   ? store::VerifyReads::kAlways
                                   : store::VerifyReads::kWhenChanged;
  store_options.observer.on_evicted = [&m](const store::BlobInfo& blob) {
    m.evictions.Inc();
    m.evicted_bytes.Inc(static_cast<double>(blob.size));
  };
  store_options.observer.on_corrupt = [&m](const store::BlobInfo&) { m.corrupt_blobs.Inc(); };
  BC_ASSIGN_OR_RETURN(agent->store_, store::LmdbStore::Open(std::move(store_options)));

  store::LmdbStore* s = agent->store_.get();
  metrics::Registry& r = agent->registry_;
  r.AddCallbackGauge("buildcache_store_bytes", "Bytes of blobs in the local store.",
                     [s] { return static_cast<double>(s->Stats().bytes); });
  r.AddCallbackGauge("buildcache_store_objects", "Blobs in the local store.",
                     [s] { return static_cast<double>(s->Stats().blobs); });
  r.AddCallbackGauge("buildcache_store_keys", "Keys mapped to blobs in the local store.",
                     [s] { return static_cast<double>(s->Stats().keys); });
  r.AddCallbackGauge("buildcache_store_max_bytes", "The local store's byte quota.",
                     [s] { return static_cast<double>(s->Stats().max_bytes); });
  r.AddGauge("buildcache_build_info", "The agent's version, as a label; the value is 1.",
             {"version"})
      .With({BUILDCACHE_VERSION})
      .Set(1);

  http::Router& router = agent->router_;
  Agent* self = agent.get();
  router.Add("GET", "/healthz", [](http::Request&, http::Response& resp) {
    Reply(resp, 200, "text/plain; charset=utf-8", "ok\n");
  });
  router.Add("GET", "/readyz", [self](http::Request&, http::Response& resp) {
    if (self->ready_.load()) {
      Reply(resp, 200, "text/plain; charset=utf-8", "ready\n");
    } else {
      Reply(resp, 503, "text/plain; charset=utf-8", "not ready\n");
    }
  });
  router.Add("GET", "/metrics", [self](http::Request&, http::Response& resp) {
    Reply(resp, 200, metrics::kContentType, self->registry_.Render());
  });

  if (config.httpcache.enabled) {
    httpcache::HttpCacheOptions options;
    options.max_object_size = config.httpcache.max_object_size;
    agent->httpcache_ = std::make_unique<httpcache::HttpCacheFrontend>(*s, options);
    http::Handler handler = Instrument(
        "httpcache", m, [fe = agent->httpcache_.get()](http::Request& req, http::Response& resp) {
          fe->Handle(req, resp);
        });
    for (const char* prefix : httpcache::HttpCacheFrontend::kPathPrefixes) {
      router.Add("", prefix, handler);
    }
  }

  BC_RETURN_IF_ERROR(agent->StartPackageFrontends(config));

  http::ServerOptions server_options;
  server_options.listen = config.listen;
  server_options.max_connections = static_cast<int>(config.server.max_connections);
  server_options.idle_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.server.idle_timeout);
  BC_ASSIGN_OR_RETURN(agent->server_, http::Server::Start(server_options, router.AsHandler()));

  // Report the address actually bound (port 0 picks one).
  std::string host = config.listen.substr(0, config.listen.rfind(':'));
  agent->address_ = host + ":" + std::to_string(agent->server_->port());
  agent->ready_ = true;
  store::StoreStats stats = s->Stats();
  log::Info("listening", {{"address", agent->address_},
                          {"data_dir", config.store.data_dir},
                          {"max_bytes", stats.max_bytes},
                          {"stored_bytes", stats.bytes},
                          {"stored_objects", stats.blobs},
                          {"version", BUILDCACHE_VERSION}});
  return agent;
}

Status Agent::StartPackageFrontends(const AgentConfig& config) {
  if (!config.pypi.enabled() && !config.goproxy.enabled() && !config.npm.enabled() &&
      !config.cargo.enabled() && !config.maven.enabled()) {
    return Status::Ok();
  }
  AgentMetrics& m = metrics_;
  upstream::FetcherOptions fetcher_options;
  fetcher_options.ca_file = config.upstream_client.ca_file;
  fetcher_options.attempts = static_cast<int>(config.upstream_client.attempts);
  fetcher_options.user_agent = "buildcache-agent/" BUILDCACHE_VERSION;
  fetcher_ = upstream::NewHttpFetcher(fetcher_options);

  upstream::UpstreamObserver observer;
  observer.on_fetch = [&m](std::string_view frontend, std::string_view outcome, uint64_t bytes,
                           double seconds) {
    std::string fe(frontend);
    m.upstream_requests.With({fe, std::string(outcome)}).Inc();
    m.upstream_bytes.With({fe}).Inc(static_cast<double>(bytes));
    m.upstream_duration.With({fe}).Observe(seconds);
  };
  observer.on_stale_served = [&m](std::string_view frontend) {
    m.stale_served.With({std::string(frontend)}).Inc();
  };
  observer.on_coalesced = [&m](std::string_view frontend) {
    m.coalesced.With({std::string(frontend)}).Inc();
  };
  observer.on_verify_failed = [&m](std::string_view frontend) {
    m.verify_failed.With({std::string(frontend)}).Inc();
  };
  artifacts_ = std::make_unique<upstream::ArtifactCache>(*store_, *fetcher_, observer);
  metadata_ = std::make_unique<upstream::MetadataCache>(*store_, *fetcher_, observer);

  upstream::FetchOptions fetch;
  fetch.connect_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.upstream_client.connect_timeout);
  fetch.read_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.upstream_client.read_timeout);

  if (config.goproxy.enabled()) {
    const GoproxyConfig& gc = config.goproxy;
    goproxy::GoproxyOptions go;
    go.upstream = gc.upstream;
    go.metadata_ttl = std::chrono::duration_cast<std::chrono::seconds>(gc.metadata_ttl);
    go.negative_ttl = std::chrono::duration_cast<std::chrono::seconds>(gc.negative_ttl);
    go.sumdb.name = gc.sumdb.name;
    go.sumdb.upstream = gc.sumdb.upstream;
    go.sumdb.latest_ttl = std::chrono::duration_cast<std::chrono::seconds>(gc.sumdb.latest_ttl);
    go.sumdb.verify = gc.sumdb.verify;
    go.sumdb.no_verify = gc.sumdb.no_verify;
    go.fetch = fetch;
    goproxy_ = std::make_unique<goproxy::GoproxyFrontend>(*store_, *artifacts_, *metadata_, go);
    router_.Add(
        "", goproxy_->options().prefix,
        Instrument("goproxy", m, [fe = goproxy_.get()](http::Request& req, http::Response& resp) {
          fe->Handle(req, resp);
        }));
    log::Info("frontend enabled", {{"frontend", "goproxy"},
                                   {"upstream", gc.upstream},
                                   {"sumdb", gc.sumdb.name},
                                   {"sumdb_upstream", goproxy_->options().sumdb.upstream}});
  }

  if (config.npm.enabled()) {
    npm::NpmOptions options;
    options.upstream = config.npm.upstream;
    options.public_url = config.npm.public_url;
    options.metadata_ttl =
        std::chrono::duration_cast<std::chrono::seconds>(config.npm.metadata_ttl);
    options.negative_ttl =
        std::chrono::duration_cast<std::chrono::seconds>(config.npm.negative_ttl);
    options.max_packument_size = config.npm.max_packument_size;
    options.fetch = fetch;
    npm_ = std::make_unique<npm::NpmFrontend>(*store_, *artifacts_, *metadata_, options);
    router_.Add("", "/npm",
                Instrument("npm", m, [fe = npm_.get()](http::Request& req, http::Response& resp) {
                  fe->Handle(req, resp);
                }));
    log::Info("frontend enabled", {{"frontend", "npm"}, {"upstream", config.npm.upstream}});
  }

  if (config.cargo.enabled()) {
    cargo::CargoOptions options;
    options.upstream = config.cargo.upstream;
    options.public_url = config.cargo.public_url;
    options.metadata_ttl =
        std::chrono::duration_cast<std::chrono::seconds>(config.cargo.metadata_ttl);
    options.negative_ttl =
        std::chrono::duration_cast<std::chrono::seconds>(config.cargo.negative_ttl);
    options.fetch = fetch;
    cargo_ = std::make_unique<cargo::CargoFrontend>(*artifacts_, *metadata_, options);
    router_.Add(
        "", options.prefix,
        Instrument("cargo", m, [fe = cargo_.get()](http::Request& req, http::Response& resp) {
          fe->Handle(req, resp);
        }));
    log::Info("frontend enabled", {{"frontend", "cargo"}, {"upstream", config.cargo.upstream}});
  }

  if (config.maven.enabled()) {
    maven::MavenOptions options;
    options.upstream = config.maven.upstream;
    options.metadata_ttl =
        std::chrono::duration_cast<std::chrono::seconds>(config.maven.metadata_ttl);
    options.negative_ttl =
        std::chrono::duration_cast<std::chrono::seconds>(config.maven.negative_ttl);
    options.max_mutable_size = config.maven.max_mutable_size;
    options.fetch = fetch;
    maven_ = std::make_unique<maven::MavenFrontend>(*store_, *artifacts_, *metadata_, options);
    router_.Add(
        "", options.prefix,
        Instrument("maven", m, [fe = maven_.get()](http::Request& req, http::Response& resp) {
          fe->Handle(req, resp);
        }));
    log::Info("frontend enabled", {{"frontend", "maven"}, {"upstream", config.maven.upstream}});
  }

  if (!config.pypi.enabled()) return Status::Ok();
  pypi::PypiOptions options;
  options.upstream = config.pypi.upstream;
  options.metadata_ttl = std::chrono::duration_cast<std::chrono::seconds>(config.pypi.metadata_ttl);
  options.negative_ttl = std::chrono::duration_cast<std::chrono::seconds>(config.pypi.negative_ttl);
  options.max_upload_size = config.pypi.max_upload_size;
  options.wheel_house = config.pypi.wheel_house;
  options.fetch = fetch;
  pypi_ = std::make_unique<pypi::PypiFrontend>(*store_, *artifacts_, *metadata_, options);
  for (const std::string& dir : config.pypi.wheel_directories) {
    auto scanned = pypi_->wheel_house().ScanDirectory(dir);
    if (!scanned.ok()) {
      log::Warn("wheel directory not indexed",
                {{"dir", dir}, {"error", scanned.status().ToString()}});
    }
  }
  router_.Add("", "/pypi",
              Instrument("pypi", m, [fe = pypi_.get()](http::Request& req, http::Response& resp) {
                fe->Handle(req, resp);
              }));
  log::Info("frontend enabled", {{"frontend", "pypi"}, {"upstream", config.pypi.upstream}});
  return Status::Ok();
}

void Agent::Stop() {
  ready_ = false;
  if (server_) server_->Stop();
  server_.reset();
  httpcache_.reset();
  pypi_.reset();
  npm_.reset();
  goproxy_.reset();
  cargo_.reset();
  maven_.reset();
  metadata_.reset();
  artifacts_.reset();
  fetcher_.reset();
  store_.reset();
}

}  // namespace buildcache::agent
