#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "agent/app/metrics_catalog.h"
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
class PypiFrontend;
}
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

namespace buildcache::agent {

// The agent with every component wired: the store, the front ends, the HTTP server with
// /healthz, /readyz and /metrics. main() parses flags and runs one of these; tests start them
// in-process. Components are built here and nowhere else.
class Agent {
 public:
  // Opens the store (reconciling it with the disk), starts serving, and logs "listening" with the
  // bound address. The configuration must have passed ValidateAgentConfig.
  static Result<std::unique_ptr<Agent>> Start(const AgentConfig& config);
  ~Agent();

  // "127.0.0.1:PORT" as bound (the port is real even when the configuration asked for 0).
  const std::string& address() const { return address_; }
  metrics::Registry& registry() { return registry_; }

  // Stops serving (in-flight requests get a grace period) and closes the store. Idempotent.
  void Stop();

 private:
  Agent();
  Status StartPackageFrontends(const AgentConfig& config);

  metrics::Registry registry_;
  AgentMetrics metrics_;
  std::unique_ptr<store::LmdbStore> store_;
  std::unique_ptr<httpcache::HttpCacheFrontend> httpcache_;
  std::unique_ptr<upstream::Fetcher> fetcher_;
  std::unique_ptr<upstream::ArtifactCache> artifacts_;
  std::unique_ptr<upstream::MetadataCache> metadata_;
  std::unique_ptr<pypi::PypiFrontend> pypi_;
  std::unique_ptr<npm::NpmFrontend> npm_;
  std::unique_ptr<goproxy::GoproxyFrontend> goproxy_;
  std::unique_ptr<cargo::CargoFrontend> cargo_;
  std::unique_ptr<maven::MavenFrontend> maven_;
  http::Router router_;
  std::unique_ptr<http::Server> server_;
  std::string address_;
  std::atomic<bool> ready_{false};
};

}  // namespace buildcache::agent
