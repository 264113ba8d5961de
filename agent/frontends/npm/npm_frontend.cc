#include "agent/frontends/npm/npm_frontend.h"

#include <algorithm>
#include <span>
#include <utility>
#include <vector>

#include "agent/store/blob_store.h"
#include "agent/upstream/serving.h"
#include "common/http/router.h"
#include "common/http/status_http.h"
#include "common/log/log.h"

namespace buildcache::npm {
namespace {

constexpr std::string_view kSourceHeader = "X-Buildcache-Source";
constexpr std::string_view kOctetStream = "application/octet-stream";

void SendJson(http::Response& response, int code, std::string_view body) {
  response.SetStatus(code);
  response.SetHeader("Content-Type", kJsonType);
  response.SetHeader("Cache-Control", "no-store");
  (void)response.Send(body);
}

void MethodNotAllowed(http::Response& response, std::string_view allow) {
  response.SetStatus(405);
  response.SetHeader("Allow", allow);
  response.SetHeader("Content-Type", "text/plain; charset=utf-8");
  (void)response.Send("method not allowed\n");
}

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) return out;
    path.remove_prefix(slash + 1);
  }
}

std::string Hex(std::string_view raw) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(kHex[u >> 4]);
    out.push_back(kHex[u & 0xf]);
  }
  return out;
}

// The digest npm itself would check: dist.integrity, or the SHA-1 dist.shasum without it.
std::optional<upstream::ExpectedDigest> ExpectedDigest(const TarballDist& dist) {
  if (!dist.integrity.empty()) {
    if (auto d = upstream::ParseIntegrity(dist.integrity); d.ok()) return std::move(d).value();
  }
  if (!dist.shasum.empty()) {
    auto d = upstream::ParseHexDigest(upstream::ExpectedDigest::Algorithm::kSha1, dist.shasum);
    if (d.ok()) return std::move(d).value();
  }
  return std::nullopt;
}

// A parsed tarball list is valid for one document of one form.
std::string IndexValidator(Form form, const std::string& fingerprint) {
  return (form == Form::kAbbreviated ? "abbreviated " : "full ") + fingerprint;
}

}  // namespace

NpmFrontend::NpmFrontend(store::BlobStore& store, upstream::ArtifactCache& artifacts,
                         upstream::MetadataCache& metadata, NpmOptions options)
    : store_(store),
      artifacts_(artifacts),
      metadata_(metadata),
      options_([&] {
        if (!options.upstream.empty() && !options.upstream.ends_with('/')) {
          options.upstream += '/';
        }
        if (!options.public_url.empty() && !options.public_url.ends_with('/')) {
          options.public_url += '/';
        }
        while (options.prefix.ends_with('/')) options.prefix.pop_back();
        return std::move(options);
      }()),
      index_cache_(options_.index_cache_bytes),
      render_cache_(options_.render_cache_bytes) {}

NpmFrontend::~NpmFrontend() = default;

void NpmFrontend::AddRoutes(http::Router& router) {
  router.Add("", options_.prefix,
             [this](http::Request& req, http::Response& resp) { Handle(req, resp); });
}

void NpmFrontend::Handle(http::Request& request, http::Response& response) {
  std::optional<std::string_view> under = http::PathUnder(request.path(), options_.prefix);
  if (!under) {
    http::SendError(response, NotFound("no npm registry API at this path"));
    return;
  }
  std::string_view rest = *under;
  if (rest.starts_with("/-/")) {
    ServeRegistryEndpoint(request, response, rest.substr(3));
    return;
  }
  std::string_view method = request.method();
  if (method != "GET" && method != "HEAD") {
    MethodNotAllowed(response, "GET, HEAD");
    return;
  }
  if (rest.size() <= 1) {
    http::SendError(response, NotFound("ask for " + options_.prefix + "/<package>"));
    return;
  }
  std::vector<std::string_view> segments = SplitPath(rest.substr(1));
  auto first = PercentDecode(segments[0]);
  if (!first.ok()) {
    http::SendError(response, InvalidArgument("invalid package name"));
    return;
  }
  // "@scope/name" spans two segments; "@scope%2fname" and unscoped names one.
  std::string raw_name = std::move(first).value();
  size_t used = 1;
  if (raw_name.starts_with('@') && raw_name.find('/') == std::string::npos) {
    if (segments.size() < 2) {
      http::SendError(response, InvalidArgument("scoped package name must be @scope/name"));
      return;
    }
    auto second = PercentDecode(segments[1]);
    if (!second.ok()) {
      http::SendError(response, InvalidArgument("invalid package name"));
      return;
    }
    raw_name += "/" + *second;
    used = 2;
  }
  auto name = ParsePackageName(raw_name);
  if (!name.ok()) {
    http::SendError(response, name.status());
    return;
  }
  std::span<const std::string_view> tail(segments.begin() + used, segments.end());
  if (tail.empty()) {
    ServePackument(request, response, *name);
  } else if (tail.size() == 2 && tail[0] == "-") {
    ServeTarball(request, response, *name, tail[1]);
  } else {
    http::SendError(response,
                    NotFound("only packuments (" + options_.prefix + "/<package>) and tarballs (" +
                             options_.prefix + "/<package>/-/<file>) are served"));
  }
}

void NpmFrontend::ServeRegistryEndpoint(http::Request& request, http::Response& response,
                                        std::string_view rest) {
  std::string_view method = request.method();
  if (rest == "ping") {
    if (method != "GET" && method != "HEAD") {
      MethodNotAllowed(response, "GET, HEAD");
      return;
    }
    SendJson(response, 200, "{}\n");
    return;
  }
  if (rest.starts_with("npm/v1/security/")) {
    // Audits are POSTs with the whole dependency tree; they are not cached or proxied. A JSON
    // 404 makes npm install skip its audit report instead of failing.
    SendJson(response, 404,
             "{\"error\":\"security audits are not served by the buildcache agent; run npm audit "
             "against the upstream registry\"}\n");
    return;
  }
  http::SendError(response,
                  NotFound("registry endpoint /-/" +
                           std::string(rest.substr(0, std::min<size_t>(rest.size(), 200))) +
                           " is not served by the buildcache agent"));
}

std::string NpmFrontend::PackumentKey(const PackageName& name, Form form) const {
  return options_.key_prefix +
         (form == Form::kAbbreviated ? "packument-abbreviated/" : "packument/") + name.full();
}

Form NpmFrontend::SourceForm(const PackageName& name, Form wanted) {
  if (wanted == Form::kAbbreviated && !store_.Stat(PackumentKey(name, Form::kAbbreviated)).ok() &&
      store_.Stat(PackumentKey(name, Form::kFull)).ok()) {
    return Form::kFull;
  }
  return wanted;
}

std::string NpmFrontend::PackumentUrl(const PackageName& name) const {
  return options_.upstream + name.escaped();
}

Result<upstream::Document> NpmFrontend::FetchPackument(const PackageName& name, Form form,
                                                       std::string_view* source) {
  *source = "local";
  if (options_.upstream.empty()) return NotFound("no upstream registry is configured");
  upstream::MetadataRequest req;
  req.frontend = "npm";
  req.key = PackumentKey(name, form);
  req.url = PackumentUrl(name);
  req.ttl = options_.metadata_ttl;
  req.negative_ttl = options_.negative_ttl;
  req.max_size = options_.max_packument_size;
  req.fetch = options_.fetch;
  req.fetch.headers.emplace_back("Accept", std::string(UpstreamAccept(form)));
  auto start = std::chrono::system_clock::now();
  BC_ASSIGN_OR_RETURN(upstream::Document doc, metadata_.Get(req));
  *source = upstream::DocumentSource(doc, start);
  if (doc.status == 404 || doc.status == 410) {
    return NotFound("package " + name.full() + " not found upstream");
  }
  if (doc.status != 200) {
    return Unavailable("upstream answered " + std::to_string(doc.status) + " for " + req.url);
  }
  return doc;
}

void NpmFrontend::ServePackument(http::Request& request, http::Response& response,
                                 const PackageName& name) {
  std::string base = options_.public_url;
  if (base.empty()) {
    auto host = BaseUrlFromHost(request.header("Host"));
    if (!host) {
      http::SendError(response, InvalidArgument("missing or invalid Host header"));
      return;
    }
    base = *host + options_.prefix + "/";
  }
  // Whoever asks for the abbreviated form also accepts the full one (npm sends
  // "application/json; q=0.8"), so a stored full packument answers it without an upstream fetch:
  // npm install reads full packuments, npm ci abbreviated ones.
  Form form = SourceForm(name, NegotiateForm(request.header("Accept")));
  std::string_view source = "local";
  auto doc = FetchPackument(name, form, &source);
  if (!doc.ok()) {
    if (doc.status().code() != StatusCode::kNotFound) {
      log::Warn("npm packument failed",
                {{"package", name.full()}, {"error", doc.status().ToString()}});
    }
    http::SendError(response, doc.status());
    return;
  }
  // A served packument depends on the upstream document and the tarball base URL only.
  const std::string fingerprint = upstream::DocumentFingerprint(*doc);
  const std::string render_key = PackumentKey(name, form) + "\n" + base;
  std::shared_ptr<const Rendered> rendered = render_cache_.Find(render_key, fingerprint);
  if (!rendered) {
    auto packument = ReadPackument(doc->body, PackumentUrl(name), name, base);
    if (!packument.ok()) {
      log::Warn("npm packument unusable",
                {{"package", name.full()}, {"error", packument.status().ToString()}});
      http::SendError(response, Unavailable("unusable upstream packument for " + name.full() +
                                            ": " + packument.status().message()));
      return;
    }
    if (packument->dropped > 0) {
      log::Debug(
          "npm versions left out",
          {{"package", name.full()}, {"versions", static_cast<uint64_t>(packument->dropped)}});
    }
    PutTarballs(name, form, fingerprint, std::move(packument->tarballs));
    auto fresh = std::make_shared<Rendered>();
    fresh->etag = upstream::StrongEtag(packument->body);
    fresh->body = std::move(packument->body);
    render_cache_.Put(render_key, fingerprint, fresh, fresh->body.size() + fresh->etag.size());
    rendered = std::move(fresh);
  }

  // A full packument (stored, or sent by an upstream without abbreviated documents) is passed on
  // as what it is.
  std::string_view content_type =
      form == Form::kAbbreviated && doc->content_type.starts_with(kAbbreviatedType)
          ? kAbbreviatedType
          : kJsonType;
  response.SetHeader("Vary", "Accept");
  upstream::SendRevalidatedDocument(request, response, rendered->body, rendered->etag, content_type,
                                    source);
}

Result<std::shared_ptr<const TarballIndex>> NpmFrontend::Tarballs(const PackageName& name) {
  // Either form lists every tarball. The one the client last read is used (it is fresh in the
  // store), else one already stored, so a tarball never costs another packument fetch.
  std::optional<Form> form;
  if (auto last = index_cache_.Peek(name.full())) form = last->form;
  if (!form) form = SourceForm(name, Form::kAbbreviated);
  std::string_view source = "local";
  BC_ASSIGN_OR_RETURN(upstream::Document doc, FetchPackument(name, *form, &source));
  const std::string fingerprint = upstream::DocumentFingerprint(doc);
  if (auto cached = index_cache_.Find(name.full(), IndexValidator(*form, fingerprint))) {
    return std::shared_ptr<const TarballIndex>(cached, &cached->tarballs);
  }
  auto packument = ReadPackument(doc.body, PackumentUrl(name), name, std::nullopt);
  if (!packument.ok()) {
    return Unavailable("unusable upstream packument for " + name.full() + ": " +
                       packument.status().message());
  }
  return PutTarballs(name, *form, fingerprint, std::move(packument->tarballs));
}

std::shared_ptr<const TarballIndex> NpmFrontend::PutTarballs(const PackageName& name, Form form,
                                                             const std::string& fingerprint,
                                                             TarballIndex tarballs) {
  size_t bytes = sizeof(ParsedTarballs);
  for (const auto& [file, dist] : tarballs) {
    // 64: a map node's own overhead, roughly.
    bytes += 64 + file.size() + dist.url.size() + dist.integrity.size() + dist.shasum.size();
  }
  auto parsed = std::make_shared<ParsedTarballs>();
  parsed->form = form;
  parsed->tarballs = std::move(tarballs);
  index_cache_.Put(name.full(), IndexValidator(form, fingerprint), parsed, bytes);
  return std::shared_ptr<const TarballIndex>(parsed, &parsed->tarballs);
}

void NpmFrontend::ServeTarball(http::Request& request, http::Response& response,
                               const PackageName& name, std::string_view raw_filename) {
  auto filename = PercentDecode(raw_filename);
  if (!filename.ok() || !IsValidTarballFilename(*filename)) {
    http::SendError(response, InvalidArgument("invalid tarball file name"));
    return;
  }
  auto tarballs = Tarballs(name);
  if (!tarballs.ok()) {
    if (tarballs.status().code() != StatusCode::kNotFound) {
      log::Warn("npm packument failed",
                {{"package", name.full()}, {"error", tarballs.status().ToString()}});
    }
    http::SendError(response, tarballs.status());
    return;
  }
  auto it = (*tarballs)->find(*filename);
  if (it == (*tarballs)->end()) {
    http::SendError(response,
                    NotFound(*filename + " is not a tarball of any version of " + name.full()));
    return;
  }
  auto expected = ExpectedDigest(it->second);
  if (!expected) {
    http::SendError(response, Unavailable("the packument of " + name.full() +
                                          " gives no usable integrity or shasum for " + *filename +
                                          ", so it cannot be verified"));
    return;
  }
  upstream::Artifact artifact;
  artifact.frontend = "npm";
  // The digest is part of the key: a registry that republishes a file under the same name gets
  // a new object, never the old bytes under the new digest.
  artifact.key = options_.key_prefix + "tarball/" + name.full() + "/" + *filename + "/" +
                 Hex(std::string_view(expected->raw).substr(0, 16));
  artifact.url = it->second.url;
  artifact.expected.push_back(*std::move(expected));
  artifact.content_type = std::string(kOctetStream);
  artifact.fetch = options_.fetch;
  artifacts_.Serve(request, response, artifact);
}

}  // namespace buildcache::npm
