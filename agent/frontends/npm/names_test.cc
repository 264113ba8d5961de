#include "agent/frontends/npm/names.h"

#include <gtest/gtest.h>

#include <string>

namespace buildcache::npm {
namespace {

TEST(PackageNameTest, PlainAndScopedNamesParse) {
  auto plain = ParsePackageName("left-pad");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->scoped());
  EXPECT_EQ(plain->full(), "left-pad");
  EXPECT_EQ(plain->escaped(), "left-pad");

  auto scoped = ParsePackageName("@types/node");
  ASSERT_TRUE(scoped.ok());
  EXPECT_TRUE(scoped->scoped());
  EXPECT_EQ(scoped->scope, "types");
  EXPECT_EQ(scoped->name, "node");
  EXPECT_EQ(scoped->full(), "@types/node");
  EXPECT_EQ(scoped->escaped(), "@types%2fnode");
}

TEST(PackageNameTest, NamesOldPackagesStillUseAreAccepted) {
  for (const char* name : {"JSONStream", "lodash.merge", "a", "socket.io-client", "@scope/_private",
                           "@babel/plugin-transform-runtime", "node-gyp~1", "d3-(old)"}) {
    EXPECT_TRUE(ParsePackageName(name).ok()) << name;
  }
}

TEST(PackageNameTest, InvalidNamesAreRejected) {
  const std::string too_long(215, 'a');
  for (const std::string& name : {std::string(""),
                                  std::string(".hidden"),
                                  std::string("_underscore"),
                                  std::string("node_modules"),
                                  std::string("FAVICON.ICO"),
                                  std::string("has space"),
                                  std::string("a/b"),
                                  std::string("@scope"),
                                  std::string("@/name"),
                                  std::string("@scope/"),
                                  std::string("@scope/.x"),
                                  std::string("@.scope/x"),
                                  std::string("@a/b/c"),
                                  std::string("../etc/passwd"),
                                  std::string("x?y"),
                                  std::string("x#y"),
                                  std::string("caf\xc3\xa9"),
                                  std::string("a\nb"),
                                  std::string("a%2fb"),
                                  std::string("a\0b", 3),
                                  too_long}) {
    EXPECT_FALSE(ParsePackageName(name).ok()) << name;
  }
  EXPECT_TRUE(ParsePackageName(std::string(214, 'a')).ok());
}

TEST(TarballFilenameTest, OnlyPlainFileNamesAreValid) {
  EXPECT_TRUE(IsValidTarballFilename("left-pad-1.3.0.tgz"));
  EXPECT_TRUE(IsValidTarballFilename("node-20.11.1-beta.2+build.7.tgz"));
  for (const char* name : {"", ".tgz", "a/b.tgz", "a b.tgz", "..", "a%2f.tgz", "a?.tgz"}) {
    EXPECT_FALSE(IsValidTarballFilename(name)) << name;
  }
}

TEST(PercentDecodeTest, DecodesEscapesAndRejectsBadOnes) {
  EXPECT_EQ(PercentDecode("@types%2fnode").value(), "@types/node");
  EXPECT_EQ(PercentDecode("@types%2Fnode").value(), "@types/node");
  EXPECT_EQ(PercentDecode("%40scope").value(), "@scope");
  EXPECT_FALSE(PercentDecode("a%2").ok());
  EXPECT_FALSE(PercentDecode("a%zz").ok());
  EXPECT_FALSE(PercentDecode("a%00").ok());
}

TEST(BaseUrlFromHostTest, AcceptsHostsAndRejectsInjection) {
  EXPECT_EQ(BaseUrlFromHost("127.0.0.1:8080").value(), "http://127.0.0.1:8080");
  EXPECT_EQ(BaseUrlFromHost("buildcache.ci.svc").value(), "http://buildcache.ci.svc");
  EXPECT_EQ(BaseUrlFromHost("[::1]:9000").value(), "http://[::1]:9000");
  EXPECT_EQ(BaseUrlFromHost("[fe80::1]").value(), "http://[fe80::1]");
  for (const char* host :
       {"", "a b", "user@host", "host/path", "host:", "host:0", "host:65536", "host:80:80",
        "host\r\nX: y", "[::1", "[zz]:80", "[::1]x", "-host", "host\"", "h\xc3\xa9"}) {
    EXPECT_FALSE(BaseUrlFromHost(host).has_value()) << host;
  }
}

}  // namespace
}  // namespace buildcache::npm
