#include "agent/frontends/pypi/names.h"

#include <gtest/gtest.h>

namespace buildcache::pypi {
namespace {

TEST(NamesTest, NormalizeFollowsPep503) {
  EXPECT_EQ(NormalizeName("Django"), "django");
  EXPECT_EQ(NormalizeName("zope.interface"), "zope-interface");
  EXPECT_EQ(NormalizeName("Foo__Bar-._baz"), "foo-bar-baz");
  EXPECT_EQ(NormalizeName("typing_extensions"), "typing-extensions");
  EXPECT_EQ(NormalizeName("a"), "a");
}

TEST(NamesTest, ProjectNamesAreValidated) {
  EXPECT_TRUE(IsValidProjectName("requests"));
  EXPECT_TRUE(IsValidProjectName("Zope.Interface_2"));
  EXPECT_TRUE(IsValidProjectName("x"));
  EXPECT_FALSE(IsValidProjectName(""));
  EXPECT_FALSE(IsValidProjectName(".."));
  EXPECT_FALSE(IsValidProjectName("-leading"));
  EXPECT_FALSE(IsValidProjectName("trailing."));
  EXPECT_FALSE(IsValidProjectName("a/b"));
  EXPECT_FALSE(IsValidProjectName("a b"));
  EXPECT_FALSE(IsValidProjectName("a%2fb"));
  EXPECT_FALSE(IsValidProjectName("caf\xc3\xa9"));
  EXPECT_FALSE(IsValidProjectName(std::string(201, 'a')));
}

TEST(NamesTest, FilenamesAreOneSafeSegment) {
  EXPECT_TRUE(IsValidFilename("requests-2.31.0-py3-none-any.whl"));
  EXPECT_TRUE(IsValidFilename("torch-2.1.0+cpu-cp311-cp311-linux_x86_64.whl"));
  EXPECT_TRUE(IsValidFilename("pkg-1!2.0.tar.gz"));
  EXPECT_FALSE(IsValidFilename(""));
  EXPECT_FALSE(IsValidFilename(".."));
  EXPECT_FALSE(IsValidFilename(".hidden.whl"));
  EXPECT_FALSE(IsValidFilename("a/b.whl"));
  EXPECT_FALSE(IsValidFilename("a\\b.whl"));
  EXPECT_FALSE(IsValidFilename("a b.whl"));
  EXPECT_FALSE(IsValidFilename("a?.whl"));
  EXPECT_FALSE(IsValidFilename(std::string(256, 'a')));
}

TEST(NamesTest, WheelFilenamesAreParsed) {
  auto w = ParseWheelFilename("Foo_Bar-1.0.post1-cp311-cp311-manylinux_2_17_x86_64.whl");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->distribution, "Foo_Bar");
  EXPECT_EQ(w->project(), "foo-bar");
  EXPECT_EQ(w->version, "1.0.post1");
  EXPECT_EQ(w->build, "");
  EXPECT_EQ(w->python, "cp311");
  EXPECT_EQ(w->abi, "cp311");
  EXPECT_EQ(w->platform, "manylinux_2_17_x86_64");

  auto b = ParseWheelFilename("pkg-2.0-1build-py3-none-any.whl");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->build, "1build");

  EXPECT_FALSE(ParseWheelFilename("pkg-1.0.tar.gz").ok());
  EXPECT_FALSE(ParseWheelFilename("pkg-1.0-py3-none.whl").ok());
  EXPECT_FALSE(ParseWheelFilename("pkg-1.0-x-y-py3-none-any.whl").ok());
  EXPECT_FALSE(ParseWheelFilename("pkg-2.0-build-py3-none-any.whl").ok());
  EXPECT_FALSE(ParseWheelFilename("pkg--py3-none-any.whl").ok());
  EXPECT_FALSE(ParseWheelFilename("../pkg-1.0-py3-none-any.whl").ok());
}

TEST(NamesTest, PercentCoding) {
  EXPECT_EQ(*PercentDecode("a%2Bb%2fc+d"), "a+b/c+d");
  EXPECT_FALSE(PercentDecode("a%2").ok());
  EXPECT_FALSE(PercentDecode("a%").ok());
  EXPECT_FALSE(PercentDecode("a%zz").ok());
  EXPECT_EQ(PercentEncodeSegment("torch-2.1+cpu!x.whl"), "torch-2.1%2Bcpu%21x.whl");
  EXPECT_EQ(PercentEncodeSegment("a/b c"), "a%2Fb%20c");
}

TEST(NamesTest, ResolveUrlFollowsRfc3986) {
  const std::string base = "https://idx.test/simple/foo/";
  EXPECT_EQ(*ResolveUrl(base, "../../packages/ab/foo-1.0.tar.gz#sha256=00"),
            "https://idx.test/packages/ab/foo-1.0.tar.gz");
  EXPECT_EQ(*ResolveUrl(base, "foo-1.0.tar.gz"), "https://idx.test/simple/foo/foo-1.0.tar.gz");
  EXPECT_EQ(*ResolveUrl(base, "/files/x.whl"), "https://idx.test/files/x.whl");
  EXPECT_EQ(*ResolveUrl(base, "//cdn.test/a/./b/../x.whl"), "https://cdn.test/a/x.whl");
  EXPECT_EQ(*ResolveUrl(base, "http://other.test:8080/p/x.whl?token=1"),
            "http://other.test:8080/p/x.whl?token=1");
  EXPECT_EQ(*ResolveUrl(base, "../../../../x.whl"), "https://idx.test/x.whl");
  EXPECT_EQ(*ResolveUrl(base, ""), base);
  EXPECT_EQ(*ResolveUrl("http://h.test", "x"), "http://h.test/x");
  EXPECT_FALSE(ResolveUrl(base, "ftp://h.test/x.whl").ok());
  EXPECT_FALSE(ResolveUrl(base, "file:///etc/passwd").ok());
  EXPECT_FALSE(ResolveUrl(base, "javascript:alert(1)").ok());
  EXPECT_FALSE(ResolveUrl("not a url", "x").ok());
}

TEST(NamesTest, VersionKeyFoldsWhatAPinTreatsAlike) {
  for (const char* v : {"1.0", "1", "1.0.0", "01.0", "v1.0", "1.0+local.7", "V1.0.0+x"}) {
    EXPECT_EQ(VersionKey(v), "1") << v;
  }
  EXPECT_EQ(VersionKey("1.0-Alpha.1"), VersionKey("1.0a1"));
  EXPECT_EQ(VersionKey("1.0.post"), VersionKey("1.0-post0"));
  EXPECT_EQ(VersionKey("1.0rc"), VersionKey("1.0c0"));
  EXPECT_NE(VersionKey("1.0"), VersionKey("1.0.1"));
  EXPECT_NE(VersionKey("1.0"), VersionKey("1.0.post1"));
  EXPECT_NE(VersionKey("1.0"), VersionKey("1!1.0"));
  EXPECT_EQ(VersionKey("0!1.0"), VersionKey("1.0"));
}

TEST(NamesTest, DistributionVersionOfWheelsAndSdists) {
  EXPECT_EQ(DistributionVersion("foo", "foo-1.0-1-py3-none-any.whl"), "1.0");
  EXPECT_EQ(DistributionVersion("foo-bar", "foo_bar-2.1-py3-none-any.whl"), "2.1");
  EXPECT_EQ(DistributionVersion("foo-bar", "foo-bar-2.1.tar.gz"), "2.1");
  EXPECT_EQ(DistributionVersion("foo-bar", "Foo.Bar-2.1.zip"), "2.1");
  EXPECT_EQ(DistributionVersion("foo", "other-1.0.tar.gz"), std::nullopt);
  EXPECT_EQ(DistributionVersion("foo", "foo-1.0.exe"), std::nullopt);
}

}  // namespace
}  // namespace buildcache::pypi
