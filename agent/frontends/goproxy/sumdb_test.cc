#include "agent/frontends/goproxy/sumdb.h"

#include <gtest/gtest.h>

namespace buildcache::goproxy {
namespace {

TEST(SumdbNameTest, HostNamesOnly) {
  EXPECT_TRUE(IsValidSumdbName("sum.example.internal"));
  EXPECT_TRUE(IsValidSumdbName("localhost"));
  for (const char* n : {"", ".", "..", "a..b", "A.example", "a/b", "a b", "-a", "a.", "a%2f"}) {
    EXPECT_FALSE(IsValidSumdbName(n)) << n;
  }
}

TEST(TilePathTest, FullPartialAndDataTiles) {
  auto t = ParseTilePath("8/0/x001/234");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->height, 8);
  EXPECT_EQ(t->level, 0);
  EXPECT_EQ(t->index, 1234u);
  EXPECT_FALSE(t->partial());

  t = ParseTilePath("8/1/005.p/12");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->index, 5u);
  EXPECT_EQ(t->width, 12);
  EXPECT_TRUE(t->partial());
  EXPECT_EQ(t->ToString(), "8/1/005.p/12");

  t = ParseTilePath("8/data/x123/x456/789");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->data);
  EXPECT_EQ(t->index, 123456789u);
  EXPECT_EQ(t->ToString(), "8/data/x123/x456/789");
}

TEST(TilePathTest, NonCanonicalOrHostileTilesAreRejected) {
  for (const char* p : {"",
                        "8",
                        "8/0",
                        "8/0/",
                        "8/0/12",
                        "8/0/1234",
                        "8/0/x000/001",
                        "8/0/001/002",
                        "8/0/x001",
                        "08/0/001",
                        "0/0/001",
                        "31/0/001",
                        "8/64/001",
                        "8/0/001.p/0",
                        "8/0/001.p/256",
                        "8/0/001.p/",
                        "8/0/001.p/1/2",
                        "8/0/../001",
                        "8/0/00a",
                        "8/x/001",
                        "8/0/001/",
                        "8/0/x001/x002/x003/x004/x005/x006/x007/008"}) {
    EXPECT_FALSE(ParseTilePath(p).ok()) << p;
  }
}

TEST(LookupTest, FindsTheModulesHashes) {
  const std::string body =
      "123\n"
      "example.com/m v1.0.0 h1:zipzipzip=\n"
      "example.com/m v1.0.0/go.mod h1:modmodmod=\n"
      "\n"
      "go.sum database tree\n456\nroot=\n\n\xe2\x80\x94 sig\n";
  auto h = ParseLookup(body, "example.com/m", "v1.0.0");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->zip, "h1:zipzipzip=");
  EXPECT_EQ(h->mod, "h1:modmodmod=");
  EXPECT_FALSE(ParseLookup(body, "example.com/other", "v1.0.0").ok());
  EXPECT_FALSE(ParseLookup(body, "example.com/m", "v1.0.1").ok());
  EXPECT_FALSE(ParseLookup("not a record", "example.com/m", "v1.0.0").ok());
}

}  // namespace
}  // namespace buildcache::goproxy
