#include "agent/app/agent.h"

#include <algorithm>
#include <map>
#include <utility>

#include "agent/app/admin_handler.h"
#include "agent/app/cluster_builds.h"
#include "agent/app/frontend_options.h"
#include "agent/app/instrumented_handler.h"
#include "agent/app/pod_builds.h"
#include "agent/dircache/directory_sync.h"
#include "agent/frontends/cargo/cargo_frontend.h"
#include "agent/frontends/goproxy/goproxy_frontend.h"
#include "agent/frontends/httpcache/httpcache.h"
#include "agent/frontends/maven/maven_frontend.h"
#include "agent/frontends/npm/npm_frontend.h"
#include "agent/frontends/pypi/build_uploads.h"
#include "agent/frontends/pypi/pypi_frontend.h"
#include "agent/frontends/pypi/wheel_directories.h"
#include "agent/identity/identity_gate.h"
#include "agent/replication/caller_gate.h"
#include "agent/replication/fetch_policy.h"
#include "agent/replication/membership.h"
#include "agent/replication/peer_client.h"
#include "agent/replication/peer_server.h"
#include "agent/replication/peer_source.h"
#include "agent/replication/replicated_store.h"
#include "agent/store/lmdb_store.h"
#include "agent/upstream/upstream.h"
#include "agent/upstream/url.h"
#include "common/kube/kube_client.h"
#include "common/log/log.h"
#include "common/net/host_port.h"

namespace buildcache::agent {
namespace {

// The peer metrics label: a peer's host, whether it came from configuration ("10.0.0.2:8081",
// "[fd00::2]:8081") or from gRPC ("ipv4:10.0.0.2:53712"), so ephemeral ports add no series.
std::string PeerHost(std::string_view peer) {
  for (std::string_view prefix : {"ipv4:", "ipv6:"}) {
    if (peer.starts_with(prefix)) peer.remove_prefix(prefix.size());
  }
  return std::string(net::BareHost(peer));
}

void Reply(http::Response& resp, int code, std::string_view content_type, std::string_view body) {
  resp.SetStatus(code);
  resp.SetHeader("Content-Type", content_type);
  resp.SetHeader("Cache-Control", "no-store");
  (void)resp.Send(body);
}

// The wheel builders of pypi.builders, each probed once (in the sandbox) for its platform and
// tool versions; scratch directories and build logs go under <dataDir>/pypi-builds. A builder
// that does not run is a configuration error.
Result<pypi::WheelBuildOptions> PypiBuildOptions(const AgentConfig& config, AgentMetrics& m) {
  pypi::WheelBuildOptions o;
  o.work_dir = std::filesystem::path(config.store.data_dir) / "pypi-builds";
  o.records_prefix = "pypi/builds/";
  o.sandbox =
      config.pypi.build_sandbox == "none" ? pypi::Sandbox::kNone : pypi::Sandbox::kBubblewrap;
  o.deadline = std::chrono::duration_cast<std::chrono::milliseconds>(config.pypi.build_deadline);
  o.failure_ttl =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.pypi.build_failure_ttl);
  o.workers = static_cast<size_t>(config.pypi.build_workers);
  o.metrics = {&m.pypi_builds.With({"started"}), &m.pypi_builds.With({"succeeded"}),
               &m.pypi_builds.With({"failed"}), &m.pypi_builds.With({"deduplicated"}),
               &m.pypi_build_duration};
  const std::filesystem::path probe_dir = o.work_dir / "probe";
  for (const PypiBuilderConfig& b : config.pypi.builders) {
    if (!b.image.empty()) {
      // A pod builder's platform is declared (its pod runs elsewhere): nothing to probe.
      o.builders.push_back(ImageBuilderSpec(b));
      log::Info("pypi builder ready", {{"builder", b.name},
                                       {"platform", o.builders.back().platform.Key()},
                                       {"image", b.image}});
      continue;
    }
    std::error_code ec;
    std::filesystem::remove_all(probe_dir, ec);
    std::filesystem::create_directories(probe_dir, ec);
    pypi::SandboxRun run;
    run.sandbox = o.sandbox;
    run.read_only_paths = b.read_only_paths;
    run.scratch = probe_dir;
    auto spec = pypi::ProbeBuilder(b.name.empty() ? b.python : b.name, b.python, run);
    if (!spec.ok()) return FailedPrecondition("pypi.builders: " + spec.status().message());
    log::Info(
        "pypi builder ready",
        {{"builder", spec->name}, {"platform", spec->platform.Key()}, {"tools", spec->tools}});
    o.builders.push_back(std::move(spec).value());
  }
  return o;
}

// The copies of a wheel-house list (its store key) that the list's owners hold, when this agent
// is not one of them (pypi::WheelHouseOptions::owner_copies).
std::vector<std::string> WheelListOwnerCopies(replication::Cluster& cluster,
                                              replication::PeerClient& client,
                                              const std::string& key) {
  constexpr uint64_t kMaxListBytes = uint64_t{16} << 20;
  std::vector<std::string> copies;
  std::vector<std::string> owners = cluster.Owners(key);
  if (std::find(owners.begin(), owners.end(), cluster.self()) != owners.end()) return copies;
  for (const std::string& owner : owners) {
    if (!cluster.IsLive(owner)) continue;
    std::string body;
    Status got = client.GetByKey(
        owner, key,
        [](const replication::PeerObject& object) {
          return object.size > kMaxListBytes ? TooLarge("wheel list too large") : Status::Ok();
        },
        [&body](std::string_view data) {
          body.append(data);
          return Status::Ok();
        });
    if (got.ok()) {
      copies.push_back(std::move(body));
    } else if (got.code() != StatusCode::kNotFound) {
      log::Debug("wheel list not refreshed", {{"peer", owner}, {"error", got.ToString()}});
    }
  }
  return copies;
}

// The address this process reaches its own listener at: a wildcard listen address (":port",
// 0.0.0.0, ::) becomes loopback.
std::string LocalAddress(const std::string& listen, uint16_t port) {
  auto parsed = net::HostPort::ParseListen(listen);
  std::string host = parsed.ok() ? parsed->host() : "";
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  return net::HostPort(host, port).ToString();
}

}  // namespace

Agent::Agent() : metrics_(registry_) {}

Agent::~Agent() { Stop(); }

Result<std::unique_ptr<Agent>> Agent::Start(const AgentConfig& config) {
  std::unique_ptr<Agent> agent(new Agent());
  AgentMetrics& m = agent->metrics_;
  // Before anything touches the directory: opening the store cleans its tmp/.
  BC_ASSIGN_OR_RETURN(agent->data_dir_lock_, DataDirLock::Acquire(config.store.data_dir));

  store::LmdbStoreOptions store_options;
  store_options.data_dir = config.store.data_dir;
  store_options.max_bytes = config.store.max_size;
  // What one upload and one client (or peer) may hold in flight. Default: a quarter of the quota,
  // but never less than the largest build-cache object the configuration accepts.
  uint64_t default_in_flight = config.store.max_size / 4;
  if (config.httpcache.enabled) {
    default_in_flight = std::max(default_in_flight, config.httpcache.max_object_size);
  }
  store_options.limits.max_writer_bytes = config.store.max_in_flight_per_writer != 0
                                              ? config.store.max_in_flight_per_writer
                                              : default_in_flight;
  store_options.limits.max_caller_bytes = config.store.max_in_flight_per_client != 0
                                              ? config.store.max_in_flight_per_client
                                              : default_in_flight;
  store_options.verify_reads = config.store.verify_reads == VerifyReads::kAlways
                                   ? store::VerifyReads::kAlways
                                   : store::VerifyReads::kWhenChanged;
  store_options.observer.on_evicted = [&m](const store::BlobInfo& blob) {
    m.evictions.Inc();
    m.evicted_bytes.Inc(static_cast<double>(blob.size));
  };
  store_options.observer.on_corrupt = [&m](const store::BlobInfo&) { m.corrupt_blobs.Inc(); };
  BC_ASSIGN_OR_RETURN(agent->store_, store::LmdbStore::Open(std::move(store_options)));
  BC_RETURN_IF_ERROR(agent->StartReplication(config));

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
  r.AddCallbackGauge("buildcache_store_reserved_bytes",
                     "Bytes of the store quota held by in-flight writes (received, not committed).",
                     [s] { return static_cast<double>(s->Stats().reserved_bytes); });
  r.AddGauge("buildcache_build_info", "The agent's version, as a label; the value is 1.",
             {"version"})
      .With({BUILDCACHE_VERSION})
      .Set(1);
  BC_RETURN_IF_ERROR(agent->OpenDirectoryCaches(config));

  http::Router& router = agent->router_;
  Agent* self = agent.get();
  http::Handler healthz = [](http::Request&, http::Response& resp) {
    Reply(resp, 200, "text/plain; charset=utf-8", "ok\n");
  };
  http::Handler readyz = [self](http::Request&, http::Response& resp) {
    if (self->ready_.load() && self->dircache_ready_.load()) {
      Reply(resp, 200, "text/plain; charset=utf-8", "ready\n");
    } else {
      Reply(resp, 503, "text/plain; charset=utf-8", "not ready\n");
    }
  };
  router.Add("GET", "/healthz", healthz);
  router.Add("GET", "/readyz", readyz);
  agent->probe_router_.Add("GET", "/healthz", healthz);
  agent->probe_router_.Add("GET", "/readyz", readyz);
  router.Add("GET", "/metrics", [self](http::Request&, http::Response& resp) {
    Reply(resp, 200, metrics::kContentType, self->registry_.Render());
  });

  agent->scope_labels_ =
      std::make_unique<ScopeLabels>(static_cast<size_t>(config.identity.attribution_limit));
  BC_RETURN_IF_ERROR(agent->StartIdentity(config));
  if (config.httpcache.enabled) {
    httpcache::HttpCacheOptions options;
    options.max_object_size = config.httpcache.max_object_size;
    options.refuse_write = [gate = agent->identity_.get()](http::Request& req, http::Response& resp,
                                                           const identity::Caller& caller,
                                                           std::string_view why) {
      gate->RefuseWrite(req, resp, caller, "httpcache", why);
    };
    agent->httpcache_ =
        std::make_unique<httpcache::HttpCacheFrontend>(*agent->served_store_, options);
    http::Handler handler = Instrument(
        "httpcache", m,
        agent->identity_->Wrap(
            "httpcache", identity::WritePolicy::kScopedByFrontend,
            Attribute(agent->attribution(),
                      [fe = agent->httpcache_.get()](http::Request& req, http::Response& resp,
                                                     const identity::Caller& caller) {
                        fe->Handle(req, resp, caller);
                      })));
    for (const char* prefix : httpcache::HttpCacheFrontend::kPathPrefixes) {
      router.Add("", prefix, handler);
    }
  }

  // The purge removes from the local store: removing through the replicating one is the same, and
  // the admin endpoint must not pull anything from peers.
  std::string admin_token;
  if (!config.admin.token_file.empty()) {
    BC_ASSIGN_OR_RETURN(admin_token, ReadAdminToken(config.admin.token_file));
  }
  agent->admin_ = std::make_unique<AdminHandler>(std::move(admin_token), *agent->store_);
  router.Add("", "/admin/",
             [admin = agent->admin_.get()](http::Request& req, http::Response& resp) {
               admin->Handle(req, resp);
             });

  BC_RETURN_IF_ERROR(agent->StartPackageFrontends(config));
  BC_RETURN_IF_ERROR(agent->StartPeerServer(config));

  http::ServerOptions server_options;
  server_options.listen = config.listen;
  server_options.max_connections = static_cast<int>(config.server.max_connections);
  server_options.idle_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.server.idle_timeout);
  server_options.max_connections_per_client =
      static_cast<int>(config.server.max_connections_per_client);
  server_options.body_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.server.body_timeout);
  server_options.min_body_rate = config.server.min_body_rate;
  BC_ASSIGN_OR_RETURN(agent->server_, http::Server::Start(server_options, router.AsHandler()));
  if (!config.server.probe_listen.empty()) {
    // The kubelet's probes get a listener no client of the main one can fill: a few connections
    // per address, short idle time, no bodies.
    http::ServerOptions probe_options;
    probe_options.listen = config.server.probe_listen;
    probe_options.max_connections = 64;
    probe_options.max_connections_per_client = 8;
    probe_options.idle_timeout = std::chrono::seconds(10);
    probe_options.max_body_bytes = 1;
    BC_ASSIGN_OR_RETURN(agent->probe_server_,
                        http::Server::Start(probe_options, agent->probe_router_.AsHandler()));
    agent->probe_address_ = net::WithPort(config.server.probe_listen, agent->probe_server_->port());
  }

  // Report the address actually bound (port 0 picks one).
  agent->address_ = net::WithPort(config.listen, agent->server_->port());
  if (agent->pypi_ && agent->pypi_->wheel_builder() != nullptr) {
    // Builds fetch their build requirements through this agent's own index.
    agent->pypi_->wheel_builder()->SetIndexUrl(
        "http://" + LocalAddress(config.listen, agent->server_->port()) + "/pypi/simple/");
  }
  // A node that will hydrate is not ready from its very first /readyz on (StartDirectorySync,
  // below, starts the hydration only after "listening").
  if (agent->dircache_ && agent->peer_client_ && config.replication.hydrate.enabled) {
    agent->dircache_ready_ = false;
  }
  agent->ready_ = true;
  store::StoreStats stats = s->Stats();
  log::Info("listening", {{"address", agent->address_},
                          {"probe_address", agent->probe_address_},
                          {"data_dir", config.store.data_dir},
                          {"max_bytes", stats.max_bytes},
                          {"stored_bytes", stats.bytes},
                          {"stored_objects", stats.blobs},
                          {"version", BUILDCACHE_VERSION}});
  // Directory caches reach peers through the replication's gRPC client (none without
  // replication: the directories are then indexed but not synced). Hydration starts here.
  agent->StartDirectorySync(config, agent->peer_client_.get());
  return agent;
}

Status Agent::OpenDirectoryCaches(const AgentConfig& config) {
  if (config.directories.empty()) {
    return Status::Ok();
  }
  AgentMetrics& m = metrics_;
  dircache::DirCacheObserver o;
  o.on_indexed = [&m](const std::string& dir, uint64_t) { m.dircache_indexed.With({dir}).Inc(); };
  o.on_pulled = [&m](const std::string& dir, uint64_t bytes) {
    m.dircache_pulled.With({dir}).Inc();
    m.dircache_pulled_bytes.With({dir}).Inc(static_cast<double>(bytes));
  };
  o.on_pull_failed = [&m](const std::string& dir) { m.dircache_pull_failures.With({dir}).Inc(); };
  o.on_conflict = [&m](const std::string& dir) { m.dircache_conflicts.With({dir}).Inc(); };
  o.on_evicted = [&m](const std::string& dir, uint64_t bytes) {
    m.dircache_evictions.With({dir}).Inc();
    m.dircache_evicted_bytes.With({dir}).Inc(static_cast<double>(bytes));
  };
  o.on_usage = [&m](const std::string& dir, uint64_t files, uint64_t bytes) {
    m.dircache_files.With({dir}).Set(static_cast<double>(files));
    m.dircache_bytes.With({dir}).Set(static_cast<double>(bytes));
  };
  o.on_sync_lag = [&m](const std::string& dir, double seconds) {
    m.dircache_sync_lag.With({dir}).Set(seconds);
  };
  o.on_hydration = [&m](uint64_t files, uint64_t bytes, uint64_t target) {
    m.dircache_hydration_files.Set(static_cast<double>(files));
    m.dircache_hydration_bytes.Set(static_cast<double>(bytes));
    m.dircache_hydration_target.Set(static_cast<double>(target));
  };
  dircache_ = std::make_unique<dircache::DirectorySync>(*store_, dircache::DirectorySyncOptions{},
                                                        std::move(o));
  for (const DirectoryConfig& d : config.directories) {
    dircache::DirectoryCacheOptions options;
    options.name = d.name;
    options.root = d.path;
    options.max_size = d.max_size;
    options.settle = std::chrono::duration_cast<std::chrono::milliseconds>(d.settle);
    BC_RETURN_IF_ERROR(dircache_->Add(std::move(options)));
    // Every configured directory shows in the labelled families from the first scrape.
    m.dircache_files.With({d.name}).Set(0);
    m.dircache_bytes.With({d.name}).Set(0);
    m.dircache_sync_lag.With({d.name}).Set(0);
  }
  return dircache_->StartWatching();
}

dircache::ManifestProvider* Agent::directory_manifests() { return dircache_.get(); }

void Agent::StartDirectorySync(const AgentConfig& config, dircache::PeerDirectory* peers) {
  if (!dircache_ || peers == nullptr) {
    return;
  }
  dircache_->SetPeers(peers);
  const HydrationConfig& h = config.replication.hydrate;
  if (!h.enabled) {
    dircache_->StartSync();
    return;
  }
  dircache_ready_ = false;
  metrics_.dircache_hydrating.Set(1);
  auto max_time = std::chrono::duration_cast<std::chrono::milliseconds>(h.max_time);
  hydration_thread_ = std::thread([this, peers, max_time, max_size = h.max_size] {
    // Membership may need a moment to list peers (DNS); a node with none hydrates nothing.
    auto start = std::chrono::steady_clock::now();
    auto peer_wait = std::min<std::chrono::milliseconds>(max_time, std::chrono::seconds(10));
    while (peers->LivePeers().empty() && std::chrono::steady_clock::now() - start < peer_wait &&
           ready_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    auto left = max_time - std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - start);
    dircache::HydrationReport report =
        dircache_->Hydrate(std::max(left, std::chrono::milliseconds(0)), max_size);
    if (!report.complete) {
      log::Warn("ready without full hydration", {{"bytes", report.bytes},
                                                 {"target_bytes", report.target_bytes},
                                                 {"failed", report.failed}});
    }
    metrics_.dircache_hydrating.Set(0);
    dircache_ready_ = true;
    dircache_->StartSync();
  });
}

Status Agent::StartReplication(const AgentConfig& config) {
  served_store_ = store_.get();
  replication::Cluster* cluster = nullptr;
  metrics::Registry& r = registry_;
  // Registered whether or not replication is on, so every scrape lists the same families.
  r.AddCallbackGauge("buildcache_peer_push_queue", "Pushes to peer owners waiting or in flight.",
                     [this] { return replicated_ ? double(replicated_->PushQueueDepth()) : 0.0; });
  r.AddCallbackGauge("buildcache_peer_members", "Agents known to this one, itself included.",
                     [this] { return cluster_ ? double(cluster_->TotalCount()) : 1.0; });
  r.AddCallbackGauge("buildcache_peer_members_live",
                     "Agents known to this one and not marked down, itself included.",
                     [this] { return cluster_ ? double(cluster_->LiveCount()) : 1.0; });
  const ReplicationConfig& rc = config.replication;
  if (!rc.enabled()) return Status::Ok();

  AgentMetrics& m = metrics_;
  replication::ReplicationObserver observer;
  observer.on_peer_request = [&m](std::string_view outcome) {
    m.peer_requests.With({std::string(outcome)}).Inc();
  };
  observer.on_bytes = [&m](std::string_view direction, std::string_view peer, uint64_t bytes) {
    m.peer_bytes.With({std::string(direction), PeerHost(peer)}).Inc(static_cast<double>(bytes));
  };
  observer.on_corrupt = [&m](std::string_view peer) {
    m.peer_corrupt.With({PeerHost(peer)}).Inc();
  };
  observer.on_push = [&m](std::string_view outcome) {
    m.peer_pushes.With({std::string(outcome)}).Inc();
  };
  for (const char* outcome : {"hit", "miss", "error"}) m.peer_requests.With({outcome});

  std::vector<std::unique_ptr<replication::Membership>> sources;
  sources.push_back(std::make_unique<replication::StaticMembership>(rc.peers));
  if (!rc.peers_file.empty()) {
    sources.push_back(std::make_unique<replication::FileMembership>(rc.peers_file));
  }
  if (!rc.dns.name.empty()) {
    sources.push_back(std::make_unique<replication::DnsMembership>(
        rc.dns.name, static_cast<int>(rc.dns.port), rc.dns.interval));
  }
  const std::string self = rc.advertise.empty() ? rc.listen : rc.advertise;
  replication::ClusterOptions cluster_options;
  cluster_options.copies = static_cast<int>(rc.copies);
  cluster_ = std::make_unique<replication::Cluster>(
      std::make_unique<replication::UnionMembership>(std::move(sources)), self, cluster_options);
  cluster = cluster_.get();

  replication::PeerClientOptions client_options;
  client_options.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(rc.peer_timeout);
  client_options.tls = {rc.tls.cert_file, rc.tls.key_file, rc.tls.ca_file, rc.tls.server_name};
  peer_client_ = std::make_unique<replication::PeerClient>(
      client_options, observer, [cluster] { return cluster->LivePeers(); });

  replication::ReplicatedStoreOptions store_options;
  store_options.push_queue = static_cast<size_t>(rc.push_queue);
  // An untrusted caller's own-scope keys (agent/frontends/httpcache), read before the trusted one.
  store_options.miss_cache_prefixes = {"scope/"};
  store_options.miss_ttl = std::chrono::duration_cast<std::chrono::milliseconds>(rc.scope_miss_ttl);
  replicated_ = std::make_unique<replication::ReplicatedStore>(*store_, *cluster_, *peer_client_,
                                                               observer, store_options);
  served_store_ = replicated_.get();
  peer_source_ =
      std::make_unique<replication::ClusterPeerSource>(*cluster_, *peer_client_, observer);
  return Status::Ok();
}

Status Agent::StartPeerServer(const AgentConfig& config) {
  const ReplicationConfig& rc = config.replication;
  if (!rc.enabled()) return Status::Ok();
  AgentMetrics& m = metrics_;
  replication::ReplicationObserver observer;
  observer.on_bytes = [&m](std::string_view direction, std::string_view peer, uint64_t bytes) {
    m.peer_bytes.With({std::string(direction), PeerHost(peer)}).Inc(static_cast<double>(bytes));
  };
  observer.on_corrupt = [&m](std::string_view peer) {
    m.peer_corrupt.With({PeerHost(peer)}).Inc();
  };
  observer.on_refused = [&m](std::string_view call, std::string_view reason) {
    m.peer_refused.With({std::string(call), std::string(reason)}).Inc();
  };
  replication::PeerServerOptions options;
  options.listen = rc.listen;
  options.tls = {rc.tls.cert_file, rc.tls.key_file, rc.tls.ca_file, rc.tls.server_name};
  if (!rc.tls.enabled()) {
    // Without certificates, a caller is admitted by its source address: a current member's
    // (replication/caller_gate.h says what that relies on).
    auto members = std::make_shared<replication::MemberAddresses>([c = cluster_.get()] {
      std::vector<std::string> all = c->Peers();
      all.push_back(c->self());
      return all;
    });
    options.admit = [members](const std::string& address) { return members->Admits(address); };
  }
  // Bazel CAS entries name their SHA-256 (agent/frontends/httpcache).
  options.content_addressed_prefixes = {"httpcache/cas/"};
  options.heartbeat =
      std::max(std::chrono::milliseconds(50),
               std::chrono::duration_cast<std::chrono::milliseconds>(rc.peer_timeout) / 3);
  replication::PeerServerHooks hooks;
  if (artifacts_) {
    // A peer names the front end, the key and the URL: the front end must be one that runs here
    // and the key the one it gives that URL (PeerFetchRules), and the URL must lie under a
    // configured upstream or on a public host, checked again at every redirect (PeerFetchPolicy).
    std::vector<replication::PeerFetchRule> rules;
    std::vector<std::string> prefixes;
    using Kind = replication::PeerFetchRule::Kind;
    if (config.pypi.enabled()) {
      rules.push_back({"pypi", "pypi/files/", Kind::kFileName, "", "", false});
      rules.push_back({"pypi", "pypi/metadata/", Kind::kFileName, "", ".metadata", false});
      prefixes.push_back(config.pypi.upstream);
      prefixes.push_back(replication::ParentUrl(config.pypi.upstream));
    }
    if (config.npm.enabled()) {
      rules.push_back({"npm", "npm/tarball/", Kind::kFileName, "", "", true});
      prefixes.push_back(config.npm.upstream);
    }
    if (config.cargo.enabled()) {
      rules.push_back({"cargo", "cargo/crates/", Kind::kCrate, "", "", false});
      prefixes.push_back(config.cargo.upstream);
      std::string index = config.cargo.upstream;
      if (index.starts_with("sparse+")) index = index.substr(7);
      prefixes.push_back(replication::ParentUrl(index));
    }
    if (config.maven.enabled()) {
      std::string base = config.maven.upstream;
      if (!base.ends_with('/')) base += '/';
      rules.push_back({"maven", "maven/files/", Kind::kUpstreamPath, base, "", false});
      prefixes.push_back(config.maven.upstream);
    }
    // goproxy has no rule: its artifacts carry no digest a Fetch could check, so its agents
    // never ask (replication/peer_source.h) and the peer server refuses them.
    auto checks = std::make_shared<replication::PeerFetchRules>(std::move(rules));
    auto policy = std::make_shared<replication::PeerFetchPolicy>(prefixes);
    // A private upstream's credential, for the fetches peers ask for (the owner of an artifact
    // fetches it for the cluster); it goes to that section's upstream origin only.
    using Authorize = decltype(upstream::FetchOptions::authorization);
    auto authorize = std::make_shared<std::map<std::string, Authorize>>();
    for (auto [name, section] :
         {std::pair<const char*, const UpstreamMirrorConfig*>{"pypi", &config.pypi},
          {"npm", &config.npm},
          {"cargo", &config.cargo},
          {"maven", &config.maven}}) {
      if (section->enabled() && section->auth.enabled()) {
        (*authorize)[name] = UpstreamAuthorization(*section, name);
      }
    }
    hooks.ensure = [a = artifacts_.get(), policy, checks,
                    authorize](const upstream::Artifact& artifact) -> Result<store::BlobInfo> {
      BC_ASSIGN_OR_RETURN(upstream::Url url, upstream::ParseUrl(artifact.url));
      if (Status allowed = policy->Check(url); !allowed.ok()) {
        log::Warn("peer fetch refused", {{"url", url.Redacted()}, {"reason", allowed.message()}});
        return allowed;
      }
      std::vector<std::string> raw;
      for (const upstream::ExpectedDigest& e : artifact.expected) raw.push_back(e.raw);
      if (Status fits = checks->Check(artifact.frontend, artifact.key, artifact.url, raw);
          !fits.ok()) {
        log::Warn("peer fetch refused", {{"url", url.Redacted()}, {"reason", fits.message()}});
        return fits;
      }
      upstream::Artifact checked = artifact;
      checked.fetch.check_target = [policy](const upstream::Url& target) {
        return policy->Check(target);
      };
      auto auth = authorize->find(artifact.frontend);
      checked.fetch.authorization = auth == authorize->end() ? Authorize() : auth->second;
      return a->Ensure(checked);
    };
  }
  if (cluster_builds_) {
    hooks.build = [cb = cluster_builds_.get()](const replication::PeerBuildCall& call) {
      return cb->Serve(call);
    };
  }
  BC_ASSIGN_OR_RETURN(peer_server_,
                      replication::PeerServer::Start(*store_, options, hooks, observer));
  if (dircache::ManifestProvider* manifests = directory_manifests()) {
    peer_server_->SetManifestProvider(manifests);
  }
  log::Info("peer server listening", {{"address", net::WithPort(rc.listen, peer_server_->port())},
                                      {"advertise", cluster_->self()},
                                      {"peers", static_cast<int64_t>(cluster_->Peers().size())},
                                      {"copies", rc.copies},
                                      {"tls", rc.tls.enabled()}});
  return Status::Ok();
}

ScopeAttribution Agent::attribution() {
  return ScopeAttribution{*scope_labels_, metrics_.scope_requests, metrics_.scope_bytes};
}

int Agent::peer_port() const { return peer_server_ ? peer_server_->port() : 0; }

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
  observer.on_stored_mismatch = [&m](std::string_view frontend) {
    m.stored_mismatch.With({std::string(frontend)}).Inc();
  };
  // Package front ends serve verified content to every caller the gate admits; only trusted
  // writers may write (a pypi wheel upload).
  auto guard = [gate = identity_.get(), attributed = attribution()](std::string name,
                                                                    http::Handler inner) {
    return gate->Wrap(std::move(name), identity::WritePolicy::kTrustedWritersOnly,
                      Attribute(attributed, [inner = std::move(inner)](
                                                http::Request& req, http::Response& resp,
                                                const identity::Caller&) { inner(req, resp); }));
  };
  upstream::ArtifactCacheOptions artifact_options;
  artifact_options.peers = peer_source_.get();
  artifacts_ = std::make_unique<upstream::ArtifactCache>(*served_store_, *fetcher_, observer,
                                                         artifact_options);
  metadata_ = std::make_unique<upstream::MetadataCache>(*served_store_, *fetcher_, observer);

  const upstream::FetchOptions fetch = FromConfig(config.upstream_client);

  if (config.goproxy.enabled()) {
    const GoproxyConfig& gc = config.goproxy;
    goproxy_ = std::make_unique<goproxy::GoproxyFrontend>(*served_store_, *artifacts_, *metadata_,
                                                          FromConfig(gc, fetch));
    router_.Add("", goproxy_->options().prefix,
                Instrument("goproxy", m,
                           guard("goproxy",
                                 [fe = goproxy_.get()](http::Request& req, http::Response& resp) {
                                   fe->Handle(req, resp);
                                 })));
    log::Info("frontend enabled",
              {{"frontend", "goproxy"},
               {"upstream", net::RedactUserinfo(gc.upstream)},
               {"auth", gc.auth.type()},
               {"sumdb", gc.sumdb.name},
               {"sumdb_upstream", net::RedactUserinfo(goproxy_->options().sumdb.upstream)}});
  }

  if (config.npm.enabled()) {
    npm_ = std::make_unique<npm::NpmFrontend>(*served_store_, *artifacts_, *metadata_,
                                              FromConfig(config.npm, fetch));
    router_.Add(
        "", "/npm",
        Instrument("npm", m,
                   guard("npm", [fe = npm_.get()](http::Request& req, http::Response& resp) {
                     fe->Handle(req, resp);
                   })));
    log::Info("frontend enabled", {{"frontend", "npm"},
                                   {"upstream", net::RedactUserinfo(config.npm.upstream)},
                                   {"auth", config.npm.auth.type()}});
  }

  if (config.cargo.enabled()) {
    const cargo::CargoOptions options = FromConfig(config.cargo, fetch);
    cargo_ = std::make_unique<cargo::CargoFrontend>(*artifacts_, *metadata_, options);
    router_.Add(
        "", options.prefix,
        Instrument("cargo", m,
                   guard("cargo", [fe = cargo_.get()](http::Request& req, http::Response& resp) {
                     fe->Handle(req, resp);
                   })));
    log::Info("frontend enabled", {{"frontend", "cargo"},
                                   {"upstream", net::RedactUserinfo(config.cargo.upstream)},
                                   {"auth", config.cargo.auth.type()}});
  }

  if (config.maven.enabled()) {
    const maven::MavenOptions options = FromConfig(config.maven, fetch);
    maven_ =
        std::make_unique<maven::MavenFrontend>(*served_store_, *artifacts_, *metadata_, options);
    router_.Add(
        "", options.prefix,
        Instrument("maven", m,
                   guard("maven", [fe = maven_.get()](http::Request& req, http::Response& resp) {
                     fe->Handle(req, resp);
                   })));
    log::Info("frontend enabled", {{"frontend", "maven"},
                                   {"upstream", net::RedactUserinfo(config.maven.upstream)},
                                   {"auth", config.maven.auth.type()}});
  }

  if (!config.pypi.enabled()) return Status::Ok();
  pypi::PypiOptions options = FromConfig(config.pypi, fetch);
  if (cluster_ && peer_client_) {
    options.wheel_list_owner_copies = [c = cluster_.get(),
                                       p = peer_client_.get()](const std::string& key) {
      return WheelListOwnerCopies(*c, *p, key);
    };
  }
  if (!config.pypi.builders.empty()) {
    BC_ASSIGN_OR_RETURN(options.builds, PypiBuildOptions(config, m));
    BC_RETURN_IF_ERROR(StartPodBuilds(config, *options.builds));
    options.built_wheels_served = &m.pypi_built_wheels_served;
    // Build records are this agent's own history: the local store, never replicated.
    options.builds->records_store = store_.get();
    if (cluster_ && peer_client_) {
      // One build per sdist and platform in the cluster: the sdist's owner schedules it.
      cluster_builds_ = std::make_unique<ClusterBuilds>(*cluster_, *peer_client_, *store_);
      options.offer_build = [cb = cluster_builds_.get()](const pypi::SdistRef& sdist,
                                                         const std::string& user_agent) {
        return cb->Offer(sdist, user_agent);
      };
      options.builds->on_finished = [cb = cluster_builds_.get()](const pypi::BuildRecord& r) {
        cb->OnFinished(r);
      };
    }
  }
  pypi_ = std::make_unique<pypi::PypiFrontend>(*served_store_, *artifacts_, *metadata_, options);
  if (cluster_builds_) cluster_builds_->SetFrontend(pypi_.get());
  // With the wheel house off nothing would be listed: the directories are not read either.
  if (config.pypi.wheel_house && !config.pypi.wheel_directories.empty()) {
    pypi::WheelDirectoryOptions dirs;
    dirs.dirs.assign(config.pypi.wheel_directories.begin(), config.pypi.wheel_directories.end());
    dirs.interval = std::max(std::chrono::milliseconds(1),
                             std::chrono::duration_cast<std::chrono::milliseconds>(
                                 config.pypi.wheel_directories_interval));
    wheel_dirs_ = std::make_unique<pypi::WheelDirectoryWatcher>(pypi_->wheel_house(), dirs);
  }
  http::Handler pypi_handler = [fe = pypi_.get()](http::Request& req, http::Response& resp) {
    fe->Handle(req, resp);
  };
  http::Handler gated = guard("pypi", pypi_handler);
  // Builder pods reach their build's endpoints and the index with the build's token, not as
  // callers (pypi/build_uploads.h).
  if (build_uploads_) gated = build_uploads_->Wrap(std::move(gated), std::move(pypi_handler));
  router_.Add("", "/pypi", Instrument("pypi", m, std::move(gated)));
  log::Info("frontend enabled", {{"frontend", "pypi"},
                                 {"upstream", net::RedactUserinfo(config.pypi.upstream)},
                                 {"auth", config.pypi.auth.type()}});
  return Status::Ok();
}

void Agent::Stop() {
  ready_ = false;
  // Peers first: their calls use the front ends' artifact cache and the store.
  if (peer_server_) peer_server_->Stop();
  // Directory sync first: it calls into replication's peer client, which may go next.
  if (dircache_) {
    dircache_->Stop();
  }
  if (hydration_thread_.joinable()) {
    hydration_thread_.join();
  }
  if (server_) server_->Stop();
  server_.reset();
  if (probe_server_) probe_server_->Stop();
  probe_server_.reset();
  httpcache_.reset();
  wheel_dirs_.reset();
  if (build_uploads_) build_uploads_->Stop();  // builds in pods stop waiting
  pypi_.reset();
  build_uploads_.reset();
  cluster_builds_.reset();
  npm_.reset();
  goproxy_.reset();
  cargo_.reset();
  maven_.reset();
  identity_.reset();
  kube_client_.reset();
  metadata_.reset();
  artifacts_.reset();
  fetcher_.reset();
  dircache_.reset();
  peer_server_.reset();
  served_store_ = store_.get();
  replicated_.reset();  // joins the pusher
  peer_source_.reset();
  peer_client_.reset();
  cluster_.reset();
  store_.reset();
}

}  // namespace buildcache::agent
