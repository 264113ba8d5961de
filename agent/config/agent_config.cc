#include "agent/config/agent_config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "agent/config/config_fields.h"
#include "agent/config/quoting.h"
#include "common/config/document.h"
#include "common/config/units.h"
#include "common/net/host_port.h"

namespace buildcache::agent {

using internal::Quoted;

namespace {

using fields::CheckReadable;
using fields::Problems;

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

void CheckSumdb(const GoproxySumdbConfig& db, Problems* p) {
  if (!db.name.empty() &&
      (!net::IsHostName(db.name) || std::any_of(db.name.begin(), db.name.end(),
                                                [](char ch) { return ch >= 'A' && ch <= 'Z'; }))) {
    p->Add("goproxy.sumdb.name: must be a lowercase host name as GOSUMDB names it, got " +
           Quoted(db.name));
  }
  if (!db.upstream.empty() && db.name.empty()) {
    p->Add("goproxy.sumdb.upstream: needs goproxy.sumdb.name");
  }
  for (const std::string& pattern : db.no_verify) {
    if (pattern.empty() || pattern.find_first_of(" ,\t") != std::string::npos) {
      p->Add("goproxy.sumdb.noVerify: invalid pattern " + Quoted(pattern));
    }
  }
}

// "3.11", "2.36": a minor version as the builder platform declares it.
bool IsMinorVersion(std::string_view v) {
  size_t dot = v.find('.');
  auto digits = [](std::string_view d) {
    return !d.empty() && d.size() <= 4 &&
           std::all_of(d.begin(), d.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  };
  return dot != std::string_view::npos && digits(v.substr(0, dot)) && digits(v.substr(dot + 1));
}

void CheckPypiBuildPods(const PypiBuildPodsConfig& pods, Problems* p) {
  if (pods.ns.empty()) p->Add("pypi.buildPods.namespace: required (e.g. $POD_NAMESPACE)");
  if (pods.build_cache.empty()) p->Add("pypi.buildPods.buildCache: required");
  if (pods.agent_url.empty()) {
    p->Add("pypi.buildPods.agentUrl: required (e.g. http://$(POD_IP):8080)");
  } else if (!pods.agent_url.starts_with("http://")) {
    p->Add("pypi.buildPods.agentUrl: must be http://HOST:PORT, got " + Quoted(pods.agent_url));
  }
}

void CheckPypiBuilds(const PypiConfig& c, Problems* p) {
  std::vector<std::string> names;
  bool any_image = false;
  for (const PypiBuilderConfig& b : c.builders) {
    std::string name = b.name.empty() ? b.python : b.name;
    const std::string which = "pypi.builders " + Quoted(name.empty() ? b.image : name);
    if (b.python.empty() == b.image.empty()) {
      p->Add(which + ": set exactly one of python (a local interpreter) and image (a builder pod)");
    }
    if (!b.python.empty() && !b.python.starts_with('/')) {
      p->Add("pypi.builders: python must be an absolute path, got " + Quoted(b.python));
    }
    if (!b.image.empty()) {
      any_image = true;
      if (b.name.empty()) p->Add(which + ": a builder with an image needs a name");
      if (!IsMinorVersion(b.platform.python)) {
        p->Add(which +
               ": platform.python must be the interpreter's minor version (\"3.11\"), got " +
               Quoted(b.platform.python));
      }
      if (!IsMinorVersion(b.platform.libc_version)) {
        p->Add(which + ": platform.libcVersion must be a version such as \"2.36\", got " +
               Quoted(b.platform.libc_version));
      }
      if (!b.read_only_paths.empty()) {
        p->Add(which + ": readOnlyPaths is for local interpreters, not images");
      }
    } else if (!b.platform.python.empty() || !b.platform.libc_version.empty()) {
      p->Add(which + ": platform is declared for image builders only (a local python is probed)");
    }
    if (!name.empty() && std::find(names.begin(), names.end(), name) != names.end()) {
      p->Add("pypi.builders: two builders are named " + Quoted(name));
    }
    if (!name.empty()) names.push_back(name);
    for (const std::string& path : b.read_only_paths) {
      if (!path.starts_with('/')) {
        p->Add("pypi.builders: readOnlyPaths must be absolute, got " + Quoted(path));
      }
    }
  }
  if (any_image) {
    if (!c.build_pods.enabled()) {
      p->Add(
          "pypi.buildPods: required when a builder has an image (namespace, buildCache, "
          "agentUrl)");
    } else {
      CheckPypiBuildPods(c.build_pods, p);
    }
  }
}

Result<AgentConfig> LoadDocument(const config::Document& doc) {
  BC_ASSIGN_OR_RETURN(config::Node root, doc.Root());
  AgentConfig c;
  Problems p;
  fields::Load(fields::AgentConfigFields(), root, &c, &p);
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
  for (size_t i = 0; i < r.peers.size(); ++i) {
    if (!IsPeerAddress(r.peers[i])) {
      p->Add("replication.peers[" + std::to_string(i) +
             "]: expected HOST:PORT with a port 1-65535, got " + Quoted(r.peers[i]));
    }
  }
  if (!r.dns.name.empty() && !IsHostName(r.dns.name)) {
    p->Add("replication.dns.name: must be a DNS name, got " + Quoted(r.dns.name));
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
  // Each field's own rule (agent_config_fields.cc), then the rules that span fields.
  fields::CheckRules(fields::AgentConfigFields(), &c, "", &p);
  if (c.store.max_size > static_cast<uint64_t>(INT64_MAX)) {
    p.Add("store.maxSize: too large");
  }
  if (c.httpcache.enabled && c.store.max_size != 0 &&
      c.httpcache.max_object_size > c.store.max_size) {
    p.Add("httpcache.maxObjectSize: " + config::FormatByteSize(c.httpcache.max_object_size) +
          " is larger than store.maxSize " + config::FormatByteSize(c.store.max_size) +
          " (an object that size could never be stored)");
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
  for (auto [name, mirror] : {std::pair<const char*, const UpstreamMirrorConfig*>{"pypi", &c.pypi},
                              {"npm", &c.npm},
                              {"goproxy", &c.goproxy},
                              {"cargo", &c.cargo},
                              {"maven", &c.maven}}) {
    const UpstreamAuthConfig& a = mirror->auth;
    if (!a.token_file.empty() && (!a.username_file.empty() || !a.password_file.empty())) {
      p.Add(std::string(name) +
            ".auth: tokenFile (bearer) and usernameFile/passwordFile (basic) exclude each other");
    }
    if (a.username_file.empty() != a.password_file.empty()) {
      p.Add(std::string(name) + ".auth: usernameFile and passwordFile go together (basic)");
    }
    if (a.enabled() && !mirror->enabled()) {
      p.Add(std::string(name) + ".auth: set without " + name + ".upstream");
    }
  }
  if (c.pypi.enabled()) CheckPypiBuilds(c.pypi, &p);
  if (c.goproxy.enabled()) CheckSumdb(c.goproxy.sumdb, &p);
  CheckReplication(c.replication, &p);
  CheckIdentity(c.identity, &p);
  CheckDirectories(c.directories, c.store.data_dir, &p);
  CheckDataDir(&c.store.data_dir, &p);
  return p.ToStatus();
}

}  // namespace buildcache::agent
