#include "agent/frontends/goproxy/dirhash.h"

#include <gtest/gtest.h>

#include <cstring>

#include "agent/frontends/goproxy/testing/test_zip.h"

namespace buildcache::goproxy {
namespace {

using testing::BuildZip;
using testing::ZipEntry;

ReadAtFn Reader(const std::string& data) {
  return [&data](uint64_t offset, std::span<char> buf) -> Result<size_t> {
    if (offset >= data.size()) return size_t{0};
    size_t n = std::min<size_t>(buf.size(), data.size() - offset);
    std::memcpy(buf.data(), data.data() + offset, n);
    return n;
  };
}

// Computed independently (Python hashlib/base64) from the h1 definition.
constexpr std::string_view kModuleH1 = "h1:F+OJvc95XCIG2AmEewSE1IHhMMyhwm3iZVuUD3NY6vQ=";

std::vector<ZipEntry> ModuleFiles() {
  return {{"example.com/m@v1.0.0/go.mod", "module example.com/m\n", true},
          {"example.com/m@v1.0.0/a.go", "package m\n", false},
          {"example.com/m@v1.0.0/empty", "", true}};
}

TEST(DirHashTest, GoModHashMatchesPublishedValue) {
  // A go.sum line of a public module whose go.mod is the synthesized "module <path>\n".
  EXPECT_EQ(HashGoMod("module golang.org/x/text\n"),
            "h1:NqM8EUOU14njkJ3fqMW+pc6Ldnwhi/IjpwHt7yyuwOQ=");
}

TEST(DirHashTest, ZipHashCoversEveryFileSorted) {
  std::string zip = BuildZip(ModuleFiles());
  auto h = HashZip(Reader(zip), zip.size());
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(*h, kModuleH1);
  // Order in the archive does not matter.
  auto files = ModuleFiles();
  std::swap(files[0], files[2]);
  std::string reordered = BuildZip(files);
  EXPECT_EQ(HashZip(Reader(reordered), reordered.size()).value(), kModuleH1);
}

TEST(DirHashTest, Zip64ArchivesAreRead) {
  std::string zip = BuildZip(ModuleFiles(), /*zip64=*/true);
  auto h = HashZip(Reader(zip), zip.size());
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(*h, kModuleH1);
}

TEST(DirHashTest, LargeDeflatedEntryStreams) {
  std::string big;
  for (int i = 0; i < 200000; ++i) big += "line " + std::to_string(i) + "\n";
  std::string zip = BuildZip({{"example.com/m@v1.0.0/big.txt", big, true}});
  auto h = HashZip(Reader(zip), zip.size());
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  auto stored = BuildZip({{"example.com/m@v1.0.0/big.txt", big, false}});
  EXPECT_EQ(HashZip(Reader(stored), stored.size()).value(), *h);
}

TEST(DirHashTest, CorruptArchivesAreDataLoss) {
  std::string zip = BuildZip(ModuleFiles());
  // Flip a byte of the stored a.go content: the CRC no longer matches.
  std::string bad = zip;
  size_t pos = bad.find("package m");
  ASSERT_NE(pos, std::string::npos);
  bad[pos] = 'P';
  EXPECT_EQ(HashZip(Reader(bad), bad.size()).status().code(), StatusCode::kDataLoss);
  // Truncated archive.
  std::string cut = zip.substr(0, zip.size() - 10);
  EXPECT_EQ(HashZip(Reader(cut), cut.size()).status().code(), StatusCode::kDataLoss);
  // Not a zip at all.
  std::string junk = "definitely not a zip file, just some bytes";
  EXPECT_EQ(HashZip(Reader(junk), junk.size()).status().code(), StatusCode::kDataLoss);
  // Duplicate names.
  std::string dup = BuildZip({{"a/x", "1", true}, {"a/x", "2", true}});
  EXPECT_EQ(HashZip(Reader(dup), dup.size()).status().code(), StatusCode::kDataLoss);
  // A name with a newline.
  std::string nl = BuildZip({{"a/x\ny", "1", true}});
  EXPECT_EQ(HashZip(Reader(nl), nl.size()).status().code(), StatusCode::kDataLoss);
}

TEST(DirHashTest, UnpackedSizeIsBounded) {
  std::string zip = BuildZip({{"a/x", std::string(4096, 'z'), true}});
  ZipLimits limits;
  limits.max_uncompressed = 1000;
  EXPECT_EQ(HashZip(Reader(zip), zip.size(), limits).status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace buildcache::goproxy
