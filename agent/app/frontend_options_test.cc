#include "agent/app/frontend_options.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace buildcache::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Values unlike every default, so a field left uncopied shows.
template <class Section>
Section Mirror(std::string upstream) {
  Section s;
  s.upstream = std::move(upstream);
  s.metadata_ttl = seconds(123);
  s.negative_ttl = seconds(45);
  return s;
}

upstream::FetchOptions Fetch() {
  UpstreamClientConfig c;
  c.connect_timeout = milliseconds(1500);
  c.read_timeout = milliseconds(2500);
  return FromConfig(c);
}

TEST(FrontendOptionsTest, UpstreamClientTimeoutsReachEveryFetch) {
  EXPECT_EQ(Fetch().connect_timeout, milliseconds(1500));
  EXPECT_EQ(Fetch().read_timeout, milliseconds(2500));
}

template <class Options>
void ExpectMirror(const Options& o, const std::string& upstream) {
  EXPECT_EQ(o.upstream, upstream);
  EXPECT_EQ(o.metadata_ttl, seconds(123));
  EXPECT_EQ(o.negative_ttl, seconds(45));
  EXPECT_EQ(o.fetch.connect_timeout, milliseconds(1500));
  EXPECT_EQ(o.fetch.read_timeout, milliseconds(2500));
}

TEST(FrontendOptionsTest, NpmGetsEveryKeyOfItsSection) {
  auto c = Mirror<NpmConfig>("https://npm.example.invalid/");
  c.public_url = "http://cache.example.invalid/npm/";
  c.max_packument_size = 77;
  npm::NpmOptions o = FromConfig(c, Fetch());
  ExpectMirror(o, c.upstream);
  EXPECT_EQ(o.public_url, c.public_url);
  EXPECT_EQ(o.max_packument_size, 77u);
}

TEST(FrontendOptionsTest, CargoGetsEveryKeyOfItsSection) {
  auto c = Mirror<CargoConfig>("sparse+https://index.example.invalid/");
  c.public_url = "http://cache.example.invalid/cargo/";
  cargo::CargoOptions o = FromConfig(c, Fetch());
  ExpectMirror(o, c.upstream);
  EXPECT_EQ(o.public_url, c.public_url);
}

TEST(FrontendOptionsTest, MavenGetsEveryKeyOfItsSection) {
  auto c = Mirror<MavenConfig>("https://maven.example.invalid/maven2/");
  c.max_mutable_size = 99;
  maven::MavenOptions o = FromConfig(c, Fetch());
  ExpectMirror(o, c.upstream);
  EXPECT_EQ(o.max_mutable_size, 99u);
}

TEST(FrontendOptionsTest, GoproxyGetsEveryKeyOfItsSection) {
  auto c = Mirror<GoproxyConfig>("https://proxy.example.invalid");
  c.sumdb.name = "sum.example.invalid";
  c.sumdb.upstream = "https://sum.example.invalid/db";
  c.sumdb.latest_ttl = seconds(7);
  c.sumdb.verify = false;
  c.sumdb.no_verify = {"example.invalid/private/*"};
  goproxy::GoproxyOptions o = FromConfig(c, Fetch());
  ExpectMirror(o, c.upstream);
  EXPECT_EQ(o.sumdb.name, c.sumdb.name);
  EXPECT_EQ(o.sumdb.upstream, c.sumdb.upstream);
  EXPECT_EQ(o.sumdb.latest_ttl, seconds(7));
  EXPECT_FALSE(o.sumdb.verify);
  EXPECT_EQ(o.sumdb.no_verify, c.sumdb.no_verify);
}

TEST(FrontendOptionsTest, PypiGetsEveryKeyOfItsSectionButTheBuilds) {
  auto c = Mirror<PypiConfig>("https://pypi.example.invalid/simple/");
  c.max_upload_size = 11;
  c.wheel_house = false;
  c.wheel_list_ttl = std::chrono::seconds(7);
  pypi::PypiOptions o = FromConfig(c, Fetch());
  EXPECT_EQ(o.wheel_list_ttl, std::chrono::seconds(7));
  ExpectMirror(o, c.upstream);
  EXPECT_EQ(o.max_upload_size, 11u);
  EXPECT_FALSE(o.wheel_house);
  EXPECT_FALSE(o.builds.has_value());  // probed at start (agent.cc)
}

TEST(FrontendOptionsTest, SectionDefaultsAreTheFrontEndsDefaults) {
  // The configuration's defaults and the options' own agree, so an agent without the key behaves
  // as the front end documents.
  const upstream::FetchOptions fetch = FromConfig(UpstreamClientConfig{});
  EXPECT_EQ(FromConfig(NpmConfig{}, fetch).metadata_ttl, npm::NpmOptions{}.metadata_ttl);
  EXPECT_EQ(FromConfig(CargoConfig{}, fetch).metadata_ttl, cargo::CargoOptions{}.metadata_ttl);
  EXPECT_EQ(FromConfig(MavenConfig{}, fetch).metadata_ttl, maven::MavenOptions{}.metadata_ttl);
  EXPECT_EQ(FromConfig(GoproxyConfig{}, fetch).metadata_ttl,
            goproxy::GoproxyOptions{}.metadata_ttl);
  EXPECT_EQ(FromConfig(PypiConfig{}, fetch).metadata_ttl, pypi::PypiOptions{}.metadata_ttl);
  EXPECT_EQ(FromConfig(PypiConfig{}, fetch).negative_ttl, pypi::PypiOptions{}.negative_ttl);
}

// Every mirror section's auth reaches its fetches, for its own upstream's origin only.
TEST(FrontendOptionsTest, EverySectionsAuthReachesItsFetchesForItsOriginOnly) {
  std::string dir = ::testing::TempDir() + "/bcfeauth-XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  std::ofstream(dir + "/token") << "section-token\n";
  auto check = [&](const upstream::FetchOptions& fetch, const std::string& upstream_url) {
    ASSERT_TRUE(fetch.authorization) << upstream_url;
    auto own = fetch.authorization(*upstream::ParseUrl(upstream_url));
    ASSERT_TRUE(own.ok()) << own.status().ToString();
    EXPECT_EQ(own->value_or(""), "Bearer section-token") << upstream_url;
    auto other = fetch.authorization(*upstream::ParseUrl("https://cdn.example.invalid/x"));
    ASSERT_TRUE(other.ok());
    EXPECT_FALSE(other->has_value()) << upstream_url;
  };
  auto with_auth = [&](auto section, const std::string& upstream_url) {
    section.upstream = upstream_url;
    section.auth.token_file = dir + "/token";
    return section;
  };
  check(FromConfig(with_auth(NpmConfig{}, "https://npm.example.invalid/"), Fetch()).fetch,
        "https://npm.example.invalid/-/x.tgz");
  check(FromConfig(with_auth(CargoConfig{}, "sparse+https://ix.example.invalid/"), Fetch()).fetch,
        "https://ix.example.invalid/config.json");
  check(FromConfig(with_auth(MavenConfig{}, "https://mvn.example.invalid/m2/"), Fetch()).fetch,
        "https://mvn.example.invalid/m2/a.jar");
  check(FromConfig(with_auth(GoproxyConfig{}, "https://go.example.invalid"), Fetch()).fetch,
        "https://go.example.invalid/sumdb/sum.example/lookup/x");
  check(FromConfig(with_auth(PypiConfig{}, "https://py.example.invalid/simple/"), Fetch()).fetch,
        "https://py.example.invalid/files/x.whl");
  // No auth: no hook (and the fetcher sends nothing of its own).
  EXPECT_FALSE(
      FromConfig(Mirror<NpmConfig>("https://npm.example.invalid/"), Fetch()).fetch.authorization);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace buildcache::agent
