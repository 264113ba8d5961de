#include "agent/frontends/npm/npm_frontend.h"

#include <algorithm>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "agent/store/blob_store.h"
#include "agent/upstream/serving.h"
#include "common/http/headers.h"
#include "common/http/router.h"
#include "common/http/status_http.h"
#include "common/log/log.h"
#include "common/text/quote.h"

namespace buildcache::npm {
namespace {

using http::kSourceHeader;
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

upstream::MetadataRequest NpmFrontend::PackumentRequest(const PackageName& name, Form form) const {
  upstream::MetadataRequest req;
  req.frontend = "npm";
  req.key = PackumentKey(name, form);
  req.url = PackumentUrl(name);
  req.ttl = options_.metadata_ttl;
  req.negative_ttl = options_.negative_ttl;
  req.max_size = options_.max_packument_size;
  req.fetch = options_.fetch;
  req.fetch.headers.emplace_back("Accept", std::string(UpstreamAccept(form)));
  return req;
}

Status NpmFrontend::CheckPackument(const PackageName& name, const upstream::Document& doc) const {
  if (doc.status == 404 || doc.status == 410) {
    return NotFound("package " + name.full() + " not found upstream");
  }
  if (doc.status != 200) {
    return Unavailable("upstream answered " + std::to_string(doc.status) + " for " +
                       PackumentUrl(name));
  }
  return Status::Ok();
}

namespace {

// Writes a rewritten packument to a client in pieces of at most kPieceBytes: the memory one
// response holds, however slowly its client reads. The response starts with the first piece.
class ResponseSink : public RewriteSink {
 public:
  static constexpr size_t kPieceBytes = size_t{64} * 1024;
  ResponseSink(http::Response& response, std::string_view base, std::optional<uint64_t> length)
      : response_(response), base_(base), length_(length) {}

  Status Text(std::string_view text) override {
    while (!text.empty()) {
      size_t n = std::min(text.size(), kPieceBytes - std::min(kPieceBytes, buf_.size()));
      if (n == 0) {
        BC_RETURN_IF_ERROR(Flush());
        continue;
      }
      buf_.append(text.substr(0, n));
      text.remove_prefix(n);
    }
    return Status::Ok();
  }
  Status Base() override { return Text(base_); }
  Status Flush() {
    if (!response_.started()) BC_RETURN_IF_ERROR(response_.Begin(length_));
    if (buf_.empty()) return Status::Ok();
    Status s = response_.Write(buf_);
    buf_.clear();
    return s;
  }
  Status End() {
    BC_RETURN_IF_ERROR(Flush());
    return response_.End();
  }

 private:
  http::Response& response_;
  std::string_view base_;
  std::optional<uint64_t> length_;
  std::string buf_;
};

// A strong ETag for a packument rewritten from one stored document with one base: the served
// bytes are a function of exactly these, so the ETag is known before anything is read.
std::string RenderedEtag(const std::string& fingerprint, Form form, std::string_view base) {
  return upstream::StrongEtag("npm-rewrite-2\n" + fingerprint + "\n" +
                              (form == Form::kAbbreviated ? "abbreviated" : "full") + "\n" +
                              std::string(base));
}

// Quotes and backslashes in a configured public URL must not end the JSON string it goes into.
std::string JsonSafe(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) >= 0x20) out.push_back(c);
  }
  return out;
}

}  // namespace

void NpmFrontend::SendTemplate(http::Response& response, const PackumentTemplate& rendered,
                               std::string_view base) {
  ResponseSink out(response, base, rendered.Length(base.size()));
  std::string_view text = rendered.text;
  size_t at = 0;
  Status s;
  for (size_t offset : rendered.bases) {
    if (s.ok()) s = out.Text(text.substr(at, offset - at));
    if (s.ok()) s = out.Base();
    at = offset;
  }
  if (s.ok()) s = out.Text(text.substr(at));
  if (s.ok()) s = out.End();
  if (!s.ok() && response.started()) response.Abort();
}

// One answer to a packument GET. OnHead decides the plan from the document's head: answered from
// memory (304, or the rewritten template), rewritten into memory first (a stored document that
// fits the render cache), or rewritten as it is sent; OnData feeds the body through the rewriter;
// Finish is the one exit that answers the client. Used once, on the requesting thread.
class NpmFrontend::PackumentAnswer {
 public:
  PackumentAnswer(NpmFrontend& frontend, http::Request& request, http::Response& response,
                  const PackageName& name, Form form, std::string base, upstream::Url url)
      : f_(frontend),
        request_(request),
        response_(response),
        name_(name),
        form_(form),
        key_(frontend.PackumentKey(name, form)),
        base_(std::move(base)),
        url_(std::move(url)) {}

  Status OnHead(const upstream::Document& doc);
  Status OnData(std::string_view data) {
    BC_RETURN_IF_ERROR(rewriter_->Feed(data));
    // Each piece that arrived leaves at once: the first byte does not wait for the last.
    return streamed_ ? streamed_->Flush() : Status::Ok();
  }
  void Finish(const Result<upstream::Document>& result);

 private:
  enum class Plan { kAnswered, kBuild, kStream };

  void SetHeaders() {
    response_.SetHeader("Vary", "Accept");
    response_.SetHeader("Cache-Control", "max-age=0, must-revalidate");
    response_.SetHeader(kSourceHeader, head_.source);
    if (!head_.etag.empty()) response_.SetHeader("ETag", head_.etag);
  }
  // Sends a rewritten packument from memory.
  void SendFromMemory(const PackumentTemplate& rendered) {
    SetHeaders();
    response_.SetHeader("Content-Type", head_.content_type);
    response_.SetStatus(200);
    f_.SendTemplate(response_, rendered, base_);
  }
  void Fail(Status s);

  NpmFrontend& f_;
  http::Request& request_;
  http::Response& response_;
  const PackageName& name_;
  const Form form_;
  const std::string key_;
  const std::string base_;  // JSON-safe
  const upstream::Url url_;
  const std::chrono::system_clock::time_point start_ = std::chrono::system_clock::now();

  Plan plan_ = Plan::kStream;
  std::shared_ptr<const PackumentTemplate> rendered_;
  std::string fingerprint_;
  std::unique_lock<Mutex> build_lock_;
  PackumentTemplate built_;
  TemplateSink template_sink_{&built_};
  std::optional<ResponseSink> streamed_;
  std::optional<PackumentRewriter> rewriter_;
  bool head_sent_ = false;
  struct {
    std::string content_type;
    std::string source;
    std::string etag;  // "" while a cold document streams: its digest is not known yet
  } head_;
};

Status NpmFrontend::PackumentAnswer::OnHead(const upstream::Document& doc) {
  BC_RETURN_IF_ERROR(f_.CheckPackument(name_, doc));
  // A full packument (stored, or sent by an upstream without abbreviated documents) is passed on
  // as what it is.
  std::string_view content_type =
      form_ == Form::kAbbreviated && doc.content_type.starts_with(kAbbreviatedType)
          ? kAbbreviatedType
          : kJsonType;
  head_ = {std::string(content_type), std::string(upstream::DocumentSource(doc, start_)), ""};
  head_sent_ = true;
  if (!doc.body_sha256.empty()) {
    fingerprint_ = upstream::DocumentFingerprint(doc);
    const std::string etag = RenderedEtag(fingerprint_, form_, base_);
    head_.etag = etag;
    if (request_.header("If-None-Match").find(etag) != std::string_view::npos) {
      plan_ = Plan::kAnswered;
      return Cancelled("answered 304");
    }
    rendered_ = f_.render_cache_.Find(key_, fingerprint_);
    if (!rendered_ && doc.stored_size * 2 <= f_.options_.render_cache_bytes) {
      build_lock_ = std::unique_lock(f_.build_mu_[std::hash<std::string>()(key_) % 16]);
      rendered_ = f_.render_cache_.Find(key_, fingerprint_);  // built while this one waited?
      if (!rendered_) {
        plan_ = Plan::kBuild;
        rewriter_.emplace(url_, name_, &template_sink_);
        return Status::Ok();
      }
    }
    if (rendered_) {
      plan_ = Plan::kAnswered;
      return Cancelled("answered from memory");
    }
  }
  SetHeaders();
  response_.SetHeader("Content-Type", head_.content_type);
  response_.SetStatus(200);
  streamed_.emplace(response_, base_, std::nullopt);
  rewriter_.emplace(url_, name_, &*streamed_);
  return Status::Ok();
}

void NpmFrontend::PackumentAnswer::Fail(Status s) {
  if (response_.started()) {
    log::Warn("npm packument aborted", {{"package", name_.full()}, {"error", s.ToString()}});
    response_.Abort();
    return;
  }
  if (s.code() == StatusCode::kInvalidArgument && head_sent_) {
    s = Unavailable("unusable upstream packument for " + name_.full() + ": " + s.message());
  }
  if (s.code() != StatusCode::kNotFound) {
    log::Warn("npm packument failed", {{"package", name_.full()}, {"error", s.ToString()}});
  }
  http::SendError(response_, s);
}

void NpmFrontend::PackumentAnswer::Finish(const Result<upstream::Document>& result) {
  if (plan_ == Plan::kAnswered) {
    if (rendered_) {
      SendFromMemory(*rendered_);
    } else {
      SetHeaders();
      response_.SetStatus(304);
      (void)response_.Send({});
    }
    return;
  }
  Status s = result.status();
  if (s.ok() && rewriter_) s = rewriter_->Finish();
  if (s.ok() && result->status != 200) s = f_.CheckPackument(name_, *result);
  if (!s.ok()) {
    Fail(std::move(s));
    return;
  }
  if (rewriter_->dropped() > 0) {
    log::Debug(
        "npm versions left out",
        {{"package", name_.full()}, {"versions", static_cast<uint64_t>(rewriter_->dropped())}});
  }
  if (fingerprint_.empty() && !result->body_sha256.empty()) {
    fingerprint_ = upstream::DocumentFingerprint(*result);
  }
  if (!fingerprint_.empty()) {
    f_.PutTarballs(name_, form_, fingerprint_, std::move(rewriter_->tarballs()));
  }
  if (plan_ == Plan::kBuild) {
    auto fresh = std::make_shared<PackumentTemplate>(std::move(built_));
    f_.render_cache_.Put(key_, fingerprint_, fresh,
                         fresh->text.size() + fresh->bases.size() * sizeof(size_t));
    build_lock_ = {};
    SendFromMemory(*fresh);
    return;
  }
  if (Status end = streamed_->End(); !end.ok() && response_.started()) response_.Abort();
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
  base = JsonSafe(base);
  if (options_.upstream.empty()) {
    http::SendError(response, NotFound("no upstream registry is configured"));
    return;
  }
  // Whoever asks for the abbreviated form also accepts the full one (npm sends
  // "application/json; q=0.8"), so a stored full packument answers it without an upstream fetch:
  // npm install reads full packuments, npm ci abbreviated ones.
  const Form form = SourceForm(name, NegotiateForm(request.header("Accept")));
  auto url = upstream::ParseUrl(PackumentUrl(name));
  if (!url.ok()) {
    http::SendError(response, url.status());
    return;
  }
  PackumentAnswer answer(*this, request, response, name, form, std::move(base), *url);
  auto result = metadata_.Stream(
      PackumentRequest(name, form),
      [&](const upstream::Document& doc) { return answer.OnHead(doc); },
      [&](std::string_view data) { return answer.OnData(data); });
  answer.Finish(result);
}

Result<std::shared_ptr<const TarballIndex>> NpmFrontend::Tarballs(const PackageName& name) {
  // Either form lists every tarball. The one the client last read is used (it is fresh in the
  // store), else one already stored, so a tarball never costs another packument fetch.
  std::optional<Form> form;
  if (auto last = index_cache_.Peek(name.full())) form = last->form;
  if (!form) form = SourceForm(name, Form::kAbbreviated);
  if (options_.upstream.empty()) return NotFound("no upstream registry is configured");
  BC_ASSIGN_OR_RETURN(upstream::Url url, upstream::ParseUrl(PackumentUrl(name)));
  std::shared_ptr<const ParsedTarballs> cached;
  std::optional<PackumentRewriter> rewriter;
  auto on_head = [&](const upstream::Document& doc) -> Status {
    BC_RETURN_IF_ERROR(CheckPackument(name, doc));
    if (!doc.body_sha256.empty()) {
      cached =
          index_cache_.Find(name.full(), IndexValidator(*form, upstream::DocumentFingerprint(doc)));
      if (cached) return Cancelled("tarball list in memory");
    }
    rewriter.emplace(url, name, nullptr);
    return Status::Ok();
  };
  auto on_data = [&](std::string_view data) { return rewriter->Feed(data); };
  auto result = metadata_.Stream(PackumentRequest(name, *form), on_head, on_data);
  if (cached) return std::shared_ptr<const TarballIndex>(cached, &cached->tarballs);
  BC_RETURN_IF_ERROR(result.status());
  BC_RETURN_IF_ERROR(CheckPackument(name, *result));
  if (Status s = rewriter->Finish(); !s.ok()) {
    return Unavailable("unusable upstream packument for " + name.full() + ": " + s.message());
  }
  if (result->body_sha256.empty()) {
    // Not stored (the store refused it): used once, not remembered.
    return std::make_shared<const TarballIndex>(std::move(rewriter->tarballs()));
  }
  return PutTarballs(name, *form, upstream::DocumentFingerprint(*result),
                     std::move(rewriter->tarballs()));
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
                 text::ToHex(std::string_view(expected->raw).substr(0, 16));
  artifact.url = it->second.url;
  artifact.expected.push_back(*std::move(expected));
  artifact.content_type = std::string(kOctetStream);
  artifact.fetch = options_.fetch;
  artifacts_.Serve(request, response, artifact);
}

}  // namespace buildcache::npm
