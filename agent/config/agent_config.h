#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/identity/caller.h"
#include "common/log/log.h"
#include "common/status/status.h"

namespace buildcache::agent {

// The agent's configuration file (examples/agent.yaml documents every key). The operator renders
// it from a BuildCache resource, so keys are camelCase and sizes and durations use the
// Kubernetes quantity and Go duration syntax (common/config/units.h).
//
// Each section is one struct here and one table of its keys in agent_config_fields.cc (key,
// member, kind, simple rule); loading, validation, rendering and the documentation tests all
// walk those tables, so a new key is a member here plus one line there (docs/development.md).
// A key the agent does not know is an error, never silently ignored.

// How much a read from the store is verified against its digest.
enum class VerifyReads {
  kChanged,  // re-hash a blob when its file's stat fingerprint changed since it was last verified
             // (store::VerifyReads::kWhenChanged: size, mtime, ctime, inode)
  kAlways,   // re-hash every blob on every read
};

std::string_view VerifyReadsName(VerifyReads v);

// store: the local content-addressed store.
struct StoreConfig {
  std::string data_dir = "/var/lib/buildcache";      // store.dataDir
  uint64_t max_size = uint64_t{10} << 30;            // store.maxSize, bytes, > 0
  VerifyReads verify_reads = VerifyReads::kChanged;  // store.verifyReads: changed | always
  // Most bytes one client or peer may hold in flight (written, not yet committed): per upload and
  // per caller address. 0 = a quarter of maxSize. Both <= maxSize.
  uint64_t max_in_flight_per_writer = 0;  // store.maxInFlightPerWriter
  uint64_t max_in_flight_per_client = 0;  // store.maxInFlightPerClient

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
  // Connections one client address may hold; more get 429. 0 = no per-client limit.
  int64_t max_connections_per_client = 128;  // server.maxConnectionsPerClient, 0..maxConnections
  // A request body must arrive within this time (0 = no overall deadline) and, after its first
  // 10 s, at least this many bytes per second on average (0 = no minimum); else 408.
  std::chrono::nanoseconds body_timeout = std::chrono::minutes(30);  // server.bodyTimeout, >= 0
  uint64_t min_body_rate = 4 << 10;  // server.minBodyRate, bytes per second
  // A second listener serving only /healthz and /readyz, for the kubelet's probes ("" = none).
  std::string probe_listen;  // server.probeListen, host:port

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

// pypi.builders[].platform: what an image builder's wheels are for (declared, not probed).
struct PypiBuilderPlatformConfig {
  std::string implementation = "CPython";  // CPython or PyPy
  std::string python;                      // "3.11": the interpreter's minor version (required)
  std::string libc = "glibc";              // glibc or musl
  std::string libc_version;                // libcVersion, "2.36" (required)
  std::string cpu = "x86_64";              // x86_64 or aarch64

  bool operator==(const PypiBuilderPlatformConfig&) const = default;
};

// pypi.builders[]: a local interpreter (python), or a builder image run as a pod (image), that
// builds wheels from upstream sdists; exactly one of the two.
struct PypiBuilderConfig {
  std::string name;    // its identity in build keys and provenance; "" = the python path
  std::string python;  // absolute path of the interpreter
  std::vector<std::string> read_only_paths;  // readOnlyPaths: mounted in the sandbox
  std::string image;                         // a builder image (needs pypi.buildPods)
  PypiBuilderPlatformConfig platform;        // with image: its platform

  bool operator==(const PypiBuilderConfig&) const = default;
};

// pypi.buildPods: where the builds of image builders run (required when a builder has an image).
// Values may name environment variables: "$NAME" (the whole value) or "$(NAME)" inside it.
struct PypiBuildPodsConfig {
  std::string ns;           // namespace: where WheelBuilds are created ($POD_NAMESPACE)
  std::string build_cache;  // buildCache: the BuildCache's name
  std::string agent_url;    // agentUrl: http://$(POD_IP):<client port>, how builder pods reach us

  bool enabled() const { return !ns.empty() || !build_cache.empty() || !agent_url.empty(); }
  bool operator==(const PypiBuildPodsConfig&) const = default;
};

// <section>.auth: the credential a private upstream wants (agent/upstream/credential.h), from
// files re-read when they change; sent to the upstream's own origin only. Either tokenFile
// (Bearer) or usernameFile and passwordFile (Basic); none = no Authorization. The files need not
// exist at start (a Secret the operator mounts may appear later): until they do, fetches from the
// upstream fail with an error naming the file.
struct UpstreamAuthConfig {
  std::string token_file;     // <section>.auth.tokenFile
  std::string username_file;  // <section>.auth.usernameFile
  std::string password_file;  // <section>.auth.passwordFile

  bool enabled() const {
    return !token_file.empty() || !username_file.empty() || !password_file.empty();
  }
  // "bearer", "basic" or "none" (for logs).
  const char* type() const { return !token_file.empty() ? "bearer" : enabled() ? "basic" : "none"; }
  bool operator==(const UpstreamAuthConfig&) const = default;
};

// What every registry mirror section (pypi, npm, goproxy, cargo, maven) has; the section
// structs derive from it and add their own keys. A section is enabled when upstream is set.
struct UpstreamMirrorConfig {
  // <section>.upstream: the upstream registry, http(s)://... (credentials in it, user:pw@, are
  // sent as Basic authorization but appear wherever the configuration does: prefer auth)
  std::string upstream;
  // <section>.metadataTtl: how long mutable metadata (index pages, packuments, @v/list,
  // maven-metadata.xml) is used without revalidation; the default differs per section.
  std::chrono::nanoseconds metadata_ttl = std::chrono::minutes(10);
  std::chrono::nanoseconds negative_ttl = std::chrono::minutes(1);  // <section>.negativeTtl
  UpstreamAuthConfig auth;                                          // <section>.auth

  bool enabled() const { return !upstream.empty(); }
  bool operator==(const UpstreamMirrorConfig&) const = default;
};

// pypi: the PyPI simple-index cache and wheel house. upstream: the simple index,
// http(s)://.../simple/; metadataTtl 10m.
struct PypiConfig : UpstreamMirrorConfig {
  uint64_t max_upload_size = uint64_t{1} << 30;  // pypi.maxUploadSize
  bool wheel_house = true;                       // pypi.wheelHouse
  std::vector<std::string> wheel_directories;    // pypi.wheelDirectories: watched (rescanned)
  // pypi.wheelDirectoriesInterval: how often the wheel directories are scanned again.
  std::chrono::nanoseconds wheel_directories_interval = std::chrono::seconds(5);
  // pypi.wheelListTtl: how long a non-owner uses its copy of a project's wheel-house list before
  // it asks the list's owners again (0: on every use).
  std::chrono::nanoseconds wheel_list_ttl = std::chrono::seconds(30);
  std::vector<PypiBuilderConfig> builders;   // pypi.builders: wheel building when not empty
  std::string build_sandbox = "bubblewrap";  // pypi.buildSandbox: bubblewrap or none
  std::chrono::nanoseconds build_deadline = std::chrono::minutes(15);  // pypi.buildDeadline
  std::chrono::nanoseconds build_failure_ttl = std::chrono::hours(1);  // pypi.buildFailureTtl
  int64_t build_workers = 1;                                           // pypi.buildWorkers
  PypiBuildPodsConfig build_pods;                                      // pypi.buildPods

  bool operator==(const PypiConfig&) const = default;
};

// npm: the npm registry cache. upstream: the registry, http(s)://.../; metadataTtl 5m.
struct NpmConfig : UpstreamMirrorConfig {
  NpmConfig() { metadata_ttl = std::chrono::minutes(5); }
  // npm.publicUrl: the registry URL clients use, http(s)://.../npm/, written into tarball URLs;
  // "" = http://<the request's Host header>/npm/
  std::string public_url;
  uint64_t max_packument_size = uint64_t{64} << 20;  // npm.maxPackumentSize

  bool operator==(const NpmConfig&) const = default;
};

// goproxy: the Go module proxy (GOPROXY protocol) and checksum-database proxy. Enabled when
// upstream is set.
struct GoproxySumdbConfig {
  // goproxy.sumdb.name: the database's name as GOSUMDB gives it; "" = no database is proxied
  std::string name;
  // goproxy.sumdb.upstream: the database's base URL; "" = <goproxy.upstream>/sumdb/<name>
  std::string upstream;
  std::chrono::nanoseconds latest_ttl = std::chrono::minutes(1);  // goproxy.sumdb.latestTtl
  bool verify = true;                  // goproxy.sumdb.verify: check .mod/.zip before storing
  std::vector<std::string> no_verify;  // goproxy.sumdb.noVerify: GONOSUMDB-style patterns

  bool operator==(const GoproxySumdbConfig&) const = default;
};

// upstream: the module proxy, http(s)://...; metadataTtl 1m.
struct GoproxyConfig : UpstreamMirrorConfig {
  GoproxyConfig() { metadata_ttl = std::chrono::minutes(1); }
  GoproxySumdbConfig sumdb;  // goproxy.sumdb

  bool operator==(const GoproxyConfig&) const = default;
};

// cargo: the Cargo sparse-registry cache. upstream: the sparse index, http(s)://.../ (Cargo's
// "sparse+" prefix allowed); metadataTtl 10m.
struct CargoConfig : UpstreamMirrorConfig {
  // cargo.publicUrl: the URL clients use, http(s)://.../cargo/, written into config.json's "dl";
  // "" = http://<the request's Host header>/cargo/
  std::string public_url;

  bool operator==(const CargoConfig&) const = default;
};

// maven: the Maven repository cache. upstream: the repository root, http(s)://.../;
// metadataTtl (maven-metadata.xml and SNAPSHOT files) 10m.
struct MavenConfig : UpstreamMirrorConfig {
  uint64_t max_mutable_size = uint64_t{64} << 20;  // maven.maxMutableSize

  bool operator==(const MavenConfig&) const = default;
};

// replication: peer agents (agent/replication, proto/peer.proto). Off when listen is "".
struct PeerTlsConfig {
  std::string cert_file;  // replication.tls.certFile: this agent's certificate (PEM)
  std::string key_file;   // replication.tls.keyFile
  std::string ca_file;    // replication.tls.caFile: CA that signs every peer's certificate
  // replication.tls.serverName: the name every peer's certificate must carry, checked instead of
  // the address dialed ("" = the address). Agents that share one certificate (the operator's)
  // are dialed by pod IP but named by their headless Service.
  std::string server_name;
  bool enabled() const { return !cert_file.empty(); }
  bool operator==(const PeerTlsConfig&) const = default;
};

struct PeerDnsConfig {
  std::string name;     // replication.dns.name: a headless Service's name; "" = not used
  int64_t port = 8081;  // replication.dns.port
  std::chrono::nanoseconds interval = std::chrono::seconds(30);  // replication.dns.interval
  bool operator==(const PeerDnsConfig&) const = default;
};

struct HydrationConfig {
  bool enabled = true;  // replication.hydrate.enabled: pull the hot set before /readyz is ready
  std::chrono::nanoseconds max_time = std::chrono::minutes(5);  // replication.hydrate.maxTime
  uint64_t max_size = uint64_t{10} << 30;                       // replication.hydrate.maxSize
  bool operator==(const HydrationConfig&) const = default;
};

struct ReplicationConfig {
  std::string listen;     // replication.listen: gRPC HOST:PORT; "" = no peers (default)
  std::string advertise;  // replication.advertise: HOST:PORT peers use; "" = derived from listen
  int64_t copies = 2;     // replication.copies: owners per object, 1..16
  std::vector<std::string> peers;  // replication.peers: static HOST:PORT list
  std::string peers_file;  // replication.peersFile: one HOST:PORT per line, re-read on change
  PeerDnsConfig dns;       // replication.dns
  PeerTlsConfig tls;       // replication.tls
  std::chrono::nanoseconds peer_timeout = std::chrono::seconds(2);  // replication.peerTimeout
  int64_t push_queue = 10000;  // replication.pushQueue: pending pushes kept, 1..10000000
  // replication.scopeMissTtl: a caller's own-scope key that no owner had is not asked for again
  // for this long (its read goes straight on to the trusted scope); 0 = always asked.
  std::chrono::nanoseconds scope_miss_ttl = std::chrono::seconds(30);
  HydrationConfig hydrate;  // replication.hydrate

  bool enabled() const { return !listen.empty(); }
  bool operator==(const ReplicationConfig&) const = default;
};

// directories: node cache directories (a pod's pip cache, GOCACHE, ...) indexed, replicated and
// hydrated from peers (agent/dircache).
struct DirectoryConfig {
  std::string name;       // directories[].name: [a-z0-9-]+, unique; peers match on it
  std::string path;       // directories[].path: absolute, where this agent sees the directory
  uint64_t max_size = 0;  // directories[].maxSize: > 0; LRU by last access beyond it
  // directories[].settle: a file unchanged this long after its last write counts as complete
  std::chrono::nanoseconds settle = std::chrono::seconds(2);
  bool operator==(const DirectoryConfig&) const = default;
};

// The admin endpoint (POST /admin/purge). Off unless a token file is set.
struct AdminConfig {
  // admin.tokenFile: a file holding the bearer token /admin/ requests must carry (surrounding
  // whitespace ignored); "" = the admin endpoint answers 404.
  std::string token_file;
  bool operator==(const AdminConfig&) const = default;
};

// identity: who a caller is and what it may write and read (agent/identity). Off (every caller a
// trusted writer, as before) unless tokensFile is set.
struct IdentityConfig {
  // identity.tokensFile: tokens naming each caller's scope and whether it is a trusted writer
  // (agent/identity/token_file_identity.h), re-read when it changes; "" = identity off.
  std::string tokens_file;
  // identity.anonymous: read | none: what callers without credentials may do.
  identity::AnonymousAccess anonymous = identity::AnonymousAccess::kRead;
  // identity.kubernetes.nodeName: the agent's node; its pods are watched and a request from a
  // pod's IP is that pod (scope = its namespace). "$VAR" reads the environment variable VAR at
  // start (the downward API's spec.nodeName). "" = off.
  std::string kube_node_name;
  // identity.kubernetes.kubeconfig: "" = $KUBECONFIG, else the in-cluster service account.
  std::string kubeconfig;
  // identity.kubernetes.audience: ServiceAccount tokens (projected for this audience) are
  // verified against the API server's issuer keys; "" = not accepted.
  std::string audience = "buildcache.io";
  // identity.trustedWriters: which pods write into the trusted scope
  // ({namespaces: [], serviceAccounts: [ns/name], podLabels: {k: v}}).
  identity::TrustedWriters trusted_writers;
  // identity.attributionLimit: scopes (namespaces) that get their own value of the scope label
  // in buildcache_scope_*_total; later ones count under "(other)". 0..10000.
  int64_t attribution_limit = 50;

  bool enabled() const { return !tokens_file.empty() || !kube_node_name.empty(); }
  bool operator==(const IdentityConfig&) const = default;
};

struct AgentConfig {
  std::string listen = "127.0.0.1:8080";     // listen: HOST:PORT or [IPv6]:PORT
  log::Level log_level = log::Level::kInfo;  // logLevel: debug | info | warn | error
  StoreConfig store;
  HttpCacheConfig httpcache;
  ServerConfig server;
  UpstreamClientConfig upstream_client;
  PypiConfig pypi;
  GoproxyConfig goproxy;
  NpmConfig npm;
  CargoConfig cargo;
  MavenConfig maven;
  ReplicationConfig replication;
  AdminConfig admin;
  std::vector<DirectoryConfig> directories;
  IdentityConfig identity;

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

// Every key path the configuration declares, sections included, in declaration order:
// "listen", "store", "store.dataDir", ..., "directories[].name" (for documentation checks).
std::vector<std::string> AgentConfigKeyPaths();

}  // namespace buildcache::agent
