#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "agent/app/data_dir_lock.h"
#include "agent/app/metrics_catalog.h"
#include "agent/app/scope_attribution.h"
#include "agent/config/agent_config.h"
#include "common/http/router.h"
#include "common/http/server.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"

namespace buildcache::store {
class LmdbStore;
}
namespace buildcache::httpcache {
class HttpCacheFrontend;
}
namespace buildcache::upstream {
class Fetcher;
class ArtifactCache;
class MetadataCache;
}  // namespace buildcache::upstream
namespace buildcache::pypi {
class BuildUploads;
class PypiFrontend;
class WheelDirectoryWatcher;
struct WheelBuildOptions;
}  // namespace buildcache::pypi
namespace buildcache::npm {
class NpmFrontend;
}
namespace buildcache::goproxy {
class GoproxyFrontend;
}

namespace buildcache::cargo {
class CargoFrontend;
}
namespace buildcache::maven {
class MavenFrontend;
}
namespace buildcache::identity {
class IdentityGate;
class IdentitySource;
}  // namespace buildcache::identity
namespace buildcache::kube {
class KubeClient;
class RestKubeClient;
}  // namespace buildcache::kube
namespace buildcache::dircache {
class DirectorySync;
class ManifestProvider;
class PeerDirectory;
}  // namespace buildcache::dircache

namespace buildcache::replication {
class Cluster;
class PeerClient;
class PeerServer;
class ReplicatedStore;
class ClusterPeerSource;
}  // namespace buildcache::replication
namespace buildcache::store {
class BlobStore;
}

namespace buildcache::agent {

class AdminHandler;
class ClusterBuilds;

// The agent with every component wired: the store, the front ends, the HTTP server with
// /healthz, /readyz and /metrics. main() parses flags and runs one of these; tests start them
// in-process. Components are built here and nowhere else.
class Agent {
 public:
  // Locks the data directory (DataDirLock: kFailedPrecondition naming the holder when another
  // agent runs on it), opens the store (reconciling it with the disk), starts serving, and logs
  // "listening" with the bound address. The configuration must have passed ValidateAgentConfig.
  static Result<std::unique_ptr<Agent>> Start(const AgentConfig& config);
  ~Agent();

  // "127.0.0.1:PORT" as bound (the port is real even when the configuration asked for 0).
  const std::string& address() const { return address_; }
  metrics::Registry& registry() { return registry_; }

  // Stops serving (in-flight requests get a grace period) and closes the store. Idempotent.
  void Stop();

  // Directory caches (config.directories): what the peer server answers GetManifest with, or
  // nullptr when none are configured. Valid until Stop.
  dircache::ManifestProvider* directory_manifests();

  // Peer replication (config.replication): the bound peer server port, 0 when off.
  int peer_port() const;

 private:
  Agent();
  Status StartPackageFrontends(const AgentConfig& config);
  // Opens and starts watching config.directories (before peers are connected).
  Status OpenDirectoryCaches(const AgentConfig& config);
  // Gives the directory caches their peers (replication's PeerDirectory; nullptr = none), then
  // hydrates in the background when replication.hydrate.enabled, holding /readyz at 503 until
  // hydration finished or hit its bounds, and syncs periodically after that. Call once, after
  // the server started.
  void StartDirectorySync(const AgentConfig& config, dircache::PeerDirectory* peers);
  // Membership, the peer client and the replicated store decorator (before the front ends, which
  // are given served_store_); the peer server starts in StartPeerServer once they exist.
  Status StartReplication(const AgentConfig& config);
  Status StartPeerServer(const AgentConfig& config);
  // The identity gate every front end is wrapped in (config.identity; off: everyone trusted).
  Status StartIdentity(const AgentConfig& config);
  // The pod-address source (identity.kubernetes) over `tokens`, watching this node's pods.
  Result<std::unique_ptr<identity::IdentitySource>> StartPodIdentity(
      const IdentityConfig& config, std::unique_ptr<identity::IdentitySource> tokens);

  // The agent's Kubernetes client (identity.kubernetes.kubeconfig; in-cluster when empty), made
  // on first use and shared by the pod watch and the builds in pods. `who` names the section
  // that needs it in errors.
  Result<kube::RestKubeClient*> KubeClient(const IdentityConfig& config, std::string_view who);
  // With image builders among options.builders: the build endpoints and options.pod_runner
  // (pod_builds.cc).
  Status StartPodBuilds(const AgentConfig& config, pypi::WheelBuildOptions& options);

  // The per-scope lookup metrics every front end is wrapped in (inside the identity gate).
  ScopeAttribution attribution();

  metrics::Registry registry_;
  AgentMetrics metrics_;
  std::unique_ptr<ScopeLabels> scope_labels_;  // identity.attributionLimit
  // Held from before the store opens until the agent is destroyed (declared before the store and
  // everything that writes to the directory, so it is released after them).
  std::unique_ptr<DataDirLock> data_dir_lock_;
  std::unique_ptr<store::LmdbStore> store_;
  std::unique_ptr<replication::Cluster> cluster_;
  std::unique_ptr<replication::PeerClient> peer_client_;
  std::unique_ptr<replication::ReplicatedStore> replicated_;
  std::unique_ptr<replication::ClusterPeerSource> peer_source_;
  std::unique_ptr<replication::PeerServer> peer_server_;
  // What front ends read and write through: replicated_ when replication is on, else store_.
  store::BlobStore* served_store_ = nullptr;
  // identity.kubernetes's pod watch and pypi.buildPods (KubeClient).
  std::unique_ptr<kube::KubeClient> kube_client_;
  kube::RestKubeClient* rest_kube_ = nullptr;  // kube_client_
  std::unique_ptr<identity::IdentityGate> identity_;
  std::unique_ptr<httpcache::HttpCacheFrontend> httpcache_;
  std::unique_ptr<upstream::Fetcher> fetcher_;
  std::unique_ptr<upstream::ArtifactCache> artifacts_;
  std::unique_ptr<upstream::MetadataCache> metadata_;
  // Cluster-wide wheel builds (pypi builders with replication); declared before pypi_, whose
  // scheduler calls it, so it is destroyed after.
  std::unique_ptr<ClusterBuilds> cluster_builds_;
  // The build endpoints and tokens of builds in pods (pypi.buildPods); the pod runner in pypi_
  // uses it, so it is declared before.
  std::unique_ptr<pypi::BuildUploads> build_uploads_;
  std::unique_ptr<pypi::PypiFrontend> pypi_;
  std::unique_ptr<pypi::WheelDirectoryWatcher> wheel_dirs_;  // pypi.wheelDirectories
  std::unique_ptr<npm::NpmFrontend> npm_;
  std::unique_ptr<goproxy::GoproxyFrontend> goproxy_;
  std::unique_ptr<cargo::CargoFrontend> cargo_;
  std::unique_ptr<maven::MavenFrontend> maven_;
  std::unique_ptr<AdminHandler> admin_;  // /admin/ (off without admin.tokenFile)
  http::Router router_;
  std::unique_ptr<http::Server> server_;
  std::string address_;
  // server.probeListen: /healthz and /readyz only, on a listener of their own.
  http::Router probe_router_;
  std::unique_ptr<http::Server> probe_server_;
  std::string probe_address_;  // "" when server.probeListen is unset
  std::atomic<bool> ready_{false};
  std::unique_ptr<dircache::DirectorySync> dircache_;
  std::atomic<bool> dircache_ready_{true};  // false while hydrating
  std::thread hydration_thread_;
};

}  // namespace buildcache::agent
