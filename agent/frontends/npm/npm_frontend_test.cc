#include "agent/frontends/npm/npm_frontend.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/store/memory_store.h"
#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/testing/frontend_test_base.h"
#include "common/http/client.h"
#include "common/http/router.h"
#include "common/http/testing.h"

namespace buildcache::npm {
namespace {

using Json = nlohmann::json;

std::string Hash(const EVP_MD* md, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), n);
}

std::string Sri512(std::string_view data) {
  std::string raw = Hash(EVP_sha512(), data);
  std::string b64(4 * ((raw.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()),
                          static_cast<int>(raw.size()));
  b64.resize(static_cast<size_t>(n));
  return "sha512-" + b64;
}

std::string Sha1Hex(std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : Hash(EVP_sha1(), data)) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

const std::string kTgz1 = std::string("\x1f\x8b tarball of demo 1.0.0", 24);
const std::string kTgz11 = "tarball of demo 1.1.0 (only a shasum)";
const std::string kTgz2 = "tarball of demo 2.0.0 (the packument lies about it)";
const std::string kTgz3 = "tarball of demo 3.0.0 (no digest at all)";
const std::string kScopedTgz = "tarball of @scope/lib 1.0.0";
const std::string kTgz4 = "tarball of demo 4.0.0 (published later)";

// A tiny npm registry on loopback. Packuments differ by form (the full one carries a readme) when
// abbreviated documents are on; it counts requests by path and form, and can fail everything.
class Registry {
 public:
  Registry() {
    auto server = http::Server::Start(
        {}, [this](http::Request& req, http::Response& resp) { Serve(req, resp); });
    EXPECT_TRUE(server.ok());
    server_ = std::move(server).value();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  std::atomic<bool> abbreviated{true};      // serve abbreviated documents when asked
  std::atomic<bool> failing{false};         // answer 503 to everything
  std::atomic<bool> with_release_4{false};  // demo 4.0.0 is published

  int Requests(const std::string& key) {
    std::lock_guard lock(mu_);
    return counts_[key];
  }
  int Total() {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& [k, v] : counts_) n += v;
    return n;
  }

  Json Demo(bool full) const {
    auto version = [&](const std::string& v, Json dist) {
      dist["tarball"] = url() + "/demo/-/demo-" + v + ".tgz";
      Json out = {{"name", "demo"}, {"version", v}, {"dist", dist}};
      if (full) out["readme"] = "the readme of " + v;
      return out;
    };
    Json doc = {{"name", "demo"},
                {"dist-tags", {{"latest", "1.1.0"}}},
                {"versions",
                 {{"1.0.0", version("1.0.0", {{"integrity", Sri512(kTgz1)},
                                              {"shasum", Sha1Hex("not checked: integrity wins")}})},
                  {"1.1.0", version("1.1.0", {{"shasum", Sha1Hex(kTgz11)}})},
                  {"2.0.0", version("2.0.0", {{"integrity", Sri512("something else")}})},
                  {"3.0.0", version("3.0.0", Json::object())}}}};
    if (with_release_4) doc["versions"]["4.0.0"] = version("4.0.0", {{"integrity", Sri512(kTgz4)}});
    if (full) {
      doc["readme"] = "# demo";
      doc["time"] = {{"1.0.0", "2020-01-01T00:00:00.000Z"}};
    } else {
      doc["modified"] = "2020-01-01T00:00:00.000Z";
    }
    return doc;
  }

  Json Scoped() const {
    return {{"name", "@scope/lib"},
            {"dist-tags", {{"latest", "1.0.0"}}},
            {"versions",
             {{"1.0.0",
               {{"name", "@scope/lib"},
                {"version", "1.0.0"},
                {"dist",
                 {{"tarball", url() + "/@scope/lib/-/lib-1.0.0.tgz"},
                  {"integrity", Sri512(kScopedTgz)}}}}}}}};
  }

 private:
  void Count(const std::string& key) {
    std::lock_guard lock(mu_);
    ++counts_[key];
  }

  void Serve(http::Request& req, http::Response& resp) {
    std::string path(req.path());
    bool abbrev = abbreviated && req.header("Accept").find("application/vnd.npm.install-v1+json") !=
                                     std::string_view::npos;
    Count(path.find("/-/") != std::string::npos ? path : path + (abbrev ? "|abbr" : "|full"));
    if (failing) {
      resp.SetStatus(503);
      (void)resp.Send("down\n");
      return;
    }
    const std::map<std::string, std::string> tarballs = {
        {"/demo/-/demo-1.0.0.tgz", kTgz1}, {"/demo/-/demo-1.1.0.tgz", kTgz11},
        {"/demo/-/demo-2.0.0.tgz", kTgz2}, {"/demo/-/demo-3.0.0.tgz", kTgz3},
        {"/demo/-/demo-4.0.0.tgz", kTgz4}, {"/@scope/lib/-/lib-1.0.0.tgz", kScopedTgz}};
    if (auto it = tarballs.find(path); it != tarballs.end()) {
      resp.SetStatus(200);
      resp.SetHeader("Content-Type", "application/octet-stream");
      (void)resp.Send(it->second);
      return;
    }
    std::optional<Json> doc;
    if (path == "/demo") doc = Demo(!abbrev);
    if (path == "/@scope%2flib") doc = Scoped();
    if (!doc) {
      resp.SetStatus(404);
      resp.SetHeader("Content-Type", "application/json");
      (void)resp.Send("{\"error\":\"Not found\"}");
      return;
    }
    resp.SetStatus(200);
    resp.SetHeader("Content-Type",
                   abbrev ? "application/vnd.npm.install-v1+json" : "application/json");
    (void)resp.Send(doc->dump());
  }

  std::unique_ptr<http::Server> server_;
  std::mutex mu_;
  std::map<std::string, int> counts_;
};

constexpr const char* kInstallAccept =
    "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";

// up_ is not used: the registry fixture above plays the upstream.
class NpmFrontendTest : public upstream::testing::FrontendTestBase {
 protected:
  void SetUp() override { Start({}); }

  void Start(const std::string& public_url) {
    StopServing();
    frontend_.reset();
    upstream::MetadataCacheOptions metadata_options;
    metadata_options.clock = [this] { return std::chrono::system_clock::now() + clock_offset_; };
    NewCaches({}, metadata_options);
    NpmOptions options;
    options.upstream = registry_.url();
    options.public_url = public_url;
    options.metadata_ttl = std::chrono::seconds(300);
    options.fetch.connect_timeout = std::chrono::seconds(2);
    options.fetch.read_timeout = std::chrono::seconds(5);
    frontend_ = std::make_unique<NpmFrontend>(*store_, *artifacts_, *metadata_, options);
    Serve(*frontend_);
  }

  std::string agent() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  Json GetPackument(std::string_view target, std::string_view accept = kInstallAccept) {
    auto r = Get(target, {{"Accept", std::string(accept)}});
    EXPECT_EQ(r.status, 200) << target << ": " << r.body;
    return Json::parse(r.body, nullptr, false);
  }
  // One request with exactly this Host header (or none), on its own connection.
  std::string RawGet(std::string_view target, std::optional<std::string_view> host) {
    http::testing::RawConnection conn(server_->port());
    std::string req = "GET " + std::string(target) + " HTTP/1.1\r\n";
    if (host) req += "Host: " + std::string(*host) + "\r\n";
    req += "Accept: application/json\r\nConnection: close\r\n\r\n";
    EXPECT_TRUE(conn.Send(req));
    return conn.ReadFor(std::chrono::seconds(5));
  }

  std::chrono::seconds clock_offset_{0};
  Registry registry_;
  std::unique_ptr<NpmFrontend> frontend_;
};

TEST_F(NpmFrontendTest, AbbreviatedAndFullFormsAreCachedSeparately) {
  auto abbr = Get("/npm/demo", {{"Accept", kInstallAccept}});
  ASSERT_EQ(abbr.status, 200) << abbr.body;
  EXPECT_EQ(abbr.header("Content-Type"), "application/vnd.npm.install-v1+json");
  EXPECT_EQ(abbr.header("Vary"), "Accept");
  EXPECT_EQ(abbr.header("X-Buildcache-Source"), "upstream");
  Json a = Json::parse(abbr.body);
  EXPECT_FALSE(a.contains("readme"));
  EXPECT_EQ(a["modified"], "2020-01-01T00:00:00.000Z");

  auto full = Get("/npm/demo", {{"Accept", "application/json"}});
  ASSERT_EQ(full.status, 200) << full.body;
  EXPECT_EQ(full.header("Content-Type"), "application/json");
  Json f = Json::parse(full.body);
  EXPECT_EQ(f["readme"], "# demo");
  EXPECT_EQ(f["versions"]["1.0.0"]["readme"], "the readme of 1.0.0");
  // No Accept at all is the full form, as at the registry.
  EXPECT_EQ(Json::parse(Get("/npm/demo").body), f);

  for (int i = 0; i < 3; ++i) {
    auto again = Get("/npm/demo", {{"Accept", kInstallAccept}});
    EXPECT_EQ(again.header("X-Buildcache-Source"), "local");
    EXPECT_EQ(again.body, abbr.body);
    EXPECT_EQ(Get("/npm/demo", {{"Accept", "application/json"}}).body, full.body);
  }
  EXPECT_EQ(registry_.Requests("/demo|abbr"), 1);
  EXPECT_EQ(registry_.Requests("/demo|full"), 1);
}

TEST_F(NpmFrontendTest, StoredFullPackumentAnswersAbbreviatedRequests) {
  // npm install reads full packuments and npm ci abbreviated ones: ci after install costs no
  // upstream request.
  Json full = GetPackument("/npm/demo", "application/json");
  auto r = Get("/npm/demo", {{"Accept", kInstallAccept}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(r.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(Json::parse(r.body), full);
  EXPECT_EQ(registry_.Requests("/demo|abbr"), 0);
  // A full request is never answered with the abbreviated form.
  GetPackument("/npm/@scope/lib");
  GetPackument("/npm/@scope/lib", "application/json");
  EXPECT_EQ(registry_.Requests("/@scope%2flib|full"), 1);
}

TEST_F(NpmFrontendTest, UpstreamWithoutAbbreviatedFormsGetsTheFullDocumentPassedOn) {
  registry_.abbreviated = false;
  auto r = Get("/npm/demo", {{"Accept", kInstallAccept}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(Json::parse(r.body)["readme"], "# demo");
}

TEST_F(NpmFrontendTest, TarballUrlsPointAtTheAddressTheClientUsed) {
  Json doc = GetPackument("/npm/demo");
  for (const auto& [v, version] : doc["versions"].items()) {
    EXPECT_EQ(version["dist"]["tarball"], agent() + "/npm/demo/-/demo-" + v + ".tgz");
  }
  EXPECT_EQ(doc["versions"]["1.0.0"]["dist"]["integrity"], Sri512(kTgz1));
  EXPECT_EQ(doc.dump().find(registry_.url()), std::string::npos) << "no upstream URL is left";

  std::string raw = RawGet("/npm/demo", "cache.example.internal:4873");
  ASSERT_NE(raw.find("200 OK"), std::string::npos) << raw;
  EXPECT_NE(raw.find("\"http://cache.example.internal:4873/npm/demo/-/demo-1.0.0.tgz\""),
            std::string::npos);
  EXPECT_NE(
      RawGet("/npm/demo", "[::1]:8080").find("\"http://[::1]:8080/npm/demo/-/demo-1.0.0.tgz\""),
      std::string::npos);
}

TEST_F(NpmFrontendTest, BadHostHeaderIs400) {
  for (std::string_view host : {"evil.test/x?", "a b", "user@evil.test", "evil.test:99999"}) {
    std::string raw = RawGet("/npm/demo", host);
    EXPECT_NE(raw.find("400 Bad Request"), std::string::npos) << host << "\n" << raw;
  }
}

TEST_F(NpmFrontendTest, PublicUrlIsUsedWhenConfigured) {
  Start("https://npm-cache.example.internal/npm");
  Json doc = GetPackument("/npm/@scope%2flib");
  EXPECT_EQ(doc["versions"]["1.0.0"]["dist"]["tarball"],
            "https://npm-cache.example.internal/npm/@scope/lib/-/lib-1.0.0.tgz");
  // The Host header does not matter then.
  EXPECT_NE(RawGet("/npm/demo", "other.test").find("https://npm-cache.example.internal/npm/demo/"),
            std::string::npos);
}

TEST_F(NpmFrontendTest, ScopedPackagesAreServedUnderEverySpelling) {
  Json escaped = GetPackument("/npm/@scope%2flib");
  EXPECT_EQ(escaped["name"], "@scope/lib");
  EXPECT_EQ(escaped["versions"]["1.0.0"]["dist"]["tarball"],
            agent() + "/npm/@scope/lib/-/lib-1.0.0.tgz");
  EXPECT_EQ(GetPackument("/npm/@scope%2Flib"), escaped);
  EXPECT_EQ(GetPackument("/npm/@scope/lib"), escaped);
  EXPECT_EQ(GetPackument("/npm/%40scope%2flib"), escaped);
  EXPECT_EQ(registry_.Requests("/@scope%2flib|abbr"), 1);

  auto tgz = Get("/npm/@scope/lib/-/lib-1.0.0.tgz");
  ASSERT_EQ(tgz.status, 200) << tgz.body;
  EXPECT_EQ(tgz.body, kScopedTgz);
  EXPECT_EQ(Get("/npm/@scope%2flib/-/lib-1.0.0.tgz").body, kScopedTgz);
  EXPECT_EQ(registry_.Requests("/@scope/lib/-/lib-1.0.0.tgz"), 1);
}

TEST_F(NpmFrontendTest, TarballIsVerifiedStoredAndServedLocally) {
  auto first = Get("/npm/demo/-/demo-1.0.0.tgz");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body, kTgz1);
  EXPECT_EQ(first.header("X-Buildcache-Source"), "upstream");
  auto second = Get("/npm/demo/-/demo-1.0.0.tgz");
  EXPECT_EQ(second.body, kTgz1);
  EXPECT_EQ(second.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(registry_.Requests("/demo/-/demo-1.0.0.tgz"), 1);
  // The tarball's digest came from the (abbreviated) packument, fetched once.
  EXPECT_EQ(registry_.Requests("/demo|abbr"), 1);

  // A SHA-1 shasum is used when there is no integrity.
  auto sha1 = Get("/npm/demo/-/demo-1.1.0.tgz");
  ASSERT_EQ(sha1.status, 200) << sha1.body;
  EXPECT_EQ(sha1.body, kTgz11);
}

TEST_F(NpmFrontendTest, TarballsAreLookedUpInThePackumentAlreadyCached) {
  // npm 11 reads full packuments; the tarball's digest then comes from that one.
  GetPackument("/npm/demo", "application/json");
  ASSERT_EQ(Get("/npm/demo/-/demo-1.0.0.tgz").status, 200);
  // After a restart (nothing parsed in memory) the stored full packument is used as well.
  Start({});
  ASSERT_EQ(Get("/npm/demo/-/demo-1.1.0.tgz").status, 200);
  EXPECT_EQ(registry_.Requests("/demo|full"), 1);
  EXPECT_EQ(registry_.Requests("/demo|abbr"), 0);
  // With nothing cached, the smaller abbreviated form is fetched.
  ASSERT_EQ(Get("/npm/@scope/lib/-/lib-1.0.0.tgz").status, 200);
  EXPECT_EQ(registry_.Requests("/@scope%2flib|abbr"), 1);
}

TEST_F(NpmFrontendTest, IntegrityMismatchIsNeverStoredOrServed) {
  for (int i = 1; i <= 2; ++i) {
    auto r = client_->Fetch("GET", "/npm/demo/-/demo-2.0.0.tgz");
    // Either a 502 before any byte, or a transfer that fails: never the wrong bytes as a 200.
    if (r.ok()) {
      EXPECT_EQ(r->status, 502) << r->body;
      EXPECT_NE(r->body, kTgz2);
    }
    client_->Close();
    EXPECT_EQ(registry_.Requests("/demo/-/demo-2.0.0.tgz"), i) << "nothing was stored";
  }
}

TEST_F(NpmFrontendTest, TarballWithoutDigestIs502) {
  auto r = Get("/npm/demo/-/demo-3.0.0.tgz");
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_EQ(registry_.Requests("/demo/-/demo-3.0.0.tgz"), 0);
}

TEST_F(NpmFrontendTest, FileNotInThePackumentIs404) {
  EXPECT_EQ(Get("/npm/demo/-/demo-9.9.9.tgz").status, 404);
  EXPECT_EQ(Get("/npm/demo/-/lib-1.0.0.tgz").status, 404);
  EXPECT_EQ(registry_.Requests("/demo|abbr"), 1);
  EXPECT_EQ(registry_.Total(), 1) << "only the packument was asked for";
}

TEST_F(NpmFrontendTest, BadNamesAre400WithoutAnyUpstreamRequest) {
  for (const char* target :
       {"/npm/.hidden", "/npm/_x", "/npm/node_modules", "/npm/a%2fb", "/npm/%2e%2e", "/npm/@scope",
        "/npm/@scope%2f", "/npm/@scope/.x", "/npm/x%zz", "/npm/a%00b", "/npm/caf%C3%A9",
        "/npm/has%20space", "/npm/%40scope%2fa%2fb", "/npm/demo/-/..", "/npm/demo/-/.tgz",
        "/npm/demo/-/a%2fb.tgz", "/npm/demo/-/a%20b.tgz", "/npm/@scope/.x/-/lib-1.0.0.tgz"}) {
    auto r = Get(target);
    EXPECT_EQ(r.status, 400) << target << ": " << r.body;
  }
  EXPECT_EQ(Get("/npm/" + std::string(215, 'a')).status, 400);
  EXPECT_EQ(registry_.Total(), 0);
}

TEST_F(NpmFrontendTest, UnknownPackageIs404AndRemembered) {
  EXPECT_EQ(Get("/npm/no-such-package").status, 404);
  EXPECT_EQ(Get("/npm/no-such-package").status, 404);
  EXPECT_EQ(registry_.Requests("/no-such-package|full"), 1);
  EXPECT_EQ(Get("/npm/no-such-package/-/no-such-package-1.0.0.tgz").status, 404);
}

TEST_F(NpmFrontendTest, StalePackumentsAndStoredTarballsAreServedWhenUpstreamFails) {
  Json before = GetPackument("/npm/demo");
  ASSERT_EQ(Get("/npm/demo/-/demo-1.0.0.tgz").status, 200);
  registry_.failing = true;
  clock_offset_ = std::chrono::hours(1);  // far past the TTL
  auto stale = Get("/npm/demo", {{"Accept", kInstallAccept}});
  ASSERT_EQ(stale.status, 200) << stale.body;
  EXPECT_EQ(Json::parse(stale.body), before);
  EXPECT_EQ(stale.header("X-Buildcache-Source"), "local");
  EXPECT_GE(registry_.Requests("/demo|abbr"), 2) << "the agent tried to revalidate";
  auto tgz = Get("/npm/demo/-/demo-1.0.0.tgz");
  EXPECT_EQ(tgz.status, 200);
  EXPECT_EQ(tgz.body, kTgz1);
  // Nothing cached and the upstream down: 502.
  EXPECT_EQ(Get("/npm/demo", {{"Accept", "application/json"}}).status, 502);
}

TEST_F(NpmFrontendTest, ETagRevalidationGives304) {
  // A cold packument streams out before its digest is known: it carries no ETag. Stored ones do.
  auto cold = Get("/npm/demo", {{"Accept", kInstallAccept}});
  ASSERT_EQ(cold.status, 200);
  EXPECT_TRUE(cold.header("ETag").empty());
  auto r = Get("/npm/demo", {{"Accept", kInstallAccept}});
  ASSERT_FALSE(r.header("ETag").empty());
  EXPECT_EQ(r.body, cold.body);
  auto again = Get("/npm/demo",
                   {{"Accept", kInstallAccept}, {"If-None-Match", std::string(r.header("ETag"))}});
  EXPECT_EQ(again.status, 304);
  EXPECT_TRUE(again.body.empty());
  // Another form has another tag.
  auto full = Get("/npm/demo", {{"Accept", "application/json"},
                                {"If-None-Match", std::string(r.header("ETag"))}});
  EXPECT_EQ(full.status, 200);
}

// Packuments are rewritten and indexed once per upstream document: after the upstream changed,
// neither the served packument nor the tarball look-up may come from the old one.
TEST_F(NpmFrontendTest, ChangedPackumentIsRewrittenAndIndexedAgain) {
  auto before = Get("/npm/demo", {{"Accept", kInstallAccept}});
  ASSERT_EQ(before.status, 200);
  EXPECT_EQ(Json::parse(before.body)["versions"].count("4.0.0"), 0u);
  EXPECT_EQ(Get("/npm/demo/-/demo-4.0.0.tgz").status, 404);

  registry_.with_release_4 = true;
  clock_offset_ = std::chrono::hours(1);  // past the TTL: revalidated upstream
  auto after = Get("/npm/demo", {{"Accept", kInstallAccept}});
  ASSERT_EQ(after.status, 200);
  Json doc = Json::parse(after.body);
  ASSERT_EQ(doc["versions"].count("4.0.0"), 1u);
  EXPECT_NE(doc["versions"]["4.0.0"]["dist"]["tarball"].get<std::string>().find("/npm/demo/-/"),
            std::string::npos);
  EXPECT_NE(after.header("ETag"), before.header("ETag"));
  auto tarball = Get("/npm/demo/-/demo-4.0.0.tgz");
  ASSERT_EQ(tarball.status, 200) << tarball.body;
  EXPECT_EQ(tarball.body, kTgz4);
}

TEST_F(NpmFrontendTest, RegistryEndpointsNpmUsesAreAnswered) {
  auto ping = Get("/npm/-/ping?write=true");
  EXPECT_EQ(ping.status, 200);
  EXPECT_EQ(Json::parse(ping.body), Json::object());
  auto audit = client_->Fetch("POST", "/npm/-/npm/v1/security/advisories/bulk",
                              {{"Content-Type", "application/json"}}, "{\"demo\":[\"1.0.0\"]}");
  ASSERT_TRUE(audit.ok());
  EXPECT_EQ(audit->status, 404);
  EXPECT_TRUE(Json::parse(audit->body).contains("error"));
  EXPECT_EQ(Get("/npm/-/v1/search?text=x").status, 404);
  EXPECT_EQ(Get("/npm/demo/1.0.0").status, 404);
  auto publish = client_->Fetch("PUT", "/npm/demo", {}, "{}");
  ASSERT_TRUE(publish.ok());
  EXPECT_EQ(publish->status, 405);
  EXPECT_EQ(registry_.Total(), 0);
}

// A cold packument leaves while it arrives: the first bytes reach the client while the upstream
// still holds the rest of the document back.
TEST(NpmColdPackumentTest, FirstBytesLeaveBeforeTheUpstreamDocumentEnds) {
  upstream::testing::FixtureUpstream up;
  ASSERT_TRUE(up.ok());
  Json versions = Json::object();
  for (int i = 0; i < 300; ++i) {
    const std::string v = "1.0." + std::to_string(i);
    versions[v] = {
        {"name", "big"},
        {"version", v},
        {"description", std::string(200, 'd')},
        {"dist",
         {{"tarball", up.Url("/big/-/big-" + v + ".tgz")}, {"integrity", Sri512("tarball " + v)}}}};
  }
  const std::string body = Json{{"name", "big"}, {"versions", versions}}.dump();
  up.Set("/big",
         {.body = body, .content_type = "application/json", .stall_after = body.size() / 2});

  store::MemoryStore store;
  upstream::FetcherOptions fetcher_options;
  fetcher_options.attempts = 1;
  auto fetcher = upstream::NewHttpFetcher(fetcher_options);
  upstream::ArtifactCache artifacts(store, *fetcher, upstream::UpstreamObserver{});
  upstream::MetadataCache metadata(store, *fetcher, upstream::UpstreamObserver{});
  NpmOptions options;
  options.upstream = up.Url("/");
  NpmFrontend frontend(store, artifacts, metadata, options);
  http::Router router;
  frontend.AddRoutes(router);
  auto server = http::Server::Start({}, router.AsHandler());
  ASSERT_TRUE(server.ok());

  http::testing::RawConnection conn((*server)->port());
  ASSERT_TRUE(conn.Send("GET /npm/big HTTP/1.1\r\nHost: agent.test:80\r\n\r\n"));
  // Rewritten tarball URLs of the first versions arrive while the upstream is stalled.
  std::string first =
      conn.ReadUntil("http://agent.test:80/npm/big/-/big-1.0.1.tgz", std::chrono::seconds(10));
  EXPECT_TRUE(first.starts_with("HTTP/1.1 200")) << first.substr(0, 200);
  EXPECT_NE(first.find("http://agent.test:80/npm/big/-/big-1.0.1.tgz"), std::string::npos);
  EXPECT_TRUE(up.AwaitWaiting(1));
  EXPECT_FALSE(store.Stat("npm/packument/big").ok());
  up.Release();
  EXPECT_TRUE(conn.ReadUntil("0\r\n\r\n", std::chrono::seconds(10)).ends_with("0\r\n\r\n"));

  // Stored now: the same document, every version, every tarball through the agent.
  http::Client client("127.0.0.1", (*server)->port());
  auto warm = client.Fetch("GET", "/npm/big");
  ASSERT_TRUE(warm.ok());
  ASSERT_EQ(warm->status, 200);
  Json doc = Json::parse(warm->body);
  ASSERT_EQ(doc["versions"].size(), 300u);
  for (const auto& [v, version] : doc["versions"].items()) {
    EXPECT_EQ(version["dist"]["tarball"], "http://127.0.0.1:" + std::to_string((*server)->port()) +
                                              "/npm/big/-/big-" + v + ".tgz");
  }
  EXPECT_EQ(up.Requests("/big"), 1);
}

}  // namespace
}  // namespace buildcache::npm
