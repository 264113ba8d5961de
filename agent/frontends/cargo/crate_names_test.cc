#include "agent/frontends/cargo/crate_names.h"

#include <gtest/gtest.h>

namespace buildcache::cargo {
namespace {

TEST(CrateNamesTest, ValidNames) {
  for (const char* name : {"a", "ab", "abc", "serde", "serde_json", "tokio-util", "Inflector",
                           "_private", "x86", "a1-b2_c3"}) {
    EXPECT_TRUE(IsValidCrateName(name)) << name;
  }
  EXPECT_TRUE(IsValidCrateName(std::string(64, 'a')));
}

TEST(CrateNamesTest, InvalidNames) {
  for (const char* name : {"", "-lead", "a.b", "a/b", "..", "a b", "caf\xc3\xa9", "a%2fb", "a+b"}) {
    EXPECT_FALSE(IsValidCrateName(name)) << name;
  }
  EXPECT_FALSE(IsValidCrateName(std::string(65, 'a')));
}

TEST(CrateNamesTest, Versions) {
  for (const char* v : {"0.0.0", "1.2.3", "10.20.30", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-0.3.7",
                        "1.0.0+build.5", "1.0.0-rc.1+20240101", "1.0.0-x-y-z.--"}) {
    EXPECT_TRUE(IsValidVersion(v)) << v;
  }
  for (const char* v : {"", "1", "1.2", "1.2.x", "1..2", "1.2.3-", "1.2.3+", "1.2.3-a..b",
                        "1.2.3/../x", "v1.2.3", "1.2.3 ", "1.2.3-a_b"}) {
    EXPECT_FALSE(IsValidVersion(v)) << v;
  }
  EXPECT_FALSE(IsValidVersion("1.2.3-" + std::string(200, 'a')));
}

TEST(CrateNamesTest, IndexLayout) {
  EXPECT_EQ(IndexPath("a"), "1/a");
  EXPECT_EQ(IndexPath("ab"), "2/ab");
  EXPECT_EQ(IndexPath("abc"), "3/a/abc");
  EXPECT_EQ(IndexPath("serde"), "se/rd/serde");
  EXPECT_EQ(IndexPath("Inflector"), "in/fl/inflector");
  EXPECT_EQ(IndexPrefix("Inflector"), "In/fl");
  EXPECT_EQ(IndexPrefix("Abc"), "3/A");
}

TEST(CrateNamesTest, ParseIndexPathAcceptsOnlyCanonicalPaths) {
  for (const char* name : {"a", "ab", "abc", "serde", "serde_json", "tokio-util"}) {
    auto parsed = ParseIndexPath(IndexPath(name));
    ASSERT_TRUE(parsed.ok()) << name;
    EXPECT_EQ(*parsed, name);
  }
  for (const char* path : {"", "serde", "se/rd/Serde", "Se/rd/serde", "se/rx/serde", "1/ab", "2/a",
                           "3/b/abc", "3/abc", "se/rd/serde/", "se/rd/../serde", "se/rd/se%72de",
                           "/se/rd/serde", "se//rd/serde", "ab/cd/ab.cd"}) {
    EXPECT_FALSE(ParseIndexPath(path).ok()) << path;
  }
}

TEST(CrateNamesTest, PercentDecode) {
  EXPECT_EQ(*PercentDecode("1.0.0%2Bbuild"), "1.0.0+build");
  EXPECT_EQ(*PercentDecode("plain"), "plain");
  EXPECT_FALSE(PercentDecode("%").ok());
  EXPECT_FALSE(PercentDecode("%2").ok());
  EXPECT_FALSE(PercentDecode("%zz").ok());
}

}  // namespace
}  // namespace buildcache::cargo
