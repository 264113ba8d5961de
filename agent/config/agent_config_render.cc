// Rendering an AgentConfig back to YAML that LoadAgentConfig reads to an equal configuration,
// and the quoting that loading's messages use too.
#include <string>

#include "agent/config/agent_config.h"
#include "agent/config/quoting.h"
#include "common/config/units.h"
#include "common/text/quote.h"

namespace buildcache::agent {

namespace internal {

std::string Quoted(std::string_view s) { return text::Quote(s); }

}  // namespace internal

using internal::Quoted;

std::string RenderAgentConfig(const AgentConfig& c) {
  std::string out;
  out += "listen: " + Quoted(c.listen) + "\n";
  out += "logLevel: " + std::string(log::LevelName(c.log_level)) + "\n";
  out += "store:\n";
  out += "  dataDir: " + Quoted(c.store.data_dir) + "\n";
  out += "  maxSize: " + config::FormatByteSize(c.store.max_size) + "\n";
  out += "  verifyReads: " + std::string(VerifyReadsName(c.store.verify_reads)) + "\n";
  out +=
      "  maxInFlightPerWriter: " + config::FormatByteSize(c.store.max_in_flight_per_writer) + "\n";
  out +=
      "  maxInFlightPerClient: " + config::FormatByteSize(c.store.max_in_flight_per_client) + "\n";
  out += "httpcache:\n";
  out += std::string("  enabled: ") + (c.httpcache.enabled ? "true" : "false") + "\n";
  out += "  maxObjectSize: " + config::FormatByteSize(c.httpcache.max_object_size) + "\n";
  out += "server:\n";
  out += "  maxConnections: " + std::to_string(c.server.max_connections) + "\n";
  out += "  idleTimeout: " + config::FormatDuration(c.server.idle_timeout) + "\n";
  out += "  maxConnectionsPerClient: " + std::to_string(c.server.max_connections_per_client) + "\n";
  out += "  bodyTimeout: " + config::FormatDuration(c.server.body_timeout) + "\n";
  out += "  minBodyRate: " + config::FormatByteSize(c.server.min_body_rate) + "\n";
  out += "  probeListen: " + Quoted(c.server.probe_listen) + "\n";
  out += "upstreamClient:\n";
  out += "  caFile: " + Quoted(c.upstream_client.ca_file) + "\n";
  out += "  connectTimeout: " + config::FormatDuration(c.upstream_client.connect_timeout) + "\n";
  out += "  readTimeout: " + config::FormatDuration(c.upstream_client.read_timeout) + "\n";
  out += "  attempts: " + std::to_string(c.upstream_client.attempts) + "\n";
  out += "pypi:\n";
  out += "  upstream: " + Quoted(c.pypi.upstream) + "\n";
  out += "  metadataTtl: " + config::FormatDuration(c.pypi.metadata_ttl) + "\n";
  out += "  negativeTtl: " + config::FormatDuration(c.pypi.negative_ttl) + "\n";
  out += "  maxUploadSize: " + config::FormatByteSize(c.pypi.max_upload_size) + "\n";
  out += std::string("  wheelHouse: ") + (c.pypi.wheel_house ? "true" : "false") + "\n";
  out += "  wheelDirectories: [";
  for (size_t i = 0; i < c.pypi.wheel_directories.size(); ++i) {
    out += (i ? ", " : "") + Quoted(c.pypi.wheel_directories[i]);
  }
  out += "]\n";
  out += "  buildSandbox: " + Quoted(c.pypi.build_sandbox) + "\n";
  out += "  buildDeadline: " + config::FormatDuration(c.pypi.build_deadline) + "\n";
  out += "  buildFailureTtl: " + config::FormatDuration(c.pypi.build_failure_ttl) + "\n";
  out += "  buildWorkers: " + std::to_string(c.pypi.build_workers) + "\n";
  out += "  builders:";
  if (c.pypi.builders.empty()) out += " []";
  out += "\n";
  for (const PypiBuilderConfig& b : c.pypi.builders) {
    out += "    - name: " + Quoted(b.name) + "\n";
    out += "      python: " + Quoted(b.python) + "\n";
    out += "      readOnlyPaths: [";
    for (size_t i = 0; i < b.read_only_paths.size(); ++i) {
      out += (i ? ", " : "") + Quoted(b.read_only_paths[i]);
    }
    out += "]\n";
  }
  out += "npm:\n";
  out += "  upstream: " + Quoted(c.npm.upstream) + "\n";
  out += "  publicUrl: " + Quoted(c.npm.public_url) + "\n";
  out += "  metadataTtl: " + config::FormatDuration(c.npm.metadata_ttl) + "\n";
  out += "  negativeTtl: " + config::FormatDuration(c.npm.negative_ttl) + "\n";
  out += "  maxPackumentSize: " + config::FormatByteSize(c.npm.max_packument_size) + "\n";
  out += "goproxy:\n";
  out += "  upstream: " + Quoted(c.goproxy.upstream) + "\n";
  out += "  metadataTtl: " + config::FormatDuration(c.goproxy.metadata_ttl) + "\n";
  out += "  negativeTtl: " + config::FormatDuration(c.goproxy.negative_ttl) + "\n";
  out += "  sumdb:\n";
  out += "    name: " + Quoted(c.goproxy.sumdb.name) + "\n";
  out += "    upstream: " + Quoted(c.goproxy.sumdb.upstream) + "\n";
  out += "    latestTtl: " + config::FormatDuration(c.goproxy.sumdb.latest_ttl) + "\n";
  out += std::string("    verify: ") + (c.goproxy.sumdb.verify ? "true" : "false") + "\n";
  out += "    noVerify: [";
  for (size_t i = 0; i < c.goproxy.sumdb.no_verify.size(); ++i) {
    out += (i ? ", " : "") + Quoted(c.goproxy.sumdb.no_verify[i]);
  }
  out += "]\n";
  out += "cargo:\n";
  out += "  upstream: " + Quoted(c.cargo.upstream) + "\n";
  out += "  publicUrl: " + Quoted(c.cargo.public_url) + "\n";
  out += "  metadataTtl: " + config::FormatDuration(c.cargo.metadata_ttl) + "\n";
  out += "  negativeTtl: " + config::FormatDuration(c.cargo.negative_ttl) + "\n";
  out += "maven:\n";
  out += "  upstream: " + Quoted(c.maven.upstream) + "\n";
  out += "  metadataTtl: " + config::FormatDuration(c.maven.metadata_ttl) + "\n";
  out += "  negativeTtl: " + config::FormatDuration(c.maven.negative_ttl) + "\n";
  out += "  maxMutableSize: " + config::FormatByteSize(c.maven.max_mutable_size) + "\n";
  const ReplicationConfig& r = c.replication;
  out += "replication:\n";
  out += "  listen: " + Quoted(r.listen) + "\n";
  out += "  advertise: " + Quoted(r.advertise) + "\n";
  out += "  copies: " + std::to_string(r.copies) + "\n";
  out += "  peers: [";
  for (size_t i = 0; i < r.peers.size(); ++i) {
    out += (i ? ", " : "") + Quoted(r.peers[i]);
  }
  out += "]\n";
  out += "  peersFile: " + Quoted(r.peers_file) + "\n";
  out += "  peerTimeout: " + config::FormatDuration(r.peer_timeout) + "\n";
  out += "  pushQueue: " + std::to_string(r.push_queue) + "\n";
  out += "  dns:\n";
  out += "    name: " + Quoted(r.dns.name) + "\n";
  out += "    port: " + std::to_string(r.dns.port) + "\n";
  out += "    interval: " + config::FormatDuration(r.dns.interval) + "\n";
  out += "  tls:\n";
  out += "    certFile: " + Quoted(r.tls.cert_file) + "\n";
  out += "    keyFile: " + Quoted(r.tls.key_file) + "\n";
  out += "    caFile: " + Quoted(r.tls.ca_file) + "\n";
  out += "    serverName: " + Quoted(r.tls.server_name) + "\n";
  out += "  hydrate:\n";
  out += std::string("    enabled: ") + (r.hydrate.enabled ? "true" : "false") + "\n";
  out += "    maxTime: " + config::FormatDuration(r.hydrate.max_time) + "\n";
  out += "    maxSize: " + config::FormatByteSize(r.hydrate.max_size) + "\n";
  out += "admin:\n";
  out += "  tokenFile: " + Quoted(c.admin.token_file) + "\n";
  out += "identity:\n";
  out += "  tokensFile: " + Quoted(c.identity.tokens_file) + "\n";
  out += "  anonymous: " + std::string(identity::AnonymousAccessName(c.identity.anonymous)) + "\n";
  out += "  kubernetes:\n";
  out += "    nodeName: " + Quoted(c.identity.kube_node_name) + "\n";
  out += "    kubeconfig: " + Quoted(c.identity.kubeconfig) + "\n";
  out += "    audience: " + Quoted(c.identity.audience) + "\n";
  const identity::TrustedWriters& tw = c.identity.trusted_writers;
  out += "  trustedWriters:\n";
  out += "    namespaces: [";
  for (size_t i = 0; i < tw.namespaces.size(); ++i) {
    out += (i ? ", " : "") + Quoted(tw.namespaces[i]);
  }
  out += "]\n    serviceAccounts: [";
  for (size_t i = 0; i < tw.service_accounts.size(); ++i) {
    out += (i ? ", " : "") + Quoted(tw.service_accounts[i]);
  }
  out += "]\n    podLabels: {";
  bool first = true;
  for (const auto& [key, value] : tw.pod_labels) {
    out += (first ? "" : ", ") + Quoted(key) + ": " + Quoted(value);
    first = false;
  }
  out += "}\n";
  out += "directories:";
  if (c.directories.empty()) out += " []";
  out += "\n";
  for (const DirectoryConfig& d : c.directories) {
    out += "  - name: " + Quoted(d.name) + "\n";
    out += "    path: " + Quoted(d.path) + "\n";
    out += "    maxSize: " + config::FormatByteSize(d.max_size) + "\n";
    out += "    settle: " + config::FormatDuration(d.settle) + "\n";
  }
  return out;
}

}  // namespace buildcache::agent
