#include "agent/frontends/maven/maven_frontend.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "agent/store/memory_store.h"
#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/testing/frontend_test_base.h"
#include "common/http/client.h"
#include "common/http/router.h"

namespace buildcache::maven {
namespace {

using namespace std::chrono_literals;
using upstream::testing::FixtureUpstream;
using upstream::testing::Route;

std::string Sha1(std::string_view data) { return ComputeChecksum(ChecksumAlgorithm::kSha1, data); }
std::string Sha256(std::string_view data) {
  return ComputeChecksum(ChecksumAlgorithm::kSha256, data);
}

const std::string kJar = "PK\x03\x04 demo 1.0 jar";
const std::string kPom = "<project><artifactId>demo</artifactId><version>1.0</version></project>";
const std::string kTampered = "PK\x03\x04 bytes that do not match the checksum";
const std::string kJar12 = "PK\x03\x04 demo 1.2 jar, only a sha256 upstream";
const std::string kJar13 = "PK\x03\x04 demo 1.3 jar, no checksum upstream";
const std::string kJar14 = "PK\x03\x04 demo 1.4 jar, a broken checksum upstream";
const std::string kMetadata =
    "<metadata><groupId>com.example</groupId><artifactId>demo</artifactId></metadata>";
const std::string kSnapshot = "PK\x03\x04 demo 2.0-SNAPSHOT build 1";

constexpr std::string_view kDir = "/repo/com/example/demo/";

class MavenFrontendTest : public upstream::testing::FrontendTestBase {
 protected:
  void SetUp() override {
    ASSERT_TRUE(up_.ok());
    Set("1.0/demo-1.0.jar", kJar);
    Set("1.0/demo-1.0.jar.sha1", Sha1(kJar));
    Set("1.0/demo-1.0.pom", kPom);
    Set("1.0/demo-1.0.pom.sha1", Sha1(kPom) + "  demo-1.0.pom\n");
    Set("1.0/demo-1.0.pom.md5", ComputeChecksum(ChecksumAlgorithm::kMd5, kPom));
    Set("1.1/demo-1.1.jar", kTampered);
    Set("1.1/demo-1.1.jar.sha1", Sha1("something else"));
    Set("1.2/demo-1.2.jar", kJar12);
    Set("1.2/demo-1.2.jar.sha256", Sha256(kJar12));
    up_.Set(Path("1.2/demo-1.2.jar.sha1"), Route{.status = 404, .body = "not here"});
    Set("1.3/demo-1.3.jar", kJar13);
    Set("1.4/demo-1.4.jar", kJar14);
    Set("1.4/demo-1.4.jar.sha1", "<html>this is no checksum</html>");
    up_.Set(Path("maven-metadata.xml"), Route{.body = kMetadata, .etag = "\"m1\""});
    up_.Set(Path("maven-metadata.xml.sha1"), Route{.body = Sha1("an older metadata file")});
    Set("2.0-SNAPSHOT/demo-2.0-20240101.120000-1.jar", kSnapshot);
    Start(up_.Url("/repo"));
  }

  static std::string Path(std::string_view rel) { return std::string(kDir) + std::string(rel); }
  void Set(std::string_view rel, const std::string& body) {
    up_.Set(Path(rel), Route{.body = body});
  }
  int Requests(std::string_view rel) { return up_.Requests(Path(rel)); }

  void Start(const std::string& upstream_url) {
    StopServing();
    frontend_.reset();
    NewCaches();
    MavenOptions options;
    options.upstream = upstream_url;
    options.metadata_ttl = 300s;
    options.negative_ttl = 60s;
    options.fetch.connect_timeout = 2s;
    options.fetch.read_timeout = 5s;
    options.clock = Clock();
    frontend_ = std::make_unique<MavenFrontend>(*store_, *artifacts_, *metadata_, options);
    Serve(*frontend_);
  }

  http::ClientResponse Get(std::string_view rel, const http::HeaderList& headers = {}) {
    return FrontendTestBase::Get("/maven/com/example/demo/" + std::string(rel), headers);
  }

  std::unique_ptr<MavenFrontend> frontend_;
};

TEST_F(MavenFrontendTest, ReleaseFilesAreVerifiedFetchedOnceAndServedLocally) {
  auto first = Get("1.0/demo-1.0.jar");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body, kJar);
  EXPECT_EQ(first.header("X-Buildcache-Source"), "upstream");
  EXPECT_EQ(first.header("Content-Type"), "application/java-archive");
  EXPECT_EQ(Requests("1.0/demo-1.0.jar.sha1"), 1) << "the checksum is fetched first";

  // Maven then asks for the checksum file: it is the upstream's, already stored.
  auto sha1 = Get("1.0/demo-1.0.jar.sha1");
  EXPECT_EQ(sha1.status, 200);
  EXPECT_EQ(sha1.body, Sha1(kJar));
  EXPECT_EQ(sha1.header("X-Buildcache-Source"), "local");

  auto second = Get("1.0/demo-1.0.jar");
  EXPECT_EQ(second.body, kJar);
  EXPECT_EQ(second.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(Requests("1.0/demo-1.0.jar"), 1);
  EXPECT_EQ(Requests("1.0/demo-1.0.jar.sha1"), 1);
  EXPECT_TRUE(store_->HasDigest(store::Digest::Of(kJar)));

  auto head = client_->Fetch("HEAD", "/maven/com/example/demo/1.0/demo-1.0.jar");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("Content-Length"), std::to_string(kJar.size()));
}

TEST_F(MavenFrontendTest, ChecksumFilesAreServedAsTheDigestTheyHold) {
  // "<sha1>  <file>" upstream; the bare digest to the client.
  auto sha1 = Get("1.0/demo-1.0.pom.sha1");
  ASSERT_EQ(sha1.status, 200) << sha1.body;
  EXPECT_EQ(sha1.body, Sha1(kPom));
  EXPECT_EQ(sha1.header("X-Buildcache-Source"), "upstream");
  auto md5 = Get("1.0/demo-1.0.pom.md5");
  EXPECT_EQ(md5.body, ComputeChecksum(ChecksumAlgorithm::kMd5, kPom));
  EXPECT_EQ(Get("1.0/demo-1.0.pom").body, kPom);
  EXPECT_EQ(Get("1.0/demo-1.0.pom.sha256").status, 404);
  EXPECT_EQ(Requests("1.0/demo-1.0.pom.sha1"), 1);
}

TEST_F(MavenFrontendTest, Sha256IsUsedWhenThereIsNoSha1) {
  auto r = Get("1.2/demo-1.2.jar");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, kJar12);
  EXPECT_EQ(Requests("1.2/demo-1.2.jar.sha1"), 1);
  EXPECT_EQ(Requests("1.2/demo-1.2.jar.sha256"), 1);
  EXPECT_EQ(Get("1.2/demo-1.2.jar").header("X-Buildcache-Source"), "local");
}

TEST_F(MavenFrontendTest, ChecksumMismatchIsNotServedOrStored) {
  auto r = client_->Fetch("GET", "/maven/com/example/demo/1.1/demo-1.1.jar");
  // A 502 before the body started, or an aborted transfer: never the complete wrong bytes.
  if (r.ok()) {
    EXPECT_EQ(r->status, 502) << r->body;
  }
  EXPECT_EQ(Requests("1.1/demo-1.1.jar"), 1);
  EXPECT_FALSE(store_->HasDigest(store::Digest::Of(kTampered)));
  EXPECT_FALSE(store_->Stat("maven/files/com/example/demo/1.1/demo-1.1.jar").ok());
}

TEST_F(MavenFrontendTest, FilesWithoutAChecksumAreNotServed) {
  auto r = Get("1.3/demo-1.3.jar");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("not verifiable"), std::string::npos) << r.body;
  EXPECT_EQ(Requests("1.3/demo-1.3.jar"), 0);

  auto broken = Get("1.4/demo-1.4.jar");
  EXPECT_EQ(broken.status, 502);
  EXPECT_NE(broken.body.find("unusable"), std::string::npos) << broken.body;
  EXPECT_EQ(Get("1.4/demo-1.4.jar.sha1").status, 502);
  EXPECT_EQ(Requests("1.4/demo-1.4.jar"), 0);
  EXPECT_EQ(Requests("1.4/demo-1.4.jar.sha1"), 2) << "an unusable checksum file is not kept";
}

TEST_F(MavenFrontendTest, UnknownFilesAre404) {
  EXPECT_EQ(Get("9.9/demo-9.9.jar").status, 404);
  EXPECT_EQ(Get("9.9/demo-9.9.jar.sha1").status, 404);
  EXPECT_EQ(Get("9.9-SNAPSHOT/maven-metadata.xml").status, 404);
  EXPECT_EQ(Get("1.0/").status, 404);
}

TEST_F(MavenFrontendTest, BadPathsAre400WithoutAskingUpstream) {
  for (const char* target :
       {"/maven/com/example/demo/1.0/..%2f..%2fdemo-1.0.jar", "/maven/com/example/demo/1.0/../x",
        "/maven/com/example/demo/1.0/other-1.0.jar", "/maven/com/example/demo/1.0/demo-1.1.jar",
        "/maven/com//demo/1.0/demo-1.0.jar", "/maven/com/example/demo/1.0/.demo-1.0.jar",
        "/maven/maven-metadata.xml", "/maven/demo/1.0/demo-1.0.jar",
        "/maven/com/example/demo/1.0/demo-1.0.jar%20",
        "/maven/com/example/demo/1.0/demo 1.0.jar"}) {
    auto r = client_->Fetch("GET", target);
    ASSERT_TRUE(r.ok()) << target;
    EXPECT_EQ(r->status, 400) << target;
  }
  for (const char* method : {"PUT", "POST", "DELETE"}) {
    auto r = client_->Fetch(method, "/maven/com/example/demo/1.0/demo-1.0.jar", {}, "x");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 405) << method;
  }
  EXPECT_EQ(client_->Fetch("GET", "/maven")->status, 404);
  EXPECT_EQ(client_->Fetch("GET", "/mavenx/a")->status, 404);
  EXPECT_EQ(Requests("1.0/demo-1.0.jar") + Requests("1.0/demo-1.0.jar.sha1"), 0);
}

TEST_F(MavenFrontendTest, MetadataHasATtlAndMatchingChecksums) {
  auto first = Get("maven-metadata.xml");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body, kMetadata);
  EXPECT_EQ(first.header("Content-Type"), "application/xml");
  EXPECT_EQ(first.header("X-Buildcache-Source"), "upstream");
  // The checksum is the served body's, not the upstream's (stale) file.
  EXPECT_EQ(Get("maven-metadata.xml.sha1").body, Sha1(kMetadata));
  EXPECT_EQ(Get("maven-metadata.xml.sha256").body, Sha256(kMetadata));
  EXPECT_EQ(Requests("maven-metadata.xml.sha1"), 0);
  auto second = Get("maven-metadata.xml");
  EXPECT_EQ(second.header("X-Buildcache-Source"), "local");
  EXPECT_EQ(
      Get("maven-metadata.xml", {{"If-None-Match", std::string(first.header("ETag"))}}).status,
      304);
  EXPECT_EQ(Requests("maven-metadata.xml"), 1);

  // A new release upstream shows once the TTL is over (after a revalidation).
  const std::string updated = kMetadata + "<!-- 1.5 -->";
  up_.Set(Path("maven-metadata.xml"), Route{.body = updated, .etag = "\"m2\""});
  EXPECT_EQ(Get("maven-metadata.xml").body, kMetadata);
  Advance(301s);
  EXPECT_EQ(Get("maven-metadata.xml").body, updated);
  EXPECT_EQ(up_.LastHeader(Path("maven-metadata.xml"), "If-None-Match"), "\"m1\"");
  EXPECT_EQ(Get("maven-metadata.xml.sha1").body, Sha1(updated));

  // The upstream goes away: the stored copy is still served.
  Advance(301s);
  up_.Stop();
  auto stale = Get("maven-metadata.xml");
  EXPECT_EQ(stale.status, 200);
  EXPECT_EQ(stale.body, updated);
}

TEST_F(MavenFrontendTest, SnapshotFilesAreMutable) {
  const std::string rel = "2.0-SNAPSHOT/demo-2.0-20240101.120000-1.jar";
  auto first = Get(rel);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body, kSnapshot);
  EXPECT_EQ(Get(rel + ".sha1").body, Sha1(kSnapshot));
  const std::string rebuilt = kSnapshot + " rebuilt";
  Set(rel, rebuilt);
  EXPECT_EQ(Get(rel).body, kSnapshot);
  Advance(301s);
  EXPECT_EQ(Get(rel).body, rebuilt);
  EXPECT_EQ(Get(rel + ".sha1").body, Sha1(rebuilt));
}

TEST_F(MavenFrontendTest, UpstreamDownWithNothingCachedIs502) {
  std::string dead;
  {
    FixtureUpstream gone;
    dead = gone.Url("/repo");
  }
  Start(dead);
  EXPECT_EQ(Get("1.0/demo-1.0.jar").status, 502);
  EXPECT_EQ(Get("maven-metadata.xml").status, 502);
}

}  // namespace
}  // namespace buildcache::maven
