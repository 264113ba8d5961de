#include "agent/frontends/cargo/sparse_index.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace buildcache::cargo {
namespace {

const std::string kA(64, 'a');
const std::string kB(64, 'b');

std::string IndexFile() {
  return R"({"name":"Demo","vers":"1.0.0","deps":[],"cksum":")" + kA +
         R"(","features":{},"yanked":false})"
         "\n"
         R"({"name":"Demo","vers":"1.0.0-rc.1","deps":[],"cksum":")" +
         kB +
         R"(","features":{},"yanked":true})"
         "\n"
         "not json at all \"1.1.0\"\n"
         R"({"name":"Demo","vers":"1.1.0","deps":[],"cksum":"xyz","features":{}})"
         "\n"
         R"({"name":"Demo","vers":"1.2.0","deps":[],"features":{}})";
}

TEST(SparseIndexTest, FindsTheVersionLine) {
  auto e = FindVersion(IndexFile(), "demo", "1.0.0");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->name, "Demo");
  EXPECT_EQ(e->vers, "1.0.0");
  EXPECT_EQ(e->cksum, kA);
  EXPECT_FALSE(e->yanked);
  auto rc = FindVersion(IndexFile(), "DEMO", "1.0.0-rc.1");
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(rc->cksum, kB);
  EXPECT_TRUE(rc->yanked);
}

TEST(SparseIndexTest, MissingVersionsAndUnusableChecksums) {
  EXPECT_EQ(FindVersion(IndexFile(), "demo", "9.9.9").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(FindVersion(IndexFile(), "other", "1.0.0").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(FindVersion(IndexFile(), "demo", "1.0").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(FindVersion(IndexFile(), "demo", "1.1.0").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(FindVersion(IndexFile(), "demo", "1.2.0").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(FindVersion("", "demo", "1.0.0").status().code(), StatusCode::kNotFound);
}

TEST(SparseIndexTest, DownloadTemplate) {
  EXPECT_EQ(*ParseDownloadTemplate(R"({"dl":"https://dl.example/crates","api":"x"})"),
            "https://dl.example/crates");
  EXPECT_FALSE(ParseDownloadTemplate("{}").ok());
  EXPECT_FALSE(ParseDownloadTemplate(R"({"dl":""})").ok());
  EXPECT_FALSE(ParseDownloadTemplate(R"({"dl":5})").ok());
  EXPECT_FALSE(ParseDownloadTemplate("[1]").ok());
  EXPECT_FALSE(ParseDownloadTemplate("garbage").ok());
}

TEST(SparseIndexTest, ExpandDownloadUrl) {
  EXPECT_EQ(ExpandDownloadUrl("https://dl.example/crates", "Serde", "1.0.0", kA),
            "https://dl.example/crates/Serde/1.0.0/download");
  EXPECT_EQ(
      ExpandDownloadUrl("https://dl.example/{crate}/{crate}-{version}.crate", "serde", "1.0.0", kA),
      "https://dl.example/serde/serde-1.0.0.crate");
  EXPECT_EQ(ExpandDownloadUrl("https://dl.example/{prefix}/{lowerprefix}/{sha256-checksum}",
                              "Serde", "1.0.0", kA),
            "https://dl.example/Se/rd/se/rd/" + kA);
  EXPECT_EQ(ExpandDownloadUrl("http://h/{lowerprefix}/{crate}", "abc", "1.0.0", kA),
            "http://h/3/a/abc");
}

TEST(SparseIndexTest, RegistryConfigHasOnlyDl) {
  auto j = nlohmann::json::parse(RenderRegistryConfig("http://agent:8080/cargo/api/v1/crates"));
  EXPECT_EQ(j, nlohmann::json({{"dl", "http://agent:8080/cargo/api/v1/crates"}}));
}

}  // namespace
}  // namespace buildcache::cargo
