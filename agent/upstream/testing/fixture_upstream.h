#pragma once

// A real HTTP upstream on loopback for tests of the upstream layer and of front ends: our own
// http::Server on port 0 serving configurable routes. It counts requests, remembers request
// headers, and can delay, hold, stall mid-body, trickle the body out slowly, answer 500-then-200,
// redirect, honour ETag / Last-Modified with 304, and stream chunked. Header-only; for tests only.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/http/server.h"

namespace buildcache::upstream::testing {

struct Route {
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra response headers
  std::string content_type = "application/octet-stream";
  // Sent when set; a request whose If-None-Match (or If-Modified-Since) equals it gets 304.
  std::string etag;
  std::string last_modified;
  std::string location;   // Location header (for 3xx)
  bool chunked = false;   // stream the body chunked (no Content-Length)
  size_t write_size = 0;  // write the body in pieces of this size (0 = one piece)
  // With write_size: wait this long before each piece after the first (a slow upstream).
  std::chrono::milliseconds write_delay{0};
  int fail_first = 0;  // the first N requests answer fail_status with a short body
  int fail_status = 500;
  bool hold = false;  // block before the response head until Release()
  // Send this many body bytes, then block until Release(), then send the rest.
  std::optional<size_t> stall_after;
};

class FixtureUpstream {
 public:
  explicit FixtureUpstream(http::ServerOptions options = {}) {
    options.listen = "127.0.0.1:0";
    auto server = http::Server::Start(
        options, [this](http::Request& req, http::Response& resp) { Handle(req, resp); });
    if (server.ok()) {
      server_ = std::move(server).value();
      port_ = server_->port();
    }
  }
  ~FixtureUpstream() { Stop(); }
  FixtureUpstream(const FixtureUpstream&) = delete;
  FixtureUpstream& operator=(const FixtureUpstream&) = delete;

  bool ok() const { return server_ != nullptr; }
  uint16_t port() const { return port_; }
  std::string Url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port()) + std::string(path);
  }

  void Set(const std::string& path, Route route) {
    std::lock_guard<std::mutex> lock(mu_);
    routes_[path].route = std::move(route);
  }

  // Requests seen for path (every answer counts, 304 and failures included).
  int Requests(const std::string& path) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = routes_.find(path);
    return it == routes_.end() ? 0 : it->second.requests;
  }
  // 200 answers that carried the route's body.
  int BodiesSent(const std::string& path) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = routes_.find(path);
    return it == routes_.end() ? 0 : it->second.bodies;
  }
  // Requests currently blocked by hold or stall_after.
  int Waiting() const {
    std::lock_guard<std::mutex> lock(mu_);
    return waiting_;
  }
  // Waits (bounded) until at least n requests are blocked: a client may see the bytes sent before
  // a stall before the fixture's thread reaches the stall.
  bool AwaitWaiting(int n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
    std::unique_lock<std::mutex> lock(mu_);
    return waiting_cv_.wait_for(lock, timeout, [&] { return waiting_ >= n; });
  }
  // A request header of the last request for path ("" when absent).
  std::string LastHeader(const std::string& path, const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = routes_.find(path);
    if (it == routes_.end()) return "";
    auto h = it->second.last_headers.find(name);
    return h == it->second.last_headers.end() ? "" : h->second;
  }
  std::string LastRemote(const std::string& path) const { return LastHeader(path, ":remote"); }
  // Client connections that sent at least one request (distinct remote address and port).
  size_t Connections() const {
    std::lock_guard<std::mutex> lock(mu_);
    return remotes_.size();
  }

  // Lets held and stalled requests continue (now and from now on).
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

  // Stops serving: later connections are refused.
  void Stop() {
    Release();
    if (server_) server_->Stop(std::chrono::milliseconds(2000));
  }

 private:
  struct State {
    Route route;
    int requests = 0;
    int bodies = 0;
    std::map<std::string, std::string> last_headers;
  };

  void WaitReleased() {
    std::unique_lock<std::mutex> lock(mu_);
    ++waiting_;
    waiting_cv_.notify_all();
    cv_.wait(lock, [&] { return released_; });
    --waiting_;
  }

  void Handle(http::Request& req, http::Response& resp) {
    Route route;
    int n = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      remotes_.insert(std::string(req.remote_address()));
      auto it = routes_.find(std::string(req.path()));
      if (it == routes_.end()) {
        resp.SetStatus(404);
        (void)resp.Send("no such route\n");
        return;
      }
      State& s = it->second;
      n = ++s.requests;
      for (const char* name : {"If-None-Match", "If-Modified-Since", "Authorization", "User-Agent",
                               "Accept-Encoding", "Accept", "Host", "X-Test"}) {
        s.last_headers[name] = std::string(req.header(name));
      }
      s.last_headers[":remote"] = std::string(req.remote_address());
      route = s.route;
    }
    if (route.hold) WaitReleased();
    if (n <= route.fail_first) {
      resp.SetStatus(route.fail_status);
      (void)resp.Send("failing on purpose\n");
      return;
    }
    const bool etag_match = !route.etag.empty() && req.header("If-None-Match") == route.etag;
    const bool date_match =
        !route.last_modified.empty() && req.header("If-Modified-Since") == route.last_modified;
    if (!route.etag.empty()) resp.SetHeader("ETag", route.etag);
    if (!route.last_modified.empty()) resp.SetHeader("Last-Modified", route.last_modified);
    if (route.status == 200 && (etag_match || (route.etag.empty() && date_match))) {
      resp.SetStatus(304);
      (void)resp.Send("");
      return;
    }
    resp.SetStatus(route.status);
    resp.SetHeader("Content-Type", route.content_type);
    if (!route.location.empty()) resp.SetHeader("Location", route.location);
    for (const auto& [k, v] : route.headers) resp.SetHeader(k, v);
    if (route.status == 200) {
      std::lock_guard<std::mutex> lock(mu_);
      ++routes_[std::string(req.path())].bodies;
    }
    if (!route.chunked && route.write_size == 0 && !route.stall_after) {
      (void)resp.Send(route.body);
      return;
    }
    std::optional<uint64_t> length;
    if (!route.chunked) length = route.body.size();
    if (!resp.Begin(length).ok()) return;
    if (route.stall_after && *route.stall_after == 0) WaitReleased();
    std::string_view rest = route.body;
    size_t sent = 0;
    const size_t piece = route.write_size == 0 ? rest.size() : route.write_size;
    while (!rest.empty()) {
      if (sent > 0 && route.write_delay.count() > 0) {
        std::this_thread::sleep_for(route.write_delay);
      }
      size_t n_bytes = std::min(piece, rest.size());
      if (route.stall_after && sent < *route.stall_after) {
        n_bytes = std::min(n_bytes, *route.stall_after - sent);
      }
      if (!resp.Write(rest.substr(0, n_bytes)).ok()) return;
      rest.remove_prefix(n_bytes);
      sent += n_bytes;
      if (route.stall_after && sent == *route.stall_after) WaitReleased();
    }
    (void)resp.End();
  }

  std::unique_ptr<http::Server> server_;
  uint16_t port_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  mutable std::condition_variable waiting_cv_;
  bool released_ = false;
  int waiting_ = 0;
  std::map<std::string, State> routes_;
  std::set<std::string> remotes_;
};

}  // namespace buildcache::upstream::testing
