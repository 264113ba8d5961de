#include "agent/frontends/goproxy/module_path.h"

#include <gtest/gtest.h>

namespace buildcache::goproxy {
namespace {

TEST(CaseEncodingTest, UppercaseLettersRoundTrip) {
  EXPECT_EQ(Escape("github.com/BurntSushi/toml").value(), "github.com/!burnt!sushi/toml");
  EXPECT_EQ(Unescape("github.com/!burnt!sushi/toml").value(), "github.com/BurntSushi/toml");
  EXPECT_EQ(Escape("v1.0.0-RC1").value(), "v1.0.0-!r!c1");
  EXPECT_EQ(Unescape("v1.0.0-!r!c1").value(), "v1.0.0-RC1");
  EXPECT_EQ(Unescape("example.com/plain").value(), "example.com/plain");
}

TEST(CaseEncodingTest, MalformedEncodingsAreRejected) {
  EXPECT_FALSE(Unescape("github.com/BurntSushi/toml").ok());  // raw uppercase
  EXPECT_FALSE(Unescape("example.com/a!").ok());              // trailing '!'
  EXPECT_FALSE(Unescape("example.com/!1").ok());              // '!' before a digit
  EXPECT_FALSE(Unescape("example.com/!!a").ok());
  EXPECT_FALSE(Escape("example.com/a!b").ok());
}

TEST(ModulePathTest, ValidPathsPass) {
  for (const char* p : {"example.com/m", "github.com/BurntSushi/toml", "golang.org/x/net",
                        "gopkg.in/yaml.v3", "example.com/a_b~c-d/v2", "k8s.io/api"}) {
    EXPECT_TRUE(CheckModulePath(p).ok()) << p << ": " << CheckModulePath(p).ToString();
  }
}

TEST(ModulePathTest, InvalidPathsAreRejected) {
  for (const char* p : {"",
                        "example.com/../etc",
                        "example.com/./x",
                        "example.com//x",
                        "example.com/x/",
                        "/example.com/x",
                        "example.com/.hidden",
                        "example.com/trailing.",
                        "nodot/x",
                        "Example.com/x",
                        "-example.com/x",
                        "example.com/a b",
                        "example.com/a@v1",
                        "example.com/a:b",
                        "example.com/a\\b",
                        "example.com/a%2fb",
                        "example.com/con",
                        "example.com/NUL.txt",
                        "example.com/\xc3\xa9",
                        "example.com/a\nb",
                        "example.com/..",
                        "..",
                        "example.com/a?b",
                        "example.com/a#b"}) {
    EXPECT_FALSE(CheckModulePath(p).ok()) << p;
  }
  EXPECT_FALSE(CheckModulePath("example.com/" + std::string(600, 'a')).ok());
}

TEST(VersionTest, CanonicalVersions) {
  for (const char* v : {"v0.0.0", "v1.2.3", "v10.20.30", "v1.0.0-rc.1", "v1.0.0-RC1",
                        "v2.0.0+incompatible", "v0.0.0-20240102150405-abcdef123456",
                        "v1.2.4-0.20240102150405-abcdef123456", "v1.0.0-alpha-1.x"}) {
    EXPECT_TRUE(IsCanonicalVersion(v)) << v;
  }
  for (const char* v :
       {"", "1.2.3", "v1.2", "v1", "v01.2.3", "v1.02.3", "v1.2.3-", "v1.2.3-01", "v1.2.3-a..b",
        "v1.2.3+build", "v1.2.3 ", "v1.2.3-a/b", "master", "v1.2.3-a_b", "latest"}) {
    EXPECT_FALSE(IsCanonicalVersion(v)) << v;
  }
}

TEST(VersionTest, PseudoVersions) {
  EXPECT_TRUE(IsPseudoVersion("v0.0.0-20240102150405-abcdef123456"));
  EXPECT_TRUE(IsPseudoVersion("v1.2.4-0.20240102150405-abcdef123456"));
  EXPECT_TRUE(IsPseudoVersion("v1.2.3-pre.0.20240102150405-abcdef123456"));
  EXPECT_TRUE(IsPseudoVersion("v2.0.0-20240102150405-abcdef123456+incompatible"));
  EXPECT_FALSE(IsPseudoVersion("v1.2.3"));
  EXPECT_FALSE(IsPseudoVersion("v1.2.3-rc.1"));
  EXPECT_FALSE(IsPseudoVersion("v0.0.0-2024010215040-abcdef123456"));   // short timestamp
  EXPECT_FALSE(IsPseudoVersion("v0.0.0-20240102150405-ABCDEF123456"));  // uppercase hex
}

TEST(VersionTest, QueriesAreBoundedAndSafe) {
  for (const char* v : {"v1.2.3", "master", "main", "abcdef1", "release-1.2", "v1.2"}) {
    EXPECT_TRUE(CheckVersionQuery(v).ok()) << v;
  }
  for (const char* v :
       {"", "..", "../x", "a/b", ".hidden", "-flag", "a b", "a?b", "a%2f", "a\x01", "a..b"}) {
    EXPECT_FALSE(CheckVersionQuery(v).ok()) << v;
  }
  EXPECT_FALSE(CheckVersionQuery(std::string(200, 'a')).ok());
}

}  // namespace
}  // namespace buildcache::goproxy
