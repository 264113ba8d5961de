#include "agent/frontends/httpcache/httpcache.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>

#include "agent/upstream/serving.h"
#include "common/http/headers.h"
#include "common/http/router.h"
#include "common/http/status_http.h"
#include "common/log/log.h"
#include "common/text/markup.h"

namespace buildcache::httpcache {

namespace {

constexpr size_t kMaxKeyBytes = 1024;
constexpr size_t kMaxSegmentBytes = 255;
constexpr size_t kIoBufferBytes = 256 * 1024;
constexpr std::string_view kAllow = "GET, HEAD, PUT, DELETE, OPTIONS, PROPFIND, MKCOL";

// A per-thread scratch buffer for body streaming: the server runs one thread per connection, so
// this avoids an allocation per request without sharing anything.
std::span<char> IoBuffer() {
  thread_local std::unique_ptr<char[]> buf(new char[kIoBufferBytes]);
  return {buf.get(), kIoBufferBytes};
}

bool IsSafeKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '~' || c == '+' || c == '=' || c == ',' || c == '@';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// 64 hex digits, returned in lowercase; nullopt otherwise.
std::optional<std::string> Sha256Hex(std::string_view s) {
  if (s.size() != 64) return std::nullopt;
  std::string out(s);
  for (char& c : out) {
    if (HexValue(c) < 0) return std::nullopt;
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// RFC 1123 date of now, as WebDAV's getlastmodified wants it.
std::string HttpDateNow() {
  time_t now = time(nullptr);
  struct tm tm;
  gmtime_r(&now, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return std::string(buf, n);
}

}  // namespace

std::string_view ApiName(Api api) {
  switch (api) {
    case Api::kGeneric:
      return "generic";
    case Api::kBazelAc:
      return "bazel_ac";
    case Api::kBazelCas:
      return "bazel_cas";
    case Api::kWebDav:
      return "webdav";
  }
  return "unknown";
}

std::string_view OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kHit:
      return "hit";
    case Outcome::kMiss:
      return "miss";
    case Outcome::kStored:
      return "stored";
    case Outcome::kDeleted:
      return "deleted";
    case Outcome::kMeta:
      return "meta";
    case Outcome::kRejected:
      return "rejected";
    case Outcome::kError:
      return "error";
  }
  return "unknown";
}

Result<std::string> DecodeKey(std::string_view raw) {
  std::string key;
  key.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '%') {
      if (i + 2 >= raw.size()) return InvalidArgument("bad percent-escape in key");
      int hi = HexValue(raw[i + 1]);
      int lo = HexValue(raw[i + 2]);
      if (hi < 0 || lo < 0) return InvalidArgument("bad percent-escape in key");
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    key.push_back(c);
  }
  // Empty segments ("a//b", a leading "/") are dropped, as WebDAV servers merge slashes: sccache
  // joins its endpoint and key with a "/" even when the endpoint already ends in one.
  std::string canonical;
  canonical.reserve(key.size());
  size_t start = 0;
  while (start <= key.size()) {
    size_t slash = key.find('/', start);
    if (slash == std::string::npos) slash = key.size();
    std::string_view segment = std::string_view(key).substr(start, slash - start);
    start = slash + 1;
    if (segment.empty()) continue;
    if (segment == "." || segment == "..") return InvalidArgument("'.' or '..' key segment");
    if (segment.size() > kMaxSegmentBytes) return InvalidArgument("key segment too long");
    for (char c : segment) {
      if (!IsSafeKeyChar(c)) return InvalidArgument("unsafe character in key");
    }
    if (!canonical.empty()) canonical.push_back('/');
    canonical.append(segment);
  }
  if (canonical.empty()) return InvalidArgument("empty key");
  if (canonical.size() > kMaxKeyBytes) return InvalidArgument("key longer than 1024 bytes");
  return canonical;
}

HttpCacheFrontend::HttpCacheFrontend(store::BlobStore& store, HttpCacheOptions options)
    : store_(store), options_(std::move(options)) {}

Result<HttpCacheFrontend::Target> HttpCacheFrontend::ParseTarget(std::string_view path) const {
  Target t;
  for (Api api : {Api::kBazelAc, Api::kBazelCas}) {
    std::string_view root = api == Api::kBazelAc ? "/ac/" : "/cas/";
    if (!path.starts_with(root)) continue;
    auto hex = Sha256Hex(path.substr(root.size()));
    if (!hex) return InvalidArgument("Bazel keys are 64 hex digits");
    t.api = api;
    t.digest_hex = *hex;
    t.key = std::string(root.substr(1)) + *hex;
    return t;
  }

  std::optional<std::string_view> under = http::PathUnder(path, "/cache");
  if (!under) return NotFound("no build-cache API at this path");
  std::string_view rest = under->empty() ? *under : under->substr(1);
  if (rest.empty() || rest.back() == '/') {
    t.collection = true;
    if (!rest.empty()) rest.remove_suffix(1);
    if (rest.empty()) return t;  // the root collection
  }
  BC_ASSIGN_OR_RETURN(t.key, DecodeKey(rest));
  // /cache/ac/<sha256> and /cache/cas/<sha256> are Bazel's API under a URL path (and ccache's
  // layout=bazel). Other keys that merely start with "ac/" stay generic: ccache's subdirs layout
  // makes "ac/<38 chars>" keys.
  if (!t.collection) {
    for (Api api : {Api::kBazelAc, Api::kBazelCas}) {
      std::string_view dir = api == Api::kBazelAc ? "ac/" : "cas/";
      if (!std::string_view(t.key).starts_with(dir)) continue;
      if (auto hex = Sha256Hex(std::string_view(t.key).substr(dir.size()))) {
        t.api = api;
        t.digest_hex = *hex;
        t.key = std::string(dir) + *hex;
      }
    }
  }
  return t;
}

void HttpCacheFrontend::Fail(http::Response& resp, const Status& status, RequestInfo& info) {
  int code = http::HttpCodeFor(status.code());
  info.outcome =
      code < 500 && status.code() != StatusCode::kCancelled ? Outcome::kRejected : Outcome::kError;
  if (status.code() == StatusCode::kNotFound) info.outcome = Outcome::kMiss;
  info.status = resp.started() ? 0 : code;
  if (info.outcome == Outcome::kError) {
    log::Warn("httpcache request failed",
              {{"api", ApiName(info.api)}, {"error", status.ToString()}});
  }
  http::SendError(resp, status);
}

std::vector<std::string> HttpCacheFrontend::ReadKeys(const Target& t, const identity::Caller& c) {
  if (t.api == Api::kBazelCas || c.trusted_writer || c.scope.empty()) return {StoreKey(t)};
  return {"scope/" + c.scope + "/" + StoreKey(t), StoreKey(t)};
}

Result<std::string> HttpCacheFrontend::WriteKey(const Target& t, const identity::Caller& c,
                                                bool deleting) {
  if (!c.may_write()) return PermissionDenied("anonymous callers may not write");
  if (c.trusted_writer) return StoreKey(t);
  if (t.api == Api::kBazelCas) {
    // Anyone may add content that proves itself; removing it would take it from every reader.
    if (!deleting) return StoreKey(t);
    return PermissionDenied("only trusted writers may delete shared CAS entries");
  }
  if (c.scope.empty()) return PermissionDenied("the caller has no scope to write into");
  return "scope/" + c.scope + "/" + StoreKey(t);
}

Result<store::BlobInfo> HttpCacheFrontend::StatFirst(const Target& t, const identity::Caller& c) {
  Result<store::BlobInfo> stat = NotFound("no such key");
  for (const std::string& key : ReadKeys(t, c)) {
    stat = store_.Stat(key);
    if (stat.ok() || stat.status().code() != StatusCode::kNotFound) break;
  }
  return stat;
}

void HttpCacheFrontend::RefuseWrite(http::Request& req, http::Response& resp,
                                    const identity::Caller& c, std::string_view why,
                                    RequestInfo& info) {
  info.outcome = Outcome::kRejected;
  info.status = 403;
  if (options_.refuse_write) {
    options_.refuse_write(req, resp, c, why);
  } else {
    http::SendError(resp, PermissionDenied(std::string(why)));
  }
}

RequestInfo HttpCacheFrontend::Serve(http::Request& req, http::Response& resp) {
  return Serve(req, resp, identity::Caller::Unrestricted());
}

RequestInfo HttpCacheFrontend::Serve(http::Request& req, http::Response& resp,
                                     const identity::Caller& caller) {
  RequestInfo info;
  std::string_view method = req.method();
  std::string_view path = req.path();
  auto target = ParseTarget(path);
  if (!target.ok()) {
    Fail(resp, target.status(), info);
    if (info.outcome == Outcome::kMiss) info.outcome = Outcome::kRejected;  // unknown path
    return info;
  }
  const Target& t = *target;
  info.api = t.api;
  const bool bazel = t.api == Api::kBazelAc || t.api == Api::kBazelCas;

  if (method == "OPTIONS") {
    info.api = Api::kWebDav;
    info.outcome = Outcome::kMeta;
    info.status = 200;
    resp.SetHeader("Allow", kAllow);
    resp.SetHeader("DAV", "1");
    (void)resp.Send("");
    return info;
  }
  if (method == "PROPFIND" && !bazel) {
    info.api = Api::kWebDav;
    Propfind(t, caller, path, req, resp, info);
    return info;
  }
  if (method == "MKCOL" && !bazel) {
    // Collections are virtual: every "directory" exists, so creating one always succeeds.
    info.api = Api::kWebDav;
    info.outcome = Outcome::kMeta;
    info.status = 201;
    resp.SetStatus(201);
    (void)resp.Send("");
    return info;
  }
  const bool known = method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE";
  if (!known) {
    info.outcome = Outcome::kRejected;
    info.status = 405;
    resp.SetStatus(405);
    resp.SetHeader("Allow", bazel ? "GET, HEAD, PUT, DELETE" : kAllow);
    (void)resp.Send("method not allowed\n");
    return info;
  }
  if (t.collection) {
    Fail(resp, InvalidArgument("a key cannot end with '/'"), info);
    return info;
  }
  if (method == "GET") {
    Get(t, caller, req, resp, info);
  } else if (method == "HEAD") {
    Head(t, caller, resp, info);
  } else if (method == "PUT") {
    Put(t, caller, req, resp, info);
  } else {
    Delete(t, caller, req, resp, info);
  }
  return info;
}

void HttpCacheFrontend::Get(const Target& t, const identity::Caller& c, http::Request& req,
                            http::Response& resp, RequestInfo& info) {
  Result<std::unique_ptr<store::BlobReader>> reader = NotFound("no such key");
  for (const std::string& key : ReadKeys(t, c)) {
    reader = store_.Open(key);
    if (reader.ok() || reader.status().code() != StatusCode::kNotFound) break;
  }
  if (!reader.ok()) {
    Fail(resp, reader.status(), info);
    return;
  }
  store::BlobReader& r = **reader;
  const uint64_t size = r.info().size;
  resp.SetHeader("Content-Type", "application/octet-stream");
  // "peer" when the replicating store pulled the blob from a peer for this read: a peer hit.
  resp.SetHeader(http::kSourceHeader, r.origin());
  resp.SetStatus(200);
  const upstream::ByteRange range = upstream::RequestedRange(req, size);
  Status s = upstream::SendBlob(r, range, resp);
  if (!s.ok() && !resp.started()) {
    Fail(resp, s, info);
    return;
  }
  if (!s.ok()) {
    // The client went away or the blob broke mid-body; the connection is already closed.
    info.outcome = Outcome::kError;
    info.status = 0;
    return;
  }
  info.outcome =
      range.kind == upstream::ByteRange::Kind::kUnsatisfiable ? Outcome::kRejected : Outcome::kHit;
  info.status = range.status();
  info.bytes_out = req.method() == "HEAD" ? 0 : range.length();
}

void HttpCacheFrontend::Head(const Target& t, const identity::Caller& c, http::Response& resp,
                             RequestInfo& info) {
  auto stat = StatFirst(t, c);
  if (!stat.ok()) {
    Fail(resp, stat.status(), info);
    return;
  }
  resp.SetHeader("Content-Type", "application/octet-stream");
  resp.SetHeader("Accept-Ranges", "bytes");
  // On HEAD the server sends the headers with this Content-Length and no body.
  Status s = resp.Begin(stat->size);
  if (s.ok()) s = resp.End();
  info.outcome = s.ok() ? Outcome::kHit : Outcome::kError;
  info.status = s.ok() ? 200 : 0;
}

void HttpCacheFrontend::Put(const Target& t, const identity::Caller& c, http::Request& req,
                            http::Response& resp, RequestInfo& info) {
  Result<std::string> key = WriteKey(t, c, /*deleting=*/false);
  if (!key.ok()) {
    RefuseWrite(req, resp, c, key.status().message(), info);
    return;
  }
  const uint64_t max = options_.max_object_size;
  std::optional<uint64_t> length = req.content_length();
  if (length && *length > max) {
    // Answered before reading: with Expect: 100-continue the client never sends the body.
    Fail(resp,
         TooLarge("object of " + std::to_string(*length) + " bytes exceeds the limit of " +
                  std::to_string(max)),
         info);
    return;
  }
  store::WriteOptions wo;
  wo.expected_size = length;
  wo.caller = std::string(req.client_ip());  // the per-client in-flight cap (store::WriteLimits)
  if (t.api == Api::kBazelCas) wo.expected_digest = store::Digest::FromHex(t.digest_hex);
  // Generic entries (ccache, sccache, Gradle) are reproducible: the answer waits for the index
  // commit (synced, shared between concurrent PUTs) but not for an fsync of each object; see
  // WriteOptions::sync_content and "Durability of build-cache PUTs" in docs/agent.md. Bazel's
  // action cache and CAS keep the per-object sync: an AC entry names CAS blobs it relies on.
  wo.sync_content = t.api != Api::kGeneric;
  auto writer = store_.NewWriter(*key, wo);
  if (!writer.ok()) {
    Fail(resp, writer.status(), info);
    return;
  }
  std::span<char> buf = IoBuffer();
  uint64_t total = 0;
  for (;;) {
    auto n = req.ReadBody(buf);
    if (!n.ok()) {
      Fail(resp, n.status(), info);
      return;
    }
    if (*n == 0) break;
    total += *n;
    if (total > max) {
      Fail(resp, TooLarge("object exceeds the limit of " + std::to_string(max) + " bytes"), info);
      return;
    }
    if (Status s = (*writer)->Write(std::string_view(buf.data(), *n)); !s.ok()) {
      Fail(resp, s, info);
      return;
    }
  }
  auto committed = (*writer)->Commit();
  if (!committed.ok()) {
    Status s = committed.status();
    if (t.api == Api::kBazelCas && s.code() == StatusCode::kDataLoss) {
      // The client sent content that is not what it named: its error, not the store's.
      s = InvalidArgument("content does not hash to " + t.digest_hex);
    }
    Fail(resp, s, info);
    return;
  }
  info.outcome = Outcome::kStored;
  info.status = 201;
  info.bytes_in = total;
  resp.SetStatus(201);
  (void)resp.Send("");
}

void HttpCacheFrontend::Delete(const Target& t, const identity::Caller& c, http::Request& req,
                               http::Response& resp, RequestInfo& info) {
  Result<std::string> key = WriteKey(t, c, /*deleting=*/true);
  if (!key.ok()) {
    RefuseWrite(req, resp, c, key.status().message(), info);
    return;
  }
  Status s = store_.Delete(*key);
  if (!s.ok()) {
    Fail(resp, s, info);
    return;
  }
  info.outcome = Outcome::kDeleted;
  info.status = 204;
  resp.SetStatus(204);
  (void)resp.Send("");
}

void HttpCacheFrontend::Propfind(const Target& t, const identity::Caller& c, std::string_view path,
                                 http::Request& req, http::Response& resp, RequestInfo& info) {
  // sccache (through OpenDAL) stats each parent "directory" with PROPFIND Depth: 0 before a PUT
  // and creates the missing ones with MKCOL. Collections are virtual here, so every collection
  // exists; a non-collection path exists when its key is stored. Only the resource itself is
  // described (Depth: 1 listings are not supported: keys are not enumerable by design).
  std::optional<uint64_t> size;
  if (!t.collection) {
    auto stat = StatFirst(t, c);
    if (!stat.ok()) {
      Fail(resp, stat.status(), info);
      return;
    }
    size = stat->size;
  }
  std::string body =
      "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\"><D:response>"
      "<D:href>";
  text::AppendMarkupEscaped(body, path);
  body += "</D:href><D:propstat><D:prop><D:getlastmodified>";
  body += HttpDateNow();
  body += "</D:getlastmodified>";
  if (size) {
    body +=
        "<D:getcontentlength>" + std::to_string(*size) + "</D:getcontentlength><D:resourcetype/>";
  } else {
    body += "<D:resourcetype><D:collection/></D:resourcetype>";
  }
  body +=
      "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
      "</D:multistatus>\n";
  info.outcome = Outcome::kMeta;
  info.status = 207;
  resp.SetStatus(207);
  resp.SetHeader("Content-Type", "application/xml; charset=utf-8");
  (void)resp.Send(body);
}

void HttpCacheFrontend::Handle(http::Request& request, http::Response& response,
                               const identity::Caller& caller) {
  RequestInfo info = Serve(request, response, caller);
  if (options_.observer.on_request) options_.observer.on_request(info);
}

void HttpCacheFrontend::Handle(http::Request& request, http::Response& response) {
  Handle(request, response, identity::Caller::Unrestricted());
}

http::Handler HttpCacheFrontend::AsHandler() {
  return [this](http::Request& req, http::Response& resp) { Handle(req, resp); };
}

void HttpCacheFrontend::AddRoutes(http::Router& router) {
  for (const char* prefix : kPathPrefixes) router.Add("", prefix, AsHandler());
}

}  // namespace buildcache::httpcache
