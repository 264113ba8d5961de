#include "agent/frontends/goproxy/goproxy_frontend.h"

#include <strings.h>

#include <future>
#include <span>
#include <utility>

#include "agent/frontends/goproxy/held_response.h"
#include "agent/frontends/goproxy/module_path.h"
#include "agent/frontends/goproxy/sumdb.h"
#include "agent/upstream/serving.h"
#include "agent/upstream/url.h"
#include "common/http/headers.h"
#include "common/http/status_http.h"
#include "common/log/log.h"

namespace buildcache::goproxy {
namespace {

constexpr std::string_view kFrontend = "goproxy";
using http::kSourceHeader;
constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";
constexpr std::string_view kJson = "application/json";
constexpr std::string_view kZip = "application/zip";
constexpr std::string_view kOctetStream = "application/octet-stream";
constexpr size_t kIoBufferBytes = size_t{256} * 1024;
constexpr size_t kMaxLookupBytes = size_t{1} << 20;
// Rounds of "look in the store, else lead or join the flight": a request whose flight ended
// without storing the object (its leader's client went away, or it failed) leads the next one.
constexpr int kVerifyRounds = 3;

// A per-thread scratch buffer: the server runs one thread per connection.
std::span<char> IoBuffer() {
  thread_local std::unique_ptr<char[]> buf(new char[kIoBufferBytes]);
  return {buf.get(), kIoBufferBytes};
}

void MethodNotAllowed(http::Response& response) {
  response.SetStatus(405);
  response.SetHeader("Allow", "GET, HEAD");
  response.SetHeader("Content-Type", kTextPlain);
  (void)response.Send("method not allowed\n");
}

// Decodes a case-encoded module path and checks it.
Result<std::string> DecodeModule(std::string_view escaped) {
  BC_ASSIGN_OR_RETURN(std::string module, Unescape(escaped));
  BC_RETURN_IF_ERROR(CheckModulePath(module));
  return module;
}

bool GlobMatch(std::string_view pattern, std::string_view s) {
  if (pattern.empty()) return s.empty();
  if (pattern[0] == '*') {
    for (size_t i = 0; i <= s.size(); ++i) {
      if (GlobMatch(pattern.substr(1), s.substr(i))) return true;
    }
    return false;
  }
  if (s.empty()) return false;
  if (pattern[0] != '?' && pattern[0] != s[0]) return false;
  return GlobMatch(pattern.substr(1), s.substr(1));
}

}  // namespace

bool MatchesPathPatterns(const std::vector<std::string>& patterns, std::string_view module) {
  for (std::string_view pattern : patterns) {
    while (pattern.ends_with('/')) pattern.remove_suffix(1);
    if (pattern.empty()) continue;
    std::string_view p = pattern, m = module;
    bool ok = true;
    while (ok && !p.empty()) {
      size_t ps = p.find('/'), ms = m.find('/');
      if (m.empty()) {
        ok = false;
        break;
      }
      ok = GlobMatch(p.substr(0, ps), m.substr(0, ms));
      p = ps == std::string_view::npos ? std::string_view() : p.substr(ps + 1);
      m = ms == std::string_view::npos ? std::string_view() : m.substr(ms + 1);
    }
    if (ok) return true;
  }
  return false;
}

struct GoproxyFrontend::ModuleRequest {
  enum class Kind { kList, kLatest, kInfo, kMod, kZip };
  Kind kind = Kind::kList;
  std::string module;   // decoded and checked
  std::string version;  // decoded and checked (.info, .mod, .zip)
  std::string escaped_module;
  std::string escaped_version;
  // "<escaped module>@<escaped version>": the store-key suffix for a version's files.
  std::string at() const { return escaped_module + "@" + escaped_version; }
};

namespace {

// The options without trailing slashes, and the checksum database's default upstream filled in.
GoproxyOptions Normalized(GoproxyOptions options) {
  while (options.upstream.ends_with('/')) options.upstream.pop_back();
  while (options.sumdb.upstream.ends_with('/')) options.sumdb.upstream.pop_back();
  while (options.prefix.ends_with('/')) options.prefix.pop_back();
  if (!options.sumdb.name.empty() && options.sumdb.upstream.empty() && !options.upstream.empty()) {
    options.sumdb.upstream = options.upstream + "/sumdb/" + options.sumdb.name;
  }
  return options;
}

}  // namespace

GoproxyFrontend::GoproxyFrontend(store::BlobStore& store, upstream::ArtifactCache& artifacts,
                                 upstream::MetadataCache& metadata, GoproxyOptions options)
    : store_(store),
      artifacts_(artifacts),
      metadata_(metadata),
      options_(Normalized(std::move(options))) {}

GoproxyFrontend::~GoproxyFrontend() = default;

void GoproxyFrontend::AddRoutes(http::Router& router) {
  router.Add("", options_.prefix,
             [this](http::Request& req, http::Response& resp) { Handle(req, resp); });
}

void GoproxyFrontend::Handle(http::Request& request, http::Response& response) {
  std::string_view path = request.path();
  const std::string& prefix = options_.prefix;
  if (!path.starts_with(prefix) || path.size() <= prefix.size() + 1 || path[prefix.size()] != '/') {
    http::SendError(response, NotFound("no module proxy API at this path"));
    return;
  }
  if (request.method() != "GET" && request.method() != "HEAD") {
    MethodNotAllowed(response);
    return;
  }
  // The result is checked by the callers, so decoding cannot smuggle anything past them.
  auto rest = upstream::PercentDecode(path.substr(prefix.size() + 1));
  if (!rest.ok()) {
    http::SendError(response, rest.status());
    return;
  }
  if (rest->starts_with("sumdb/")) {
    ServeSumdb(request, response, std::string_view(*rest).substr(6));
  } else {
    ServeModule(request, response, *rest);
  }
}

// Over 80 lines as a dispatch table: it parses the endpoint from the path, then each endpoint is
// two or three lines naming its key, URL and TTL.
void GoproxyFrontend::ServeModule(http::Request& request, http::Response& response,
                                  std::string_view rest) {
  using Kind = ModuleRequest::Kind;
  ModuleRequest m;
  std::string_view escaped_module;
  std::string_view file;
  if (rest.ends_with("/@latest")) {
    m.kind = Kind::kLatest;
    escaped_module = rest.substr(0, rest.size() - 8);
  } else if (size_t at = rest.find("/@v/"); at != std::string_view::npos) {
    escaped_module = rest.substr(0, at);
    file = rest.substr(at + 4);
    if (file == "list") {
      m.kind = Kind::kList;
    } else if (file.ends_with(".info")) {
      m.kind = Kind::kInfo;
      file.remove_suffix(5);
    } else if (file.ends_with(".mod")) {
      m.kind = Kind::kMod;
      file.remove_suffix(4);
    } else if (file.ends_with(".zip")) {
      m.kind = Kind::kZip;
      file.remove_suffix(4);
    } else {
      http::SendError(response, NotFound("no such module proxy endpoint"));
      return;
    }
  } else {
    http::SendError(response, NotFound("no such module proxy endpoint"));
    return;
  }
  auto module = DecodeModule(escaped_module);
  if (!module.ok()) {
    http::SendError(response, module.status());
    return;
  }
  m.module = std::move(module).value();
  m.escaped_module = Escape(m.module).value();  // checked paths have no '!'
  const std::string& kp = options_.key_prefix;
  const std::string base = options_.upstream + "/" + m.escaped_module;
  if (options_.upstream.empty()) {
    http::SendError(response, NotFound("no upstream module proxy is configured"));
    return;
  }
  if (m.kind == Kind::kList) {
    ServeMetadata(request, response, kp + "list/" + m.escaped_module, base + "/@v/list",
                  options_.metadata_ttl, kTextPlain, Endpoint::kModule);
    return;
  }
  if (m.kind == Kind::kLatest) {
    ServeMetadata(request, response, kp + "latest/" + m.escaped_module, base + "/@latest",
                  options_.metadata_ttl, kJson, Endpoint::kModule);
    return;
  }
  auto version = Unescape(file);
  Status checked = version.ok() ? CheckVersionQuery(*version) : version.status();
  if (!checked.ok()) {
    http::SendError(response, InvalidArgument("invalid version: " + checked.message()));
    return;
  }
  m.version = std::move(version).value();
  auto escaped_version = Escape(m.version);
  if (!escaped_version.ok()) {
    http::SendError(response, escaped_version.status());
    return;
  }
  m.escaped_version = std::move(escaped_version).value();
  const bool canonical = IsCanonicalVersion(m.version);
  const std::string url = base + "/@v/" + m.escaped_version;
  if (m.kind == Kind::kInfo) {
    if (canonical) {
      ServeArtifact(request, response, kp + "info/" + m.at(), url + ".info", kJson,
                    Endpoint::kModule);
    } else {
      ServeMetadata(request, response, kp + "query/" + m.at(), url + ".info", options_.metadata_ttl,
                    kJson, Endpoint::kModule);
    }
    return;
  }
  if (!canonical) {
    http::SendError(response,
                    InvalidArgument(".mod and .zip need a canonical version, not " + m.version));
    return;
  }
  const bool mod = m.kind == Kind::kMod;
  if (!options_.sumdb.name.empty() && options_.sumdb.verify && !SkipVerify(m.module)) {
    ServeVerified(request, response, m);
    return;
  }
  ServeArtifact(request, response, kp + (mod ? "mod/" : "zip/") + m.at(),
                url + (mod ? ".mod" : ".zip"), mod ? kTextPlain : kZip, Endpoint::kModule);
}

void GoproxyFrontend::ServeSumdb(http::Request& request, http::Response& response,
                                 std::string_view rest) {
  size_t slash = rest.find('/');
  std::string_view name = rest.substr(0, slash);
  if (!IsValidSumdbName(name)) {
    http::SendError(response, InvalidArgument("invalid checksum database name"));
    return;
  }
  if (options_.sumdb.name.empty() || name != options_.sumdb.name ||
      options_.sumdb.upstream.empty()) {
    // 404 tells the go command to try the next proxy, or the database itself.
    http::SendError(response,
                    NotFound("checksum database " + std::string(name) + " is not proxied here"));
    return;
  }
  std::string_view op = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  const std::string kp = options_.key_prefix + "sumdb/" + options_.sumdb.name + "/";
  const std::string& base = options_.sumdb.upstream;
  if (op == "supported") {
    response.SetStatus(200);
    response.SetHeader("Content-Type", kTextPlain);
    response.SetHeader(kSourceHeader, "local");
    (void)response.Send("");
    return;
  }
  if (op == "latest") {
    ServeMetadata(request, response, kp + "latest", base + "/latest", options_.sumdb.latest_ttl,
                  kTextPlain, Endpoint::kSumdb);
    return;
  }
  if (op.starts_with("lookup/")) {
    std::string_view target = op.substr(7);
    size_t at = target.rfind('@');
    if (at == std::string_view::npos) {
      http::SendError(response, InvalidArgument("lookup needs <module>@<version>"));
      return;
    }
    auto module = DecodeModule(target.substr(0, at));
    auto version = Unescape(target.substr(at + 1));
    if (!module.ok() || !version.ok() || !IsCanonicalVersion(*version)) {
      http::SendError(response, InvalidArgument("invalid module or version in lookup"));
      return;
    }
    std::string key = Escape(*module).value() + "@" + Escape(*version).value();
    ServeArtifact(request, response, kp + "lookup/" + key, base + "/lookup/" + key, kTextPlain,
                  Endpoint::kSumdb);
    return;
  }
  if (op.starts_with("tile/")) {
    auto tile = ParseTilePath(op.substr(5));
    if (!tile.ok()) {
      http::SendError(response, tile.status());
      return;
    }
    std::string t = tile->ToString();
    if (tile->partial()) {
      ServeMetadata(request, response, kp + "tile/" + t, base + "/tile/" + t,
                    options_.sumdb.latest_ttl, kOctetStream, Endpoint::kSumdb);
    } else {
      ServeArtifact(request, response, kp + "tile/" + t, base + "/tile/" + t, kOctetStream,
                    Endpoint::kSumdb);
    }
    return;
  }
  http::SendError(response, NotFound("no such checksum database endpoint"));
}

void GoproxyFrontend::ServeMetadata(http::Request& request, http::Response& response,
                                    const std::string& key, const std::string& url,
                                    std::chrono::seconds ttl, std::string_view content_type,
                                    Endpoint endpoint) {
  (void)request;
  upstream::MetadataRequest req;
  req.forbidden_is_not_found = endpoint == Endpoint::kModule;
  req.frontend = std::string(kFrontend);
  req.key = key;
  req.url = url;
  req.ttl = ttl;
  req.negative_ttl = options_.negative_ttl;
  req.max_size = options_.max_metadata_size;
  req.fetch = options_.fetch;
  auto start = options_.clock ? options_.clock() : std::chrono::system_clock::now();
  auto doc = metadata_.Get(req);
  if (!doc.ok()) {
    log::Warn("goproxy metadata failed", {{"key", key}, {"error", doc.status().ToString()}});
    http::SendError(response, doc.status());
    return;
  }
  response.SetHeader(kSourceHeader, upstream::DocumentSource(*doc, start));
  response.SetHeader("Cache-Control", "no-cache");
  if (doc->status == 404 || doc->status == 410) {
    log::Debug("goproxy not found upstream", {{"key", key}, {"status", doc->status}});
    // The go command shows the body as the reason.
    response.SetStatus(doc->status);
    response.SetHeader("Content-Type", kTextPlain);
    (void)response.Send(doc->body.empty()
                            ? (doc->status == 404 ? "not found upstream\n" : "gone upstream\n")
                            : doc->body);
    return;
  }
  if (doc->status != 200) {
    http::SendError(
        response, Unavailable("upstream answered " + std::to_string(doc->status) + " for " + url));
    return;
  }
  response.SetStatus(200);
  response.SetHeader("Content-Type", content_type);
  (void)response.Send(doc->body);
}

void GoproxyFrontend::ServeArtifact(http::Request& request, http::Response& response,
                                    const std::string& key, const std::string& url,
                                    std::string_view content_type, Endpoint endpoint) {
  upstream::Artifact artifact;
  artifact.frontend = std::string(kFrontend);
  artifact.key = key;
  artifact.url = url;
  artifact.content_type = std::string(content_type);
  artifact.fetch = options_.fetch;
  if (endpoint == Endpoint::kModule) {
    artifact.forbidden_is_not_found = true;
    artifact.negative_ttl = options_.negative_ttl;
  }
  artifacts_.Serve(request, response, artifact);
}

bool GoproxyFrontend::SkipVerify(std::string_view module) const {
  return MatchesPathPatterns(options_.sumdb.no_verify, module);
}

Result<std::string> GoproxyFrontend::ExpectedHash(const ModuleRequest& m) {
  const std::string name = options_.sumdb.name;
  // Lookups are keyed by module@version, shared with the go command's own lookups.
  std::string at = m.at();
  upstream::Artifact lookup;
  lookup.frontend = std::string(kFrontend);
  lookup.key = options_.key_prefix + "sumdb/" + name + "/lookup/" + at;
  lookup.url = options_.sumdb.upstream + "/lookup/" + at;
  lookup.content_type = std::string(kTextPlain);
  lookup.fetch = options_.fetch;
  auto ensured = artifacts_.Ensure(lookup);
  if (!ensured.ok()) {
    if (ensured.status().code() == StatusCode::kNotFound) {
      return Unavailable("checksum database " + name + " has no record of " + m.module + "@" +
                         m.version + ", so it cannot be verified");
    }
    return ensured.status();
  }
  if (ensured->size > kMaxLookupBytes) {
    (void)store_.Delete(lookup.key);
    return Unavailable("oversized checksum database lookup for " + m.module);
  }
  BC_ASSIGN_OR_RETURN(auto reader, store_.Open(lookup.key));
  BC_ASSIGN_OR_RETURN(std::string body, store::ReadAll(*reader));
  auto hashes = ParseLookup(body, m.module, m.version);
  if (!hashes.ok()) {
    (void)store_.Delete(lookup.key);  // not a usable record: fetch it again next time
    return Unavailable(hashes.status().message());
  }
  if (m.kind == ModuleRequest::Kind::kMod) return hashes->mod;
  if (hashes->zip.empty()) {
    return Unavailable("the checksum database record has no zip hash for " + m.module + "@" +
                       m.version);
  }
  return hashes->zip;
}

upstream::Artifact GoproxyFrontend::StagedArtifact(const ModuleRequest& m) const {
  const bool mod = m.kind == ModuleRequest::Kind::kMod;
  upstream::Artifact staged;
  staged.frontend = std::string(kFrontend);
  staged.key = options_.key_prefix + "unverified/" + (mod ? "mod/" : "zip/") + m.at();
  staged.url = options_.upstream + "/" + m.escaped_module + "/@v/" + m.escaped_version +
               (mod ? ".mod" : ".zip");
  staged.fetch = options_.fetch;
  staged.forbidden_is_not_found = true;
  staged.negative_ttl = options_.negative_ttl;
  return staged;
}

void GoproxyFrontend::FetchFailed(http::Response& response, const ModuleRequest& m,
                                  const Status& s) {
  if (s.code() != StatusCode::kNotFound) {
    log::Warn("goproxy fetch failed",
              {{"module", m.module}, {"version", m.version}, {"error", s.ToString()}});
  }
  if (!response.started()) http::SendError(response, s);
}

Status GoproxyFrontend::EnsureVerified(const ModuleRequest& m, const std::string& final_key) {
  // Fetched into a staging key (never served), checked, then stored under the final key.
  const upstream::Artifact staged = StagedArtifact(m);
  BC_RETURN_IF_ERROR(artifacts_.Ensure(staged).status());
  struct Cleanup {
    store::BlobStore& store;
    const std::string& key;
    ~Cleanup() { (void)store.Delete(key); }
  } cleanup{store_, staged.key};

  BC_ASSIGN_OR_RETURN(std::string expected, ExpectedHash(m));
  BC_ASSIGN_OR_RETURN(auto reader, store_.Open(staged.key));
  return StoreVerified(m, *reader, expected, staged.key, final_key);
}

Status GoproxyFrontend::StoreVerified(const ModuleRequest& m, store::BlobReader& reader,
                                      const std::string& expected, const std::string& staged_key,
                                      const std::string& final_key,
                                      const ZipStreamHasher* streamed) {
  const bool mod = m.kind == ModuleRequest::Kind::kMod;
  const store::BlobInfo info = reader.info();
  std::string actual;
  if (mod) {
    BC_ASSIGN_OR_RETURN(std::string content, store::ReadAll(reader));
    actual = HashGoMod(content);
  } else {
    auto hashed = HashZip(
        [&reader](uint64_t offset, std::span<char> buf) { return reader.ReadAt(offset, buf); },
        info.size, options_.zip, streamed);
    if (!hashed.ok()) {
      log::Warn(
          "goproxy zip rejected",
          {{"module", m.module}, {"version", m.version}, {"error", hashed.status().ToString()}});
      return DataLoss(m.module + "@" + m.version +
                      ".zip from upstream is unusable: " + hashed.status().message());
    }
    actual = std::move(hashed).value();
  }
  if (actual != expected) {
    log::Warn("goproxy verification failed", {{"module", m.module},
                                              {"version", m.version},
                                              {"file", mod ? "mod" : "zip"},
                                              {"expected", expected},
                                              {"actual", actual}});
    return DataLoss(m.module + "@" + m.version + (mod ? ".mod" : ".zip") +
                    " does not match the checksum database: expected " + expected + ", got " +
                    actual);
  }
  // The checked bytes become the final key's without a copy: the staged key is moved, provided it
  // still maps to the blob `reader` read (the digest ties the two together).
  Status moved = store_.Rename(staged_key, final_key, info.digest);
  if (moved.code() == StatusCode::kNotFound) {
    // Another request removed or replaced the staged key meanwhile: copy the bytes read here.
    store::WriteOptions write;
    write.expected_digest = info.digest;
    write.expected_size = info.size;
    write.sync_content = false;  // a blob with these bytes was stored, with its grouped sync
    BC_ASSIGN_OR_RETURN(auto writer, store_.NewWriter(final_key, write));
    std::span<char> buf = IoBuffer();
    for (uint64_t offset = 0; offset < info.size;) {
      BC_ASSIGN_OR_RETURN(size_t n, reader.ReadAt(offset, buf));
      if (n == 0) return DataLoss("staged object shorter than recorded");
      BC_RETURN_IF_ERROR(writer->Write({buf.data(), n}));
      offset += n;
    }
    moved = writer->Commit().status();
  }
  BC_RETURN_IF_ERROR(moved);
  log::Debug("goproxy verified", {{"module", m.module},
                                  {"version", m.version},
                                  {"file", mod ? "mod" : "zip"},
                                  {"h1", actual}});
  return Status::Ok();
}

Status GoproxyFrontend::CommitVerifiedZip(const ModuleRequest& m, const std::string& staged_key,
                                          const std::string& final_key, const std::string& expected,
                                          const store::Digest& sha256,
                                          const ZipStreamHasher& streamed) {
  if (auto staged = store_.Stat(staged_key); !staged.ok() || staged->digest != sha256) {
    return DataLoss(m.module + "@" + m.version + ".zip changed while it was sent");
  }
  // The blob's SHA-256 is that of the bytes just sent (the held response hashed them, the store's
  // writer too), so it is read without hashing it a third time: the h1 check below takes the
  // central directory from it and the files from `streamed` (hashed from those same bytes as they
  // were sent), or from the blob for any entry the stream hasher could not follow. The final
  // key's first verifying read re-hashes the file.
  BC_ASSIGN_OR_RETURN(auto reader, store_.OpenDigestForRelay(sha256));
  // Moved (not copied) to final_key before the last byte goes out.
  return StoreVerified(m, *reader, expected, staged_key, final_key, &streamed);
}

namespace {

// The client's request without its Range and If-Range headers.
class WholeBodyRequest final : public http::Request {
 public:
  explicit WholeBodyRequest(http::Request& inner) : inner_(inner) {}
  std::string_view method() const override { return inner_.method(); }
  std::string_view target() const override { return inner_.target(); }
  std::string_view header(std::string_view name) const override {
    if (strcasecmp(std::string(name).c_str(), "Range") == 0 ||
        strcasecmp(std::string(name).c_str(), "If-Range") == 0) {
      return {};
    }
    return inner_.header(name);
  }
  std::optional<uint64_t> content_length() const override { return inner_.content_length(); }
  std::string_view remote_address() const override { return inner_.remote_address(); }
  Result<size_t> ReadBody(std::span<char> buf) override { return inner_.ReadBody(buf); }

 private:
  http::Request& inner_;
};

}  // namespace

void GoproxyFrontend::ServeZipStreamed(http::Request& request, http::Response& response,
                                       const ModuleRequest& m, const std::string& final_key,
                                       upstream::Coalescer<Status>::Leadership& lead) {
  // The look-up and the zip fetch overlap: the look-up runs on its own thread.
  std::future<Result<std::string>> expected =
      std::async(std::launch::async, [this, &m] { return ExpectedHash(m); });
  upstream::Artifact staged = StagedArtifact(m);
  staged.content_type = std::string(kZip);
  // The first byte waits for the look-up (started before the zip fetch, so usually done by
  // then): a module the database does not know, or a database that fails, is answered 502 with
  // the reason instead of a cut-off transfer. Only the zip's own check comes after the stream.
  auto before_start = [&]() -> Status {
    Result<std::string> hash = expected.get();
    // get() may be called once: keep the value for the check.
    expected = std::async(std::launch::deferred, [hash] { return hash; });
    return hash.status();
  };
  // The zip's files are hashed as they stream past, so the h1 check after the last byte has
  // little left to read.
  ZipStreamHasher streamed(options_.zip.max_uncompressed);
  auto check = [&](const store::Digest& sha256, uint64_t) -> Status {
    Result<std::string> hash = expected.get();
    expected = std::async(std::launch::deferred, [hash] { return hash; });
    BC_RETURN_IF_ERROR(hash.status());
    return CommitVerifiedZip(m, staged.key, final_key, *hash, sha256, streamed);
  };
  HeldBackResponse held(response, check, before_start, [&streamed, &lead](std::string_view data) {
    streamed.Update(data);
    lead.Progress();  // requests waiting for this zip wait while it arrives
  });
  // The whole zip, never a range: only a whole body is checked, and a 206 would pass the held
  // response unchecked (a range of the verified zip is served from final_key afterwards).
  WholeBodyRequest whole(request);
  artifacts_.Serve(whole, held, staged);
  if (held.outcome().ok() && !store_.Stat(final_key).ok() && store_.Stat(staged.key).ok()) {
    // The client went away before the end, so the check never ran, but the fetch completed into
    // the staging key (for the store): check it now for the requests waiting on this flight.
    if (Status s = EnsureVerified(m, final_key); !s.ok()) {
      log::Warn("goproxy fetch failed",
                {{"module", m.module}, {"version", m.version}, {"error", s.ToString()}});
    }
  }
  (void)store_.Delete(staged.key);  // never served; the verified copy is under final_key
  lead.Publish(held.outcome());     // the waiters look in the store whatever it says
  if (Status s = held.outcome(); !s.ok()) FetchFailed(response, m, s);
}

void GoproxyFrontend::ServeVerified(http::Request& request, http::Response& response,
                                    const ModuleRequest& m) {
  const bool mod = m.kind == ModuleRequest::Kind::kMod;
  const std::string key = options_.key_prefix + (mod ? "mod/" : "zip/") + m.at();
  bool fetched = false;
  // One fetch-and-verify per key at a time: the others, GET or HEAD, join its flight and wait for
  // it holding nothing (so the leader never waits for one of them), then are served from the
  // store.
  for (int round = 0; !store_.Stat(key).ok(); ++round) {
    if (round == kVerifyRounds) {
      http::SendError(response, Unavailable("the downloads of " + m.module + "@" + m.version +
                                            (mod ? ".mod" : ".zip") +
                                            " this request waited for did not store it"));
      return;
    }
    auto joined = flights_.Join(key);
    if (joined.leadership) {
      if (store_.Stat(key).ok()) {  // stored by a flight that ended after the look-up above
        joined.leadership->Publish(Status::Ok());
        fetched = round > 0;
        break;
      }
      if (!mod && request.method() == "GET") {
        ServeZipStreamed(request, response, m, key, *joined.leadership);
        return;
      }
      Status s = EnsureVerified(m, key);
      joined.leadership->Publish(s);
      if (!s.ok()) {
        FetchFailed(response, m, s);
        return;
      }
      fetched = true;
      break;
    }
    if (!joined.flight->Wait(options_.verify_wait)) {
      http::SendError(response,
                      DeadlineExceeded("another download of " + m.module + "@" + m.version +
                                       (mod ? ".mod" : ".zip") + " made no progress for " +
                                       std::to_string(options_.verify_wait.count()) + " ms"));
      return;
    }
    fetched = true;  // by the request this one waited for
  }
  response.SetHeader(kSourceHeader, fetched ? "upstream" : "local");
  upstream::ServeImmutableBlob(store_, request, response, key, mod ? kTextPlain : kZip);
}

}  // namespace buildcache::goproxy
