#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/store/lmdb_store.h"
#include "agent/store/memory_store.h"
#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/testing/timed_request.h"
#include "agent/upstream/upstream.h"
#include "common/http/client.h"
#include "common/http/testing.h"

namespace buildcache::upstream {
namespace {

using namespace std::chrono_literals;
using testing::FixtureUpstream;
using testing::Route;
using testing::TimedRequest;
using Algorithm = ExpectedDigest::Algorithm;

std::string Pattern(size_t n, int seed = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 13 + seed) % 26);
  return s;
}

std::string RawDigest(const EVP_MD* md, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

ExpectedDigest Sha256Of(std::string_view data) {
  return {Algorithm::kSha256, RawDigest(EVP_sha256(), data)};
}

std::string Base64(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()),
                          static_cast<int>(raw.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

// Reads from c until the response head and at least `body_bytes` of body arrived, the peer
// closed, or `timeout` passed. Robust against a slow machine, unlike waiting for quiet.
std::string ReadAtLeast(http::testing::RawConnection& c, std::string sofar, size_t body_bytes,
                        std::chrono::milliseconds timeout = 10'000ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    size_t head = sofar.find("\r\n\r\n");
    if (head != std::string::npos && sofar.size() - head - 4 >= body_bytes) return sofar;
    if (std::chrono::steady_clock::now() > deadline) return sofar;
    std::string more = c.ReadFor(50ms, 64 << 20);
    if (more.empty() && c.WaitClosed(0ms)) return sofar;
    sofar += more;
  }
}

// Splits a raw HTTP/1.1 response into head and body.
std::pair<std::string, std::string> SplitResponse(const std::string& raw) {
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return {raw, ""};
  return {raw.substr(0, end + 4), raw.substr(end + 4)};
}

class ArtifactCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(up_.ok());
    store_ = std::make_unique<store::MemoryStore>();
  }
  void TearDown() override {
    up_.Release();
    server_.reset();
    cache_.reset();
  }

  // The artifact the agent serves for a request path; tests adjust `expected_` and `size_`.
  Artifact ArtifactFor(std::string_view path) {
    Artifact a;
    a.frontend = "test";
    a.key = "test/artifact" + std::string(path);
    a.url = up_.Url(path);
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = expected_.find(std::string(path)); it != expected_.end()) a.expected = it->second;
    if (auto it = size_.find(std::string(path)); it != size_.end()) a.size = it->second;
    if (!url_override_.empty()) a.url = url_override_;
    a.fetch.read_timeout = read_timeout_;
    a.forbidden_is_not_found = forbidden_is_not_found_;
    a.negative_ttl = negative_ttl_;
    return a;
  }

  void Start(ArtifactCacheOptions options = {}, int attempts = 3) {
    if (!options.clock) options.clock = [this] { return now_.load(); };
    FetcherOptions fo;
    fo.attempts = attempts;
    fo.backoff = 20ms;
    fetcher_ = NewHttpFetcher(fo);
    UpstreamObserver observer;
    observer.on_fetch = [this](std::string_view frontend, std::string_view outcome, uint64_t bytes,
                               double seconds) {
      std::lock_guard<std::mutex> lock(mu_);
      EXPECT_EQ(frontend, "test");
      EXPECT_GE(seconds, 0.0);
      fetches_[std::string(outcome)]++;
      fetched_bytes_ += bytes;
    };
    observer.on_coalesced = [this](std::string_view) { ++coalesced_; };
    observer.on_verify_failed = [this](std::string_view) { ++verify_failed_; };
    observer.on_stored_mismatch = [this](std::string_view) { ++stored_mismatch_; };
    observer.on_stale_served = [this](std::string_view) { ADD_FAILURE() << "no stale artifacts"; };
    cache_ = std::make_unique<ArtifactCache>(*store_, *fetcher_, observer, options);
    http::ServerOptions so;
    so.listen = "127.0.0.1:0";
    auto server = http::Server::Start(so, [this](http::Request& req, http::Response& resp) {
      cache_->Serve(req, resp, ArtifactFor(req.path()));
    });
    ASSERT_TRUE(server.ok());
    server_ = std::move(server).value();
  }

  Result<http::ClientResponse> Get(std::string_view path, std::string_view method = "GET") {
    http::ClientOptions options;
    options.timeout = 10s;
    return http::Fetch(method,
                       "http://127.0.0.1:" + std::to_string(server_->port()) + std::string(path),
                       {}, {}, options);
  }

  // Sends a GET on a raw connection and reads until nothing arrives for `quiet`.
  std::string RawGet(http::testing::RawConnection& c, std::string_view path,
                     std::chrono::milliseconds quiet = 1000ms) {
    EXPECT_TRUE(c.Send("GET " + std::string(path) + " HTTP/1.1\r\nHost: agent\r\n\r\n"));
    return c.ReadFor(quiet, 64 << 20);
  }

  bool Stored(std::string_view path) { return store_->Stat(ArtifactFor(path).key).ok(); }

  int Fetches(const std::string& outcome) {
    std::lock_guard<std::mutex> lock(mu_);
    return fetches_[outcome];
  }

  void Expect(const std::string& path, std::vector<ExpectedDigest> digests) {
    std::lock_guard<std::mutex> lock(mu_);
    expected_[path] = std::move(digests);
  }

  FixtureUpstream up_;
  std::unique_ptr<store::BlobStore> store_;
  std::unique_ptr<Fetcher> fetcher_;
  std::unique_ptr<ArtifactCache> cache_;
  std::unique_ptr<http::Server> server_;

  std::mutex mu_;
  std::map<std::string, std::vector<ExpectedDigest>> expected_;
  std::map<std::string, uint64_t> size_;
  std::string url_override_;
  std::chrono::milliseconds read_timeout_{5000};
  bool forbidden_is_not_found_ = false;
  std::chrono::seconds negative_ttl_{0};
  std::atomic<std::chrono::steady_clock::time_point> now_{
      std::chrono::steady_clock::time_point(std::chrono::hours(1000))};
  std::map<std::string, int> fetches_;
  uint64_t fetched_bytes_ = 0;
  std::atomic<int> coalesced_{0};
  std::atomic<int> verify_failed_{0};
  std::atomic<int> stored_mismatch_{0};
};

TEST_F(ArtifactCacheTest, MissIsFetchedVerifiedStoredThenServedLocally) {
  const std::string body = Pattern(100'000);
  up_.Set("/pkg-1.0.whl", Route{.body = body});
  Expect("/pkg-1.0.whl", {Sha256Of(body)});
  Start();

  auto first = Get("/pkg-1.0.whl");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->body, body);
  EXPECT_EQ(first->header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(first->header("Content-Type"), "application/octet-stream");
  ASSERT_TRUE(Stored("/pkg-1.0.whl"));
  EXPECT_EQ(store_->Stat(ArtifactFor("/pkg-1.0.whl").key)->digest, store::Digest::Of(body));

  up_.Stop();  // a hit never needs the upstream
  auto second = Get("/pkg-1.0.whl");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->status, 200);
  EXPECT_EQ(second->body, body);
  EXPECT_EQ(second->header("X-Buildcache-Source"), "local");
  EXPECT_EQ(up_.Requests("/pkg-1.0.whl"), 1);
  EXPECT_EQ(Fetches("ok"), 1);
  EXPECT_EQ(fetched_bytes_, body.size());
}

TEST_F(ArtifactCacheTest, MissStreamsToTheClientBeforeTheUpstreamFinishes) {
  const std::string body = Pattern(300'000);
  up_.Set("/big.tgz", Route{.body = body, .write_size = 16'384, .stall_after = 100'000});
  Expect("/big.tgz", {Sha256Of(body)});
  Start();

  http::testing::RawConnection client(server_->port());
  ASSERT_TRUE(client.connected());
  auto [head, partial] =
      SplitResponse(ReadAtLeast(client, RawGet(client, "/big.tgz", 50ms), 100'000));
  // The upstream is still stalled, and the client already has everything sent so far.
  EXPECT_TRUE(up_.AwaitWaiting(1));
  EXPECT_NE(head.find("200"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Length: 300000"), std::string::npos) << head;
  EXPECT_NE(head.find("X-Buildcache-Source: upstream"), std::string::npos) << head;
  EXPECT_EQ(partial, body.substr(0, 100'000));
  EXPECT_FALSE(Stored("/big.tgz"));

  up_.Release();
  auto [unused, all] = SplitResponse(ReadAtLeast(client, head + partial, body.size()));
  EXPECT_EQ(all, body);
  EXPECT_TRUE(Stored("/big.tgz"));
}

TEST_F(ArtifactCacheTest, ConcurrentMissesAreCoalescedIntoOneUpstreamFetch) {
  const std::string body = Pattern(200'000, 3);
  up_.Set("/hot.crate", Route{.body = body, .hold = true});
  Expect("/hot.crate", {Sha256Of(body)});
  Start();

  constexpr int kClients = 8;
  std::vector<Result<http::ClientResponse>> results(kClients, Internal("not run"));
  std::vector<std::thread> threads;
  threads.reserve(kClients);
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] { results[i] = Get("/hot.crate"); });
  }
  // Everyone but the leader is waiting on the leader's fetch, which the upstream holds.
  for (int i = 0; i < 1000 && (coalesced_ < kClients - 1 || up_.Waiting() < 1); ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(coalesced_, kClients - 1);
  up_.Release();
  for (auto& t : threads) t.join();

  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, body);
    EXPECT_EQ(r->header("X-Buildcache-Source"), "upstream");
  }
  EXPECT_EQ(up_.Requests("/hot.crate"), 1);
  EXPECT_EQ(Fetches("ok"), 1);
}

TEST_F(ArtifactCacheTest, DigestMismatchStoresNothingAndTheClientNeverGetsACompleteBody) {
  const std::string good = Pattern(150'000, 1);
  const std::string evil = Pattern(150'000, 2);
  up_.Set("/x.tgz", Route{.body = evil, .write_size = 32'768});
  Expect("/x.tgz", {Sha256Of(good)});
  Start();

  http::testing::RawConnection client(server_->port());
  auto [head, received] = SplitResponse(RawGet(client, "/x.tgz"));
  EXPECT_NE(head.find("Content-Length: 150000"), std::string::npos) << head;
  EXPECT_LT(received.size(), evil.size());  // the last byte is held back, then the stream aborted
  EXPECT_TRUE(client.WaitClosed(10s));

  EXPECT_FALSE(Get("/x.tgz").ok());  // the plain client sees a failed transfer
  EXPECT_FALSE(Stored("/x.tgz"));
  EXPECT_EQ(verify_failed_, 2);
  EXPECT_EQ(Fetches("error"), 2);
  EXPECT_EQ(Fetches("ok"), 0);

  // Nothing about the failure is remembered: once the upstream is right, it works.
  up_.Set("/x.tgz", Route{.body = good});
  auto fixed = Get("/x.tgz");
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->body, good);
  EXPECT_TRUE(Stored("/x.tgz"));
}

TEST_F(ArtifactCacheTest, DigestMismatchOnAChunkedUpstreamFailsTheTransfer) {
  const std::string good = Pattern(50'000, 1);
  up_.Set("/c.jar", Route{.body = Pattern(50'000, 2), .chunked = true, .write_size = 8'192});
  Expect("/c.jar", {Sha256Of(good)});
  Start();
  auto r = Get("/c.jar");
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(Stored("/c.jar"));
  EXPECT_EQ(verify_failed_, 1);
}

TEST_F(ArtifactCacheTest, EveryExpectedDigestMustMatch) {
  const std::string body = Pattern(10'000);
  up_.Set("/m.jar", Route{.body = body});
  // SHA-256 right, SHA-1 wrong: rejected (the store alone would have accepted it).
  Expect("/m.jar", {Sha256Of(body), {Algorithm::kSha1, RawDigest(EVP_sha1(), "other")}});
  Start();
  EXPECT_FALSE(Get("/m.jar").ok());
  EXPECT_FALSE(Stored("/m.jar"));
  EXPECT_EQ(verify_failed_, 1);

  Expect("/m.jar", {Sha256Of(body), {Algorithm::kSha1, RawDigest(EVP_sha1(), body)}});
  auto ok = Get("/m.jar");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->body, body);
}

TEST_F(ArtifactCacheTest, MalformedExpectedDigestNeverPasses) {
  const std::string body = Pattern(1'000);
  up_.Set("/short.jar", Route{.body = body});
  // A truncated SHA-256 must not slip past because the store only checks well-formed ones.
  Expect("/short.jar", {{Algorithm::kSha256, Sha256Of(body).raw.substr(0, 31)}});
  Start();
  auto r = Get("/short.jar");
  EXPECT_FALSE(r.ok() && r->status == 200 && r->body == body);
  EXPECT_FALSE(Stored("/short.jar"));
  EXPECT_EQ(verify_failed_, 1);
}

TEST_F(ArtifactCacheTest, NpmIntegrityIsVerified) {
  const std::string body = Pattern(70'000, 5);
  up_.Set("/left-pad-1.3.0.tgz", Route{.body = body});
  auto integrity = ParseIntegrity("sha1-" + Base64(RawDigest(EVP_sha1(), body)) + " sha512-" +
                                  Base64(RawDigest(EVP_sha512(), body)));
  ASSERT_TRUE(integrity.ok());
  EXPECT_EQ(integrity->algorithm, Algorithm::kSha512);
  Expect("/left-pad-1.3.0.tgz", {*integrity});
  Start();
  auto r = Get("/left-pad-1.3.0.tgz");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, body);
  EXPECT_TRUE(Stored("/left-pad-1.3.0.tgz"));

  up_.Set("/evil-1.0.0.tgz", Route{.body = Pattern(70'000, 6)});
  Expect("/evil-1.0.0.tgz", {*integrity});
  EXPECT_FALSE(Get("/evil-1.0.0.tgz").ok());
  EXPECT_FALSE(Stored("/evil-1.0.0.tgz"));
  EXPECT_EQ(verify_failed_, 1);
}

TEST_F(ArtifactCacheTest, SizeMismatchBeforeAnyByteGives502) {
  up_.Set("/s.whl", Route{.body = Pattern(2'000)});
  {
    std::lock_guard<std::mutex> lock(mu_);
    size_["/s.whl"] = 1'000;
  }
  Start();
  auto r = Get("/s.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 502);
  EXPECT_NE(r->body.find("index says"), std::string::npos) << r->body;
  EXPECT_FALSE(Stored("/s.whl"));
  EXPECT_EQ(verify_failed_, 1);
}

TEST_F(ArtifactCacheTest, EmptyBodyThatFailsVerificationGives502) {
  up_.Set("/empty.whl", Route{.body = ""});
  Expect("/empty.whl", {Sha256Of("not empty")});
  Start();
  auto r = Get("/empty.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 502);
  EXPECT_NE(r->body.find("DATA_LOSS"), std::string::npos) << r->body;
  EXPECT_FALSE(Stored("/empty.whl"));
}

TEST_F(ArtifactCacheTest, ServerErrorsAreRetriedWithBackoff) {
  const std::string body = Pattern(5'000);
  up_.Set("/flaky.whl", Route{.body = body, .fail_first = 2, .fail_status = 500});
  Start({}, /*attempts=*/3);
  auto start = std::chrono::steady_clock::now();
  auto r = Get("/flaky.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, body);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
  EXPECT_EQ(up_.Requests("/flaky.whl"), 3);
  EXPECT_EQ(Fetches("ok"), 1);
}

TEST_F(ArtifactCacheTest, PersistentServerErrorsGive502NamingTheUpstream) {
  up_.Set("/down.whl", Route{.body = "x", .fail_first = 1000, .fail_status = 503});
  Start({}, /*attempts=*/3);
  auto r = Get("/down.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 502);
  EXPECT_NE(r->body.find(up_.Url("/down.whl") + " answered 503"), std::string::npos) << r->body;
  EXPECT_EQ(up_.Requests("/down.whl"), 3);
  EXPECT_EQ(Fetches("error"), 1);
  EXPECT_FALSE(Stored("/down.whl"));
}

TEST_F(ArtifactCacheTest, UpstreamDownGives502) {
  up_.Set("/gone-server.whl", Route{.body = "x"});
  up_.Stop();
  Start({}, /*attempts=*/2);
  auto r = Get("/gone-server.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 502);
  EXPECT_NE(r->body.find("127.0.0.1:" + std::to_string(up_.port())), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("refused"), std::string::npos) << r->body;
}

TEST_F(ArtifactCacheTest, UpstreamNotFoundAndGoneArePassedOn) {
  up_.Set("/nope.whl", Route{.status = 404, .body = "not here"});
  up_.Set("/removed.whl", Route{.status = 410, .body = "gone"});
  Start();
  auto missing = Get("/nope.whl");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  auto gone = Get("/removed.whl");
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->status, 410);
  EXPECT_EQ(Fetches("not_found"), 2);
  auto ensure = cache_->Ensure(ArtifactFor("/nope.whl"));
  EXPECT_EQ(ensure.status().code(), StatusCode::kNotFound);
}

TEST_F(ArtifactCacheTest, ForbiddenIsAFailureUnlessTheArtifactReadsItAsNotFound) {
  up_.Set("/403.zip", Route{.status = 403, .body = "refused"});
  up_.Set("/403-goproxy.zip", Route{.status = 403, .body = "refused"});
  Start();
  EXPECT_EQ(Get("/403.zip")->status, 502);
  EXPECT_EQ(Fetches("error"), 1);
  // Another key (a failure leaves the coalescer before its client hears of it, so the same key
  // would start a new fetch too).
  forbidden_is_not_found_ = true;  // the GOPROXY protocol's reading
  EXPECT_EQ(Get("/403-goproxy.zip")->status, 404);
  EXPECT_EQ(Fetches("not_found"), 1);
  EXPECT_EQ(cache_->Ensure(ArtifactFor("/403-goproxy.zip")).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(Stored("/403.zip"));
  EXPECT_FALSE(Stored("/403-goproxy.zip"));
}

TEST_F(ArtifactCacheTest, NotFoundIsRememberedForTheNegativeTtlWithinABound) {
  for (const char* p : {"/a.zip", "/b.zip", "/c.zip"}) up_.Set(p, Route{.status = 404});
  up_.Set("/gone.zip", Route{.status = 410});
  negative_ttl_ = std::chrono::seconds(30);
  Start(ArtifactCacheOptions{.max_negative_entries = 2});
  EXPECT_EQ(Get("/a.zip")->status, 404);
  EXPECT_EQ(Get("/a.zip")->status, 404);
  EXPECT_EQ(cache_->Ensure(ArtifactFor("/a.zip")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(up_.Requests("/a.zip"), 1);
  EXPECT_EQ(Get("/gone.zip")->status, 410);
  EXPECT_EQ(Get("/gone.zip")->status, 410);  // remembered as gone, not just missing
  EXPECT_EQ(up_.Requests("/gone.zip"), 1);
  now_ = now_.load() + std::chrono::seconds(31);
  EXPECT_EQ(Get("/a.zip")->status, 404);
  EXPECT_EQ(up_.Requests("/a.zip"), 2);
  // At most two answers are kept: of three fresh ones, asking again reaches the upstream for at
  // least one.
  for (const char* p : {"/a.zip", "/b.zip", "/c.zip"}) Get(p);
  const int before = up_.Requests("/a.zip") + up_.Requests("/b.zip") + up_.Requests("/c.zip");
  for (const char* p : {"/a.zip", "/b.zip", "/c.zip"}) Get(p);
  EXPECT_GE(up_.Requests("/a.zip") + up_.Requests("/b.zip") + up_.Requests("/c.zip"), before + 1);
  // Without a negative TTL nothing is remembered.
  negative_ttl_ = std::chrono::seconds(0);
  const int b = up_.Requests("/b.zip");
  Get("/b.zip");
  Get("/b.zip");
  EXPECT_EQ(up_.Requests("/b.zip"), b + 2);
}

TEST_F(ArtifactCacheTest, UpstreamThatNeverAnswersTimesOut) {
  up_.Set("/hang.whl", Route{.body = "x", .hold = true});
  read_timeout_ = 200ms;
  Start({}, /*attempts=*/1);
  auto start = std::chrono::steady_clock::now();
  auto r = Get("/hang.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 504);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

// Every front end's artifacts (npm tarballs, crates, Maven files, PyPI files) go through Serve: a
// HEAD that arrives while a GET streams the cold artifact joins that fetch holding nothing and is
// answered with the stored length as soon as it ends.
TEST_F(ArtifactCacheTest, HeadDuringAStreamedMissIsAnsweredWhenTheFetchEnds) {
  const std::string body = Pattern(100'000, 5);
  up_.Set("/joined.tgz", Route{.body = body, .stall_after = 40'000});
  Expect("/joined.tgz", {Sha256Of(body)});
  Start();
  TimedRequest get([this] { return Get("/joined.tgz"); });
  EXPECT_TRUE(up_.AwaitWaiting(1));
  TimedRequest head([this] { return Get("/joined.tgz", "HEAD"); });
  for (int i = 0; i < 1000 && coalesced_ < 1; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(coalesced_, 1);
  const auto released = std::chrono::steady_clock::now();
  up_.Release();
  EXPECT_LT(get.Join(released), 5s);
  EXPECT_LT(head.Join(released), 5s);
  ASSERT_TRUE(get.result().ok() && head.result().ok());
  EXPECT_EQ(get.result()->body, body);
  EXPECT_EQ(head.result()->status, 200);
  EXPECT_EQ(head.result()->header("Content-Length"), std::to_string(body.size()));
  EXPECT_EQ(up_.Requests("/joined.tgz"), 1);
}

// Waiters wait for a fetch as long as its bytes keep arriving, past wait_timeout in all: the
// patience is for a fetch that stalls, not for a large artifact on a slow upstream.
TEST_F(ArtifactCacheTest, WaitersWaitForASlowFetchWhileItMakesProgress) {
  const std::string body = Pattern(40'000, 6);
  // 20 pieces 150 ms apart: some 3 s in all.
  up_.Set("/slow.jar", Route{.body = body, .write_size = 2'000, .write_delay = 150ms});
  Expect("/slow.jar", {Sha256Of(body)});
  ArtifactCacheOptions options;
  options.wait_timeout = 1s;
  Start(options);
  const auto start = std::chrono::steady_clock::now();
  TimedRequest first([this] { return Get("/slow.jar"); });
  for (int i = 0; i < 1000 && up_.Requests("/slow.jar") == 0; ++i) std::this_thread::sleep_for(5ms);
  TimedRequest second([this] { return Get("/slow.jar"); });
  TimedRequest head([this] { return Get("/slow.jar", "HEAD"); });
  EXPECT_GT(second.Join(start), 2s);
  head.Join(start);
  first.Join(start);
  ASSERT_TRUE(first.result().ok() && second.result().ok() && head.result().ok());
  EXPECT_EQ(first.result()->body, body);
  EXPECT_EQ(second.result()->status, 200) << second.result()->body;
  EXPECT_EQ(second.result()->body, body);
  EXPECT_EQ(head.result()->status, 200) << head.result()->body;
  EXPECT_EQ(head.result()->header("Content-Length"), std::to_string(body.size()));
  EXPECT_EQ(up_.Requests("/slow.jar"), 1);
}

// A fetch that stalls is waited for wait_timeout from its last byte: the waiter gets 504 while
// the stalled fetch goes on for its own client.
TEST_F(ArtifactCacheTest, WaiterOnAStalledFetchGivesUpAfterTheWaitTimeout) {
  const std::string body = Pattern(50'000, 7);
  up_.Set("/stuck.crate", Route{.body = body, .stall_after = 10'000});
  Expect("/stuck.crate", {Sha256Of(body)});
  ArtifactCacheOptions options;
  options.wait_timeout = 1s;
  Start(options);
  TimedRequest first([this] { return Get("/stuck.crate"); });
  EXPECT_TRUE(up_.AwaitWaiting(1));
  const auto asked = std::chrono::steady_clock::now();
  TimedRequest waiter([this] { return Get("/stuck.crate"); });
  const auto waited = waiter.Join(asked);
  EXPECT_GE(waited, 500ms);  // counted from the last byte, which came just before it asked
  EXPECT_LT(waited, 5s);
  ASSERT_TRUE(waiter.result().ok());
  EXPECT_EQ(waiter.result()->status, 504);
  up_.Release();
  first.Join(asked);
  ASSERT_TRUE(first.result().ok());
  EXPECT_EQ(first.result()->body, body);
  EXPECT_EQ(up_.Requests("/stuck.crate"), 1);
}

TEST_F(ArtifactCacheTest, UpstreamStallingMidBodyAbortsTheClientAndStoresNothing) {
  up_.Set("/stall.whl", Route{.body = Pattern(100'000), .stall_after = 30'000});
  read_timeout_ = 300ms;
  Start({}, /*attempts=*/3);
  http::testing::RawConnection client(server_->port());
  auto [head, received] = SplitResponse(RawGet(client, "/stall.whl", 2000ms));
  EXPECT_NE(head.find("200"), std::string::npos);
  EXPECT_EQ(received, Pattern(100'000).substr(0, 30'000));
  EXPECT_TRUE(client.WaitClosed(10s));
  EXPECT_FALSE(Stored("/stall.whl"));
  EXPECT_EQ(up_.Requests("/stall.whl"), 1);
}

TEST_F(ArtifactCacheTest, ObjectsOverTheSizeLimitAreRefusedAndNotStored) {
  up_.Set("/huge.whl", Route{.body = Pattern(5'000)});
  up_.Set("/huge-chunked.whl", Route{.body = Pattern(5'000), .chunked = true, .write_size = 1000});
  ArtifactCacheOptions options;
  options.max_object_size = 4'096;
  Start(options);
  auto declared = Get("/huge.whl");
  ASSERT_TRUE(declared.ok());
  EXPECT_EQ(declared->status, 502);
  EXPECT_NE(declared->body.find("4096 byte object limit"), std::string::npos) << declared->body;
  EXPECT_FALSE(Get("/huge-chunked.whl").ok());  // found out mid-stream: aborted
  EXPECT_FALSE(Stored("/huge.whl"));
  EXPECT_FALSE(Stored("/huge-chunked.whl"));
}

TEST_F(ArtifactCacheTest, RedirectsAreFollowed) {
  const std::string body = Pattern(3'000);
  up_.Set("/files/real.whl", Route{.body = body});
  up_.Set("/r.whl", Route{.status = 302, .location = "/files/real.whl"});
  up_.Set("/abs.whl", Route{.status = 301, .location = up_.Url("/files/real.whl")});
  Expect("/r.whl", {Sha256Of(body)});
  Start();
  auto r = Get("/r.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, body);
  EXPECT_TRUE(Stored("/r.whl"));
  auto abs = Get("/abs.whl");
  ASSERT_TRUE(abs.ok());
  EXPECT_EQ(abs->body, body);
}

TEST_F(ArtifactCacheTest, HeadOnAMissFetchesStoresAndAnswersWithTheLength) {
  const std::string body = Pattern(12'345);
  up_.Set("/h.whl", Route{.body = body, .chunked = true});
  Start();
  auto head = Get("/h.whl", "HEAD");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("Content-Length"), "12345");
  EXPECT_EQ(head->body, "");
  EXPECT_TRUE(Stored("/h.whl"));
  auto get = Get("/h.whl");
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->body, body);
  EXPECT_EQ(get->header("X-Buildcache-Source"), "local");
  EXPECT_EQ(up_.Requests("/h.whl"), 1);
}

TEST_F(ArtifactCacheTest, ObjectTooBigForTheStoreIsStillServedVerified) {
  store_ = std::make_unique<store::MemoryStore>(store::MemoryStoreOptions{.max_bytes = 1'000});
  const std::string body = Pattern(5'000);
  up_.Set("/wide.whl", Route{.body = body});
  Expect("/wide.whl", {Sha256Of(body)});
  up_.Set("/wide-evil.whl", Route{.body = Pattern(5'000, 9)});
  Expect("/wide-evil.whl", {Sha256Of(body)});
  Start();
  auto r = Get("/wide.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, body);
  EXPECT_FALSE(Stored("/wide.whl"));
  // Pass-through still verifies.
  EXPECT_FALSE(Get("/wide-evil.whl").ok());
  EXPECT_EQ(verify_failed_, 1);
}

TEST_F(ArtifactCacheTest, StoredBlobThatDoesNotMatchTheIndexIsReplaced) {
  const std::string body = Pattern(4'000);
  up_.Set("/changed.whl", Route{.body = body});
  Expect("/changed.whl", {Sha256Of(body)});
  ASSERT_TRUE(store::PutBytes(*store_, ArtifactFor("/changed.whl").key, "stale bytes").ok());
  Start();
  auto r = Get("/changed.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, body);
  EXPECT_EQ(r->header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(store_->Stat(ArtifactFor("/changed.whl").key)->digest, store::Digest::Of(body));
}

// The attack of a peer's Put (or a pull from a peer) under an artifact's key: bytes whose digest
// the peer announced and the store checked, but which are not what the ecosystem's index names.
// SHA-1 (Maven), SHA-512 (npm) and SHA-384 hits are re-verified by this agent's own hashes.
TEST_F(ArtifactCacheTest, PlantedBlobIsNeverServedForAnyIndexAlgorithm) {
  for (const EVP_MD* md : {EVP_sha1(), EVP_sha384(), EVP_sha512()}) {
    SCOPED_TRACE(EVP_MD_get0_name(md));
    const std::string path = std::string("/lib-1.0-") + EVP_MD_get0_name(md) + ".jar";
    const std::string body = Pattern(30'000, 3);
    up_.Set(path, Route{.body = body});
    Algorithm algorithm = md == EVP_sha1()     ? Algorithm::kSha1
                          : md == EVP_sha384() ? Algorithm::kSha384
                                               : Algorithm::kSha512;
    Expect(path, {{algorithm, RawDigest(md, body)}});
    ASSERT_TRUE(store::PutBytes(*store_, ArtifactFor(path).key, "planted by a peer").ok());
    if (!cache_) Start();
    const int before = stored_mismatch_;
    auto r = Get(path);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, body);
    EXPECT_EQ(r->header("X-Buildcache-Source"), "upstream");
    EXPECT_EQ(stored_mismatch_, before + 1);
    EXPECT_EQ(store_->Stat(ArtifactFor(path).key)->digest, store::Digest::Of(body));
    // Ensure (a peer's Fetch) re-verifies too: plant again, and it fetches again.
    ASSERT_TRUE(store::PutBytes(*store_, ArtifactFor(path).key, "planted again").ok());
    auto ensured = cache_->Ensure(ArtifactFor(path));
    ASSERT_TRUE(ensured.ok()) << ensured.status().ToString();
    EXPECT_EQ(ensured->digest, store::Digest::Of(body));
    EXPECT_EQ(stored_mismatch_, before + 2);
    // The genuine blob is a local hit, without the upstream.
    auto hit = Get(path);
    ASSERT_TRUE(hit.ok());
    EXPECT_EQ(hit->body, body);
    EXPECT_EQ(hit->header("X-Buildcache-Source"), "local");
    EXPECT_EQ(up_.Requests(path), 2);
  }
}

// After a restart the kept digests are gone: the first hit hashes the stored blob itself.
TEST_F(ArtifactCacheTest, GenuineBlobStoredBeforeIsVerifiedByItsOwnHashAndServed) {
  const std::string body = Pattern(20'000, 4);
  up_.Set("/a.tgz", Route{.body = body});
  Expect("/a.tgz", {{Algorithm::kSha512, RawDigest(EVP_sha512(), body)}});
  ASSERT_TRUE(store::PutBytes(*store_, ArtifactFor("/a.tgz").key, body).ok());
  Start();
  auto r = Get("/a.tgz");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, body);
  EXPECT_EQ(r->header("X-Buildcache-Source"), "local");
  EXPECT_EQ(up_.Requests("/a.tgz"), 0);
  EXPECT_EQ(stored_mismatch_, 0);
}

TEST_F(ArtifactCacheTest, EnsureFetchesOnceAndReportsTheBlob) {
  const std::string body = Pattern(9'000);
  up_.Set("/e.whl", Route{.body = body});
  Expect("/e.whl", {Sha256Of(body)});
  Start();
  auto first = cache_->Ensure(ArtifactFor("/e.whl"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->digest, store::Digest::Of(body));
  EXPECT_EQ(first->size, body.size());
  auto second = cache_->Ensure(ArtifactFor("/e.whl"));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(up_.Requests("/e.whl"), 1);

  up_.Set("/bad.whl", Route{.body = "evil"});
  Expect("/bad.whl", {Sha256Of("good")});
  EXPECT_EQ(cache_->Ensure(ArtifactFor("/bad.whl")).status().code(), StatusCode::kDataLoss);
}

TEST_F(ArtifactCacheTest, BadUrlsAndMethodsAreRejected) {
  Start();
  url_override_ = "file:///etc/passwd";
  auto r = Get("/x.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 400);
  url_override_ = up_.Url("/x.whl\r\nX-Evil: 1");
  EXPECT_EQ(Get("/x.whl")->status, 400);
  EXPECT_EQ(cache_->Ensure(ArtifactFor("/x.whl")).status().code(), StatusCode::kInvalidArgument);
  url_override_.clear();
  auto post = Get("/x.whl", "DELETE");
  ASSERT_TRUE(post.ok());
  EXPECT_EQ(post->status, 405);
}

TEST_F(ArtifactCacheTest, StoredArtifactsSurviveARestart) {
  char tmpl[] = "/tmp/bc-upstream-lmdb-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string body = Pattern(20'000);
  up_.Set("/keep.whl", Route{.body = body});
  Expect("/keep.whl", {Sha256Of(body)});
  auto open = [&] {
    store::LmdbStoreOptions options;
    options.data_dir = dir;
    options.sync = false;
    auto s = store::LmdbStore::Open(options);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::unique_ptr<store::BlobStore>(std::move(s).value());
  };
  store_ = open();
  Start();
  ASSERT_EQ(Get("/keep.whl")->status, 200);
  server_.reset();
  cache_.reset();
  store_.reset();

  up_.Stop();
  store_ = open();
  Start();
  auto r = Get("/keep.whl");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, body);
  EXPECT_EQ(r->header("X-Buildcache-Source"), "local");
  server_.reset();
  cache_.reset();
  store_.reset();
  std::filesystem::remove_all(dir);
}

TEST(IntegrityTest, ParsesSriAndHex) {
  const std::string sha512 = RawDigest(EVP_sha512(), "x");
  auto best = ParseIntegrity("sha1-" + Base64(RawDigest(EVP_sha1(), "x")) + "  sha512-" +
                             Base64(sha512) + "?opt md5-abc");
  ASSERT_TRUE(best.ok());
  EXPECT_EQ(best->algorithm, Algorithm::kSha512);
  EXPECT_EQ(best->raw, sha512);
  auto sha384 = ParseIntegrity("sha384-" + Base64(RawDigest(EVP_sha384(), "x")));
  ASSERT_TRUE(sha384.ok());
  EXPECT_EQ(sha384->algorithm, Algorithm::kSha384);
  for (const char* bad : {"", "md5-abc", "sha512-", "sha512-!!!!", "sha256-YWJj", "garbage"}) {
    EXPECT_EQ(ParseIntegrity(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }

  auto hex = ParseHexDigest(Algorithm::kSha256, store::Digest::Of("x").Hex());
  ASSERT_TRUE(hex.ok());
  EXPECT_EQ(hex->raw, store::Digest::Of("x").raw());
  std::string upper = store::Digest::Of("x").Hex();
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(ParseHexDigest(Algorithm::kSha256, upper).ok());
  EXPECT_FALSE(ParseHexDigest(Algorithm::kSha1, store::Digest::Of("x").Hex()).ok());
  EXPECT_FALSE(ParseHexDigest(Algorithm::kSha1, std::string(40, 'g')).ok());
}

// A PeerSource in memory: serves `body` (or `fail_after` bytes of it, then fails), or declines.
class FakePeers : public PeerSource {
 public:
  Status Fetch(const Artifact&, const std::function<Status(const UpstreamResponse&)>& on_head,
               const std::function<Status(std::string_view)>& on_data) override {
    ++calls;
    if (decline) return FailedPrecondition("this agent owns it");
    if (not_found) {
      UpstreamResponse head;
      head.status = 404;
      return on_head(head);
    }
    UpstreamResponse head;
    head.status = 200;
    head.content_length = body.size();
    BC_RETURN_IF_ERROR(on_head(head));
    size_t n = fail_after ? *fail_after : body.size();
    for (size_t off = 0; off < n; off += 1000) {
      BC_RETURN_IF_ERROR(
          on_data(std::string_view(body).substr(off, std::min<size_t>(1000, n - off))));
    }
    if (fail_after) return Unavailable("peer died");
    if (!extra.empty()) BC_RETURN_IF_ERROR(on_data(extra));
    return Status::Ok();
  }
  std::string body;
  std::string extra;  // sent after body, beyond the length the head announced
  std::optional<size_t> fail_after;
  bool decline = false;
  bool not_found = false;
  std::atomic<int> calls{0};
};

TEST_F(ArtifactCacheTest, PeerSourceServesAMissWithoutTheUpstream) {
  const std::string body = Pattern(50'000);
  up_.Set("/p.whl", Route{.body = body});
  Expect("/p.whl", {Sha256Of(body)});
  FakePeers peers;
  peers.body = body;
  ArtifactCacheOptions options;
  options.peers = &peers;
  Start(options);
  auto got = Get("/p.whl");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, body);
  EXPECT_EQ(got->header("X-Buildcache-Source"), "peer");
  EXPECT_EQ(up_.Requests("/p.whl"), 0);
  EXPECT_EQ(Fetches("ok"), 0);  // the upstream metric counts upstream requests only
  EXPECT_TRUE(Stored("/p.whl"));
  EXPECT_EQ(peers.calls, 1);
}

TEST_F(ArtifactCacheTest, OwnerFetchesUpstreamWhenThePeerSourceDeclines) {
  const std::string body = Pattern(20'000);
  up_.Set("/o.whl", Route{.body = body});
  FakePeers peers;
  peers.decline = true;
  ArtifactCacheOptions options;
  options.peers = &peers;
  Start(options);
  auto got = Get("/o.whl");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->body, body);
  EXPECT_EQ(got->header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(up_.Requests("/o.whl"), 1);
  EXPECT_EQ(peers.calls, 1);
}

TEST_F(ArtifactCacheTest, PeerDyingMidStreamIsContinuedFromTheUpstream) {
  const std::string body = Pattern(80'000, 3);
  up_.Set("/d.whl", Route{.body = body});
  Expect("/d.whl", {Sha256Of(body)});
  FakePeers peers;
  peers.body = body;
  peers.fail_after = 30'000;
  ArtifactCacheOptions options;
  options.peers = &peers;
  Start(options);
  auto got = Get("/d.whl");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, body);  // no byte twice, none missing
  EXPECT_EQ(up_.Requests("/d.whl"), 1);
  ASSERT_TRUE(Stored("/d.whl"));
  EXPECT_EQ(store_->Stat(ArtifactFor("/d.whl").key)->digest, store::Digest::Of(body));
  // Ensure takes the same path.
  peers.body = Pattern(80'000, 4);
  peers.fail_after = 10'000;
  up_.Set("/e2.whl", Route{.body = body});
  Expect("/e2.whl", {Sha256Of(body)});
  auto ensured = cache_->Ensure(ArtifactFor("/e2.whl"));
  // The peer's first 10000 bytes differ from the upstream's: the stitched body is not stored.
  EXPECT_FALSE(ensured.ok());
  EXPECT_FALSE(Stored("/e2.whl"));
}

TEST_F(ArtifactCacheTest, CorruptPeerBytesAreNeitherStoredNorCompleted) {
  const std::string body = Pattern(40'000);
  up_.Set("/c.whl", Route{.body = body});
  Expect("/c.whl", {Sha256Of(body)});
  FakePeers peers;
  peers.body = Pattern(40'000, 9);  // same length, other bytes
  ArtifactCacheOptions options;
  options.peers = &peers;
  Start(options);
  auto got = Get("/c.whl");
  EXPECT_TRUE(!got.ok() || got->status != 200 || got->body != peers.body);
  EXPECT_FALSE(Stored("/c.whl"));
  EXPECT_GE(verify_failed_.load(), 1);
}

TEST_F(ArtifactCacheTest, PeerNotFoundIsTheAnswer) {
  up_.Set("/n.whl", Route{.body = "x"});
  FakePeers peers;
  peers.not_found = true;
  ArtifactCacheOptions options;
  options.peers = &peers;
  Start(options);
  auto got = Get("/n.whl");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status, 404);
  EXPECT_EQ(up_.Requests("/n.whl"), 0);
}

// A lying peer announces a length and then sends more. With the store unable to take the object
// (so no store writer checks the length), the bytes past the announced length must still never
// reach the client, and nothing is stored.
TEST_F(ArtifactCacheTest, PeerSendingMoreThanItAnnouncedNeverCompletesTheClientsBody) {
  store_ = std::make_unique<store::MemoryStore>(store::MemoryStoreOptions{.max_bytes = 1'000});
  const std::string body = Pattern(5'000);
  up_.Set("/more.whl", Route{.body = body});
  Expect("/more.whl", {Sha256Of(body)});
  FakePeers peers;
  peers.body = body;
  peers.extra = Pattern(3'000, 5);
  ArtifactCacheOptions options;
  options.peers = &peers;
  Start(options);
  http::testing::RawConnection c(server_->port());
  const std::string raw = RawGet(c, "/more.whl");
  // The head announces 5000 bytes; at most 4999 of them follow (the last is held back until
  // verified), and nothing of the extra bytes.
  const size_t head_end = raw.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos) << raw.substr(0, 200);
  const std::string sent = raw.substr(head_end + 4);
  EXPECT_LT(sent.size(), body.size());
  EXPECT_EQ(sent, body.substr(0, sent.size()));
  EXPECT_FALSE(Stored("/more.whl"));
}

}  // namespace
}  // namespace buildcache::upstream
