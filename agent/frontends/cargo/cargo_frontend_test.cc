#include "agent/frontends/cargo/cargo_frontend.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/store/memory_store.h"
#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/testing/frontend_test_base.h"
#include "common/http/client.h"
#include "common/http/router.h"

namespace buildcache::cargo {
namespace {

using namespace std::chrono_literals;
using upstream::testing::FixtureUpstream;
using upstream::testing::Route;
using Json = nlohmann::json;

std::string Sha(std::string_view data) { return store::Digest::Of(data).Hex(); }

const std::string kCrate = "\x1f\x8b crate bytes of demo 1.0.0";
const std::string kTampered = "\x1f\x8b bytes that do not match the index";
const std::string kNoSum = "\x1f\x8b crate without a checksum";

constexpr std::string_view kIndexPath = "/index/de/mo/demo";

std::string Line(std::string_view name, std::string_view vers, std::string_view cksum) {
  Json j = {{"name", name}, {"vers", vers}, {"deps", Json::array()}, {"features", Json::object()}};
  if (!cksum.empty()) j["cksum"] = cksum;
  j["yanked"] = false;
  return j.dump() + "\n";
}

class CargoFrontendTest : public upstream::testing::FrontendTestBase {
 protected:
  void SetUp() override {
    ASSERT_TRUE(up_.ok());
    up_.Set("/index/config.json",
            Route{.body = Json{{"dl", up_.Url("/dl")}, {"api", up_.Url("/api")}}.dump(),
                  .content_type = "application/json"});
    up_.Set(std::string(kIndexPath),
            Route{.body = IndexBody(), .content_type = "text/plain", .etag = "\"v1\""});
    up_.Set("/dl/Demo/1.0.0/download", Route{.body = kCrate});
    up_.Set("/dl/Demo/1.1.0/download", Route{.body = kTampered});
    up_.Set("/dl/Demo/2.0.0/download", Route{.body = kNoSum});
    Start("sparse+" + up_.Url("/index/"));
  }

  std::string IndexBody() const {
    return Line("Demo", "1.0.0", Sha(kCrate)) + Line("Demo", "1.1.0", Sha("something else")) +
           Line("Demo", "2.0.0", "");
  }

  void Start(const std::string& upstream_url) {
    StopServing();
    frontend_.reset();
    NewCaches();
    CargoOptions options;
    options.upstream = upstream_url;
    options.metadata_ttl = 300s;
    options.negative_ttl = 60s;
    options.fetch.connect_timeout = 2s;
    options.fetch.read_timeout = 5s;
    options.clock = Clock();
    frontend_ = std::make_unique<CargoFrontend>(*artifacts_, *metadata_, options);
    Serve(*frontend_);
  }

  int UpstreamDownloads() {
    return up_.Requests("/dl/Demo/1.0.0/download") + up_.Requests("/dl/Demo/1.1.0/download") +
           up_.Requests("/dl/Demo/2.0.0/download");
  }

  std::unique_ptr<CargoFrontend> frontend_;
};

TEST_F(CargoFrontendTest, ConfigJsonSendsDownloadsToTheAgent) {
  auto r = Get("/cargo/index/config.json");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  Json config = Json::parse(r.body);
  EXPECT_EQ(config, Json({{"dl", "http://127.0.0.1:" + std::to_string(server_->port()) +
                                     "/cargo/api/v1/crates"}}));
  EXPECT_EQ(
      Get("/cargo/index/config.json", {{"If-None-Match", std::string(r.header("ETag"))}}).status,
      304);
  EXPECT_EQ(up_.Requests("/index/config.json"), 0) << "the agent's config is its own";
}

TEST_F(CargoFrontendTest, ConfigJsonUsesThePublicUrlWhenSet) {
  CargoOptions options;
  options.upstream = up_.Url("/index/");
  options.public_url = "https://cache.example.internal/cargo";
  CargoFrontend frontend(*artifacts_, *metadata_, options);
  http::Router router;
  frontend.AddRoutes(router);
  auto server = http::Server::Start({}, router.AsHandler());
  ASSERT_TRUE(server.ok());
  auto r = http::Client("127.0.0.1", (*server)->port()).Fetch("GET", "/cargo/index/config.json");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Json::parse(r->body),
            Json({{"dl", "https://cache.example.internal/cargo/api/v1/crates"}}));
}

TEST_F(CargoFrontendTest, IndexFilesAreCachedWithinTheirTtl) {
  auto first = Get("/cargo/index/de/mo/demo");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body, IndexBody());
  EXPECT_EQ(first.header("X-Buildcache-Source"), "upstream");
  std::string etag(first.header("ETag"));
  ASSERT_FALSE(etag.empty());
  auto second = Get("/cargo/index/de/mo/demo");
  EXPECT_EQ(second.body, IndexBody());
  EXPECT_EQ(second.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(Get("/cargo/index/de/mo/demo", {{"If-None-Match", etag}}).status, 304);
  auto head = client_->Fetch("HEAD", "/cargo/index/de/mo/demo");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("Content-Length"), std::to_string(IndexBody().size()));
  EXPECT_EQ(up_.Requests(std::string(kIndexPath)), 1);
}

TEST_F(CargoFrontendTest, IndexFilesAreRevalidatedAfterTheTtlAndServedStaleOnFailure) {
  ASSERT_EQ(Get("/cargo/index/de/mo/demo").status, 200);
  Advance(301s);
  auto revalidated = Get("/cargo/index/de/mo/demo");
  EXPECT_EQ(revalidated.status, 200);
  EXPECT_EQ(revalidated.header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(revalidated.body, IndexBody());
  EXPECT_EQ(up_.Requests(std::string(kIndexPath)), 2);
  EXPECT_EQ(up_.LastHeader(std::string(kIndexPath), "If-None-Match"), "\"v1\"");
  EXPECT_EQ(up_.BodiesSent(std::string(kIndexPath)), 1) << "the second answer was a 304";

  // A new version upstream shows after the next TTL.
  std::string updated = IndexBody() + Line("Demo", "3.0.0", Sha("three"));
  up_.Set(std::string(kIndexPath), Route{.body = updated, .etag = "\"v2\""});
  EXPECT_EQ(Get("/cargo/index/de/mo/demo").body, IndexBody());
  Advance(301s);
  EXPECT_EQ(Get("/cargo/index/de/mo/demo").body, updated);

  // The upstream goes away: the stored copy is still served.
  Advance(301s);
  up_.Stop();
  auto stale = Get("/cargo/index/de/mo/demo");
  EXPECT_EQ(stale.status, 200);
  EXPECT_EQ(stale.body, updated);
}

TEST_F(CargoFrontendTest, UnknownCratesAre404AndRemembered) {
  up_.Set("/index/3/x/xyz", Route{.status = 404, .body = "no"});
  EXPECT_EQ(Get("/cargo/index/3/x/xyz").status, 404);
  EXPECT_EQ(Get("/cargo/index/3/x/xyz").status, 404);
  EXPECT_EQ(up_.Requests("/index/3/x/xyz"), 1);
  EXPECT_EQ(Get("/cargo/api/v1/crates/xyz/1.0.0/download").status, 404);
  EXPECT_EQ(Get("/cargo/api/v1/crates/demo/9.9.9/download").status, 404);
  EXPECT_EQ(UpstreamDownloads(), 0);
}

TEST_F(CargoFrontendTest, BadNamesAndPathsAre400WithoutAskingUpstream) {
  for (const char* target :
       {"/cargo/index/de/mo/Demo", "/cargo/index/De/mo/demo", "/cargo/index/de/mx/demo",
        "/cargo/index/1/ab", "/cargo/index/3/abc", "/cargo/index/de/mo/de..", "/cargo/index/demo",
        "/cargo/index/de/mo/../demo", "/cargo/index/..%2f..%2fetc", "/cargo/index/de/mo/demo/",
        "/cargo/index/", "/cargo/index/2/a%2f", "/cargo/api/v1/crates/de.mo/1.0.0/download",
        "/cargo/api/v1/crates/..%2fx/1.0.0/download", "/cargo/api/v1/crates/demo/1.0/download",
        "/cargo/api/v1/crates/demo/..%2f1.0.0/download",
        "/cargo/api/v1/crates/demo/1.0.0%2f..%2f/download",
        "/cargo/api/v1/crates/demo/%zz/download", "/cargo/api/v1/crates/-demo/1.0.0/download"}) {
    EXPECT_EQ(Get(target).status, 400) << target;
  }
  for (const char* target : {"/cargo/api/v1/crates/demo/1.0.0", "/cargo/api/v1/crates/demo",
                             "/cargo/api/v1/crates/demo/1.0.0/download/x", "/cargo/nothing",
                             "/cargo/api/v1/crates/demo/1.0.0/readme"}) {
    EXPECT_EQ(Get(target).status, 404) << target;
  }
  auto put = client_->Fetch("PUT", "/cargo/api/v1/crates/new", {}, "x");
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put->status, 405);
  EXPECT_EQ(up_.Requests(std::string(kIndexPath)), 0);
  EXPECT_EQ(UpstreamDownloads(), 0);
}

TEST_F(CargoFrontendTest, CratesAreVerifiedFetchedOnceAndServedLocally) {
  auto first = Get("/cargo/api/v1/crates/demo/1.0.0/download");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body, kCrate);
  EXPECT_EQ(first.header("X-Buildcache-Source"), "upstream");
  // The download name's case does not matter; the index's spelling is used upstream.
  auto second = Get("/cargo/api/v1/crates/Demo/1.0.0/download");
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.body, kCrate);
  EXPECT_EQ(second.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(up_.Requests("/dl/Demo/1.0.0/download"), 1);
  EXPECT_EQ(up_.Requests("/index/config.json"), 1);
  EXPECT_TRUE(store_->HasDigest(*store::Digest::FromHex(Sha(kCrate))));
}

TEST_F(CargoFrontendTest, DownloadTemplatesOfTheUpstreamAreFollowed) {
  up_.Set(
      "/index/config.json",
      Route{.body = Json{{"dl", up_.Url("/files/{lowerprefix}/{crate}-{version}.crate")}}.dump()});
  up_.Set("/files/de/mo/Demo-1.0.0.crate", Route{.body = kCrate});
  auto r = Get("/cargo/api/v1/crates/demo/1.0.0/download");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, kCrate);
  EXPECT_EQ(up_.Requests("/files/de/mo/Demo-1.0.0.crate"), 1);
}

TEST_F(CargoFrontendTest, ChecksumMismatchIsNotServedOrStored) {
  auto r = client_->Fetch("GET", "/cargo/api/v1/crates/demo/1.1.0/download");
  // A 502 before the body started, or an aborted transfer: never the complete wrong bytes.
  if (r.ok()) {
    EXPECT_EQ(r->status, 502) << r->body;
  }
  EXPECT_EQ(up_.Requests("/dl/Demo/1.1.0/download"), 1);
  EXPECT_FALSE(store_->HasDigest(*store::Digest::FromHex(Sha(kTampered))));
  EXPECT_FALSE(store_->Stat("cargo/crates/demo/1.1.0").ok());
}

TEST_F(CargoFrontendTest, CratesWithoutAChecksumAreRefused) {
  auto r = Get("/cargo/api/v1/crates/demo/2.0.0/download");
  EXPECT_EQ(r.status, 502);
  EXPECT_NE(r.body.find("cannot be verified"), std::string::npos) << r.body;
  EXPECT_EQ(UpstreamDownloads(), 0);
}

TEST_F(CargoFrontendTest, UpstreamDownWithNothingCachedIs502) {
  std::string dead;
  {
    FixtureUpstream gone;
    dead = gone.Url("/index/");
  }
  Start(dead);
  EXPECT_EQ(Get("/cargo/index/de/mo/demo").status, 502);
  EXPECT_EQ(Get("/cargo/api/v1/crates/demo/1.0.0/download").status, 502);
}

}  // namespace
}  // namespace buildcache::cargo
