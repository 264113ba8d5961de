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

#include "common/config/document.h"
#include "common/config/units.h"

namespace buildcache::agent {
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

std::string Quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out.append("\\x");
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0xf]);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

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
  p.Add(doc.CheckUnknownKeys());
  BC_RETURN_IF_ERROR(p.ToStatus());
  return c;
}

// --- Validation ---

bool ParsePort(std::string_view s) {
  if (s.empty() || s.size() > 5) {
    return false;
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), port);
  return ec == std::errc() && end == s.data() + s.size() && port <= 65535;
}

bool IsHostName(std::string_view host) {
  if (host.empty() || host.size() > 253) {
    return false;
  }
  size_t label = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    char c = host[i];
    if (c == '.') {
      if (label == 0 || host[i - 1] == '-') {
        return false;
      }
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c == '-' && label > 0);
    if (!ok || ++label > 63) {
      return false;
    }
  }
  return host.back() != '-';
}

void CheckListen(const std::string& listen, Problems* p) {
  const std::string hint =
      " (expected HOST:PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8080, [::]:8080 or localhost:8080)";
  std::string_view host, port;
  if (listen.starts_with('[')) {
    size_t close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return p->Add("listen: invalid address " + Quoted(listen) + hint);
    }
    std::string v6 = listen.substr(1, close - 1);
    in6_addr addr{};
    if (inet_pton(AF_INET6, v6.c_str(), &addr) != 1) {
      return p->Add("listen: invalid IPv6 address " + Quoted(v6) + hint);
    }
    port = std::string_view(listen).substr(close + 2);
  } else {
    size_t colon = listen.rfind(':');
    if (colon == std::string::npos) {
      return p->Add("listen: missing port in " + Quoted(listen) + hint);
    }
    host = std::string_view(listen).substr(0, colon);
    port = std::string_view(listen).substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return p->Add("listen: IPv6 addresses need brackets in " + Quoted(listen) + hint);
    }
    in_addr addr{};
    if (host.empty()) {
      return p->Add("listen: missing host in " + Quoted(listen) + hint);
    }
    if (inet_pton(AF_INET, std::string(host).c_str(), &addr) != 1 && !IsHostName(host)) {
      return p->Add("listen: invalid host " + Quoted(host) + hint);
    }
  }
  if (!ParsePort(port)) {
    p->Add("listen: invalid port " + Quoted(port) + " in " + Quoted(listen) +
           " (expected 0-65535)");
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
  CheckDataDir(&c.store.data_dir, &p);
  return p.ToStatus();
}

std::string RenderAgentConfig(const AgentConfig& c) {
  std::string out;
  out += "listen: " + Quoted(c.listen) + "\n";
  out += "logLevel: " + std::string(log::LevelName(c.log_level)) + "\n";
  out += "store:\n";
  out += "  dataDir: " + Quoted(c.store.data_dir) + "\n";
  out += "  maxSize: " + config::FormatByteSize(c.store.max_size) + "\n";
  out += "  verifyReads: " + std::string(VerifyReadsName(c.store.verify_reads)) + "\n";
  out += "httpcache:\n";
  out += std::string("  enabled: ") + (c.httpcache.enabled ? "true" : "false") + "\n";
  out += "  maxObjectSize: " + config::FormatByteSize(c.httpcache.max_object_size) + "\n";
  out += "server:\n";
  out += "  maxConnections: " + std::to_string(c.server.max_connections) + "\n";
  out += "  idleTimeout: " + config::FormatDuration(c.server.idle_timeout) + "\n";
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
  return out;
}

}  // namespace buildcache::agent
