// The keys of every section of the agent's configuration, declared once. A new key: a member in
// its struct (agent_config.h, with its default) and a line in its section's table below (its key,
// the member, a simple rule if one fits); a rule that spans fields goes in agent_config.cc.
#include "agent/config/agent_config.h"
#include "agent/config/config_fields.h"

namespace buildcache::agent::fields {
namespace {

using std::chrono::nanoseconds;

constexpr Rule kPositive{Rule::kPositive};
constexpr Rule kNonNegative{Rule::kNonNegative};
constexpr Rule kUrl{Rule::kUrl};
constexpr Rule kReadable{Rule::kReadable};
constexpr Rule Range(int64_t lo, int64_t hi) { return {Rule::kRange, lo, hi}; }

const SectionDef& UpstreamAuth() {
  using S = UpstreamAuthConfig;
  // Not kReadable: a Secret the operator mounts may appear after the agent started.
  static const SectionDef def{{
      F<S>("tokenFile", &S::token_file),
      F<S>("usernameFile", &S::username_file),
      F<S>("passwordFile", &S::password_file),
  }};
  return def;
}

// The keys every registry mirror section shares (UpstreamMirrorConfig), then the section's own.
template <class S>
SectionDef Mirror(std::vector<FieldDef> extra, Rule upstream_rule = kUrl) {
  std::vector<FieldDef> f = {F<S>("upstream", &S::upstream, upstream_rule),
                             F<S>("metadataTtl", &S::metadata_ttl, kNonNegative),
                             F<S>("negativeTtl", &S::negative_ttl, kNonNegative),
                             Section<S>("auth", &S::auth, UpstreamAuth())};
  f.insert(f.end(), extra.begin(), extra.end());
  return {.fields = std::move(f),
          .active = [](const void* s) { return static_cast<const S*>(s)->enabled(); }};
}

const SectionDef& Store() {
  using S = StoreConfig;
  static const SectionDef def{{
      F<S>("dataDir", &S::data_dir),
      F<S>("maxSize", &S::max_size, kPositive),
      Enum<S>("verifyReads", &S::verify_reads, {"changed", "always"},
              {VerifyReads::kChanged, VerifyReads::kAlways}),
      F<S>("maxInFlightPerWriter", &S::max_in_flight_per_writer),
      F<S>("maxInFlightPerClient", &S::max_in_flight_per_client),
  }};
  return def;
}

const SectionDef& HttpCache() {
  using S = HttpCacheConfig;
  static const SectionDef def{
      .fields = {F<S>("enabled", &S::enabled),
                 F<S>("maxObjectSize", &S::max_object_size, kPositive)},
      .active = [](const void* s) { return static_cast<const S*>(s)->enabled; }};
  return def;
}

const SectionDef& Server() {
  using S = ServerConfig;
  static const SectionDef def{{
      F<S>("maxConnections", &S::max_connections, Range(1, 1000000)),
      F<S>("idleTimeout", &S::idle_timeout, kPositive),
      F<S>("maxConnectionsPerClient", &S::max_connections_per_client,
           {Rule::kRange, 0, 1000000, "0 (no limit)"}),
      F<S>("bodyTimeout", &S::body_timeout, kNonNegative),
      F<S>("minBodyRate", &S::min_body_rate),
      F<S>("probeListen", &S::probe_listen),
  }};
  return def;
}

const SectionDef& UpstreamClient() {
  using S = UpstreamClientConfig;
  static const SectionDef def{{
      F<S>("caFile", &S::ca_file, kReadable),
      F<S>("connectTimeout", &S::connect_timeout, kPositive),
      F<S>("readTimeout", &S::read_timeout, kPositive),
      F<S>("attempts", &S::attempts, Range(1, 10)),
  }};
  return def;
}

const SectionDef& PypiBuilderPlatform() {
  using S = PypiBuilderPlatformConfig;
  static const SectionDef def{{
      OneOf<S>("implementation", &S::implementation, {"CPython", "PyPy"}),
      F<S>("python", &S::python),
      OneOf<S>("libc", &S::libc, {"glibc", "musl"}),
      F<S>("libcVersion", &S::libc_version),
      OneOf<S>("cpu", &S::cpu, {"x86_64", "aarch64"}),
  }};
  return def;
}

const SectionDef& PypiBuilder() {
  using S = PypiBuilderConfig;
  static const SectionDef def{{
      F<S>("name", &S::name),
      F<S>("python", &S::python),
      F<S>("readOnlyPaths", &S::read_only_paths),
      F<S>("image", &S::image),
      Section<S>("platform", &S::platform, PypiBuilderPlatform()),
  }};
  return def;
}

const SectionDef& PypiBuildPods() {
  using S = PypiBuildPodsConfig;
  static const SectionDef def{{
      F<S>("namespace", &S::ns),
      F<S>("buildCache", &S::build_cache),
      F<S>("agentUrl", &S::agent_url),
  }};
  return def;
}

const SectionDef& Pypi() {
  using S = PypiConfig;
  static const SectionDef def = Mirror<S>({
      F<S>("maxUploadSize", &S::max_upload_size, kPositive),
      F<S>("wheelHouse", &S::wheel_house),
      F<S>("wheelDirectories", &S::wheel_directories),
      F<S>("wheelDirectoriesInterval", &S::wheel_directories_interval, kPositive),
      F<S>("wheelListTtl", &S::wheel_list_ttl, kNonNegative),
      OneOf<S>("buildSandbox", &S::build_sandbox, {"bubblewrap", "none"}),
      F<S>("buildDeadline", &S::build_deadline, kPositive),
      F<S>("buildFailureTtl", &S::build_failure_ttl, kNonNegative),
      F<S>("buildWorkers", &S::build_workers, Range(1, 64)),
      SectionList<S>("builders", &S::builders, PypiBuilder()),
      Section<S>("buildPods", &S::build_pods, PypiBuildPods()),
  });
  return def;
}

const SectionDef& Npm() {
  using S = NpmConfig;
  static const SectionDef def = Mirror<S>({
      F<S>("publicUrl", &S::public_url, kUrl),
      F<S>("maxPackumentSize", &S::max_packument_size, kPositive),
  });
  return def;
}

const SectionDef& GoproxySumdb() {
  using S = GoproxySumdbConfig;
  static const SectionDef def{{
      F<S>("name", &S::name),
      F<S>("upstream", &S::upstream, kUrl),
      F<S>("latestTtl", &S::latest_ttl, kNonNegative),
      F<S>("verify", &S::verify),
      F<S>("noVerify", &S::no_verify),
  }};
  return def;
}

const SectionDef& Goproxy() {
  using S = GoproxyConfig;
  static const SectionDef def = Mirror<S>({Section<S>("sumdb", &S::sumdb, GoproxySumdb())});
  return def;
}

const SectionDef& Cargo() {
  using S = CargoConfig;
  static const SectionDef def =
      Mirror<S>({F<S>("publicUrl", &S::public_url, kUrl)}, {Rule::kSparseUrl});
  return def;
}

const SectionDef& Maven() {
  using S = MavenConfig;
  static const SectionDef def =
      Mirror<S>({F<S>("maxMutableSize", &S::max_mutable_size, kPositive)});
  return def;
}

const SectionDef& PeerDns() {
  using S = PeerDnsConfig;
  static const SectionDef def{{
      F<S>("name", &S::name),
      F<S>("port", &S::port, Range(1, 65535)),
      F<S>("interval", &S::interval, kPositive),
  }};
  return def;
}

const SectionDef& PeerTls() {
  using S = PeerTlsConfig;
  static const SectionDef def{{
      F<S>("certFile", &S::cert_file),
      F<S>("keyFile", &S::key_file),
      F<S>("caFile", &S::ca_file),
      F<S>("serverName", &S::server_name),
  }};
  return def;
}

const SectionDef& Hydration() {
  using S = HydrationConfig;
  static const SectionDef def{{
      F<S>("enabled", &S::enabled),
      F<S>("maxTime", &S::max_time, kPositive),
      F<S>("maxSize", &S::max_size),
  }};
  return def;
}

const SectionDef& Replication() {
  using S = ReplicationConfig;
  static const SectionDef def{
      .fields =
          {
              F<S>("listen", &S::listen),
              F<S>("advertise", &S::advertise),
              F<S>("copies", &S::copies, Range(1, 16)),
              F<S>("peers", &S::peers),
              F<S>("peersFile", &S::peers_file, kReadable),
              F<S>("peerTimeout", &S::peer_timeout, kPositive),
              F<S>("pushQueue", &S::push_queue, Range(1, 10000000)),
              F<S>("scopeMissTtl", &S::scope_miss_ttl, kNonNegative),
              Section<S>("dns", &S::dns, PeerDns()),
              Section<S>("tls", &S::tls, PeerTls()),
              Section<S>("hydrate", &S::hydrate, Hydration()),
          },
      .active = [](const void* s) { return static_cast<const S*>(s)->enabled(); }};
  return def;
}

const SectionDef& Admin() {
  static const SectionDef def{{F<AdminConfig>("tokenFile", &AdminConfig::token_file, kReadable)}};
  return def;
}

const SectionDef& IdentityKubernetes() {
  using S = IdentityConfig;
  static const SectionDef def{{
      F<S>("nodeName", &S::kube_node_name),
      F<S>("kubeconfig", &S::kubeconfig),
      F<S>("audience", &S::audience),
  }};
  return def;
}

const SectionDef& TrustedWriters() {
  using S = identity::TrustedWriters;
  static const SectionDef def{{
      F<S>("namespaces", &S::namespaces),
      F<S>("serviceAccounts", &S::service_accounts),
      F<S>("podLabels", &S::pod_labels),
  }};
  return def;
}

const SectionDef& Identity() {
  using S = IdentityConfig;
  using identity::AnonymousAccess;
  static const SectionDef def{{
      F<S>("tokensFile", &S::tokens_file, kReadable),
      Enum<S>("anonymous", &S::anonymous, {"read", "none"},
              {AnonymousAccess::kRead, AnonymousAccess::kNone}),
      Grouping("kubernetes", IdentityKubernetes()),
      Section<S>("trustedWriters", &S::trusted_writers, TrustedWriters()),
      F<S>("attributionLimit", &S::attribution_limit, Range(0, 10000)),
  }};
  return def;
}

const SectionDef& Directory() {
  using S = DirectoryConfig;
  static const SectionDef def{{
      F<S>("name", &S::name),
      F<S>("path", &S::path),
      F<S>("maxSize", &S::max_size, kPositive),
      F<S>("settle", &S::settle, kNonNegative),
  }};
  return def;
}

}  // namespace

const SectionDef& AgentConfigFields() {
  using S = AgentConfig;
  static const SectionDef def{{
      F<S>("listen", &S::listen),
      Enum<S>("logLevel", &S::log_level, {"debug", "info", "warn", "error"},
              {log::Level::kDebug, log::Level::kInfo, log::Level::kWarn, log::Level::kError},
              // Any case, and "warning" too.
              [](std::string_view text, log::Level* out) { return log::ParseLevel(text, out); }),
      Section<S>("store", &S::store, Store()),
      Section<S>("httpcache", &S::httpcache, HttpCache()),
      Section<S>("server", &S::server, Server()),
      Section<S>("upstreamClient", &S::upstream_client, UpstreamClient()),
      Section<S>("pypi", &S::pypi, Pypi()),
      Section<S>("npm", &S::npm, Npm()),
      Section<S>("goproxy", &S::goproxy, Goproxy()),
      Section<S>("cargo", &S::cargo, Cargo()),
      Section<S>("maven", &S::maven, Maven()),
      Section<S>("replication", &S::replication, Replication()),
      Section<S>("admin", &S::admin, Admin()),
      Section<S>("identity", &S::identity, Identity()),
      SectionList<S>("directories", &S::directories, Directory()),
  }};
  return def;
}

}  // namespace buildcache::agent::fields
