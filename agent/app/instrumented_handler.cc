#include "agent/app/instrumented_handler.h"

#include <strings.h>

#include <chrono>
#include <optional>

namespace buildcache::agent {
namespace {

// Forwards to the real response and remembers the status, the source and the body bytes sent.
class RecordingResponse final : public http::Response {
 public:
  explicit RecordingResponse(http::Response& inner) : inner_(inner) {}

  int status() const { return status_; }
  bool aborted() const { return aborted_; }
  uint64_t body_bytes() const { return body_bytes_; }
  const std::string& source() const { return source_; }

  // http::Response
  void SetStatus(int code) override {
    status_ = code;
    inner_.SetStatus(code);
  }
  void SetHeader(std::string_view name, std::string_view value) override {
    if (name.size() == kSourceHeader.size() &&
        strncasecmp(name.data(), kSourceHeader.data(), name.size()) == 0) {
      // Only the documented sources become label values, so the label set stays small.
      if (value == "local" || value == "peer" || value == "upstream") source_ = std::string(value);
    }
    inner_.SetHeader(name, value);
  }
  Status Send(std::string_view body) override {
    Status s = inner_.Send(body);
    if (s.ok()) body_bytes_ += body.size();
    return s;
  }
  Status SendFile(int fd, uint64_t offset, uint64_t length) override {
    Status s = inner_.SendFile(fd, offset, length);
    if (s.ok()) body_bytes_ += length;
    return s;
  }
  Status Begin(std::optional<uint64_t> length) override { return inner_.Begin(length); }
  Status Write(std::string_view data) override {
    Status s = inner_.Write(data);
    if (s.ok()) body_bytes_ += data.size();
    return s;
  }
  Status End() override { return inner_.End(); }
  void Abort() override {
    aborted_ = true;
    inner_.Abort();
  }
  bool started() const override { return inner_.started(); }

 private:
  http::Response& inner_;
  int status_ = 200;
  bool aborted_ = false;
  uint64_t body_bytes_ = 0;
  std::string source_ = "local";
};

// Forwards to the real request and counts the body bytes the front end read.
class RecordingRequest final : public http::Request {
 public:
  explicit RecordingRequest(http::Request& inner) : inner_(inner) {}
  uint64_t body_bytes() const { return body_bytes_; }

  // http::Request
  std::string_view method() const override { return inner_.method(); }
  std::string_view target() const override { return inner_.target(); }
  std::string_view header(std::string_view name) const override { return inner_.header(name); }
  std::optional<uint64_t> content_length() const override { return inner_.content_length(); }
  std::string_view remote_address() const override { return inner_.remote_address(); }
  Result<size_t> ReadBody(std::span<char> buf) override {
    Result<size_t> n = inner_.ReadBody(buf);
    if (n.ok()) body_bytes_ += *n;
    return n;
  }

 private:
  http::Request& inner_;
  uint64_t body_bytes_ = 0;
};

std::string_view Classify(std::string_view method, int status, bool aborted) {
  if (aborted || status >= 500) return "error";
  if (status >= 200 && status < 300) {
    if (method == "GET" || method == "HEAD") return "hit";
    if (method == "PUT" || method == "POST") return "stored";
    if (method == "DELETE") return "deleted";
    return "meta";  // WebDAV probing (PROPFIND, MKCOL, OPTIONS)
  }
  const bool lookup = method == "GET" || method == "HEAD";
  // A revalidation answered "not modified": the client's copy was confirmed from the cache.
  if (status == 304 && lookup) return "hit";
  // Name normalisation (PEP 503, npm's scoped names) and other redirects: the client follows on.
  if (status >= 300 && status < 400) return "redirect";
  if (status == 404 && lookup) return "miss";
  return "rejected";
}

// Which Go build-cache object a build-cache request is, or "" for none: action entries live under
// /cache/gocache/ (gocacheprog/cache_program.h); outputs share the CAS with Bazel, so they are
// told apart by gocacheprog's User-Agent.
std::string_view GoCacheObject(http::Request& req) {
  std::string_view target = req.target();
  if (target.starts_with("/cache/gocache/")) return "action";
  if (target.starts_with("/cas/") &&
      req.header("User-Agent").starts_with("buildcache-gocacheprog")) {
    return "output";
  }
  return "";
}

// The Go build cache's share of one request (see AgentMetrics::gocache_requests).
void CountGoCache(AgentMetrics& metrics, std::string_view object, std::string_view result,
                  uint64_t served, uint64_t received) {
  const std::string obj(object);
  metrics.gocache_requests.With({obj, std::string(result)}).Inc();
  if (result == "hit" && served > 0) {
    metrics.gocache_bytes.With({obj, "served"}).Inc(static_cast<double>(served));
  }
  if (result == "stored" && received > 0) {
    metrics.gocache_bytes.With({obj, "received"}).Inc(static_cast<double>(received));
  }
}

}  // namespace

http::Handler Instrument(std::string frontend, AgentMetrics& metrics, http::Handler inner) {
  auto& duration = metrics.request_duration.With({frontend});
  auto& received = metrics.received_bytes.With({frontend});
  return [frontend = std::move(frontend), &metrics, &duration, &received, inner = std::move(inner)](
             http::Request& req, http::Response& resp) {
    auto start = std::chrono::steady_clock::now();
    RecordingRequest request(req);
    RecordingResponse recording(resp);
    inner(request, recording);
    std::string_view result = Classify(req.method(), recording.status(), recording.aborted());
    metrics.requests.With({frontend, std::string(result)}).Inc();
    // Error bodies are not cache content: only successful GETs count as bytes served.
    if (result == "hit" && recording.body_bytes() > 0 && req.method() != "HEAD") {
      metrics.served_bytes.With({frontend, recording.source()})
          .Inc(static_cast<double>(recording.body_bytes()));
    }
    if (result == "stored" && request.body_bytes() > 0) {
      received.Inc(static_cast<double>(request.body_bytes()));
    }
    if (frontend == "httpcache") {
      if (std::string_view object = GoCacheObject(req); !object.empty()) {
        CountGoCache(metrics, object, result, req.method() == "HEAD" ? 0 : recording.body_bytes(),
                     request.body_bytes());
      }
    }
    duration.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  };
}

identity::CallerHandler Attribute(ScopeAttribution attribution, identity::CallerHandler inner) {
  return [a = attribution, inner = std::move(inner)](http::Request& req, http::Response& resp,
                                                     const identity::Caller& caller) {
    const std::string_view method = req.method();
    if (method != "GET" && method != "HEAD") {
      inner(req, resp, caller);
      return;
    }
    RecordingResponse recording(resp);
    inner(req, recording, caller);
    const int status = recording.status();
    const bool answered =
        !recording.aborted() && ((status >= 200 && status < 300) || status == 304);
    if (!answered && status != 404) return;
    const char* result = answered && recording.source() != "upstream" ? "hit" : "miss";
    const std::string scope = a.labels.For(caller);
    a.requests.With({scope, result}).Inc();
    if (answered && recording.body_bytes() > 0 && method == "GET") {
      a.bytes.With({scope, result}).Inc(static_cast<double>(recording.body_bytes()));
    }
  };
}

}  // namespace buildcache::agent
