#include "agent/frontends/pypi/pypi_frontend.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <utility>

#include "agent/frontends/pypi/multipart.h"
#include "agent/frontends/pypi/names.h"
#include "agent/frontends/pypi/platform.h"
#include "agent/upstream/serving.h"
#include "common/http/headers.h"
#include "common/http/router.h"
#include "common/http/status_http.h"
#include "common/log/log.h"

namespace buildcache::pypi {
namespace {

using http::kSourceHeader;
constexpr std::string_view kOctetStream = "application/octet-stream";
constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";
constexpr std::string_view kMetadataSuffix = ".metadata";
constexpr size_t kIoBufferBytes = size_t{256} * 1024;
// Bounds on the small (non-file) fields of an upload form.
constexpr size_t kMaxFormFieldBytes = 1 << 20;
constexpr size_t kMaxFormFields = 1024;

// A per-thread scratch buffer: the server runs one thread per connection.
}  // namespace

// The fields and the wheel of an upload form (a twine/`python -m build` multipart POST).
struct PypiFrontend::UploadForm {
  std::map<std::string, std::string> fields;
  std::unique_ptr<WheelHouse::Pending> pending;  // the content part, not committed yet
  std::string_view field(const char* name) const {
    auto it = fields.find(name);
    return it == fields.end() ? std::string_view() : std::string_view(it->second);
  }
  std::optional<std::string_view> digest() const {
    if (field("sha256_digest").empty()) return std::nullopt;
    return field("sha256_digest");
  }
};

namespace {

std::span<char> IoBuffer() {
  thread_local std::unique_ptr<char[]> buf(new char[kIoBufferBytes]);
  return {buf.get(), kIoBufferBytes};
}

void Reply(http::Response& response, int code, std::string_view body) {
  response.SetStatus(code);
  response.SetHeader("Content-Type", kTextPlain);
  (void)response.Send(body);
}

void Redirect(http::Response& response, const std::string& location) {
  response.SetStatus(301);
  response.SetHeader("Location", location);
  response.SetHeader("Content-Type", kTextPlain);
  (void)response.Send("moved to " + location + "\n");
}

void MethodNotAllowed(http::Response& response, std::string_view allow) {
  response.SetStatus(405);
  response.SetHeader("Allow", allow);
  response.SetHeader("Content-Type", kTextPlain);
  (void)response.Send("method not allowed\n");
}

// The digests an Artifact can be verified with: sha256 and sha512 from the index.
std::vector<upstream::ExpectedDigest> ExpectedDigests(
    const std::map<std::string, std::string>& hashes) {
  std::vector<upstream::ExpectedDigest> out;
  using Algorithm = upstream::ExpectedDigest::Algorithm;
  for (auto [name, algorithm] :
       {std::pair{"sha256", Algorithm::kSha256}, std::pair{"sha512", Algorithm::kSha512}}) {
    auto it = hashes.find(name);
    if (it == hashes.end()) continue;
    auto d = upstream::ParseHexDigest(algorithm, it->second);
    if (d.ok()) out.push_back(std::move(d).value());
  }
  return out;
}

bool Verifiable(const std::map<std::string, std::string>& hashes) {
  return !ExpectedDigests(hashes).empty();
}

// file URL + ".metadata" (PEP 658), before any query string.
std::string MetadataUrl(std::string_view url) {
  size_t q = url.find('?');
  if (q == std::string_view::npos) return std::string(url) + std::string(kMetadataSuffix);
  return std::string(url.substr(0, q)) + std::string(kMetadataSuffix) + std::string(url.substr(q));
}

bool IsHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
         });
}

// "<name>/<file>" (undecoded) -> decoded, validated, normalized name and file name.
Result<std::pair<std::string, std::string>> ParseFilePath(std::string_view rest) {
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos || rest.find('/', slash + 1) != std::string_view::npos) {
    return NotFound("no such file path");
  }
  BC_ASSIGN_OR_RETURN(std::string name, PercentDecode(rest.substr(0, slash)));
  BC_ASSIGN_OR_RETURN(std::string filename, PercentDecode(rest.substr(slash + 1)));
  if (!IsValidProjectName(name)) return InvalidArgument("invalid project name");
  if (!IsValidFilename(filename)) return InvalidArgument("invalid file name");
  return std::pair{NormalizeName(name), std::move(filename)};
}

// What a parsed page costs in memory, roughly: its strings and the nodes that hold them.
size_t ApproximateBytes(const ProjectPage& page) {
  size_t bytes = sizeof(ProjectPage) + page.name.size();
  for (const std::string& v : page.versions) bytes += sizeof(std::string) + v.size();
  for (const DistFile& f : page.files) {
    bytes += sizeof(DistFile) + f.filename.size() + f.url.size() + f.requires_python.size() +
             f.upload_time.size() + (f.yanked ? f.yanked->size() : 0);
    for (const auto* hashes : {&f.hashes, &f.core_metadata_hashes}) {
      for (const auto& [k, v] : *hashes) bytes += 64 + k.size() + v.size();  // 64: a map node
    }
  }
  return bytes;
}

// The PEP 440 keys (VersionKey) of every version a project page offers: its PEP 700 versions
// list and the versions of its files.
std::set<std::string> VersionKeys(const std::string& project, const ProjectPage& page) {
  std::set<std::string> out;
  for (const std::string& v : page.versions) out.insert(VersionKey(v));
  for (const DistFile& f : page.files) {
    if (auto v = DistributionVersion(project, f.filename)) out.insert(VersionKey(*v));
  }
  return out;
}

// Whether the page still lists an sdist with this sha256: a built wheel is served only while the
// upstream file it was built from is.
bool ListsDigest(const ProjectPage& page, std::string_view sha256) {
  return std::any_of(page.files.begin(), page.files.end(), [&](const DistFile& f) {
    auto it = f.hashes.find("sha256");
    return it != f.hashes.end() && it->second.size() == sha256.size() &&
           std::equal(sha256.begin(), sha256.end(), it->second.begin(), [](char a, char b) {
             return a == std::tolower(static_cast<unsigned char>(b));
           });
  });
}

bool IsSdist(std::string_view filename) {
  for (std::string_view ext : {".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz"}) {
    if (filename.ends_with(ext)) return true;
  }
  return false;
}

}  // namespace

PypiFrontend::PypiFrontend(store::BlobStore& store, upstream::ArtifactCache& artifacts,
                           upstream::MetadataCache& metadata, PypiOptions options)
    : store_(store),
      artifacts_(artifacts),
      metadata_(metadata),
      options_([&] {
        if (!options.upstream.empty() && !options.upstream.ends_with('/')) {
          options.upstream += '/';
        }
        while (options.prefix.ends_with('/')) options.prefix.pop_back();
        return std::move(options);
      }()),
      wheel_house_(store, WheelHouseOptions{.key_prefix = options_.key_prefix,
                                            .owner_copies = options_.wheel_list_owner_copies,
                                            .list_ttl = options_.wheel_list_ttl}),
      parsed_pages_(options_.page_cache_bytes),
      rendered_pages_(options_.page_cache_bytes) {
  if (options_.builds) {
    builder_ = std::make_unique<WheelBuilder>(store_, wheel_house_, *options_.builds);
    if (options_.offer_build) {
      scheduler_ = std::make_unique<BuildScheduler>(*builder_, options_.offer_build);
    }
  }
}

PypiFrontend::~PypiFrontend() = default;

void PypiFrontend::AddRoutes(http::Router& router) {
  router.Add("", options_.prefix,
             [this](http::Request& req, http::Response& resp) { Handle(req, resp); });
}

void PypiFrontend::Handle(http::Request& request, http::Response& response) {
  std::optional<std::string_view> under = http::PathUnder(request.path(), options_.prefix);
  if (!under) {
    http::SendError(response, NotFound("no PyPI API at this path"));
    return;
  }
  std::string_view rest = *under;
  std::string_view method = request.method();

  if (rest.empty() || rest == "/" || rest == "/legacy" || rest == "/legacy/") {
    if (method == "POST") {
      Upload(request, response);
    } else {
      MethodNotAllowed(response, "POST");
    }
    return;
  }
  if (method != "GET" && method != "HEAD") {
    MethodNotAllowed(response, "GET, HEAD");
    return;
  }
  if (rest == "/simple") {
    Redirect(response, options_.prefix + "/simple/");
  } else if (rest == "/simple/") {
    http::SendError(response, NotFound("the project list is not served; ask for " +
                                       options_.prefix + "/simple/<project>/"));
  } else if (rest.starts_with("/simple/")) {
    std::string_view name = rest.substr(8);
    bool trailing_slash = name.ends_with('/');
    if (trailing_slash) name.remove_suffix(1);
    if (name.find('/') != std::string_view::npos) {
      http::SendError(response, NotFound("no such page"));
      return;
    }
    ServeIndexPage(request, response, name, trailing_slash);
  } else if (rest.starts_with("/files/")) {
    ServeFile(request, response, rest.substr(7));
  } else if (rest.starts_with("/wheelhouse/")) {
    ServeWheelHouseFile(request, response, rest.substr(12));
  } else if (rest.starts_with("/builds/")) {
    ServeBuilds(response, rest.substr(8));
  } else {
    http::SendError(response, NotFound("no PyPI API at this path"));
  }
}

Result<std::shared_ptr<const ProjectPage>> PypiFrontend::UpstreamPage(const std::string& project,
                                                                      std::string_view* source,
                                                                      std::string* fingerprint) {
  *source = "local";
  if (options_.upstream.empty()) return NotFound("no upstream index is configured");
  upstream::MetadataRequest req;
  req.frontend = "pypi";
  req.key = options_.key_prefix + "page/" + project;
  req.url = options_.upstream + project + "/";
  req.ttl = options_.metadata_ttl;
  req.negative_ttl = options_.negative_ttl;
  req.max_size = options_.max_page_size;
  req.fetch = options_.fetch;
  req.fetch.headers.emplace_back("Accept", std::string(kUpstreamAccept));
  auto start = std::chrono::system_clock::now();
  BC_ASSIGN_OR_RETURN(upstream::Document doc, metadata_.Get(req));
  *source = upstream::DocumentSource(doc, start);
  if (doc.status == 404 || doc.status == 410) {
    return NotFound("project " + project + " not found upstream");
  }
  if (doc.status != 200) {
    return Unavailable("upstream answered " + std::to_string(doc.status) + " for " + req.url);
  }
  std::string print = upstream::DocumentFingerprint(doc);
  if (fingerprint != nullptr) *fingerprint = print;
  if (auto cached = parsed_pages_.Find(project, print)) return cached;
  auto page = ParseProjectPage(doc.body, doc.content_type, req.url);
  if (!page.ok()) {
    return Unavailable("unusable upstream page " + req.url + ": " + page.status().message());
  }
  auto parsed = std::make_shared<const ProjectPage>(std::move(page).value());
  parsed_pages_.Put(project, std::move(print), parsed, ApproximateBytes(*parsed));
  return parsed;
}

ProjectPage PypiFrontend::ServedPage(const std::string& project, const ProjectPage* upstream_page,
                                     const std::vector<WheelEntry>& wheels) const {
  ProjectPage page;
  page.name = project;
  if (upstream_page != nullptr) {
    const ProjectPage& up = *upstream_page;
    if (!up.name.empty() && NormalizeName(up.name) == project) page.name = up.name;
    page.versions = up.versions;
    page.files.reserve(up.files.size() + wheels.size());
    for (const DistFile& uf : up.files) {
      if (!IsValidFilename(uf.filename)) {
        log::Debug("pypi file skipped", {{"project", project}, {"filename", uf.filename}});
        continue;
      }
      DistFile& f = page.files.emplace_back(uf);
      f.url = "../../files/" + project + "/" + PercentEncodeSegment(f.filename);
      // Metadata is only advertised when it can be verified (else pip reads the wheel itself).
      if (!Verifiable(f.core_metadata_hashes)) {
        f.core_metadata = false;
        f.core_metadata_hashes.clear();
      }
    }
  }
  bool list_versions = !page.versions.empty() || upstream_page == nullptr;
  // Wheel-house wheels come from untrusted writers (any pod that reaches the agent), so they only
  // fill versions the upstream does not have: next to an upstream release, an uploaded wheel
  // (with a build tag, say) would win pip's choice under an exact pin.
  const std::set<std::string> upstream_versions = VersionKeys(project, page);
  for (const WheelEntry& w : wheels) {
    if (page.Find(w.filename) != nullptr) continue;  // the upstream's file of that name wins
    if (w.built()) {
      // Built by this cache from a verified upstream sdist: listed beside the upstream's files
      // of its version, while the upstream still lists that sdist.
      if (upstream_page == nullptr || !ListsDigest(*upstream_page, w.built_from)) continue;
    } else if (auto wheel = ParseWheelFilename(w.filename);
               !wheel.ok() || upstream_versions.contains(VersionKey(wheel->version))) {
      log::Info("pypi wheel not listed",
                {{"project", project},
                 {"filename", w.filename},
                 {"reason",
                  "the upstream has this version; uploaded wheels only fill versions "
                  "it does not have"}});
      continue;
    }
    DistFile f;
    f.filename = w.filename;
    f.url = "../../wheelhouse/" + project + "/" + PercentEncodeSegment(w.filename);
    f.hashes["sha256"] = w.sha256;
    f.requires_python = w.requires_python;
    f.size = w.size;
    f.upload_time = w.uploaded;
    if (auto wheel = ParseWheelFilename(w.filename);
        wheel.ok() && list_versions &&
        std::find(page.versions.begin(), page.versions.end(), wheel->version) ==
            page.versions.end()) {
      page.versions.push_back(wheel->version);
    }
    page.files.push_back(std::move(f));
  }
  return page;
}

void PypiFrontend::ServeIndexPage(http::Request& request, http::Response& response,
                                  std::string_view raw_name, bool trailing_slash) {
  auto name = PercentDecode(raw_name);
  if (!name.ok() || !IsValidProjectName(*name)) {
    http::SendError(response, InvalidArgument("invalid project name"));
    return;
  }
  std::string project = NormalizeName(*name);
  if (!trailing_slash || *name != project) {
    Redirect(response, options_.prefix + "/simple/" + project + "/");
    return;
  }
  Format format = NegotiateFormat(request.header("Accept"));

  std::string_view source = "local";
  std::string fingerprint;
  auto upstream_page = UpstreamPage(project, &source, &fingerprint);
  std::vector<WheelEntry> wheels;
  if (ListsWheelHouse()) wheels = wheel_house_.Files(project);
  if (!upstream_page.ok() &&
      (upstream_page.status().code() != StatusCode::kNotFound || wheels.empty())) {
    if (upstream_page.status().code() != StatusCode::kNotFound) {
      log::Warn("pypi page failed",
                {{"project", project}, {"error", upstream_page.status().ToString()}});
    }
    http::SendError(response, upstream_page.status());
    return;
  }

  // A served page depends on the upstream document and the wheel list, nothing else: pip asks
  // for every page again in each run, and a big project's page takes as long to render as to
  // parse.
  std::string validator = upstream_page.ok() ? fingerprint : "no upstream page";
  for (const WheelEntry& w : wheels) validator += "\n" + w.filename + " " + w.sha256;
  const std::string render_key = project + "\n" + std::string(ContentTypeFor(format));
  std::shared_ptr<const RenderedPage> rendered = rendered_pages_.Find(render_key, validator);
  if (!rendered) {
    ProjectPage page =
        ServedPage(project, upstream_page.ok() ? upstream_page->get() : nullptr, wheels);
    auto fresh = std::make_shared<RenderedPage>();
    fresh->body = Render(page, format);
    fresh->etag = upstream::StrongEtag(fresh->body);
    rendered_pages_.Put(render_key, std::move(validator), fresh,
                        fresh->body.size() + fresh->etag.size());
    rendered = std::move(fresh);
  }

  response.SetHeader("Vary", "Accept");
  upstream::SendRevalidatedDocument(request, response, rendered->body, rendered->etag,
                                    ContentTypeFor(format), source);
}

void PypiFrontend::ServeFile(http::Request& request, http::Response& response,
                             std::string_view rest) {
  auto parsed = ParseFilePath(rest);
  if (!parsed.ok()) {
    http::SendError(response, parsed.status());
    return;
  }
  const auto& [project, filename] = *parsed;
  std::string_view source = "local";
  auto page = UpstreamPage(project, &source);
  if (!page.ok()) {
    http::SendError(response, page.status());
    return;
  }
  const ProjectPage& listing = **page;
  upstream::Artifact artifact;
  artifact.frontend = "pypi";
  artifact.content_type = std::string(kOctetStream);
  artifact.fetch = options_.fetch;
  const DistFile* file = listing.Find(filename);
  const std::map<std::string, std::string>* hashes = nullptr;
  if (file != nullptr) {
    artifact.key = options_.key_prefix + "files/" + project + "/" + filename;
    artifact.url = file->url;
    hashes = &file->hashes;
  } else if (filename.ends_with(kMetadataSuffix)) {
    std::string_view base =
        std::string_view(filename).substr(0, filename.size() - kMetadataSuffix.size());
    file = listing.Find(base);
    if (file != nullptr && file->core_metadata && Verifiable(file->core_metadata_hashes)) {
      artifact.key = options_.key_prefix + "metadata/" + project + "/" + std::string(base);
      artifact.url = MetadataUrl(file->url);
      hashes = &file->core_metadata_hashes;
    }
  }
  if (hashes == nullptr) {
    http::SendError(response,
                    NotFound(filename + " is not listed on the index page of " + project));
    return;
  }
  artifact.expected = ExpectedDigests(*hashes);
  if (artifact.expected.empty()) {
    http::SendError(response, Unavailable("the upstream index gives no sha256 or sha512 for " +
                                          filename + ", so it cannot be verified"));
    return;
  }
  artifacts_.Serve(request, response, artifact);
  if (builder_ && hashes == &file->hashes && IsSdist(filename)) {
    MaybeBuild(request, project, *file, artifact.key);
  }
}

std::optional<std::string> PypiFrontend::FittingWheel(const std::string& project,
                                                      std::string_view version,
                                                      const ClientPlatform& platform) {
  for (const WheelEntry& w : wheel_house_.Files(project)) {
    auto wheel = ParseWheelFilename(w.filename);
    if (wheel.ok() && VersionKey(wheel->version) == VersionKey(version) &&
        WheelFits(*wheel, platform)) {
      return w.filename;
    }
  }
  return std::nullopt;
}

void PypiFrontend::MaybeBuild(const http::Request& request, const std::string& project,
                              const DistFile& file, const std::string& store_key) {
  const std::string user_agent(request.header("User-Agent"));
  auto platform = ParseClientPlatform(user_agent);
  auto version = DistributionVersion(project, file.filename);
  auto sha256 = file.hashes.find("sha256");
  if (!platform || !version || sha256 == file.hashes.end() || !IsHex64(sha256->second)) return;
  // Only what the ArtifactCache verified and stored is built (a failed transfer stored nothing).
  if (!store_.Stat(store_key).ok()) return;
  // Built already (or uploaded): this client chose the sdist anyway.
  if (FittingWheel(project, *version, *platform)) return;
  SdistRef sdist{.project = project,
                 .version = *version,
                 .filename = file.filename,
                 .sha256 = sha256->second,
                 .store_key = store_key};
  for (char& c : sdist.sha256) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheduler_) {
    scheduler_->Schedule(sdist, *platform, user_agent);
    return;
  }
  BuildDecision decision = builder_->Request(sdist, *platform);
  log::Debug("pypi build request", {{"project", project},
                                    {"sdist", file.filename},
                                    {"platform", platform->Key()},
                                    {"decision", std::string(BuildDecisionName(decision))}});
}

Result<PypiFrontend::PeerBuild> PypiFrontend::BuildForPeer(std::string_view project,
                                                           std::string_view filename,
                                                           std::string_view sha256,
                                                           std::string_view user_agent) {
  if (!builder_) return FailedPrecondition("this agent builds no wheels");
  if (!IsValidProjectName(project) || NormalizeName(project) != project) {
    return InvalidArgument("not a normalized project name");
  }
  const std::string name(project);
  auto version = DistributionVersion(name, filename);
  if (!IsValidFilename(filename) || !IsSdist(filename) || !version) {
    return InvalidArgument("not an sdist of " + name);
  }
  if (!IsHex64(sha256)) return InvalidArgument("sha256 is not 64 hex digits");
  std::string digest(sha256);
  for (char& c : digest) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto platform = ParseClientPlatform(user_agent);
  if (!platform) return InvalidArgument("the User-Agent names no platform");
  // The sdist is what this agent's own upstream index lists, or nothing: a peer cannot make it
  // build a file by naming it.
  std::string_view source;
  BC_ASSIGN_OR_RETURN(auto page, UpstreamPage(name, &source));
  const DistFile* file = (*page).Find(filename);
  std::string listed_digest;
  if (file != nullptr) {
    if (auto it = file->hashes.find("sha256"); it != file->hashes.end()) listed_digest = it->second;
  }
  for (char& c : listed_digest) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (file == nullptr || listed_digest != digest) {
    return NotFound(std::string(filename) + " with sha256 " + digest +
                    " is not on the upstream index page of " + name);
  }
  PeerBuild answer;
  if (auto wheel = FittingWheel(name, *version, *platform)) {
    answer.decision = "built";
    answer.wheel = *wheel;
    return answer;
  }
  upstream::Artifact artifact;
  artifact.frontend = "pypi";
  artifact.key = options_.key_prefix + "files/" + name + "/" + std::string(filename);
  artifact.url = file->url;
  artifact.fetch = options_.fetch;
  artifact.expected = ExpectedDigests(file->hashes);
  BC_RETURN_IF_ERROR(artifacts_.Ensure(artifact).status());
  SdistRef sdist{.project = name,
                 .version = *version,
                 .filename = std::string(filename),
                 .sha256 = digest,
                 .store_key = artifact.key};
  answer.decision = std::string(BuildDecisionName(builder_->Request(sdist, *platform, &answer.id)));
  return answer;
}

void PypiFrontend::ServeBuilds(http::Response& response, std::string_view rest) {
  if (!builder_) {
    http::SendError(response, NotFound("wheel building is not configured"));
    return;
  }
  if (rest.empty()) {
    nlohmann::json builds = nlohmann::json::array();
    for (const BuildRecord& r : builder_->Builds()) {
      builds.push_back({{"id", r.id},
                        {"project", r.project},
                        {"version", r.version},
                        {"sdist", r.sdist},
                        {"sdist_sha256", r.sha256},
                        {"builder", r.builder},
                        {"platform", r.platform},
                        {"state", std::string(BuildStateName(r.state))},
                        {"error", r.error},
                        {"wheel", r.wheel},
                        {"seconds", r.seconds}});
    }
    response.SetStatus(200);
    response.SetHeader("Content-Type", "application/json");
    (void)response.Send(nlohmann::json{{"builds", std::move(builds)}}.dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  if (!rest.ends_with("/log")) {
    http::SendError(response, NotFound("no such build path"));
    return;
  }
  auto log_text = builder_->Log(rest.substr(0, rest.size() - 4));
  if (!log_text.ok()) {
    http::SendError(response, log_text.status());
    return;
  }
  Reply(response, 200, *log_text);
}

void PypiFrontend::ServeWheelHouseFile(const http::Request& request, http::Response& response,
                                       std::string_view rest) {
  auto parsed = ParseFilePath(rest);
  if (!parsed.ok()) {
    http::SendError(response, parsed.status());
    return;
  }
  const auto& [project, filename] = *parsed;
  std::optional<WheelEntry> entry;
  if (ListsWheelHouse()) entry = wheel_house_.Find(project, filename);
  if (!entry) {
    http::SendError(response, NotFound(filename + " is not in the wheel house"));
    return;
  }
  // What the page does not list is not served either: an uploaded wheel of a version the
  // upstream has (published after the upload) stays out of reach, also by its URL, and so does
  // a built wheel whose sdist the upstream no longer lists.
  std::string_view source;
  if (entry->built()) {
    auto page = UpstreamPage(project, &source);
    if (!page.ok() || !ListsDigest(**page, entry->built_from)) {
      http::SendError(response, NotFound(filename + " is not listed: its sdist is not upstream"));
      return;
    }
    if (options_.built_wheels_served) options_.built_wheels_served->Inc();
  } else if (auto page = UpstreamPage(project, &source); page.ok()) {
    auto wheel = ParseWheelFilename(filename);
    if (!wheel.ok() || VersionKeys(project, **page).contains(VersionKey(wheel->version))) {
      http::SendError(response,
                      NotFound(filename + " is not listed: the upstream has its version"));
      return;
    }
  }
  response.SetHeader(kSourceHeader, "local");
  upstream::ServeImmutableBlob(store_, request, response, wheel_house_.FileKey(project, filename),
                               kOctetStream);
}

Status PypiFrontend::ReadUploadForm(http::Request& request, const std::string& boundary,
                                    UploadForm& form) {
  enum class Part { kField, kContent, kIgnored };
  Part part = Part::kIgnored;
  std::string field_name;
  std::map<std::string, std::string>& fields = form.fields;
  size_t field_bytes = 0;
  std::unique_ptr<WheelHouse::Pending>& pending = form.pending;
  bool content_seen = false;

  MultipartCallbacks callbacks;
  callbacks.on_part = [&](const PartHeader& h) -> Status {
    if (h.name == "content") {
      if (content_seen) return InvalidArgument("more than one content part");
      content_seen = true;
      if (!h.has_filename) return InvalidArgument("the content part has no file name");
      if (!ParseWheelFilename(h.filename).ok()) {
        return InvalidArgument("only wheels (.whl) are accepted; got " +
                               std::string(IsValidFilename(h.filename) ? h.filename : "?"));
      }
      BC_ASSIGN_OR_RETURN(pending, wheel_house_.Begin(h.filename));
      part = Part::kContent;
    } else if (h.has_filename) {
      part = Part::kIgnored;  // signatures, attestations
    } else {
      if (fields.size() >= kMaxFormFields) return InvalidArgument("too many form fields");
      part = Part::kField;
      field_name = h.name;
      fields[field_name].clear();  // a repeated field keeps its last value
    }
    return Status::Ok();
  };
  callbacks.on_data = [&](std::string_view data) -> Status {
    switch (part) {
      case Part::kContent:
        return pending->Write(data);
      case Part::kField:
        field_bytes += data.size();
        if (field_bytes > kMaxFormFieldBytes) return InvalidArgument("form fields too large");
        fields[field_name].append(data);
        return Status::Ok();
      case Part::kIgnored:
        return Status::Ok();
    }
    return Status::Ok();
  };
  callbacks.on_part_end = [&]() -> Status {
    part = Part::kIgnored;
    return Status::Ok();
  };

  MultipartParser parser(boundary, std::move(callbacks));
  std::span<char> buf = IoBuffer();
  uint64_t total = 0;
  Status status;
  for (;;) {
    auto n = request.ReadBody(buf);
    if (!n.ok()) {
      status = n.status();
      break;
    }
    if (*n == 0) {
      status = parser.Finish();
      break;
    }
    total += *n;
    if (total > options_.max_upload_size) {
      status =
          TooLarge("upload larger than " + std::to_string(options_.max_upload_size) + " bytes");
      break;
    }
    status = parser.Feed({buf.data(), *n});
    if (!status.ok()) break;
  }

  return status.ok() ? CheckUploadForm(form) : status;
}

Status PypiFrontend::CheckUploadForm(const UploadForm& form) {
  auto field = [&](const char* name) { return form.field(name); };
  const auto& pending = form.pending;
  Status status;
  if (status.ok() && field(":action") != "file_upload") {
    status = InvalidArgument("only :action=file_upload is supported");
  }
  if (status.ok() && !pending) status = InvalidArgument("the form has no content file");
  if (status.ok() && (field("name").empty() || !IsValidProjectName(field("name")) ||
                      NormalizeName(field("name")) != pending->wheel().project())) {
    status = InvalidArgument("the name field does not match the wheel's file name");
  }
  if (status.ok() && field("version").empty()) status = InvalidArgument("the form has no version");
  if (status.ok() && !field("filetype").empty() && field("filetype") != "bdist_wheel") {
    status = InvalidArgument("only filetype bdist_wheel is accepted");
  }
  const std::optional<std::string_view> digest = form.digest();
  if (status.ok() && digest && !IsHex64(*digest)) {
    status = InvalidArgument("sha256_digest is not 64 hex digits");
  }
  return status;
}

void PypiFrontend::Upload(http::Request& request, http::Response& response) {
  if (!options_.wheel_house) {
    log::Info("pypi upload refused",
              {{"remote", request.remote_address()}, {"reason", "the wheel house is disabled"}});
    http::SendError(response, PermissionDenied("uploads are refused: the wheel house is disabled "
                                               "(pypi.wheelHouse is false)"));
    return;
  }
  auto boundary = MultipartBoundary(request.header("Content-Type"));
  if (!boundary.ok()) {
    http::SendError(response, boundary.status());
    return;
  }
  if (auto length = request.content_length(); length && *length > options_.max_upload_size) {
    http::SendError(response, TooLarge("upload larger than " +
                                       std::to_string(options_.max_upload_size) + " bytes"));
    return;
  }

  UploadForm form;
  if (Status status = ReadUploadForm(request, *boundary, form); !status.ok()) {
    log::Info("pypi upload rejected",
              {{"remote", request.remote_address()}, {"error", status.ToString()}});
    http::SendError(response, status);
    return;
  }
  std::unique_ptr<WheelHouse::Pending> pending = std::move(form.pending);
  const std::optional<std::string_view> digest = form.digest();
  Status status;
  std::string filename = pending->filename();
  // Refused at once when the upstream has the release (the listing hides such wheels anyway, also
  // when the upstream publishes the version later): nothing is stored, and the uploader learns
  // why. An upstream that cannot be asked now leaves it to the listing.
  std::string_view source;
  const std::string project = pending->wheel().project();
  if (auto page = UpstreamPage(project, &source);
      page.ok() && VersionKeys(project, **page).contains(VersionKey(pending->wheel().version))) {
    status = PermissionDenied(project + " " + pending->wheel().version +
                              " is on the upstream index: uploaded wheels may only add versions "
                              "it does not have");
  }
  if (!status.ok()) {
    log::Info("pypi upload rejected", {{"remote", request.remote_address()},
                                       {"filename", filename},
                                       {"error", status.ToString()}});
    http::SendError(response, status);
    return;
  }
  auto entry = wheel_house_.Commit(std::move(pending), digest, form.field("requires_python"));
  if (entry.status().code() == StatusCode::kAlreadyExists) {
    // Another wheel of the same file name was first. Replacing it would break the hashes clients
    // already have; answering 200 would tell a legitimate uploader that its wheel is the one
    // served. The first one stays, and the conflict is the uploader's to see (and ours to log).
    log::Warn("pypi upload conflict",
              {{"remote", request.remote_address()}, {"filename", filename}});
    http::SendError(response, entry.status());
    return;
  }
  if (!entry.ok()) {
    log::Info("pypi upload rejected", {{"remote", request.remote_address()},
                                       {"filename", filename},
                                       {"error", entry.status().ToString()}});
    http::SendError(response, entry.status());
    return;
  }
  log::Info("pypi upload", {{"remote", request.remote_address()},
                            {"filename", entry->filename},
                            {"sha256", entry->sha256},
                            {"bytes", entry->size}});
  Reply(response, 200, "OK\n");
}

}  // namespace buildcache::pypi
