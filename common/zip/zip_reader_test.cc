#include "common/zip/zip_reader.h"

#include <gtest/gtest.h>

#include "agent/frontends/goproxy/testing/test_zip.h"

namespace buildcache::zip {
namespace {

using goproxy::testing::BuildZip;

std::string Content(const std::string& zip, const Entry& e) {
  std::string out;
  Status s = ReadEntry(ReadAtBytes(zip), zip.size(), e, [&](std::string_view d) {
    out.append(d);
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

TEST(ZipReaderTest, ListsAndReadsStoredAndDeflatedEntries) {
  std::string zip = BuildZip({{"a/METADATA", "Name: x\n", true}, {"b.txt", "plain", false}});
  auto entries = ReadDirectory(ReadAtBytes(zip), zip.size(), 10);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, "a/METADATA");
  EXPECT_EQ(Content(zip, (*entries)[0]), "Name: x\n");
  EXPECT_EQ(Content(zip, (*entries)[1]), "plain");
}

TEST(ZipReaderTest, HostileArchivesAreDataLoss) {
  std::string zip = BuildZip({{"a", "1", false}, {"b", "2", false}});
  EXPECT_EQ(ReadDirectory(ReadAtBytes(zip), zip.size(), 1).status().code(), StatusCode::kDataLoss);
  std::string junk = "not a zip";
  EXPECT_EQ(ReadDirectory(ReadAtBytes(junk), junk.size(), 10).status().code(),
            StatusCode::kDataLoss);
  // A sink's error stops the read.
  auto entries = ReadDirectory(ReadAtBytes(zip), zip.size(), 10).value();
  Status s = ReadEntry(ReadAtBytes(zip), zip.size(), entries[0],
                       [](std::string_view) { return TooLarge("enough"); });
  EXPECT_EQ(s.code(), StatusCode::kTooLarge);
}

}  // namespace
}  // namespace buildcache::zip
