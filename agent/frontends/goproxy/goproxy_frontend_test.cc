#include "agent/frontends/goproxy/goproxy_frontend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/frontends/goproxy/testing/test_zip.h"
#include "agent/store/memory_store.h"
#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/testing/frontend_test_base.h"
#include "agent/upstream/testing/timed_request.h"
#include "common/http/client.h"
#include "common/http/router.h"
#include "common/http/testing.h"

namespace buildcache::goproxy {
namespace {

constexpr std::string_view kSumdb = "sum.example.internal";

// Forwards to a real fetcher and counts every upstream request.
class CountingFetcher : public upstream::Fetcher {
 public:
  explicit CountingFetcher(std::unique_ptr<upstream::Fetcher> inner) : inner_(std::move(inner)) {}
  Status Get(std::string_view url, const upstream::FetchOptions& options,
             const std::function<Status(const upstream::UpstreamResponse&)>& on_head,
             const std::function<Status(std::string_view)>& on_data) override {
    ++requests;
    {
      std::lock_guard<std::mutex> lock(mu_);
      urls_.emplace_back(url);
    }
    return inner_->Get(url, options, on_head, on_data);
  }
  std::vector<std::string> urls() {
    std::lock_guard<std::mutex> lock(mu_);
    return urls_;
  }
  std::atomic<int> requests{0};

 private:
  std::unique_ptr<upstream::Fetcher> inner_;
  std::mutex mu_;
  std::vector<std::string> urls_;
};

// A module as an upstream proxy and a checksum database would serve it.
struct Module {
  std::string escaped = "example.com/!mixed!case/lib";
  std::string path = "example.com/MixedCase/lib";
  std::string version = "v1.2.3";
  std::string mod = "module example.com/MixedCase/lib\n\ngo 1.21\n";
  std::string zip;
  Module() {
    std::string dir = path + "@" + version + "/";
    zip = testing::BuildZip({{dir + "go.mod", mod, true},
                             {dir + "lib.go", "package lib\n\nfunc X() int { return 1 }\n", true},
                             {dir + "LICENSE", "do what you like\n", false}});
  }
  // The zip's path on the fixture upstream, and through the agent.
  std::string UpstreamZip() const { return "/proxy/" + escaped + "/@v/" + version + ".zip"; }
  std::string AgentZip() const { return "/gomod/" + escaped + "/@v/" + version + ".zip"; }
  std::string Lookup() const {
    auto r = [&](uint64_t offset, std::span<char> buf) -> Result<size_t> {
      if (offset >= zip.size()) return size_t{0};
      size_t n = std::min<size_t>(buf.size(), zip.size() - offset);
      std::copy_n(zip.data() + offset, n, buf.data());
      return n;
    };
    return "42\n" + path + " " + version + " " + HashZip(r, zip.size()).value() + "\n" + path +
           " " + version + "/go.mod " + HashGoMod(mod) + "\n\ngo.sum database tree\n43\nroot\n";
  }
};

class GoproxyFrontendTest : public upstream::testing::FrontendTestBase {
 protected:
  void SetUp() override {
    ASSERT_TRUE(up_.ok());
    SetNow(WallClock::time_point(std::chrono::seconds(1'800'000'000)));
    Start({});
  }

  // Starts the front end; sumdb.name empty = no checksum database.
  void Start(SumdbOptions sumdb) {
    StopServing();
    frontend_.reset();
    upstream::ArtifactCacheOptions artifact_options;
    artifact_options.wait_timeout = artifact_wait_;
    artifact_options.clock = [this] {
      return std::chrono::steady_clock::time_point(Now().time_since_epoch());
    };
    NewCaches(artifact_options, {}, [this](std::unique_ptr<upstream::Fetcher> real) {
      auto counting = std::make_unique<CountingFetcher>(std::move(real));
      counting_ = counting.get();
      return counting;
    });
    GoproxyOptions options;
    options.upstream = up_.Url("/proxy/");
    options.metadata_ttl = std::chrono::seconds(60);
    options.negative_ttl = std::chrono::seconds(30);
    options.sumdb = std::move(sumdb);
    options.sumdb.latest_ttl = std::chrono::seconds(10);
    options.fetch.connect_timeout = std::chrono::seconds(2);
    options.fetch.read_timeout = std::chrono::seconds(5);
    options.clock = Clock();
    options.verify_wait = verify_wait_;
    frontend_ = std::make_unique<GoproxyFrontend>(*store_, *artifacts_, *metadata_, options);
    Serve(*frontend_);
  }

  void StartWithSumdb(std::vector<std::string> no_verify = {}) {
    SumdbOptions sumdb;
    sumdb.name = std::string(kSumdb);
    sumdb.no_verify = std::move(no_verify);
    Start(std::move(sumdb));  // upstream defaults to <proxy>/sumdb/<name>
  }

  // Serves the module from the fixture proxy and (unless lookup is empty) its sumdb record.
  void Publish(const Module& m, const std::string& lookup) {
    const std::string v = "/proxy/" + m.escaped + "/@v/" + m.version;
    up_.Set(v + ".info", {.body = R"({"Version":"v1.2.3","Time":"2024-01-02T15:04:05Z"})"});
    up_.Set(v + ".mod", {.body = m.mod});
    up_.Set(v + ".zip", {.body = m.zip});
    if (!lookup.empty()) up_.Set(LookupPath(m), {.body = lookup});
  }
  // As Publish, with the upstream's zip stalling half way until up_.Release().
  void PublishStallingZip(const Module& m) {
    Publish(m, m.Lookup());
    up_.Set(m.UpstreamZip(), {.body = m.zip, .stall_after = m.zip.size() / 2});
  }
  static std::string LookupPath(const Module& m) {
    return "/proxy/sumdb/" + std::string(kSumdb) + "/lookup/" + m.escaped + "@" + m.version;
  }

  // True when a GET failed: an error status, or a transfer that did not complete.
  bool ZipRefused(std::string_view target) {
    http::Client c("127.0.0.1", server_->port());
    auto r = c.Fetch("GET", target);
    return !r.ok() || r->status >= 500;
  }

  // Start's waits: how long a coalesced artifact fetch is waited for, and a .mod/.zip flight
  // that makes no progress.
  std::chrono::milliseconds artifact_wait_{300'000};
  std::chrono::milliseconds verify_wait_{300'000};
  CountingFetcher* counting_ = nullptr;  // fetcher_
  std::unique_ptr<GoproxyFrontend> frontend_;
};

// A request on its own connection and thread, with when its answer was complete.
class Timed : public upstream::testing::TimedRequest {
 public:
  Timed(uint16_t port, std::string method, std::string target)
      : TimedRequest([port, method = std::move(method), target = std::move(target)] {
          http::Client c("127.0.0.1", port);
          return c.Fetch(method, target);
        }) {}
};

TEST_F(GoproxyFrontendTest, CaseEncodedPathsReachTheUpstreamEncoded) {
  up_.Set("/proxy/github.com/!burnt!sushi/toml/@v/list", {.body = "v1.0.0\nv1.1.0\n"});
  auto r = Get("/gomod/github.com/!burnt!sushi/toml/@v/list");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "v1.0.0\nv1.1.0\n");
  EXPECT_EQ(r.header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(up_.Requests("/proxy/github.com/!burnt!sushi/toml/@v/list"), 1);
  // Percent-encoded '!' is the same module.
  Advance(std::chrono::seconds(1));
  r = Get("/gomod/github.com/%21burnt%21sushi/toml/@v/list");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("X-Buildcache-Source"), "local");
  // Uppercase letters must be case-encoded.
  int before = counting_->requests;
  EXPECT_EQ(Get("/gomod/github.com/BurntSushi/toml/@v/list").status, 400);
  EXPECT_EQ(counting_->requests, before);
}

TEST_F(GoproxyFrontendTest, BadInputIs400WithoutAnUpstreamRequest) {
  StartWithSumdb();
  for (const char* target : {
           "/gomod/example.com/../etc/@v/list",
           "/gomod/example.com/%2e%2e/x/@v/list",
           "/gomod/example.com//x/@v/list",
           "/gomod/example.com/.x/@v/list",
           "/gomod/nodot/x/@v/list",
           "/gomod/example.com/a%20b/@latest",
           "/gomod/example.com/a!/@latest",
           "/gomod/example.com/x/@v/v1.0.0%00.info",
           "/gomod/example.com/x/@v/..%2f..%2fsecret.info",
           "/gomod/example.com/x/@v/v1.0.0/x.info",
           "/gomod/example.com/x/@v/master.zip",
           "/gomod/example.com/x/@v/v1.0.mod",
           "/gomod/example.com/x/@v/V1.0.0.mod",
           "/gomod/example.com/x/@v/v1.0.0+build.zip",
           "/gomod/example.com/x/@v/-x.info",
           "/gomod/sumdb/Bad.Name/supported",
           "/gomod/sumdb/../supported",
           "/gomod/sumdb/sum.example.internal/lookup/example.com/x",
           "/gomod/sumdb/sum.example.internal/lookup/example.com/x@master",
           "/gomod/sumdb/sum.example.internal/lookup/Example.com/x@v1.0.0",
           "/gomod/sumdb/sum.example.internal/lookup/../x@v1.0.0",
           "/gomod/sumdb/sum.example.internal/tile/8/0/../../x",
           "/gomod/sumdb/sum.example.internal/tile/8/0/x000/001",
           "/gomod/sumdb/sum.example.internal/tile/8/0/001.p/300",
       }) {
    auto r = Get(target);
    EXPECT_EQ(r.status, 400) << target << ": " << r.body;
  }
  EXPECT_EQ(counting_->requests, 0);
  for (const char* target :
       {"/gomod/", "/gomod/example.com/x", "/gomod/example.com/x/@v/",
        "/gomod/example.com/x/@v/v1.0.0.tar", "/gomod/sumdb/sum.example.internal/nothing"}) {
    EXPECT_EQ(Get(target).status, 404) << target;
  }
  EXPECT_EQ(counting_->requests, 0);
  auto r = client_->Fetch("PUT", "/gomod/example.com/x/@v/list", {}, "x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
}

TEST_F(GoproxyFrontendTest, ListAndLatestAreRefreshedAfterTheTtl) {
  const std::string list = "/proxy/example.com/m/@v/list";
  const std::string latest = "/proxy/example.com/m/@latest";
  up_.Set(list, {.body = "v1.0.0\n", .etag = "\"a\""});
  up_.Set(latest, {.body = R"({"Version":"v1.0.0"})"});
  EXPECT_EQ(Get("/gomod/example.com/m/@v/list").body, "v1.0.0\n");
  EXPECT_EQ(Get("/gomod/example.com/m/@latest").status, 200);
  Advance(std::chrono::seconds(30));
  EXPECT_EQ(Get("/gomod/example.com/m/@v/list").header("X-Buildcache-Source"), "local");
  EXPECT_EQ(Get("/gomod/example.com/m/@latest").header("Content-Type"), "application/json");
  EXPECT_EQ(up_.Requests(list), 1);
  EXPECT_EQ(up_.Requests(latest), 1);

  // A new release appears upstream: seen once the TTL has passed.
  up_.Set(list, {.body = "v1.0.0\nv1.1.0\n", .etag = "\"b\""});
  Advance(std::chrono::seconds(31));
  auto r = Get("/gomod/example.com/m/@v/list");
  EXPECT_EQ(r.body, "v1.0.0\nv1.1.0\n");
  EXPECT_EQ(r.header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(up_.Requests(list), 2);
  Get("/gomod/example.com/m/@latest");
  EXPECT_EQ(up_.Requests(latest), 2);
}

TEST_F(GoproxyFrontendTest, NotFoundAndGoneAreKeptSoClientsFallThrough) {
  up_.Set("/proxy/example.com/gone/@v/list", {.status = 410, .body = "gone for good"});
  auto r = Get("/gomod/example.com/gone/@v/list");
  EXPECT_EQ(r.status, 410);
  EXPECT_FALSE(r.body.empty());
  EXPECT_EQ(Get("/gomod/example.com/missing/@latest").status, 404);
  EXPECT_EQ(Get("/gomod/example.com/missing/@v/v1.0.0.info").status, 404);
  EXPECT_EQ(Get("/gomod/example.com/missing/@v/v1.0.0.zip").status, 404);
  up_.Set("/proxy/example.com/gone/@v/v1.0.0.mod", {.status = 410, .body = "gone"});
  EXPECT_EQ(Get("/gomod/example.com/gone/@v/v1.0.0.mod").status, 410);
  // Negative answers are remembered for negative_ttl.
  Get("/gomod/example.com/gone/@v/list");
  EXPECT_EQ(up_.Requests("/proxy/example.com/gone/@v/list"), 1);
  Advance(std::chrono::seconds(31));
  Get("/gomod/example.com/gone/@v/list");
  EXPECT_EQ(up_.Requests("/proxy/example.com/gone/@v/list"), 2);
}

TEST_F(GoproxyFrontendTest, ForbiddenIsNotFoundAndRememberedForTheNegativeTtl) {
  // `go mod tidy` probes path prefixes of its imports; proxies answer 403 for some of them. That
  // is the protocol's "not found": 404 to the client, remembered, never a 502.
  StartWithSumdb();
  const std::vector<std::string> paths = {
      "github.com/@v/list",           "github.com/@latest",          "example.com/m/@v/main.info",
      "example.com/m/@v/v1.0.0.info", "example.com/m/@v/v1.0.0.mod", "example.com/m/@v/v1.0.0.zip"};
  for (const auto& p : paths) up_.Set("/proxy/" + p, {.status = 403, .body = "forbidden"});
  for (int round = 0; round < 2; ++round) {
    for (const auto& p : paths) {
      auto r = Get("/gomod/" + p);
      EXPECT_EQ(r.status, 404) << p << ": " << r.body;
    }
  }
  for (const auto& p : paths) EXPECT_EQ(up_.Requests("/proxy/" + p), 1) << p;
  Advance(std::chrono::seconds(31));
  for (const auto& p : paths) EXPECT_EQ(Get("/gomod/" + p).status, 404) << p;
  for (const auto& p : paths) EXPECT_EQ(up_.Requests("/proxy/" + p), 2) << p;
  // Once the upstream has the module, it is served after the negative TTL.
  Module m;
  Publish(m, m.Lookup());
  const std::string mod = "/proxy/" + m.escaped + "/@v/" + m.version + ".mod";
  up_.Set(mod, {.status = 403, .body = "not yet"});
  EXPECT_EQ(Get("/gomod/" + m.escaped + "/@v/" + m.version + ".mod").status, 404);
  up_.Set(mod, {.body = m.mod});
  EXPECT_EQ(Get("/gomod/" + m.escaped + "/@v/" + m.version + ".mod").status, 404);
  Advance(std::chrono::seconds(31));
  auto r = Get("/gomod/" + m.escaped + "/@v/" + m.version + ".mod");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, m.mod);
}

TEST_F(GoproxyFrontendTest, RangesAreServedOnlyFromTheVerifiedZip) {
  // A cold zip is streamed and checked whole, whatever range the client asked for; once stored
  // (verified) a range is answered from it.
  StartWithSumdb();
  Module m;
  Publish(m, m.Lookup());
  const std::string path = m.AgentZip();
  auto r = client_->Fetch("GET", path, {{"Range", "bytes=0-9"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, m.zip);
  r = client_->Fetch("GET", path, {{"Range", "bytes=0-9"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, m.zip.substr(0, 10));
  EXPECT_EQ(r->header("Accept-Ranges"), "bytes");
}

TEST_F(GoproxyFrontendTest, ChecksumDatabaseForbiddenStaysAFailure) {
  // Only the module endpoints read 403 as not found: a database that refuses is not "no record".
  StartWithSumdb();
  Module m;
  up_.Set(LookupPath(m), {.status = 403, .body = "forbidden"});
  EXPECT_EQ(
      Get("/gomod/sumdb/" + std::string(kSumdb) + "/lookup/" + m.escaped + "@" + m.version).status,
      502);
}

TEST_F(GoproxyFrontendTest, UpstreamFailureIs502) {
  up_.Set("/proxy/example.com/m/@v/list", {.status = 500, .body = "boom"});
  up_.Set("/proxy/example.com/m/@v/v1.0.0.zip", {.status = 503, .body = "boom"});
  EXPECT_EQ(Get("/gomod/example.com/m/@v/list").status, 502);
  EXPECT_EQ(Get("/gomod/example.com/m/@v/v1.0.0.zip").status, 502);
  up_.Set("/proxy/example.com/m/@v/list", {.status = 429, .body = "slow down"});
  EXPECT_EQ(Get("/gomod/example.com/m/@v/list").status, 502);
}

TEST_F(GoproxyFrontendTest, VersionFilesAreImmutableAndQueriesAreNot) {
  Module m;
  Publish(m, "");
  const std::string v = "/gomod/" + m.escaped + "/@v/" + m.version;
  for (const char* ext : {".info", ".mod", ".zip"}) {
    auto r = Get(v + ext);
    EXPECT_EQ(r.status, 200) << ext << r.body;
    EXPECT_EQ(r.header("X-Buildcache-Source"), "upstream");
  }
  EXPECT_EQ(Get(v + ".zip").body, m.zip);
  EXPECT_EQ(Get(v + ".zip").header("Content-Type"), "application/zip");
  Advance(std::chrono::hours(24 * 365));
  for (const char* ext : {".info", ".mod", ".zip"}) {
    EXPECT_EQ(Get(v + ext).header("X-Buildcache-Source"), "local") << ext;
    EXPECT_EQ(up_.Requests("/proxy/" + m.escaped + "/@v/" + m.version + ext), 1) << ext;
  }
  // A branch name resolves to whatever it points at now: cached for metadata_ttl only.
  const std::string master = "/proxy/" + m.escaped + "/@v/master.info";
  up_.Set(master, {.body = R"({"Version":"v1.2.4-0.20240102150405-abcdef123456"})"});
  EXPECT_EQ(Get("/gomod/" + m.escaped + "/@v/master.info").status, 200);
  EXPECT_EQ(Get("/gomod/" + m.escaped + "/@v/master.info").status, 200);
  EXPECT_EQ(up_.Requests(master), 1);
  Advance(std::chrono::seconds(61));
  EXPECT_EQ(Get("/gomod/" + m.escaped + "/@v/master.info").status, 200);
  EXPECT_EQ(up_.Requests(master), 2);
}

TEST_F(GoproxyFrontendTest, ModAndZipAreVerifiedAgainstTheChecksumDatabase) {
  StartWithSumdb();
  Module m;
  Publish(m, m.Lookup());
  const std::string v = "/gomod/" + m.escaped + "/@v/" + m.version;
  auto r = Get(v + ".mod");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, m.mod);
  EXPECT_EQ(r.header("X-Buildcache-Source"), "upstream");
  r = Get(v + ".zip");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, m.zip);
  // One lookup serves both checks, and the go command's own lookup too.
  r = Get("/gomod/sumdb/" + std::string(kSumdb) + "/lookup/" + m.escaped + "@" + m.version);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, m.Lookup());
  EXPECT_EQ(up_.Requests(LookupPath(m)), 1);
  // Later requests come from the store; the staging copies are gone.
  EXPECT_EQ(Get(v + ".zip").header("X-Buildcache-Source"), "local");
  EXPECT_EQ(up_.Requests(m.UpstreamZip()), 1);
  EXPECT_FALSE(store_->Stat("goproxy/unverified/zip/" + m.escaped + "@" + m.version).ok());
  EXPECT_TRUE(store_->Stat("goproxy/zip/" + m.escaped + "@" + m.version).ok());
}

TEST_F(GoproxyFrontendTest, TamperedZipOrModIsRejectedAndNotStored) {
  StartWithSumdb();
  Module m;
  Module other;
  other.mod = "module example.com/MixedCase/lib\n\ngo 1.22\n";
  std::string dir = m.path + "@" + m.version + "/";
  other.zip = testing::BuildZip({{dir + "go.mod", m.mod, true}, {dir + "evil.go", "package x\n"}});
  Publish(other, m.Lookup());  // the proxy serves other bytes than the database records
  const std::string v = "/gomod/" + m.escaped + "/@v/" + m.version;
  EXPECT_EQ(Get(v + ".mod").status, 502);
  // A zip streams while the checksum database is asked: the answer is a 502 when the look-up
  // was back before the first byte, else a transfer cut off before its last byte. Never a 200.
  EXPECT_TRUE(ZipRefused(v + ".zip"));
  EXPECT_TRUE(ZipRefused(v + ".zip"));
  // Nothing was kept: each request fetched again.
  EXPECT_EQ(up_.Requests(m.UpstreamZip()), 2);
  EXPECT_FALSE(store_->Stat("goproxy/zip/" + m.escaped + "@" + m.version).ok());
  EXPECT_FALSE(store_->Stat("goproxy/unverified/zip/" + m.escaped + "@" + m.version).ok());
  // A zip that is not a zip.
  up_.Set(m.UpstreamZip(), {.body = "not a zip"});
  EXPECT_TRUE(ZipRefused(v + ".zip"));
  // Once the proxy serves the right bytes, they are accepted.
  Publish(m, "");
  EXPECT_EQ(Get(v + ".zip").status, 200);
  EXPECT_EQ(Get(v + ".mod").status, 200);
}

// Sends GET target on a raw connection and reads the head and `body_bytes` body bytes.
std::string ReadHeadAndBody(http::testing::RawConnection& c, const std::string& target,
                            size_t body_bytes, size_t* head_end) {
  EXPECT_TRUE(c.Send("GET " + target + " HTTP/1.1\r\nHost: agent\r\n\r\n"));
  std::string got = c.ReadUntil("\r\n\r\n", std::chrono::seconds(10));
  *head_end = got.find("\r\n\r\n");
  if (*head_end == std::string::npos) return got;
  *head_end += 4;
  while (got.size() < *head_end + body_bytes) {
    std::string more = c.ReadFor(std::chrono::seconds(10), *head_end + body_bytes - got.size());
    if (more.empty()) break;
    got += more;
  }
  return got;
}

TEST_F(GoproxyFrontendTest, LookupRunsWhileTheZipIsFetched) {
  StartWithSumdb();
  Module m;
  Publish(m, m.Lookup());
  // The proxy holds the zip back until released: the look-up must not wait for it.
  const std::string zip_path = m.UpstreamZip();
  up_.Set(zip_path, {.body = m.zip, .hold = true});
  const std::string v = m.AgentZip();
  http::ClientResponse r;
  std::thread client([&] { r = Get(v); });
  for (int i = 0; i < 1000 && up_.Requests(LookupPath(m)) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(up_.Requests(LookupPath(m)), 1);
  EXPECT_TRUE(up_.AwaitWaiting(1));  // the zip is still held
  EXPECT_FALSE(store_->Stat("goproxy/zip/" + m.escaped + "@" + m.version).ok());
  up_.Release();
  client.join();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, m.zip);
  EXPECT_TRUE(store_->Stat("goproxy/zip/" + m.escaped + "@" + m.version).ok());
  EXPECT_FALSE(store_->Stat("goproxy/unverified/zip/" + m.escaped + "@" + m.version).ok());
  EXPECT_EQ(Get(v).header("X-Buildcache-Source"), "local");
}

TEST_F(GoproxyFrontendTest, StreamedZipThatFailsTheCheckIsAbortedAndNotStored) {
  StartWithSumdb();
  Module m;
  Module other;
  std::string dir = m.path + "@" + m.version + "/";
  other.zip = testing::BuildZip({{dir + "go.mod", m.mod, true}, {dir + "evil.go", "package x\n"}});
  Publish(other, "");
  up_.Set(LookupPath(m), {.body = m.Lookup(), .hold = true});
  const std::string v = m.AgentZip();
  up_.Release();
  http::testing::RawConnection c(server_->port());
  ASSERT_TRUE(c.connected());
  size_t head_end = 0;
  // Everything but the last byte streams; the check fails and the connection is closed without
  // it, so the client never holds a complete response.
  std::string got = ReadHeadAndBody(c, v, other.zip.size(), &head_end);
  ASSERT_NE(head_end, std::string::npos) << got;
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200")) << got.substr(0, head_end);
  EXPECT_EQ(got.substr(head_end), other.zip.substr(0, other.zip.size() - 1));
  EXPECT_TRUE(c.WaitClosed(std::chrono::seconds(10)));
  EXPECT_FALSE(store_->Stat("goproxy/zip/" + m.escaped + "@" + m.version).ok());
  EXPECT_FALSE(store_->Stat("goproxy/unverified/zip/" + m.escaped + "@" + m.version).ok());
}

// A forged zip that carries the genuine zip's local entries ahead of its own, with a central
// directory that lists only its own files under the genuine names: the files hashed while the
// zip streamed include the genuine ones, but only those the directory names count, so it fails.
TEST_F(GoproxyFrontendTest, ForgedZipCarryingTheGenuineEntriesIsRejected) {
  StartWithSumdb();
  Module m;
  const size_t eocd = m.zip.rfind(std::string("PK\x05\x06", 4));
  ASSERT_NE(eocd, std::string::npos);
  uint64_t cd = 0;
  for (int i = 3; i >= 0; --i) cd = cd << 8 | static_cast<unsigned char>(m.zip[eocd + 16 + i]);
  const std::string dir = m.path + "@" + m.version + "/";
  Module forged;
  forged.zip =
      testing::BuildZip({{dir + "go.mod", m.mod, true},
                         {dir + "lib.go", "package lib\n\nfunc X() int { return 2 }\n", true},
                         {dir + "LICENSE", "do what you like\n", false}},
                        false, m.zip.substr(0, cd));
  Publish(forged, m.Lookup());
  const std::string v = m.AgentZip();
  EXPECT_TRUE(ZipRefused(v));
  EXPECT_TRUE(ZipRefused(v));
  EXPECT_FALSE(store_->Stat("goproxy/zip/" + m.escaped + "@" + m.version).ok());
  EXPECT_FALSE(store_->Stat("goproxy/unverified/zip/" + m.escaped + "@" + m.version).ok());
  // The genuine zip is then accepted (nothing of the forged one was kept).
  Publish(m, "");
  auto r = Get(v);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, m.zip);
}

TEST_F(GoproxyFrontendTest, ModuleUnknownToTheDatabaseNeedsNoVerify) {
  StartWithSumdb();
  Module m;
  Publish(m, "");  // no lookup route: the database answers 404
  const std::string v = "/gomod/" + m.escaped + "/@v/" + m.version;
  EXPECT_EQ(Get(v + ".zip").status, 502);
  StartWithSumdb({"example.com/Mixed*"});
  auto r = Get(v + ".zip");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, m.zip);
}

TEST_F(GoproxyFrontendTest, ChecksumDatabaseRoutesAreProxied) {
  StartWithSumdb();
  const std::string db = "/gomod/sumdb/" + std::string(kSumdb);
  const std::string up = "/proxy/sumdb/" + std::string(kSumdb);
  EXPECT_EQ(Get(db + "/supported").status, 200);
  EXPECT_EQ(Get("/gomod/sumdb/other.example.internal/supported").status, 404);
  EXPECT_EQ(counting_->requests, 0);

  up_.Set(up + "/latest", {.body = "go.sum database tree\n100\nroot\n"});
  up_.Set(up + "/tile/8/0/x001/234", {.body = std::string(8192, 't')});
  up_.Set(up + "/tile/8/1/004.p/7", {.body = std::string(7 * 32, 'p')});
  up_.Set(up + "/tile/8/data/000", {.body = "records"});
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Get(db + "/latest").body, "go.sum database tree\n100\nroot\n");
    EXPECT_EQ(Get(db + "/tile/8/0/x001/234").body.size(), 8192u);
    EXPECT_EQ(Get(db + "/tile/8/1/004.p/7").body.size(), 7u * 32);
    EXPECT_EQ(Get(db + "/tile/8/data/000").body, "records");
  }
  EXPECT_EQ(up_.Requests(up + "/latest"), 1);
  EXPECT_EQ(up_.Requests(up + "/tile/8/1/004.p/7"), 1);
  // latest and partial tiles are refreshed after latest_ttl; full tiles never.
  Advance(std::chrono::seconds(11));
  Get(db + "/latest");
  Get(db + "/tile/8/1/004.p/7");
  Get(db + "/tile/8/0/x001/234");
  EXPECT_EQ(up_.Requests(up + "/latest"), 2);
  EXPECT_EQ(up_.Requests(up + "/tile/8/1/004.p/7"), 2);
  EXPECT_EQ(up_.Requests(up + "/tile/8/0/x001/234"), 1);
  // A lookup the database does not have.
  EXPECT_EQ(Get(db + "/lookup/example.com/nope@v1.0.0").status, 404);
}

TEST_F(GoproxyFrontendTest, WithoutADatabaseItsRoutesAre404) {
  EXPECT_EQ(Get("/gomod/sumdb/sum.example.internal/supported").status, 404);
  EXPECT_EQ(Get("/gomod/sumdb/sum.example.internal/latest").status, 404);
  EXPECT_EQ(counting_->requests, 0);
}

TEST_F(GoproxyFrontendTest, ConcurrentMissesFetchOnce) {
  StartWithSumdb();
  Module m;
  Publish(m, m.Lookup());
  const std::string v = m.AgentZip();
  std::vector<std::thread> threads;
  threads.reserve(6);
  std::atomic<int> ok{0};
  const uint16_t port = server_->port();
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      http::Client c("127.0.0.1", port);
      auto r = c.Fetch("GET", v);
      if (r.ok() && r->status == 200 && r->body == m.zip) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 6);
  EXPECT_EQ(up_.Requests(m.UpstreamZip()), 1);
}

// A HEAD of a zip that a GET is streaming (fetched into its staging key, hashed as it passes, its
// last byte held back until the checksum database agrees, then moved into place) waits for that
// fetch and is answered from the stored zip. It must hold nothing the GET needs to finish: once
// the upstream goes on, both are answered at once, not after a wait runs out.
TEST_F(GoproxyFrontendTest, HeadDuringAStreamedZipMissIsAnsweredWhenTheZipIsStored) {
  artifact_wait_ = std::chrono::seconds(20);  // the bound a deadlocked HEAD and GET would hit
  StartWithSumdb();
  Module m;
  PublishStallingZip(m);
  const std::string zip_path = m.UpstreamZip();
  const std::string v = m.AgentZip();
  Timed get(server_->port(), "GET", v);
  EXPECT_TRUE(up_.AwaitWaiting(1));  // the GET streams; its upstream stalled half way
  Timed head(server_->port(), "HEAD", v);
  // Time for the HEAD to reach whatever it waits on while the upstream is still stalled.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto released = std::chrono::steady_clock::now();
  up_.Release();
  EXPECT_LT(get.Join(released), std::chrono::seconds(5));
  EXPECT_LT(head.Join(released), std::chrono::seconds(5));
  ASSERT_TRUE(get.result().ok()) << get.result().status().ToString();
  EXPECT_EQ(get.result()->status, 200);
  EXPECT_EQ(get.result()->body, m.zip);
  ASSERT_TRUE(head.result().ok()) << head.result().status().ToString();
  EXPECT_EQ(head.result()->status, 200) << head.result()->body;
  EXPECT_EQ(head.result()->header("Content-Length"), std::to_string(m.zip.size()));
  EXPECT_EQ(head.result()->header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(up_.Requests(zip_path), 1);
  EXPECT_TRUE(store_->Stat("goproxy/zip/" + m.escaped + "@" + m.version).ok());
  EXPECT_FALSE(store_->Stat("goproxy/unverified/zip/" + m.escaped + "@" + m.version).ok());
}

// A HEAD that leads (the zip is fetched, checked and stored for it, not streamed) and a GET that
// arrives meanwhile: the GET waits for the HEAD's fetch and is served the stored zip.
TEST_F(GoproxyFrontendTest, GetDuringAHeadsZipFetchIsServedTheStoredZip) {
  artifact_wait_ = std::chrono::seconds(20);
  StartWithSumdb();
  Module m;
  PublishStallingZip(m);
  const std::string zip_path = m.UpstreamZip();
  const std::string v = m.AgentZip();
  Timed head(server_->port(), "HEAD", v);
  EXPECT_TRUE(up_.AwaitWaiting(1));
  Timed get(server_->port(), "GET", v);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto released = std::chrono::steady_clock::now();
  up_.Release();
  EXPECT_LT(head.Join(released), std::chrono::seconds(5));
  EXPECT_LT(get.Join(released), std::chrono::seconds(5));
  ASSERT_TRUE(head.result().ok() && get.result().ok());
  EXPECT_EQ(head.result()->status, 200);
  EXPECT_EQ(head.result()->header("Content-Length"), std::to_string(m.zip.size()));
  EXPECT_EQ(get.result()->status, 200);
  EXPECT_EQ(get.result()->body, m.zip);
  EXPECT_EQ(up_.Requests(zip_path), 1);
}

// A second GET of a zip that arrives slowly waits for as long as bytes keep coming, longer than
// verify_wait in all, and is then served the stored zip: the patience is for a fetch that stalls.
TEST_F(GoproxyFrontendTest, SecondGetWaitsForASlowZipWhileItMakesProgress) {
  verify_wait_ = std::chrono::milliseconds(1000);
  StartWithSumdb();
  Module m;
  Publish(m, m.Lookup());
  const std::string zip_path = m.UpstreamZip();
  // About 20 pieces 150 ms apart: some 3 s in all.
  up_.Set(zip_path, {.body = m.zip,
                     .write_size = std::max<size_t>(1, m.zip.size() / 20),
                     .write_delay = std::chrono::milliseconds(150)});
  const std::string v = m.AgentZip();
  const auto start = std::chrono::steady_clock::now();
  Timed first(server_->port(), "GET", v);
  for (int i = 0; i < 1000 && up_.Requests(zip_path) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Timed second(server_->port(), "GET", v);
  EXPECT_GT(second.Join(start), std::chrono::milliseconds(2000));  // it did wait past verify_wait
  first.Join(start);
  ASSERT_TRUE(first.result().ok() && second.result().ok());
  EXPECT_EQ(first.result()->status, 200);
  EXPECT_EQ(first.result()->body, m.zip);
  EXPECT_EQ(second.result()->status, 200) << second.result()->body;
  EXPECT_EQ(second.result()->body, m.zip);
  EXPECT_EQ(up_.Requests(zip_path), 1);
}

// A fetch that stalls is waited for verify_wait, not for the whole artifact wait: the waiter gets
// 504 and the stalled fetch goes on for its own client.
TEST_F(GoproxyFrontendTest, RequestWaitingForAStalledZipGivesUpAfterTheVerifyWait) {
  verify_wait_ = std::chrono::milliseconds(1000);
  StartWithSumdb();
  Module m;
  PublishStallingZip(m);
  const std::string zip_path = m.UpstreamZip();
  const std::string v = m.AgentZip();
  Timed first(server_->port(), "GET", v);
  EXPECT_TRUE(up_.AwaitWaiting(1));
  const auto asked = std::chrono::steady_clock::now();
  for (const char* method : {"GET", "HEAD"}) {
    Timed waiter(server_->port(), method, v);
    EXPECT_LT(waiter.Join(asked), std::chrono::seconds(5)) << method;
    ASSERT_TRUE(waiter.result().ok()) << method;
    EXPECT_EQ(waiter.result()->status, 504) << method;
  }
  up_.Release();
  first.Join(asked);
  ASSERT_TRUE(first.result().ok());
  EXPECT_EQ(first.result()->status, 200);
  EXPECT_EQ(first.result()->body, m.zip);
  EXPECT_EQ(up_.Requests(zip_path), 1);
}

// The client of the request streaming a zip goes away half way: the fetch completes into the
// store anyway, is checked for the request waiting on it, which is served the stored zip without
// a second upstream fetch.
TEST_F(GoproxyFrontendTest, ZipWhoseStreamingClientWentAwayIsCheckedForItsWaiters) {
  StartWithSumdb();
  Module m;
  const std::string dir = m.path + "@" + m.version + "/";
  // Larger than the socket buffers, so the server's writes fail once the client has gone.
  m.zip = testing::BuildZip(
      {{dir + "go.mod", m.mod, true}, {dir + "big.bin", std::string(size_t{8} << 20, 'b'), false}});
  PublishStallingZip(m);
  const std::string zip_path = m.UpstreamZip();
  const std::string v = m.AgentZip();
  std::optional<Timed> waiter;
  {
    http::testing::RawConnection c(server_->port());
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.Send("GET " + v + " HTTP/1.1\r\nHost: agent\r\n\r\n"));
    EXPECT_NE(c.ReadUntil("\r\n\r\n", std::chrono::seconds(10)).find("200"), std::string::npos);
    EXPECT_TRUE(up_.AwaitWaiting(1));
    waiter.emplace(server_->port(), "GET", v);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the waiter joins the flight
  }  // the streaming client goes away, half the zip unread
  up_.Release();
  waiter->Join(std::chrono::steady_clock::now());
  ASSERT_TRUE(waiter->result().ok()) << waiter->result().status().ToString();
  EXPECT_EQ(waiter->result()->status, 200) << waiter->result()->body.substr(0, 200);
  EXPECT_TRUE(waiter->result()->body == m.zip);
  EXPECT_EQ(up_.Requests(zip_path), 1);
  EXPECT_TRUE(store_->Stat("goproxy/zip/" + m.escaped + "@" + m.version).ok());
  EXPECT_FALSE(store_->Stat("goproxy/unverified/zip/" + m.escaped + "@" + m.version).ok());
}

TEST(PathPatternTest, GonosumdbStyleMatching) {
  std::vector<std::string> p = {"corp.example.com", "*.internal/team", "git?.example.org/x/"};
  EXPECT_TRUE(MatchesPathPatterns(p, "corp.example.com/a/b"));
  EXPECT_TRUE(MatchesPathPatterns(p, "corp.example.com"));
  EXPECT_TRUE(MatchesPathPatterns(p, "git.corp.internal/team/lib"));
  EXPECT_TRUE(MatchesPathPatterns(p, "git1.example.org/x"));
  EXPECT_FALSE(MatchesPathPatterns(p, "corp.example.com.evil.org/a"));
  EXPECT_FALSE(MatchesPathPatterns(p, "git.corp.internal/other"));
  EXPECT_FALSE(MatchesPathPatterns(p, "git.corp.internal"));
  EXPECT_FALSE(MatchesPathPatterns(p, "git12.example.org/x"));
  EXPECT_FALSE(MatchesPathPatterns({}, "corp.example.com"));
}

}  // namespace
}  // namespace buildcache::goproxy
