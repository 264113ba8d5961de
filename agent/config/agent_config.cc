#include "agent/config/agent_config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <functional>
#include <system_error>
#include <vector>

#include "agent/config/quoting.h"
#include "common/config/document.h"
#include "common/config/units.h"
#include "common/net/host_port.h"

namespace buildcache::agent {

using internal::Quoted;

namespace {

// Collects problems so one run reports all of them, one per line.
class Problems {
 public:
  void Add(const Status& s) {
    if (s.ok()) {
      return;
    }
    if (!message_.empty()) {
      message_ += "\n";
    }
    message_ += s.message();
  }
  void Add(std::string message) { Add(InvalidArgument(std::move(message))); }
  Status ToStatus() const { return message_.empty() ? Status::Ok() : InvalidArgument(message_); }

 private:
  std::string message_;
};

// --- Loading, one function per section ---

void LoadTopLevel(const config::Node& root, AgentConfig* c, Problems* p) {
  p->Add(root.Read("listen", &c->listen));
  config::Node level = root.Get("logLevel");
  if (level.present()) {
    Result<std::string> name = level.AsString();
    if (!name.ok()) {
      p->Add(name.status());
    } else if (!log::ParseLevel(*name, &c->log_level)) {
      p->Add(level.Error("must be one of debug, info, warn, error; got " + Quoted(*name)));
    }
  }
}

void LoadStore(const config::Node& root, StoreConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("store");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("dataDir", &c->data_dir));
  p->Add(s->ReadByteSize("maxSize", &c->max_size));
  p->Add(s->ReadByteSize("maxInFlightPerWriter", &c->max_in_flight_per_writer));
  p->Add(s->ReadByteSize("maxInFlightPerClient", &c->max_in_flight_per_client));
  std::string verify(VerifyReadsName(c->verify_reads));
  Status st = s->ReadOneOf("verifyReads", {"changed", "always"}, &verify);
  p->Add(st);
  if (st.ok()) {
    c->verify_reads = verify == "always" ? VerifyReads::kAlways : VerifyReads::kChanged;
  }
}

void LoadHttpCache(const config::Node& root, HttpCacheConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("httpcache");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("enabled", &c->enabled));
  p->Add(s->ReadByteSize("maxObjectSize", &c->max_object_size));
}

void LoadServer(const config::Node& root, ServerConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("server");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("maxConnections", &c->max_connections));
  p->Add(s->ReadDuration("idleTimeout", &c->idle_timeout));
  p->Add(s->Read("maxConnectionsPerClient", &c->max_connections_per_client));
  p->Add(s->ReadDuration("bodyTimeout", &c->body_timeout));
  p->Add(s->ReadByteSize("minBodyRate", &c->min_body_rate));
  p->Add(s->Read("probeListen", &c->probe_listen));
}

void LoadAdmin(const config::Node& root, AdminConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("admin");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("tokenFile", &c->token_file));
}

void LoadIdentity(const config::Node& root, IdentityConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("identity");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("tokensFile", &c->tokens_file));
  std::string anonymous(identity::AnonymousAccessName(c->anonymous));
  Status st = s->ReadOneOf("anonymous", {"read", "none"}, &anonymous);
  p->Add(st);
  if (st.ok()) {
    c->anonymous =
        anonymous == "none" ? identity::AnonymousAccess::kNone : identity::AnonymousAccess::kRead;
  }
  Result<config::Node> kube = s->Section("kubernetes");
  if (!kube.ok()) return p->Add(kube.status());
  p->Add(kube->Read("nodeName", &c->kube_node_name));
  p->Add(kube->Read("kubeconfig", &c->kubeconfig));
  p->Add(kube->Read("audience", &c->audience));
  Result<config::Node> trusted = s->Section("trustedWriters");
  if (!trusted.ok()) return p->Add(trusted.status());
  p->Add(trusted->ReadStringList("namespaces", &c->trusted_writers.namespaces));
  p->Add(trusted->ReadStringList("serviceAccounts", &c->trusted_writers.service_accounts));
  p->Add(trusted->ReadStringMap("podLabels", &c->trusted_writers.pod_labels));
}

void CheckIdentity(const IdentityConfig& c, Problems* p) {
  for (const std::string& ns : c.trusted_writers.namespaces) {
    if (!identity::IsScopeName(ns)) {
      p->Add("identity.trustedWriters.namespaces: " + Quoted(ns) + " is not a namespace name");
    }
  }
  for (const std::string& sa : c.trusted_writers.service_accounts) {
    size_t slash = sa.find('/');
    if (slash == std::string::npos || !identity::IsScopeName(sa.substr(0, slash)) ||
        slash + 1 == sa.size() || sa.find('/', slash + 1) != std::string::npos) {
      p->Add("identity.trustedWriters.serviceAccounts: " + Quoted(sa) + " is not NAMESPACE/NAME");
    }
  }
  const bool empty = c.trusted_writers.namespaces.empty() &&
                     c.trusted_writers.service_accounts.empty() &&
                     c.trusted_writers.pod_labels.empty();
  if (!empty && c.kube_node_name.empty()) {
    p->Add(
        "identity.trustedWriters: needs identity.kubernetes.nodeName (tokens name their own "
        "trusted writers)");
  }
  if (c.kube_node_name == "$") p->Add("identity.kubernetes.nodeName: \"$\" names no variable");
}

void LoadUpstreamClient(const config::Node& root, UpstreamClientConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("upstreamClient");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("caFile", &c->ca_file));
  p->Add(s->ReadDuration("connectTimeout", &c->connect_timeout));
  p->Add(s->ReadDuration("readTimeout", &c->read_timeout));
  p->Add(s->Read("attempts", &c->attempts));
}

void LoadPypi(const config::Node& root, PypiConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("pypi");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("upstream", &c->upstream));
  p->Add(s->ReadDuration("metadataTtl", &c->metadata_ttl));
  p->Add(s->ReadDuration("negativeTtl", &c->negative_ttl));
  p->Add(s->ReadByteSize("maxUploadSize", &c->max_upload_size));
  p->Add(s->Read("wheelHouse", &c->wheel_house));
  p->Add(s->ReadStringList("wheelDirectories", &c->wheel_directories));
  p->Add(s->ReadOneOf("buildSandbox", {"bubblewrap", "none"}, &c->build_sandbox));
  p->Add(s->ReadDuration("buildDeadline", &c->build_deadline));
  p->Add(s->ReadDuration("buildFailureTtl", &c->build_failure_ttl));
  p->Add(s->Read("buildWorkers", &c->build_workers));
  config::Node list = s->Get("builders");
  if (!list.present() || list.IsNull()) return;
  if (!list.IsSequence()) return p->Add(list.Error("expected a list of {name, python}"));
  c->builders.clear();
  for (size_t i = 0; i < list.size(); ++i) {
    config::Node item = list.Item(i);
    if (!item.IsMap()) {
      p->Add(item.Error("expected a mapping {name, python, readOnlyPaths}"));
      continue;
    }
    PypiBuilderConfig b;
    p->Add(item.Read("name", &b.name));
    p->Add(item.Read("python", &b.python));
    p->Add(item.ReadStringList("readOnlyPaths", &b.read_only_paths));
    c->builders.push_back(std::move(b));
  }
}

void LoadNpm(const config::Node& root, NpmConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("npm");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("upstream", &c->upstream));
  p->Add(s->Read("publicUrl", &c->public_url));
  p->Add(s->ReadDuration("metadataTtl", &c->metadata_ttl));
  p->Add(s->ReadDuration("negativeTtl", &c->negative_ttl));
  p->Add(s->ReadByteSize("maxPackumentSize", &c->max_packument_size));
}

void LoadGoproxy(const config::Node& root, GoproxyConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("goproxy");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("upstream", &c->upstream));
  p->Add(s->ReadDuration("metadataTtl", &c->metadata_ttl));
  p->Add(s->ReadDuration("negativeTtl", &c->negative_ttl));
  Result<config::Node> db = s->Section("sumdb");
  if (!db.ok()) {
    return p->Add(db.status());
  }
  p->Add(db->Read("name", &c->sumdb.name));
  p->Add(db->Read("upstream", &c->sumdb.upstream));
  p->Add(db->ReadDuration("latestTtl", &c->sumdb.latest_ttl));
  p->Add(db->Read("verify", &c->sumdb.verify));
  p->Add(db->ReadStringList("noVerify", &c->sumdb.no_verify));
}

void LoadCargo(const config::Node& root, CargoConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("cargo");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("upstream", &c->upstream));
  p->Add(s->Read("publicUrl", &c->public_url));
  p->Add(s->ReadDuration("metadataTtl", &c->metadata_ttl));
  p->Add(s->ReadDuration("negativeTtl", &c->negative_ttl));
}

void LoadMaven(const config::Node& root, MavenConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("maven");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("upstream", &c->upstream));
  p->Add(s->ReadDuration("metadataTtl", &c->metadata_ttl));
  p->Add(s->ReadDuration("negativeTtl", &c->negative_ttl));
  p->Add(s->ReadByteSize("maxMutableSize", &c->max_mutable_size));
}

void LoadReplication(const config::Node& root, ReplicationConfig* c, Problems* p) {
  Result<config::Node> s = root.Section("replication");
  if (!s.ok()) {
    return p->Add(s.status());
  }
  p->Add(s->Read("listen", &c->listen));
  p->Add(s->Read("advertise", &c->advertise));
  p->Add(s->Read("copies", &c->copies));
  p->Add(s->ReadStringList("peers", &c->peers));
  p->Add(s->Read("peersFile", &c->peers_file));
  p->Add(s->ReadDuration("peerTimeout", &c->peer_timeout));
  p->Add(s->Read("pushQueue", &c->push_queue));
  Result<config::Node> dns = s->Section("dns");
  if (dns.ok()) {
    p->Add(dns->Read("name", &c->dns.name));
    p->Add(dns->Read("port", &c->dns.port));
    p->Add(dns->ReadDuration("interval", &c->dns.interval));
  } else {
    p->Add(dns.status());
  }
  Result<config::Node> tls = s->Section("tls");
  if (tls.ok()) {
    p->Add(tls->Read("certFile", &c->tls.cert_file));
    p->Add(tls->Read("keyFile", &c->tls.key_file));
    p->Add(tls->Read("caFile", &c->tls.ca_file));
    p->Add(tls->Read("serverName", &c->tls.server_name));
  } else {
    p->Add(tls.status());
  }
  Result<config::Node> hydrate = s->Section("hydrate");
  if (hydrate.ok()) {
    p->Add(hydrate->Read("enabled", &c->hydrate.enabled));
    p->Add(hydrate->ReadDuration("maxTime", &c->hydrate.max_time));
    p->Add(hydrate->ReadByteSize("maxSize", &c->hydrate.max_size));
  } else {
    p->Add(hydrate.status());
  }
}

void LoadDirectories(const config::Node& root, std::vector<DirectoryConfig>* out, Problems* p) {
  config::Node list = root.Get("directories");
  if (!list.present() || list.IsNull()) {
    return;
  }
  if (!list.IsSequence()) {
    return p->Add(list.Error("expected a list of {name, path, maxSize, settle}"));
  }
  out->clear();
  for (size_t i = 0; i < list.size(); ++i) {
    config::Node item = list.Item(i);
    if (!item.IsMap()) {
      p->Add(item.Error("expected a mapping {name, path, maxSize, settle}"));
      continue;
    }
    DirectoryConfig d;
    p->Add(item.Read("name", &d.name));
    p->Add(item.Read("path", &d.path));
    p->Add(item.ReadByteSize("maxSize", &d.max_size));
    p->Add(item.ReadDuration("settle", &d.settle));
    out->push_back(std::move(d));
  }
}

// An upstream URL must be absolute http(s) with a host and no whitespace or control characters.
void CheckUpstreamUrl(std::string_view key, const std::string& url, Problems* p) {
  bool scheme = url.starts_with("https://") || url.starts_with("http://");
  size_t host_start = url.find("://") + 3;
  bool host = scheme && host_start < url.size() && url[host_start] != '/';
  bool clean = std::none_of(url.begin(), url.end(), [](char ch) {
    return static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f;
  });
  if (!scheme || !host || !clean) {
    p->Add(std::string(key) + ": must be an absolute http:// or https:// URL, got \"" + url + "\"");
  }
}

void CheckPypiBuilds(const PypiConfig& c, Problems* p) {
  std::vector<std::string> names;
  for (const PypiBuilderConfig& b : c.builders) {
    if (!b.python.starts_with('/')) {
      p->Add("pypi.builders: python must be an absolute path, got " + Quoted(b.python));
    }
    std::string name = b.name.empty() ? b.python : b.name;
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      p->Add("pypi.builders: two builders are named " + Quoted(name));
    }
    names.push_back(name);
    for (const std::string& path : b.read_only_paths) {
      if (!path.starts_with('/')) {
        p->Add("pypi.builders: readOnlyPaths must be absolute, got " + Quoted(path));
      }
    }
  }
  if (c.build_deadline <= std::chrono::nanoseconds(0)) {
    p->Add("pypi.buildDeadline: must be greater than 0");
  }
  if (c.build_failure_ttl < std::chrono::nanoseconds(0)) {
    p->Add("pypi.buildFailureTtl: must not be negative");
  }
  if (c.build_workers < 1 || c.build_workers > 64) {
    p->Add("pypi.buildWorkers: must be between 1 and 64, got " + std::to_string(c.build_workers));
  }
}

Result<AgentConfig> LoadDocument(const config::Document& doc) {
  BC_ASSIGN_OR_RETURN(config::Node root, doc.Root());
  AgentConfig c;
  Problems p;
  LoadTopLevel(root, &c, &p);
  LoadStore(root, &c.store, &p);
  LoadHttpCache(root, &c.httpcache, &p);
  LoadServer(root, &c.server, &p);
  LoadUpstreamClient(root, &c.upstream_client, &p);
  LoadPypi(root, &c.pypi, &p);
  LoadGoproxy(root, &c.goproxy, &p);
  LoadNpm(root, &c.npm, &p);
  LoadCargo(root, &c.cargo, &p);
  LoadMaven(root, &c.maven, &p);
  LoadReplication(root, &c.replication, &p);
  LoadAdmin(root, &c.admin, &p);
  LoadDirectories(root, &c.directories, &p);
  LoadIdentity(root, &c.identity, &p);
  p.Add(doc.CheckUnknownKeys());
  BC_RETURN_IF_ERROR(p.ToStatus());
  return c;
}

// --- Validation ---

using net::IsHostName;

void CheckListen(const std::string& listen, Problems* p) {
  Result<net::HostPort> parsed = net::HostPort::Parse(listen);
  if (!parsed.ok()) p->Add("listen: " + parsed.status().message());
}

// A peer address: HOST:PORT with a port 1-65535 (IPv6 in brackets).
bool IsPeerAddress(std::string_view a) {
  Result<net::HostPort> parsed = net::HostPort::Parse(a);
  return parsed.ok() && parsed->port() != 0;
}

// Writes an IPv6 peer address the way DNS membership reports peers ("[canonical]:port"), so this
// agent finds itself among them: Kubernetes expands "$(POD_IP):8081" without brackets. Anything
// else is left as it is (and checked by IsPeerAddress).
void NormalizePeerAddress(std::string& a) {
  size_t colon = a.rfind(':');
  if (colon == std::string::npos) return;
  std::string host = a.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') == std::string::npos) {
    return;  // IPv4 or a host name
  }
  in6_addr addr{};
  char text[INET6_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET6, host.c_str(), &addr) != 1 ||
      inet_ntop(AF_INET6, &addr, text, sizeof text) == nullptr) {
    return;
  }
  a = "[" + std::string(text) + "]" + a.substr(colon);
}

void CheckReadable(std::string_view key, const std::string& file, Problems* p) {
  if (!file.empty() && ::access(file.c_str(), R_OK) != 0) {
    p->Add(std::string(key) + ": cannot read " + Quoted(file) + ": " + std::strerror(errno));
  }
}

void CheckReplication(const ReplicationConfig& r, Problems* p) {
  const bool any = !r.peers.empty() || !r.peers_file.empty() || !r.dns.name.empty() ||
                   r.tls.enabled() || !r.advertise.empty();
  if (!r.enabled()) {
    if (any) {
      p->Add("replication.listen: must be set when peers, peersFile, dns, tls or advertise are");
    }
    return;
  }
  Problems listen;
  CheckListen(r.listen, &listen);
  if (!listen.ToStatus().ok()) {
    p->Add("replication." + listen.ToStatus().message());
  }
  if (!r.advertise.empty() && !IsPeerAddress(r.advertise)) {
    p->Add("replication.advertise: expected HOST:PORT with a port 1-65535, got " +
           Quoted(r.advertise));
  }
  if (r.advertise.empty() && (r.listen.starts_with("0.0.0.0:") || r.listen.starts_with("[::]:"))) {
    p->Add("replication.advertise: must be set when replication.listen is a wildcard address (" +
           Quoted(r.listen) + "): peers need an address to reach this agent by");
  }
  if (r.copies < 1 || r.copies > 16) {
    p->Add("replication.copies: must be between 1 and 16, got " + std::to_string(r.copies));
  }
  for (size_t i = 0; i < r.peers.size(); ++i) {
    if (!IsPeerAddress(r.peers[i])) {
      p->Add("replication.peers[" + std::to_string(i) +
             "]: expected HOST:PORT with a port 1-65535, got " + Quoted(r.peers[i]));
    }
  }
  CheckReadable("replication.peersFile", r.peers_file, p);
  if (!r.dns.name.empty() && !IsHostName(r.dns.name)) {
    p->Add("replication.dns.name: must be a DNS name, got " + Quoted(r.dns.name));
  }
  if (r.dns.port < 1 || r.dns.port > 65535) {
    p->Add("replication.dns.port: must be between 1 and 65535, got " + std::to_string(r.dns.port));
  }
  if (r.dns.interval <= std::chrono::nanoseconds(0)) {
    p->Add("replication.dns.interval: must be greater than 0");
  }
  const PeerTlsConfig& t = r.tls;
  if (!t.cert_file.empty() || !t.key_file.empty() || !t.ca_file.empty()) {
    if (t.cert_file.empty() || t.key_file.empty() || t.ca_file.empty()) {
      p->Add("replication.tls: certFile, keyFile and caFile must all be set (mutual TLS)");
    }
    CheckReadable("replication.tls.certFile", t.cert_file, p);
    CheckReadable("replication.tls.keyFile", t.key_file, p);
    CheckReadable("replication.tls.caFile", t.ca_file, p);
  }
  if (r.peer_timeout <= std::chrono::nanoseconds(0)) {
    p->Add("replication.peerTimeout: must be greater than 0");
  }
  if (r.push_queue < 1 || r.push_queue > 10000000) {
    p->Add("replication.pushQueue: must be between 1 and 10000000, got " +
           std::to_string(r.push_queue));
  }
  if (r.hydrate.max_time <= std::chrono::nanoseconds(0)) {
    p->Add("replication.hydrate.maxTime: must be greater than 0");
  }
}

bool IsDirectoryName(std::string_view name) {
  return !name.empty() && name.size() <= 63 && name.front() != '-' && name.back() != '-' &&
         std::all_of(name.begin(), name.end(), [](char ch) {
           return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
         });
}

// "/a/./b/" -> "/a/b", so equal directories compare equal.
std::filesystem::path NormalDir(const std::string& dir) {
  std::filesystem::path norm = std::filesystem::path(dir).lexically_normal();
  if (!norm.has_filename() && norm != norm.root_path()) norm = norm.parent_path();
  return norm;
}

void CheckDirectories(const std::vector<DirectoryConfig>& dirs, const std::string& data_dir,
                      Problems* p) {
  namespace fs = std::filesystem;
  for (size_t i = 0; i < dirs.size(); ++i) {
    const DirectoryConfig& d = dirs[i];
    const std::string at = "directories[" + std::to_string(i) + "]";
    if (!IsDirectoryName(d.name)) {
      p->Add(at + ".name: must be 1-63 characters of [a-z0-9-], not starting or ending with '-'" +
             ", got " + Quoted(d.name));
    }
    for (size_t j = 0; j < i; ++j) {
      if (dirs[j].name == d.name) {
        p->Add(at + ".name: " + Quoted(d.name) + " is also directories[" + std::to_string(j) +
               "].name");
      }
    }
    fs::path path(d.path);
    if (!path.is_absolute()) {
      p->Add(at + ".path: must be an absolute path, got " + Quoted(d.path));
    } else {
      fs::path norm = NormalDir(d.path);
      for (size_t j = 0; j < i; ++j) {
        if (NormalDir(dirs[j].path) == norm) {
          p->Add(at + ".path: " + Quoted(d.path) + " is also directories[" + std::to_string(j) +
                 "].path");
        }
      }
      if (!data_dir.empty() && NormalDir(data_dir) == norm) {
        p->Add(at + ".path: must not be store.dataDir");
      }
    }
    if (d.max_size == 0) {
      p->Add(at + ".maxSize: must be greater than 0");
    }
    if (d.settle < std::chrono::nanoseconds(0)) {
      p->Add(at + ".settle: must not be negative");
    }
  }
}

// Creates the directory if needed and proves it writable with a probe file.
void CheckDataDir(std::string* data_dir, Problems* p) {
  namespace fs = std::filesystem;
  if (data_dir->empty()) {
    return p->Add("store.dataDir: must not be empty");
  }
  std::error_code ec;
  fs::path dir = fs::absolute(*data_dir, ec).lexically_normal();
  if (ec) {
    return p->Add("store.dataDir: " + Quoted(*data_dir) + ": " + ec.message());
  }
  if (!dir.has_filename() && dir != dir.root_path()) {
    dir = dir.parent_path();  // "/a/b/" -> "/a/b"
  }
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return p->Add("store.dataDir: " + Quoted(dir.string()) + " is not a directory");
  }
  fs::create_directories(dir, ec);
  if (ec) {
    return p->Add("store.dataDir: cannot create directory " + Quoted(dir.string()) + ": " +
                  ec.message());
  }
  if (!fs::is_directory(dir, ec)) {
    return p->Add("store.dataDir: " + Quoted(dir.string()) + " is not a directory");
  }
  fs::path probe = dir / (".buildcache-write-probe-" + std::to_string(getpid()));
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    return p->Add("store.dataDir: directory " + Quoted(dir.string()) +
                  " is not writable: " + std::strerror(err));
  }
  int err = 0;
  if (::write(fd, "x", 1) != 1) {
    err = errno;
  }
  if (::close(fd) != 0 && err == 0) {
    err = errno;
  }
  if (::unlink(probe.c_str()) != 0 && err == 0) {
    err = errno;
  }
  if (err != 0) {
    return p->Add("store.dataDir: directory " + Quoted(dir.string()) +
                  " is not writable: " + std::strerror(err));
  }
  *data_dir = dir.string();
}

}  // namespace

std::string_view VerifyReadsName(VerifyReads v) {
  switch (v) {
    case VerifyReads::kChanged:
      return "changed";
    case VerifyReads::kAlways:
      return "always";
  }
  return "changed";
}

Result<AgentConfig> LoadAgentConfig(const std::string& path) {
  BC_ASSIGN_OR_RETURN(config::Document doc, config::Document::LoadFile(path));
  return LoadDocument(doc);
}

Result<AgentConfig> ParseAgentConfig(std::string_view yaml, const std::string& name) {
  BC_ASSIGN_OR_RETURN(config::Document doc, config::Document::Parse(yaml, name));
  return LoadDocument(doc);
}

Status ValidateAgentConfig(AgentConfig& c) {
  Problems p;
  NormalizePeerAddress(c.replication.advertise);
  for (std::string& peer : c.replication.peers) NormalizePeerAddress(peer);
  CheckListen(c.listen, &p);
  if (c.log_level < log::Level::kDebug || c.log_level > log::Level::kError) {
    p.Add("logLevel: unknown level " + std::to_string(static_cast<int>(c.log_level)));
  }
  if (c.store.max_size == 0) {
    p.Add("store.maxSize: must be greater than 0");
  }
  if (c.store.max_size > static_cast<uint64_t>(INT64_MAX)) {
    p.Add("store.maxSize: too large");
  }
  if (c.httpcache.enabled) {
    if (c.httpcache.max_object_size == 0) {
      p.Add("httpcache.maxObjectSize: must be greater than 0");
    }
    if (c.store.max_size != 0 && c.httpcache.max_object_size > c.store.max_size) {
      p.Add("httpcache.maxObjectSize: " + config::FormatByteSize(c.httpcache.max_object_size) +
            " is larger than store.maxSize " + config::FormatByteSize(c.store.max_size) +
            " (an object that size could never be stored)");
    }
  }
  if (c.server.max_connections <= 0 || c.server.max_connections > 1000000) {
    p.Add("server.maxConnections: must be between 1 and 1000000, got " +
          std::to_string(c.server.max_connections));
  }
  if (c.server.idle_timeout <= std::chrono::nanoseconds(0)) {
    p.Add("server.idleTimeout: must be greater than 0");
  }
  if (c.server.max_connections_per_client < 0 || c.server.max_connections_per_client > 1000000) {
    p.Add("server.maxConnectionsPerClient: must be between 0 (no limit) and 1000000, got " +
          std::to_string(c.server.max_connections_per_client));
  }
  if (c.server.body_timeout < std::chrono::nanoseconds(0)) {
    p.Add("server.bodyTimeout: must not be negative");
  }
  if (!c.server.probe_listen.empty()) {
    Problems probe;
    CheckListen(c.server.probe_listen, &probe);
    if (Status st = probe.ToStatus(); !st.ok()) {
      std::string_view why = st.message();
      if (why.starts_with("listen: ")) why.remove_prefix(8);
      p.Add("server.probeListen: " + std::string(why));
    }
    if (c.server.probe_listen == c.listen && !c.listen.ends_with(":0")) {
      p.Add("server.probeListen: must differ from listen (" + Quoted(c.listen) + ")");
    }
  }
  for (auto [key, value] :
       {std::pair{"store.maxInFlightPerWriter", c.store.max_in_flight_per_writer},
        std::pair{"store.maxInFlightPerClient", c.store.max_in_flight_per_client}}) {
    if (value > c.store.max_size) {
      p.Add(std::string(key) + ": " + config::FormatByteSize(value) +
            " is larger than store.maxSize " + config::FormatByteSize(c.store.max_size));
    }
  }
  if (!c.upstream_client.ca_file.empty() &&
      ::access(c.upstream_client.ca_file.c_str(), R_OK) != 0) {
    p.Add("upstreamClient.caFile: cannot read \"" + c.upstream_client.ca_file + "\"");
  }
  if (c.upstream_client.connect_timeout <= std::chrono::nanoseconds(0)) {
    p.Add("upstreamClient.connectTimeout: must be greater than 0");
  }
  if (c.upstream_client.read_timeout <= std::chrono::nanoseconds(0)) {
    p.Add("upstreamClient.readTimeout: must be greater than 0");
  }
  if (c.upstream_client.attempts < 1 || c.upstream_client.attempts > 10) {
    p.Add("upstreamClient.attempts: must be between 1 and 10, got " +
          std::to_string(c.upstream_client.attempts));
  }
  if (c.pypi.enabled()) {
    CheckUpstreamUrl("pypi.upstream", c.pypi.upstream, &p);
    if (c.pypi.metadata_ttl < std::chrono::nanoseconds(0)) {
      p.Add("pypi.metadataTtl: must not be negative");
    }
    CheckPypiBuilds(c.pypi, &p);
    if (c.pypi.max_upload_size == 0) {
      p.Add("pypi.maxUploadSize: must be greater than 0");
    }
  }
  if (c.npm.enabled()) {
    CheckUpstreamUrl("npm.upstream", c.npm.upstream, &p);
    if (!c.npm.public_url.empty()) {
      CheckUpstreamUrl("npm.publicUrl", c.npm.public_url, &p);
    }
    if (c.npm.metadata_ttl < std::chrono::nanoseconds(0)) {
      p.Add("npm.metadataTtl: must not be negative");
    }
    if (c.npm.negative_ttl < std::chrono::nanoseconds(0)) {
      p.Add("npm.negativeTtl: must not be negative");
    }
    if (c.npm.max_packument_size == 0) {
      p.Add("npm.maxPackumentSize: must be greater than 0");
    }
  }
  if (c.goproxy.enabled()) {
    CheckUpstreamUrl("goproxy.upstream", c.goproxy.upstream, &p);
    if (c.goproxy.metadata_ttl < std::chrono::nanoseconds(0)) {
      p.Add("goproxy.metadataTtl: must not be negative");
    }
    if (c.goproxy.negative_ttl < std::chrono::nanoseconds(0)) {
      p.Add("goproxy.negativeTtl: must not be negative");
    }
    const GoproxySumdbConfig& db = c.goproxy.sumdb;
    if (!db.name.empty() &&
        (!IsHostName(db.name) || std::any_of(db.name.begin(), db.name.end(),
                                             [](char ch) { return ch >= 'A' && ch <= 'Z'; }))) {
      p.Add("goproxy.sumdb.name: must be a lowercase host name as GOSUMDB names it, got " +
            Quoted(db.name));
    }
    if (!db.upstream.empty()) {
      CheckUpstreamUrl("goproxy.sumdb.upstream", db.upstream, &p);
      if (db.name.empty()) p.Add("goproxy.sumdb.upstream: needs goproxy.sumdb.name");
    }
    if (db.latest_ttl < std::chrono::nanoseconds(0)) {
      p.Add("goproxy.sumdb.latestTtl: must not be negative");
    }
    for (const std::string& pattern : db.no_verify) {
      if (pattern.empty() || pattern.find_first_of(" ,\t") != std::string::npos) {
        p.Add("goproxy.sumdb.noVerify: invalid pattern " + Quoted(pattern));
      }
    }
  }
  if (c.cargo.enabled()) {
    std::string_view upstream = c.cargo.upstream;
    if (upstream.starts_with("sparse+")) upstream.remove_prefix(7);
    CheckUpstreamUrl("cargo.upstream", std::string(upstream), &p);
    if (!c.cargo.public_url.empty()) {
      CheckUpstreamUrl("cargo.publicUrl", c.cargo.public_url, &p);
    }
    if (c.cargo.metadata_ttl < std::chrono::nanoseconds(0)) {
      p.Add("cargo.metadataTtl: must not be negative");
    }
    if (c.cargo.negative_ttl < std::chrono::nanoseconds(0)) {
      p.Add("cargo.negativeTtl: must not be negative");
    }
  }
  if (c.maven.enabled()) {
    CheckUpstreamUrl("maven.upstream", c.maven.upstream, &p);
    if (c.maven.metadata_ttl < std::chrono::nanoseconds(0)) {
      p.Add("maven.metadataTtl: must not be negative");
    }
    if (c.maven.negative_ttl < std::chrono::nanoseconds(0)) {
      p.Add("maven.negativeTtl: must not be negative");
    }
    if (c.maven.max_mutable_size == 0) {
      p.Add("maven.maxMutableSize: must be greater than 0");
    }
  }
  CheckReplication(c.replication, &p);
  CheckReadable("admin.tokenFile", c.admin.token_file, &p);
  CheckReadable("identity.tokensFile", c.identity.tokens_file, &p);
  CheckIdentity(c.identity, &p);
  CheckDirectories(c.directories, c.store.data_dir, &p);
  CheckDataDir(&c.store.data_dir, &p);
  return p.ToStatus();
}

}  // namespace buildcache::agent
