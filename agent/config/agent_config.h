#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/log/log.h"
#include "common/status/status.h"

namespace buildcache::agent {

// The agent's configuration file (examples/agent.yaml documents every key). The operator renders
// it from a BuildCache resource, so keys are camelCase and sizes and durations use the
// Kubernetes quantity and Go duration syntax (common/config/units.h).
//
// Each top-level section is one struct and one loader function in agent_config.cc. Sections still
// to come slot in beside the existing ones, e.g.
//   pypi: {upstream: URL}  goproxy: {upstream: URL, sumdb: true}  npm: {upstream: URL}
//   replication: {copies: 2, hydrate: true, peers: ...}  directories: [{name, path, maxSize}]
// A key the agent does not know is an error, never silently ignored.

// How much a read from the store is verified against its digest.
enum class VerifyReads {
  kChanged,  // re-hash a blob only when its file changed since it was indexed (size or mtime)
  kAlways,   // re-hash every blob on every read
};

std::string_view VerifyReadsName(VerifyReads v);

// store: the local content-addressed store.
struct StoreConfig {
  std::string data_dir = "/var/lib/buildcache";      // store.dataDir
  uint64_t max_size = uint64_t{10} << 30;            // store.maxSize, bytes, > 0
  VerifyReads verify_reads = VerifyReads::kChanged;  // store.verifyReads: changed | always

  bool operator==(const StoreConfig&) const = default;
};

// httpcache: the generic HTTP build cache (ccache, sccache WebDAV, Bazel, Gradle).
struct HttpCacheConfig {
  bool enabled = true;                             // httpcache.enabled
  uint64_t max_object_size = uint64_t{512} << 20;  // httpcache.maxObjectSize, <= maxSize

  bool operator==(const HttpCacheConfig&) const = default;
};

// server: the HTTP server every front end is served by.
struct ServerConfig {
  int64_t max_connections = 1024;  // server.maxConnections, 1..1000000
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(60);  // server.idleTimeout, > 0

  bool operator==(const ServerConfig&) const = default;
};

// upstreamClient: how every front end talks to its upstream registry.
struct UpstreamClientConfig {
  std::string ca_file;  // upstreamClient.caFile: PEM bundle; "" = the system trust store
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(10);  // .connectTimeout
  std::chrono::nanoseconds read_timeout = std::chrono::seconds(30);     // .readTimeout
  int64_t attempts = 3;  // upstreamClient.attempts: tries per request, 1..10

  bool operator==(const UpstreamClientConfig&) const = default;
};

// pypi: the PyPI simple-index cache and wheel house. Enabled when upstream is set.
struct PypiConfig {
  std::string upstream;  // pypi.upstream: the upstream simple index, http(s)://.../simple/
  std::chrono::nanoseconds metadata_ttl = std::chrono::minutes(10);  // pypi.metadataTtl
  std::chrono::nanoseconds negative_ttl = std::chrono::minutes(1);   // pypi.negativeTtl
  uint64_t max_upload_size = uint64_t{1} << 30;                      // pypi.maxUploadSize
  bool wheel_house = true;                                           // pypi.wheelHouse
  std::vector<std::string> wheel_directories;  // pypi.wheelDirectories: indexed at start

  bool enabled() const { return !upstream.empty(); }
  bool operator==(const PypiConfig&) const = default;
};

struct AgentConfig {
  std::string listen = "127.0.0.1:8080";     // listen: HOST:PORT or [IPv6]:PORT
  log::Level log_level = log::Level::kInfo;  // logLevel: debug | info | warn | error
  StoreConfig store;
  HttpCacheConfig httpcache;
  ServerConfig server;
  UpstreamClientConfig upstream_client;
  PypiConfig pypi;

  bool operator==(const AgentConfig&) const = default;
};

// Reads a configuration file: absent keys keep their defaults; malformed YAML, unknown keys and
// values of the wrong type fail with kInvalidArgument naming the file, line, column and key path.
// Does not touch anything but the file; call ValidateAgentConfig before using the result.
Result<AgentConfig> LoadAgentConfig(const std::string& path);

// The same for text already in memory; name stands for the file name in messages.
Result<AgentConfig> ParseAgentConfig(std::string_view yaml, const std::string& name);

// Checks what the types alone cannot, and prepares the data directory: every problem found is
// reported (one per line) naming the key, e.g. "store.maxSize: must be greater than 0". Creates
// store.dataDir if missing and proves it writable by creating and removing a probe file; makes it
// an absolute path. Every problem is kInvalidArgument: all of them are fixed in the configuration.
Status ValidateAgentConfig(AgentConfig& config);

// Renders the configuration as YAML that LoadAgentConfig reads back to an equal configuration
// (for logging the effective configuration and for tests).
std::string RenderAgentConfig(const AgentConfig& config);

}  // namespace buildcache::agent
