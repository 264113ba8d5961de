#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/store/digest.h"
#include "agent/store/lmdb_store.h"
#include "agent/store/memory_store.h"
#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/upstream.h"
#include "common/http/status_http.h"
#include "common/log/log.h"

namespace buildcache::upstream {
namespace {

using namespace std::chrono_literals;
using testing::FixtureUpstream;
using testing::Route;

constexpr std::string_view kIndex = R"({"name":"demo","versions":["1.0","1.1"]})";

class MetadataCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(up_.ok());
    store_ = std::make_unique<store::MemoryStore>();
    FetcherOptions fo;
    fo.attempts = 2;
    fo.backoff = 10ms;
    fetcher_ = NewHttpFetcher(fo);
    Start();
  }
  void TearDown() override { up_.Release(); }

  void Start() {
    UpstreamObserver observer;
    observer.on_fetch = [this](std::string_view frontend, std::string_view outcome, uint64_t bytes,
                               double) {
      std::lock_guard<std::mutex> lock(mu_);
      EXPECT_EQ(frontend, "test");
      fetches_[std::string(outcome)]++;
    };
    observer.on_stale_served = [this](std::string_view) { ++stale_; };
    observer.on_coalesced = [this](std::string_view) { ++coalesced_; };
    MetadataCacheOptions options;
    options.clock = [this] {
      std::lock_guard<std::mutex> lock(mu_);
      return now_;
    };
    cache_ = std::make_unique<MetadataCache>(*store_, *fetcher_, observer, options);
  }

  MetadataRequest Request(const std::string& path) {
    MetadataRequest r;
    r.frontend = "test";
    r.key = "test/meta" + path;
    r.url = up_.Url(path);
    r.ttl = 300s;
    r.negative_ttl = 60s;
    return r;
  }

  void Advance(std::chrono::seconds d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }

  int Fetches(const std::string& outcome) {
    std::lock_guard<std::mutex> lock(mu_);
    return fetches_[outcome];
  }

  FixtureUpstream up_;
  std::unique_ptr<store::BlobStore> store_;
  std::unique_ptr<Fetcher> fetcher_;
  std::unique_ptr<MetadataCache> cache_;

  std::mutex mu_;
  std::chrono::system_clock::time_point now_ =
      std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
  std::map<std::string, int> fetches_;
  std::atomic<int> stale_{0};
  std::atomic<int> coalesced_{0};
};

TEST_F(MetadataCacheTest, FreshDocumentIsServedFromTheStore) {
  up_.Set("/demo", Route{.body = std::string(kIndex), .content_type = "application/json"});
  auto first = cache_->Get(Request("/demo"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->body, kIndex);
  EXPECT_EQ(first->content_type, "application/json");
  EXPECT_EQ(first->fetched_at, now_);
  EXPECT_FALSE(first->stale);

  Advance(299s);
  auto second = cache_->Get(Request("/demo"));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->body, kIndex);
  EXPECT_FALSE(second->stale);
  EXPECT_EQ(up_.Requests("/demo"), 1);
  EXPECT_EQ(Fetches("ok"), 1);
  // Body and bookkeeping are ordinary store keys.
  EXPECT_TRUE(store_->Stat("test/meta/demo").ok());
  EXPECT_TRUE(store_->Stat("test/meta/demo#meta").ok());
}

// A store whose reads report that a replicating store pulled them from a peer agent.
class PeerPulledStore : public store::MemoryStore {
 public:
  bool peer = false;
  Result<std::unique_ptr<store::BlobReader>> Open(std::string_view key) override {
    BC_ASSIGN_OR_RETURN(auto inner, MemoryStore::Open(key));
    if (!peer) return inner;
    return store::WithOrigin(std::move(inner), "peer");
  }
};

TEST_F(MetadataCacheTest, DocumentSourceSaysUpstreamPeerOrLocal) {
  auto peer_store = std::make_unique<PeerPulledStore>();
  PeerPulledStore* pulled = peer_store.get();
  store_ = std::move(peer_store);
  Start();
  up_.Set("/demo", Route{.body = std::string(kIndex)});
  auto start = now_;
  auto fetched = cache_->Get(Request("/demo"));
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(DocumentSource(*fetched, start), "upstream");
  Advance(1s);
  start = now_;
  auto local = cache_->Get(Request("/demo"));
  ASSERT_TRUE(local.ok());
  EXPECT_FALSE(local->from_peer);
  EXPECT_EQ(DocumentSource(*local, start), "local");
  pulled->peer = true;  // as if this agent's copy had just come from a peer
  auto from_peer = cache_->Get(Request("/demo"));
  ASSERT_TRUE(from_peer.ok());
  EXPECT_TRUE(from_peer->from_peer);
  EXPECT_EQ(DocumentSource(*from_peer, start), "peer");
  EXPECT_EQ(up_.Requests("/demo"), 1);
}

TEST_F(MetadataCacheTest, ExpiredDocumentIsRevalidatedWithEtagAnd304RefreshesIt) {
  up_.Set("/demo", Route{.body = std::string(kIndex), .etag = "\"v1\""});
  ASSERT_TRUE(cache_->Get(Request("/demo")).ok());
  EXPECT_EQ(up_.LastHeader("/demo", "If-None-Match"), "");

  Advance(301s);
  auto revalidated = cache_->Get(Request("/demo"));
  ASSERT_TRUE(revalidated.ok()) << revalidated.status().ToString();
  EXPECT_EQ(revalidated->body, kIndex);
  EXPECT_EQ(revalidated->etag, "\"v1\"");
  EXPECT_EQ(revalidated->fetched_at, now_);
  EXPECT_EQ(up_.LastHeader("/demo", "If-None-Match"), "\"v1\"");
  EXPECT_EQ(up_.Requests("/demo"), 2);
  EXPECT_EQ(up_.BodiesSent("/demo"), 1);  // the body was not sent again
  EXPECT_EQ(Fetches("not_modified"), 1);

  // The 304 restarted the TTL.
  Advance(200s);
  ASSERT_TRUE(cache_->Get(Request("/demo")).ok());
  EXPECT_EQ(up_.Requests("/demo"), 2);
}

TEST_F(MetadataCacheTest, LastModifiedIsUsedWhenThereIsNoEtag) {
  const std::string date = "Wed, 21 Oct 2026 07:28:00 GMT";
  up_.Set("/demo", Route{.body = std::string(kIndex), .last_modified = date});
  ASSERT_TRUE(cache_->Get(Request("/demo")).ok());
  Advance(301s);
  auto doc = cache_->Get(Request("/demo"));
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->last_modified, date);
  EXPECT_EQ(up_.LastHeader("/demo", "If-Modified-Since"), date);
  EXPECT_EQ(up_.BodiesSent("/demo"), 1);
}

TEST_F(MetadataCacheTest, ChangedDocumentReplacesTheStoredOne) {
  up_.Set("/demo", Route{.body = "v1", .etag = "\"v1\""});
  ASSERT_EQ(cache_->Get(Request("/demo"))->body, "v1");
  up_.Set("/demo", Route{.body = "v2", .etag = "\"v2\""});
  Advance(301s);
  auto doc = cache_->Get(Request("/demo"));
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->body, "v2");
  EXPECT_EQ(doc->etag, "\"v2\"");
  Advance(10s);
  EXPECT_EQ(cache_->Get(Request("/demo"))->body, "v2");
  EXPECT_EQ(up_.Requests("/demo"), 2);
}

TEST_F(MetadataCacheTest, StaleCopyIsServedWithAWarningWhenTheUpstreamIsDown) {
  up_.Set("/demo", Route{.body = std::string(kIndex)});
  ASSERT_TRUE(cache_->Get(Request("/demo")).ok());
  up_.Stop();
  Advance(3600s);

  char path[] = "/tmp/bc-upstream-log-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  log::SetOutputFd(fd);
  auto doc = cache_->Get(Request("/demo"));
  log::SetOutputFd(2);
  close(fd);
  std::stringstream logged;
  logged << std::ifstream(path).rdbuf();
  unlink(path);

  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  EXPECT_TRUE(doc->stale);
  EXPECT_EQ(doc->body, kIndex);
  EXPECT_EQ(stale_, 1);
  EXPECT_EQ(Fetches("error"), 1);
  EXPECT_NE(logged.str().find("\"level\":\"warn\",\"msg\":\"serving stale metadata\""),
            std::string::npos)
      << logged.str();
  EXPECT_NE(logged.str().find("\"age_seconds\":3600"), std::string::npos) << logged.str();
}

TEST_F(MetadataCacheTest, StaleCopyIsServedWhenTheUpstreamFails) {
  up_.Set("/demo", Route{.body = std::string(kIndex)});
  ASSERT_TRUE(cache_->Get(Request("/demo")).ok());
  up_.Set("/demo", Route{.body = "x", .fail_first = 1000, .fail_status = 503});
  Advance(301s);
  auto doc = cache_->Get(Request("/demo"));
  ASSERT_TRUE(doc.ok());
  EXPECT_TRUE(doc->stale);
  EXPECT_EQ(doc->body, kIndex);
  EXPECT_EQ(up_.Requests("/demo"), 3);  // one fetch, two attempts

  // Once the upstream is back, the next request refreshes.
  up_.Set("/demo", Route{.body = "new"});
  auto fresh = cache_->Get(Request("/demo"));
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->stale);
  EXPECT_EQ(fresh->body, "new");
}

TEST_F(MetadataCacheTest, NothingCachedAndUpstreamDownIsUnavailableWithTheReason) {
  up_.Stop();
  auto doc = cache_->Get(Request("/demo"));
  ASSERT_FALSE(doc.ok());
  EXPECT_EQ(doc.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(http::HttpCodeFor(doc.status().code()), 502);
  EXPECT_NE(doc.status().message().find(up_.Url("/demo")), std::string::npos)
      << doc.status().message();
  EXPECT_NE(doc.status().message().find("refused"), std::string::npos) << doc.status().message();
}

TEST_F(MetadataCacheTest, NothingCachedAndUpstreamErrorIsUnavailable) {
  up_.Set("/demo", Route{.status = 403, .body = "denied"});
  auto doc = cache_->Get(Request("/demo"));
  ASSERT_FALSE(doc.ok());
  EXPECT_EQ(doc.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(doc.status().message().find("answered 403"), std::string::npos);
}

TEST_F(MetadataCacheTest, NotFoundIsCachedForTheNegativeTtl) {
  up_.Set("/missing", Route{.status = 404, .body = "no such project"});
  auto first = cache_->Get(Request("/missing"));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->status, 404);
  EXPECT_EQ(first->body, "");
  Advance(59s);
  EXPECT_EQ(cache_->Get(Request("/missing"))->status, 404);
  EXPECT_EQ(up_.Requests("/missing"), 1);
  EXPECT_EQ(Fetches("not_found"), 1);

  // After the negative TTL the upstream is asked again; the project now exists.
  up_.Set("/missing", Route{.body = "created"});
  Advance(2s);
  auto now_there = cache_->Get(Request("/missing"));
  ASSERT_TRUE(now_there.ok());
  EXPECT_EQ(now_there->status, 200);
  EXPECT_EQ(now_there->body, "created");
  EXPECT_EQ(up_.Requests("/missing"), 2);
}

TEST_F(MetadataCacheTest, GoneReplacesAStoredDocument) {
  up_.Set("/demo", Route{.body = std::string(kIndex)});
  ASSERT_TRUE(cache_->Get(Request("/demo")).ok());
  up_.Set("/demo", Route{.status = 410, .body = "removed"});
  Advance(301s);
  auto doc = cache_->Get(Request("/demo"));
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->status, 410);
  EXPECT_EQ(doc->body, "");
  EXPECT_FALSE(store_->Stat("test/meta/demo").ok());  // the old body is gone too
  Advance(30s);
  EXPECT_EQ(cache_->Get(Request("/demo"))->status, 410);
  EXPECT_EQ(up_.Requests("/demo"), 2);
}

TEST_F(MetadataCacheTest, ConcurrentRefreshesAreCoalesced) {
  up_.Set("/demo", Route{.body = std::string(kIndex), .hold = true});
  constexpr int kCallers = 6;
  std::vector<Result<Document>> results(kCallers, Internal("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&, i] { results[i] = cache_->Get(Request("/demo")); });
  }
  for (int i = 0; i < 1000 && (coalesced_ < kCallers - 1 || up_.Waiting() < 1); ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(coalesced_, kCallers - 1);
  up_.Release();
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, kIndex);
  }
  EXPECT_EQ(up_.Requests("/demo"), 1);
}

TEST_F(MetadataCacheTest, OversizedDocumentIsAnUpstreamFailure) {
  up_.Set("/big", Route{.body = std::string(10'000, 'x')});
  up_.Set("/big-chunked",
          Route{.body = std::string(10'000, 'x'), .chunked = true, .write_size = 1'000});
  auto request = Request("/big");
  request.max_size = 4'096;
  auto doc = cache_->Get(request);
  EXPECT_EQ(doc.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(doc.status().message().find("4096 byte limit"), std::string::npos)
      << doc.status().message();
  request = Request("/big-chunked");
  request.max_size = 4'096;
  EXPECT_EQ(cache_->Get(request).status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(store_->Stat("test/meta/big-chunked").ok());
}

TEST_F(MetadataCacheTest, BodyThatDoesNotMatchItsRecordCountsAsNotCached) {
  up_.Set("/demo", Route{.body = "original"});
  ASSERT_TRUE(cache_->Get(Request("/demo")).ok());
  // A crash between the two commits (or a replica of only one key) leaves them disagreeing.
  ASSERT_TRUE(store::PutBytes(*store_, "test/meta/demo", "something else").ok());
  auto doc = cache_->Get(Request("/demo"));
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->body, "original");
  EXPECT_EQ(up_.Requests("/demo"), 2);
}

TEST_F(MetadataCacheTest, BadRequestsAreRejected) {
  auto request = Request("/demo");
  request.url = "gopher://example.invalid/";
  EXPECT_EQ(cache_->Get(request).status().code(), StatusCode::kInvalidArgument);
  request.url = up_.Url("/demo\r\nX-Evil: 1");
  EXPECT_EQ(cache_->Get(request).status().code(), StatusCode::kInvalidArgument);
  request = Request("/demo");
  request.fetch.headers = {{"Accept", "a\r\nX-Evil: 1"}};
  EXPECT_EQ(cache_->Get(request).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(MetadataCacheTest, DocumentsSurviveARestart) {
  char tmpl[] = "/tmp/bc-upstream-lmdb-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto open = [&] {
    store::LmdbStoreOptions options;
    options.data_dir = dir;
    options.sync = false;
    auto s = store::LmdbStore::Open(options);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::unique_ptr<store::BlobStore>(std::move(s).value());
  };
  cache_.reset();
  store_ = open();
  Start();
  up_.Set("/demo", Route{.body = std::string(kIndex),
                         .content_type = "application/vnd.pypi.simple.v1+json",
                         .etag = "\"e\""});
  up_.Set("/missing", Route{.status = 404});
  ASSERT_TRUE(cache_->Get(Request("/demo")).ok());
  ASSERT_EQ(cache_->Get(Request("/missing"))->status, 404);
  cache_.reset();
  store_.reset();

  up_.Stop();
  store_ = open();
  Start();
  Advance(10s);
  auto doc = cache_->Get(Request("/demo"));
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  EXPECT_FALSE(doc->stale);
  EXPECT_EQ(doc->body, kIndex);
  EXPECT_EQ(doc->etag, "\"e\"");
  EXPECT_EQ(doc->content_type, "application/vnd.pypi.simple.v1+json");
  EXPECT_EQ(cache_->Get(Request("/missing"))->status, 404);
  Advance(600s);
  auto stale = cache_->Get(Request("/demo"));
  ASSERT_TRUE(stale.ok());
  EXPECT_TRUE(stale->stale);
  cache_.reset();
  store_.reset();
  std::filesystem::remove_all(dir);
}

// What a Stream handed on.
struct Streamed {
  Result<Document> result = Internal("not run");
  std::optional<Document> head;
  std::string body;
  std::vector<size_t> pieces;
};

Streamed RunStream(MetadataCache& cache, const MetadataRequest& request,
                   std::function<Status(const Document&)> on_head = {}) {
  Streamed out;
  out.result = cache.Stream(
      request,
      [&](const Document& doc) {
        out.head = doc;
        return on_head ? on_head(doc) : Status::Ok();
      },
      [&](std::string_view data) {
        out.body.append(data);
        out.pieces.push_back(data.size());
        return Status::Ok();
      });
  return out;
}

TEST_F(MetadataCacheTest, StreamPassesAColdBodyOnWhileItArrives) {
  const std::string body(600 * 1024, 'p');
  up_.Set("/big", Route{.body = body, .content_type = "application/json", .stall_after = 4096});
  std::atomic<size_t> received{0};
  std::atomic<bool> done{false};
  Result<Document> result = Internal("not run");
  std::optional<Document> head;
  std::thread t([&] {
    result = cache_->Stream(
        Request("/big"),
        [&](const Document& doc) {
          head = doc;
          return Status::Ok();
        },
        [&](std::string_view data) {
          received += data.size();
          return Status::Ok();
        });
    done = true;
  });
  // The upstream holds the rest back: the first bytes reached the caller before the last one
  // was sent (bounded wait, not a timing assertion).
  for (int i = 0; i < 1000 && received < 4096; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(received.load(), 4096u);
  EXPECT_FALSE(done.load());
  up_.Release();
  t.join();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(received.load(), body.size());
  ASSERT_TRUE(head.has_value());
  EXPECT_TRUE(head->body_sha256.empty());  // not known while it streamed
  EXPECT_EQ(result->body_sha256, store::Digest::Of(body).Hex());
  EXPECT_EQ(DocumentSource(*head, now_), "upstream");
  // Stored: the next Stream reads it from the store, in bounded pieces, and names its digest.
  Streamed again = RunStream(*cache_, Request("/big"));
  ASSERT_TRUE(again.result.ok());
  EXPECT_EQ(again.body, body);
  EXPECT_EQ(again.head->body_sha256, store::Digest::Of(body).Hex());
  EXPECT_EQ(again.head->stored_size, body.size());
  for (size_t n : again.pieces) EXPECT_LE(n, size_t{256} * 1024);
  EXPECT_EQ(up_.Requests("/big"), 1);
  // Get sees the same document.
  auto got = cache_->Get(Request("/big"));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->body, body);
  EXPECT_EQ(got->body_sha256, again.head->body_sha256);
}

TEST_F(MetadataCacheTest, StreamStopsBeforeTheBodyWhenTheCallerHasWhatItNeeds) {
  up_.Set("/demo", Route{.body = std::string(kIndex)});
  ASSERT_TRUE(RunStream(*cache_, Request("/demo")).result.ok());
  Streamed s = RunStream(*cache_, Request("/demo"),
                         [](const Document&) { return Cancelled("derived copy in memory"); });
  EXPECT_EQ(s.result.status().code(), StatusCode::kCancelled);
  EXPECT_TRUE(s.body.empty());
  EXPECT_EQ(up_.Requests("/demo"), 1);
}

TEST_F(MetadataCacheTest, StreamOfAColdBodyCutOffStoresNothing) {
  // Chunked, so the size limit is only found out in the middle of the body.
  up_.Set("/cut", Route{.body = std::string(100'000, 'c'), .chunked = true, .write_size = 10'000});
  MetadataRequest request = Request("/cut");
  request.max_size = 50'000;
  Streamed s = RunStream(*cache_, request);
  EXPECT_EQ(s.result.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(s.head.has_value());
  EXPECT_GT(s.body.size(), 0u);
  EXPECT_LE(s.body.size(), 50'000u);
  EXPECT_FALSE(store_->Stat("test/meta/cut").ok());
  EXPECT_FALSE(store_->Stat("test/meta/cut#meta").ok());
}

TEST_F(MetadataCacheTest, StreamServesStaleAndNotFoundLikeGet) {
  up_.Set("/demo", Route{.body = std::string(kIndex), .etag = "\"v1\""});
  ASSERT_TRUE(RunStream(*cache_, Request("/demo")).result.ok());
  Advance(400s);
  up_.Set("/demo", Route{.status = 503, .body = "down"});
  Streamed stale = RunStream(*cache_, Request("/demo"));
  ASSERT_TRUE(stale.result.ok()) << stale.result.status().ToString();
  EXPECT_TRUE(stale.head->stale);
  EXPECT_EQ(stale.body, kIndex);
  up_.Set("/demo", Route{.body = "ignored", .etag = "\"v1\""});
  Streamed revalidated = RunStream(*cache_, Request("/demo"));
  ASSERT_TRUE(revalidated.result.ok());
  EXPECT_FALSE(revalidated.head->stale);
  EXPECT_EQ(revalidated.body, kIndex);
  EXPECT_EQ(Fetches("not_modified"), 1);
  up_.Set("/gone", Route{.status = 404, .body = "no"});
  Streamed missing = RunStream(*cache_, Request("/gone"));
  ASSERT_TRUE(missing.result.ok());
  EXPECT_EQ(missing.head->status, 404);
  EXPECT_TRUE(missing.body.empty());
  EXPECT_EQ(RunStream(*cache_, Request("/gone")).head->status, 404);
  EXPECT_EQ(up_.Requests("/gone"), 1);
}

// With forbidden_is_not_found (the GOPROXY protocol's reading of 403), Get and Stream agree: the
// 403 is a remembered not-found, not an upstream failure.
TEST_F(MetadataCacheTest, ForbiddenReadsAsNotFoundInGetAndStream) {
  up_.Set("/denied", Route{.status = 403, .body = "forbidden"});
  MetadataRequest request = Request("/denied");
  request.forbidden_is_not_found = true;
  auto got = cache_->Get(request);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->status, 404);
  request.key = "test/meta/denied-streamed";
  Streamed streamed = RunStream(*cache_, request);
  ASSERT_TRUE(streamed.result.ok()) << streamed.result.status().ToString();
  EXPECT_EQ(streamed.head->status, 404);
  EXPECT_TRUE(streamed.body.empty());
  EXPECT_EQ(RunStream(*cache_, request).head->status, 404);
  EXPECT_EQ(up_.Requests("/denied"), 2);  // once for each key; the second Stream is remembered
}

TEST_F(MetadataCacheTest, ConcurrentStreamsFetchOnce) {
  up_.Set("/demo", Route{.body = std::string(kIndex), .hold = true});
  std::vector<std::thread> threads;
  std::atomic<int> complete{0};
  for (int i = 0; i < 5; ++i) {
    threads.emplace_back([&] {
      Streamed s = RunStream(*cache_, Request("/demo"));
      if (s.result.ok() && s.body == kIndex) ++complete;
    });
  }
  for (int i = 0; i < 1000 && up_.Waiting() == 0; ++i) std::this_thread::sleep_for(10ms);
  up_.Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(complete.load(), 5);
  EXPECT_EQ(up_.Requests("/demo"), 1);
}

}  // namespace
}  // namespace buildcache::upstream
