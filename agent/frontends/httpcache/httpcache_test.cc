#include "agent/frontends/httpcache/httpcache.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/store/lmdb_store.h"
#include "agent/store/memory_store.h"
#include "common/http/client.h"
#include "common/http/testing.h"

namespace buildcache::httpcache {
namespace {

using http::Client;
using http::testing::RawConnection;
using namespace std::chrono_literals;

std::string Sha(std::string_view data) { return store::Digest::Of(data).Hex(); }

std::string Bytes(size_t n, int seed) {
  std::string s(n, '\0');
  uint32_t x = static_cast<uint32_t>(seed) * 2654435761u + 1;
  for (auto& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

class HttpCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(std::make_unique<store::MemoryStore>()); }

  void Start(std::unique_ptr<store::BlobStore> store, uint64_t max_object = 1 << 20) {
    server_.reset();
    frontend_.reset();
    store_ = std::move(store);
    HttpCacheOptions options;
    options.max_object_size = max_object;
    options.observer.on_request = [this](const RequestInfo& info) {
      std::lock_guard lock(mu_);
      seen_.push_back(info);
    };
    frontend_ = std::make_unique<HttpCacheFrontend>(*store_, options);
    router_ = std::make_unique<http::Router>();
    frontend_->AddRoutes(*router_);
    Listen();
  }

  // (Re)starts the server on router_ and a client for it.
  void Listen() {
    server_.reset();
    http::ServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    auto server = http::Server::Start(server_options, router_->AsHandler());
    ASSERT_TRUE(server.ok());
    server_ = std::move(server).value();
    client_ = std::make_unique<Client>("127.0.0.1", server_->port());
  }

  void TearDown() override {
    server_.reset();
    client_.reset();
  }

  http::ClientResponse Do(std::string_view method, std::string_view target,
                          std::string_view body = {}, const http::HeaderList& headers = {}) {
    auto r = client_->Fetch(method, target, headers, body);
    EXPECT_TRUE(r.ok()) << method << " " << target << ": " << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }
  int Status(std::string_view method, std::string_view target, std::string_view body = {}) {
    return Do(method, target, body).status;
  }

  // Sends raw bytes on a new connection and returns the status line's code (0 if none).
  int RawStatus(const std::string& wire) {
    RawConnection c(server_->port());
    c.Send(wire);
    std::string got = c.ReadUntil("\r\n\r\n");
    if (!got.starts_with("HTTP/1.1 ")) return 0;
    return std::atoi(got.c_str() + 9);
  }

  std::vector<RequestInfo> Seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

  std::unique_ptr<store::BlobStore> store_;
  std::unique_ptr<HttpCacheFrontend> frontend_;
  std::unique_ptr<http::Router> router_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<Client> client_;
  std::mutex mu_;
  std::vector<RequestInfo> seen_;
};

TEST_F(HttpCacheTest, GenericPutGetHeadDeleteRoundTrip) {
  EXPECT_EQ(Status("GET", "/cache/key1"), 404);
  EXPECT_EQ(Status("HEAD", "/cache/key1"), 404);
  EXPECT_EQ(Status("PUT", "/cache/key1", "hello"), 201);
  auto r = Do("GET", "/cache/key1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(r.header("content-type"), "application/octet-stream");
  r = Do("HEAD", "/cache/key1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "5");
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(Status("PUT", "/cache/key1", "replaced"), 201);
  EXPECT_EQ(Do("GET", "/cache/key1").body, "replaced");
  EXPECT_EQ(Status("DELETE", "/cache/key1"), 204);
  EXPECT_EQ(Status("GET", "/cache/key1"), 404);
  EXPECT_EQ(Status("DELETE", "/cache/key1"), 404);
}

TEST_F(HttpCacheTest, KeysAreNamespacedInTheStore) {
  EXPECT_EQ(Status("PUT", "/cache/some/key", "v"), 201);
  EXPECT_TRUE(store_->Stat("httpcache/some/key").ok());
  EXPECT_FALSE(store_->Stat("some/key").ok());
}

TEST_F(HttpCacheTest, EmptyAndLargeObjectsStream) {
  EXPECT_EQ(Status("PUT", "/cache/empty", ""), 201);
  auto r = Do("GET", "/cache/empty");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "");
  std::string big = Bytes(1 << 20, 7);  // beyond the one-write size: Begin/Write/End
  EXPECT_EQ(Status("PUT", "/cache/big", big), 201);
  r = Do("GET", "/cache/big");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body == big);
}

TEST_F(HttpCacheTest, CcacheLayoutsAllWork) {
  // subdirs (default): <url>/<2 chars>/<rest>; flat: <url>/<key>; bazel: <url>/ac/<64 hex>.
  std::string key = "ac1kq2j9vmf3c5u5lq6dvbi8e1hc2f0po";  // ccache's base16+base32hex shape
  EXPECT_EQ(Status("PUT", "/cache/ac/" + key.substr(2), "subdirs"), 201);
  EXPECT_EQ(Do("GET", "/cache/ac/" + key.substr(2)).body, "subdirs");
  EXPECT_EQ(Status("PUT", "/cache/" + key, "flat"), 201);
  EXPECT_EQ(Do("GET", "/cache/" + key).body, "flat");
  std::string hex40 = "0123456789abcdef0123456789abcdef01234567";
  std::string bazel = hex40 + hex40.substr(0, 24);
  EXPECT_EQ(Status("PUT", "/cache/ac/" + bazel, "bazel layout"), 201);
  EXPECT_EQ(Do("GET", "/cache/ac/" + bazel).body, "bazel layout");
  EXPECT_EQ(Do("GET", "/ac/" + bazel).body, "bazel layout");  // same entry as Bazel's own path
}

TEST_F(HttpCacheTest, BazelActionCacheAtRootAndUnderPrefix) {
  std::string k = Sha("action");
  EXPECT_EQ(Status("GET", "/ac/" + k), 404);
  EXPECT_EQ(Status("PUT", "/ac/" + k, "any action result bytes"), 201);
  EXPECT_EQ(Do("GET", "/ac/" + k).body, "any action result bytes");
  EXPECT_EQ(Do("GET", "/cache/ac/" + k).body, "any action result bytes");
  std::string upper = k;
  for (auto& c : upper) c = static_cast<char>(std::toupper(c));
  EXPECT_EQ(Do("GET", "/ac/" + upper).body, "any action result bytes");
  EXPECT_EQ(Status("GET", "/ac/abc"), 400);
  EXPECT_EQ(Status("GET", "/ac/" + k + "/x"), 400);
  EXPECT_EQ(Status("GET", "/ac/" + std::string(64, 'g')), 400);
}

TEST_F(HttpCacheTest, BazelCasVerifiesUploads) {
  std::string blob = Bytes(100000, 3);
  std::string digest = Sha(blob);
  EXPECT_EQ(Status("PUT", "/cas/" + digest, blob), 201);
  EXPECT_TRUE(Do("GET", "/cas/" + digest).body == blob);
  EXPECT_EQ(Do("HEAD", "/cache/cas/" + digest).header("content-length"), "100000");

  std::string other = Sha("something else");
  auto r = Do("PUT", "/cas/" + other, blob);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("does not hash to"), std::string::npos) << r.body;
  EXPECT_EQ(Status("GET", "/cas/" + other), 404);
  EXPECT_EQ(Status("PUT", "/cache/cas/" + other, "nope"), 400);
  EXPECT_EQ(Status("GET", "/cache/cas/" + other), 404);
  EXPECT_EQ(Status("PUT", "/cas/nothex", "x"), 400);
}

TEST_F(HttpCacheTest, GradleStoreWithExpectContinue) {
  std::string body = Bytes(200000, 11);
  RawConnection c(server_->port());
  ASSERT_TRUE(
      c.Send("PUT /cache/0123abcd HTTP/1.1\r\nHost: x\r\nContent-Type: "
             "application/vnd.gradle.build-cache-artifact.v2\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\nExpect: 100-continue\r\n\r\n"));
  EXPECT_EQ(c.ReadUntil("\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(c.Send(body));
  std::string got = c.ReadUntil("\r\n\r\n");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 201 ")) << got;
  EXPECT_TRUE(Do("GET", "/cache/0123abcd").body == body);
}

TEST_F(HttpCacheTest, TooLargeIsRejectedBeforeTheBodyIsSent) {
  RawConnection c(server_->port());
  ASSERT_TRUE(
      c.Send("PUT /cache/huge HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
             "Expect: 100-continue\r\n\r\n"));
  std::string got = c.ReadUntil("\r\n\r\n");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 413 ")) << got;
  EXPECT_EQ(got.find("100 Continue"), std::string::npos);
  EXPECT_EQ(Status("GET", "/cache/huge"), 404);
  // Without Expect too.
  EXPECT_EQ(Status("PUT", "/cache/huge", std::string((1 << 20) + 1, 'x')), 413);
  EXPECT_EQ(Status("PUT", "/cache/justfits", std::string(1 << 20, 'x')), 201);
}

TEST_F(HttpCacheTest, ChunkedUploadBeyondTheLimitIs413AndNothingIsStored) {
  std::string wire = "PUT /cache/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 20; ++i) wire += "10000\r\n" + std::string(0x10000, 'c') + "\r\n";
  wire += "0\r\n\r\n";
  EXPECT_EQ(RawStatus(wire), 413);
  EXPECT_EQ(Status("GET", "/cache/chunky"), 404);

  std::string ok =
      "PUT /cache/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  EXPECT_EQ(RawStatus(ok), 201);
  EXPECT_EQ(Do("GET", "/cache/chunky").body, "abcde");
}

TEST_F(HttpCacheTest, BadKeysAndTraversalAre400) {
  for (std::string target :
       {"/cache/a//../b", "/cache/../etc/passwd", "/cache/a/../b", "/cache/./a", "/cache/a/.",
        "/cache/%2e%2e/x", "/cache/%2E%2E", "/cache/a/%2e", "/cache/a%2f%2e%2e%2fb", "/cache/a%00b",
        "/cache/a%5cb", "/cache/a%zz", "/cache/a%2", "/cache/a%", "/cache/a b", "/cache/%2f",
        "/cache/a%3bb"}) {
    EXPECT_EQ(RawStatus("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n"), 400) << target;
    EXPECT_EQ(RawStatus("PUT " + target + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"),
              400)
        << target;
  }
  // A raw backslash or control byte in the target is refused by the HTTP parser itself.
  EXPECT_EQ(RawStatus("GET /cache/a\\..\\b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(RawStatus(std::string("GET /cache/a\0b HTTP/1.1\r\nHost: x\r\n\r\n", 33)), 400);
  EXPECT_EQ(Status("GET", "/cache/" + std::string(1100, 'a')), 400);
  EXPECT_EQ(Status("GET", "/cache/" + std::string(300, 'a')), 400);  // segment > 255
  EXPECT_EQ(Status("GET", "/cache/" + std::string(200, 'a')), 404);
  EXPECT_EQ(Status("PUT", "/cache/dir/", "x"), 400);
  EXPECT_EQ(Status("GET", "/cache/"), 400);
  EXPECT_EQ(Status("GET", "/elsewhere"), 404);
  EXPECT_EQ(Status("GET", "/cachex/a"), 404);
  // Percent-encoded safe characters are fine and name the same key.
  EXPECT_EQ(Status("PUT", "/cache/a%2Db", "dash"), 201);
  EXPECT_EQ(Do("GET", "/cache/a-b").body, "dash");
}

TEST_F(HttpCacheTest, SccacheWebDavSequence) {
  // What sccache (OpenDAL's WebDAV service) sends: a read and write check of .sccache_check, then
  // per object a PROPFIND walk up the parent collections, MKCOLs, and the PUT.
  const std::string root = "/cache/sccache/";
  EXPECT_EQ(Status("GET", root + ".sccache_check"), 404);
  const std::string propfind_body =
      "<?xml version=\"1.0\" encoding=\"utf-8\" ?><D:propfind "
      "xmlns:D=\"DAV:\"><D:allprop/></D:propfind>";
  auto r =
      Do("PROPFIND", root, propfind_body, {{"Depth", "0"}, {"Content-Type", "application/xml"}});
  EXPECT_EQ(r.status, 207);
  EXPECT_NE(r.body.find("<D:collection/>"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("<D:getlastmodified>"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("<D:href>/cache/sccache/</D:href>"), std::string::npos) << r.body;
  EXPECT_EQ(Status("MKCOL", root), 201);
  EXPECT_EQ(Status("MKCOL", root + "a/"), 201);
  EXPECT_EQ(Status("PUT", root + ".sccache_check", "Hello, World!"), 201);
  std::string key = Sha("object");
  std::string path =
      root + key.substr(0, 1) + "/" + key.substr(1, 1) + "/" + key.substr(2, 1) + "/" + key;
  EXPECT_EQ(Status("PUT", path, "compiled"), 201);
  EXPECT_EQ(Do("GET", path).body, "compiled");
  r = Do("PROPFIND", path, propfind_body, {{"Depth", "0"}});
  EXPECT_EQ(r.status, 207);
  EXPECT_NE(r.body.find("<D:getcontentlength>8</D:getcontentlength>"), std::string::npos);
  EXPECT_EQ(r.body.find("<D:collection/>"), std::string::npos);
  EXPECT_EQ(Do("PROPFIND", root + "missing", propfind_body).status, 404);
  r = Do("OPTIONS", root);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("dav"), "1");
  EXPECT_NE(r.header("allow").find("PROPFIND"), std::string::npos);
}

TEST_F(HttpCacheTest, EndpointWithTrailingSlashNamesTheSameObjects) {
  // sccache with SCCACHE_WEBDAV_ENDPOINT=.../cache/sccache/ asks for .../sccache//.sccache_check;
  // refusing it (400) kept sccache's server from starting.
  EXPECT_EQ(Status("GET", "/cache/sccache//.sccache_check"), 404);
  EXPECT_EQ(Status("PUT", "/cache/sccache//.sccache_check", "Hello, World!"), 201);
  EXPECT_EQ(Do("GET", "/cache/sccache/.sccache_check").body, "Hello, World!");
  EXPECT_EQ(Status("MKCOL", "/cache/sccache//a/"), 201);
  EXPECT_EQ(Status("PUT", "/cache//sccache///a/obj", "compiled"), 201);
  EXPECT_EQ(Do("GET", "/cache/sccache/a/obj").body, "compiled");
  // Merging slashes does not open a way out of the key space.
  EXPECT_EQ(Status("PUT", "/cache/sccache//..//x", "evil"), 400);
  EXPECT_EQ(Status("GET", "/cache/x"), 404);
}

TEST_F(HttpCacheTest, UnsupportedMethodsAre405) {
  auto r = Do("POST", "/cache/x", "body");
  EXPECT_EQ(r.status, 405);
  EXPECT_NE(r.header("allow").find("PUT"), std::string::npos);
  EXPECT_EQ(Status("MKCOL", "/ac/" + Sha("x")), 405);
  EXPECT_EQ(Status("PATCH", "/cas/" + Sha("x")), 405);
}

TEST_F(HttpCacheTest, ObserverSeesOutcomesAndBytes) {
  EXPECT_EQ(Status("PUT", "/cache/obs", "12345"), 201);
  EXPECT_EQ(Status("GET", "/cache/obs"), 200);
  EXPECT_EQ(Status("GET", "/cache/none"), 404);
  EXPECT_EQ(Status("GET", "/cache/a/%2e%2e/b"), 400);
  EXPECT_EQ(Status("PUT", "/cas/" + Sha("a"), "b"), 400);
  EXPECT_EQ(Status("PROPFIND", "/cache/"), 207);
  // The observer runs after the response is sent: wait for the last call.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (Seen().size() < 6 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  auto seen = Seen();
  ASSERT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen[0].outcome, Outcome::kStored);
  EXPECT_EQ(seen[0].bytes_in, 5u);
  EXPECT_EQ(seen[0].status, 201);
  EXPECT_EQ(seen[1].outcome, Outcome::kHit);
  EXPECT_EQ(seen[1].bytes_out, 5u);
  EXPECT_EQ(seen[2].outcome, Outcome::kMiss);
  EXPECT_EQ(seen[2].status, 404);
  EXPECT_EQ(seen[3].outcome, Outcome::kRejected);
  EXPECT_EQ(seen[4].outcome, Outcome::kRejected);
  EXPECT_EQ(seen[4].api, Api::kBazelCas);
  EXPECT_EQ(seen[5].outcome, Outcome::kMeta);
  EXPECT_EQ(seen[5].api, Api::kWebDav);
  EXPECT_EQ(OutcomeName(Outcome::kHit), "hit");
  EXPECT_EQ(ApiName(Api::kBazelAc), "bazel_ac");
}

TEST_F(HttpCacheTest, ConcurrentPutsAndGetsNeverSeeTornObjects) {
  // Every version of the shared key is one of these; a GET must return one of them whole.
  std::vector<std::string> versions;
  for (int i = 0; i < 4; ++i) versions.push_back(Bytes(50000 + i * 1000, 100 + i));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      Client client("127.0.0.1", server_->port());
      for (int i = 0; i < 25; ++i) {
        std::string own = "/cache/t" + std::to_string(t) + "/" + std::to_string(i);
        std::string body = Bytes(1000 + t * 100 + i, t * 1000 + i);
        auto put = client.Fetch("PUT", own, {}, body);
        if (!put.ok() || put->status != 201) failures++;
        auto get = client.Fetch("GET", own);
        if (!get.ok() || get->body != body) failures++;
        if (t % 2 == 0) {
          auto r = client.Fetch("PUT", "/cache/shared", {}, versions[(t + i) % versions.size()]);
          if (!r.ok() || r->status != 201) failures++;
        } else {
          auto r = client.Fetch("GET", "/cache/shared");
          if (!r.ok()) {
            failures++;
          } else if (r->status == 200 &&
                     std::find(versions.begin(), versions.end(), r->body) == versions.end()) {
            failures++;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(HttpCacheTest, FileBackedBlobsAreServedWithSendFile) {
  std::string dir =
      (std::filesystem::temp_directory_path() / ("httpcache_test_" + std::to_string(getpid())))
          .string();
  std::filesystem::remove_all(dir);
  store::LmdbStoreOptions options;
  options.data_dir = dir;
  options.sync = false;
  auto lmdb = store::LmdbStore::Open(options);
  ASSERT_TRUE(lmdb.ok()) << lmdb.status().ToString();
  Start(std::move(lmdb).value(), 8 << 20);
  std::string big = Bytes(3 << 19, 5);
  EXPECT_EQ(Status("PUT", "/cache/file", big), 201);
  auto reader = store_->Open("httpcache/file");
  ASSERT_TRUE(reader.ok());
  EXPECT_GE((*reader)->fd(), 0);
  reader = Result<std::unique_ptr<store::BlobReader>>(NotFound("closed"));
  auto r = Do("GET", "/cache/file");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body == big);
  EXPECT_EQ(Do("HEAD", "/cache/file").header("content-length"), std::to_string(big.size()));
  server_.reset();
  client_.reset();
  frontend_.reset();
  store_.reset();
  std::filesystem::remove_all(dir);
}

TEST(DecodeKeyTest, AcceptsSafeKeysAndRejectsTraversal) {
  EXPECT_EQ(*DecodeKey("ab/cdef"), "ab/cdef");
  EXPECT_EQ(*DecodeKey("a%2Db"), "a-b");
  EXPECT_EQ(*DecodeKey("a%2fb"), "a/b");
  EXPECT_EQ(*DecodeKey(".sccache_check"), ".sccache_check");
  EXPECT_EQ(*DecodeKey("x.y_z-~+=,@"), "x.y_z-~+=,@");
  // Empty segments are merged away, as WebDAV servers merge slashes; the key stays canonical.
  EXPECT_EQ(*DecodeKey("a//b"), "a/b");
  EXPECT_EQ(*DecodeKey("/a"), "a");
  EXPECT_EQ(*DecodeKey("a/"), "a");
  EXPECT_EQ(*DecodeKey("/.sccache_check"), ".sccache_check");
  EXPECT_EQ(*DecodeKey("a%2f%2fb"), "a/b");
  for (std::string_view bad : {"", "/", "//", ".", "..", "a/../b", "a//../b", "%2e%2e", "a%00",
                               "a\\b", "a%5Cb", "a b", "a%", "a%4", "a%G0", "a?b", "a#b", "a:b"}) {
    EXPECT_FALSE(DecodeKey(bad).ok()) << bad;
  }
  EXPECT_TRUE(DecodeKey(std::string(255, 'a') + "/" + std::string(255, 'b')).ok());
  EXPECT_FALSE(DecodeKey(std::string(256, 'a')).ok());
}

TEST(ParseTargetTest, MapsPathsToApis) {
  store::MemoryStore store;
  HttpCacheFrontend f(store, HttpCacheOptions{});
  std::string k = Sha("k");
  auto t = f.ParseTarget("/ac/" + k);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->api, Api::kBazelAc);
  EXPECT_EQ(t->key, "ac/" + k);
  t = f.ParseTarget("/cache/cas/" + k);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->api, Api::kBazelCas);
  EXPECT_EQ(t->digest_hex, k);
  t = f.ParseTarget("/cache/cas/short");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->api, Api::kGeneric);
  t = f.ParseTarget("/cache/x/y/");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->collection);
  EXPECT_EQ(t->key, "x/y");
  t = f.ParseTarget("/cache");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->collection);
  EXPECT_EQ(f.ParseTarget("/other").status().code(), StatusCode::kNotFound);
}

// Scopes: the caller comes from an "X-Test-Caller" header here (trusted, anonymous, or a scope
// name); the agent gets it from agent/identity.
class HttpCacheScopeTest : public HttpCacheTest {
 protected:
  void SetUp() override {
    HttpCacheTest::SetUp();
    server_.reset();  // the base fixture's, serving the router replaced here
    router_ = std::make_unique<http::Router>();
    for (const char* prefix : HttpCacheFrontend::kPathPrefixes) {
      router_->Add("", prefix, [fe = frontend_.get()](http::Request& req, http::Response& resp) {
        std::string who(req.header("X-Test-Caller"));
        identity::Caller caller = who == "trusted"     ? identity::Caller{"", "t", true, false}
                                  : who == "anonymous" ? identity::Caller::Anonymous()
                                                       : identity::Caller{who, who, false, false};
        fe->Handle(req, resp, caller);
      });
    }
    Listen();
  }
  http::ClientResponse As(std::string_view who, std::string_view method, std::string_view target,
                          std::string_view body = {}) {
    return Do(method, target, body, {{"X-Test-Caller", std::string(who)}});
  }
};

TEST_F(HttpCacheScopeTest, AnUntrustedPutIntoATrustedKeyChangesNothingOtherReadersGet) {
  for (std::string key : std::vector<std::string>{"/cache/ab/cdef0123", "/ac/" + Sha("action")}) {
    ASSERT_EQ(As("trusted", "PUT", key, "trusted bytes").status, 201);
    EXPECT_EQ(As("team-a", "PUT", key, "poisoned bytes").status, 201);  // into team-a's scope
    EXPECT_EQ(As("trusted", "GET", key).body, "trusted bytes");
    EXPECT_EQ(As("anonymous", "GET", key).body, "trusted bytes");
    EXPECT_EQ(As("team-b", "GET", key).body, "trusted bytes");
    EXPECT_EQ(As("team-a", "GET", key).body, "poisoned bytes");  // its own scope first
  }
  EXPECT_TRUE(store_->Stat("httpcache/ab/cdef0123").ok());
  EXPECT_TRUE(store_->Stat("scope/team-a/httpcache/ab/cdef0123").ok());
}

TEST_F(HttpCacheScopeTest, AScopeCannotReadAnotherScopesEntries) {
  ASSERT_EQ(As("team-a", "PUT", "/cache/only-a", "a's bytes").status, 201);
  EXPECT_EQ(As("team-a", "GET", "/cache/only-a").status, 200);
  EXPECT_EQ(As("team-a", "HEAD", "/cache/only-a").status, 200);
  for (std::string who : {"team-b", "anonymous", "trusted"}) {
    EXPECT_EQ(As(who, "GET", "/cache/only-a").status, 404) << who;
    EXPECT_EQ(As(who, "HEAD", "/cache/only-a").status, 404) << who;
    EXPECT_EQ(As(who, "PROPFIND", "/cache/only-a").status, 404) << who;
  }
  EXPECT_FALSE(store_->Stat("httpcache/only-a").ok());
}

TEST_F(HttpCacheScopeTest, AnonymousWritesAreRefusedAndStoreNothing) {
  ASSERT_EQ(As("trusted", "PUT", "/cache/k", "trusted bytes").status, 201);
  EXPECT_EQ(As("anonymous", "PUT", "/cache/k", "evil").status, 403);
  EXPECT_EQ(As("anonymous", "PUT", "/cache/new", "evil").status, 403);
  EXPECT_EQ(As("anonymous", "PUT", "/cas/" + Sha("evil"), "evil").status, 403);
  EXPECT_EQ(As("anonymous", "DELETE", "/cache/k").status, 403);
  EXPECT_EQ(As("trusted", "GET", "/cache/k").body, "trusted bytes");
  EXPECT_FALSE(store_->Stat("httpcache/new").ok());
  EXPECT_FALSE(store_->Stat("httpcache/cas/" + Sha("evil")).ok());
  EXPECT_EQ(store_->Stats().keys, 1u);
}

TEST_F(HttpCacheScopeTest, AnUntrustedDeleteReachesOnlyItsOwnScope) {
  ASSERT_EQ(As("trusted", "PUT", "/cache/k", "trusted bytes").status, 201);
  ASSERT_EQ(As("trusted", "PUT", "/cas/" + Sha("blob"), "blob").status, 201);
  EXPECT_EQ(As("team-a", "DELETE", "/cache/k").status, 404);  // nothing in its scope
  EXPECT_EQ(As("team-a", "DELETE", "/cas/" + Sha("blob")).status, 403);
  EXPECT_EQ(As("team-b", "GET", "/cache/k").body, "trusted bytes");
  EXPECT_EQ(As("team-b", "GET", "/cas/" + Sha("blob")).body, "blob");
  ASSERT_EQ(As("team-a", "PUT", "/cache/k", "mine").status, 201);
  EXPECT_EQ(As("team-a", "DELETE", "/cache/k").status, 204);
  EXPECT_EQ(As("team-a", "GET", "/cache/k").body, "trusted bytes");
}

TEST_F(HttpCacheScopeTest, CasEntriesAreSharedAndStillVerified) {
  const std::string blob = "content that names itself";
  ASSERT_EQ(As("team-a", "PUT", "/cas/" + Sha(blob), blob).status, 201);
  EXPECT_EQ(As("team-b", "GET", "/cas/" + Sha(blob)).body, blob);
  EXPECT_EQ(As("anonymous", "GET", "/cache/cas/" + Sha(blob)).body, blob);
  EXPECT_EQ(As("team-a", "PUT", "/cas/" + Sha("other"), "not other").status, 400);
  EXPECT_FALSE(store_->Stat("httpcache/cas/" + Sha("other")).ok());
  EXPECT_FALSE(store_->Stat("scope/team-a/httpcache/cas/" + Sha(blob)).ok());
}

TEST(HttpCacheKeysTest, ReadAndWriteKeysFollowTheCallersScope) {
  HttpCacheFrontend::Target generic{Api::kGeneric, "gocache/v1/a/x", false, ""};
  const identity::Caller a{"team-a", "a", false, false};
  EXPECT_EQ(HttpCacheFrontend::ReadKeys(generic, a),
            (std::vector<std::string>{"scope/team-a/httpcache/gocache/v1/a/x",
                                      "httpcache/gocache/v1/a/x"}));
  EXPECT_EQ(*HttpCacheFrontend::WriteKey(generic, a, false),
            "scope/team-a/httpcache/gocache/v1/a/x");
  EXPECT_EQ(HttpCacheFrontend::ReadKeys(generic, identity::Caller::Unrestricted()),
            std::vector<std::string>{"httpcache/gocache/v1/a/x"});
  EXPECT_EQ(*HttpCacheFrontend::WriteKey(generic, identity::Caller::Unrestricted(), false),
            "httpcache/gocache/v1/a/x");
  EXPECT_FALSE(HttpCacheFrontend::WriteKey(generic, identity::Caller::Anonymous(), false).ok());
  const identity::Caller no_scope{"", "x", false, false};
  EXPECT_FALSE(HttpCacheFrontend::WriteKey(generic, no_scope, false).ok());
}

}  // namespace
}  // namespace buildcache::httpcache
