#include "agent/frontends/goproxy/dirhash.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <set>

#include "agent/frontends/goproxy/testing/test_zip.h"
#include "agent/frontends/goproxy/zip_stream_hasher.h"

namespace buildcache::goproxy {
namespace {

using testing::BuildZip;
using testing::Put16;
using testing::Put32;
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

// Feeds the archive to a stream hasher in pieces of `piece` bytes.
std::unique_ptr<ZipStreamHasher> Streamed(
    const std::string& zip, size_t piece, uint64_t max = uint64_t{1} << 30,
    size_t whole_entry_limit = ZipStreamHasher::kDefaultWholeEntryLimit) {
  auto h = std::make_unique<ZipStreamHasher>(max, whole_entry_limit);
  for (size_t i = 0; i < zip.size(); i += piece) h->Update(std::string_view(zip).substr(i, piece));
  return h;
}

// A reader that fails a read at any entry's local header (where reading an entry starts):
// HashZip can then read the central directory but no entry.
ReadAtFn ReaderWithoutEntries(const std::string& data) {
  auto entries = zip::ReadDirectory(Reader(data), data.size(), 100).value();
  std::set<uint64_t> local;
  for (const zip::Entry& e : entries) local.insert(e.local_offset);
  return [&data, local](uint64_t offset, std::span<char> buf) -> Result<size_t> {
    if (local.contains(offset)) return Unavailable("entry read again");
    return Reader(data)(offset, buf);
  };
}

uint64_t CentralDirectoryOffset(const std::string& zip) {
  size_t eocd = zip.rfind(std::string("PK\x05\x06", 4));
  return static_cast<unsigned char>(zip[eocd + 16]) |
         static_cast<uint64_t>(static_cast<unsigned char>(zip[eocd + 17])) << 8 |
         static_cast<uint64_t>(static_cast<unsigned char>(zip[eocd + 18])) << 16 |
         static_cast<uint64_t>(static_cast<unsigned char>(zip[eocd + 19])) << 24;
}

TEST(ZipStreamHasherTest, EntriesHashedInStreamAreNotReadAgain) {
  using D = ZipEntry::Descriptor;
  std::string big;
  for (int i = 0; i < 50000; ++i) big += "line " + std::to_string(i) + "\n";
  std::vector<ZipEntry> files = {
      {"example.com/m@v1.0.0/go.mod", "module example.com/m\n", true, D::kSigned},
      {"example.com/m@v1.0.0/a.go", "package m\n", false},
      {"example.com/m@v1.0.0/empty", "", true, D::kUnsigned},
      {"example.com/m@v1.0.0/empty-stored", "", false},
      {"example.com/m@v1.0.0/big.txt", big, true, D::kSigned},
      {"example.com/m@v1.0.0/z.go", "package m\n\nvar Z = 1\n", true}};
  const std::string zip = BuildZip(files);
  const std::string expected = HashZip(Reader(zip), zip.size()).value();
  // Each deflated entry decoded whole, and (a whole-entry limit of 64 bytes) the larger ones
  // inflated as they stream after the first bytes were gathered.
  for (size_t limit : {ZipStreamHasher::kDefaultWholeEntryLimit, size_t{64}}) {
    for (size_t piece : {size_t{1}, size_t{7}, size_t{4096}, zip.size()}) {
      auto streamed = Streamed(zip, piece, uint64_t{1} << 30, limit);
      EXPECT_FALSE(streamed->stopped()) << piece << " " << limit;
      EXPECT_EQ(streamed->hashed(), files.size()) << piece << " " << limit;
      // Deflated: go.mod, empty, big.txt, z.go. Past 64 bytes only big.txt.
      EXPECT_EQ(streamed->decoded_whole(), limit == 64 ? 3u : 4u) << piece << " " << limit;
      auto h = HashZip(ReaderWithoutEntries(zip), zip.size(), {}, streamed.get());
      ASSERT_TRUE(h.ok()) << piece << " " << limit << ": " << h.status().ToString();
      EXPECT_EQ(*h, expected) << piece << " " << limit;
    }
  }
  // Without the stream hasher the same reader fails: the entries are read.
  EXPECT_FALSE(HashZip(ReaderWithoutEntries(zip), zip.size()).ok());
}

// A DEFLATE stream of stored blocks, so chosen bytes appear in the compressed data as they are.
std::string StoredBlocks(const std::vector<std::string>& blocks) {
  std::string out;
  for (size_t i = 0; i < blocks.size(); ++i) {
    out.push_back(i + 1 == blocks.size() ? '\x01' : '\x00');  // BFINAL on the last; BTYPE 00
    Put16(&out, static_cast<uint32_t>(blocks[i].size()));
    Put16(&out, static_cast<uint32_t>(~blocks[i].size() & 0xffff));
    out += blocks[i];
  }
  return out;
}

// Inside an entry's compressed data, bytes that look like the data descriptor ending it (its
// signature, then a compressed size equal to their own offset): decoding up to them fails, so the
// entry goes on to its real end. Past a few of them the entry is inflated as it streams instead.
// Either way the stream hashes every entry, as HashZip does.
TEST(ZipStreamHasherTest, DescriptorLookAlikesInsideAnEntryAreNotItsEnd) {
  using D = ZipEntry::Descriptor;
  // Two and six look-alikes claiming 16 bytes of content; one claiming 4 GiB (never allocated:
  // an entry that large is inflated as it streams).
  for (auto [fakes, claimed] : {std::pair{2, 16u}, std::pair{6, 16u}, std::pair{1, 0xfffffff0u}}) {
    // Each look-alike at compressed offset `at` within the first block (5 header bytes before it).
    std::string first(40 * fakes, '.');
    for (int i = 0; i < fakes; ++i) {
      const size_t j = 40 * static_cast<size_t>(i);
      std::string fake = "PK\x07\x08";
      Put32(&fake, 0x12345678);                    // a CRC-32
      Put32(&fake, static_cast<uint32_t>(5 + j));  // "compressed size": its own offset
      Put32(&fake, claimed);                       // "uncompressed size"
      first.replace(j, fake.size(), fake);
    }
    const std::string second = "the rest of the file\n";
    // Large enough that reading the central directory does not start at a local header.
    std::string big;
    for (int i = 0; i < 50000; ++i) big += "line " + std::to_string(i) + "\n";
    std::vector<ZipEntry> files = {{"m@v1/big.txt", big, true, D::kSigned},
                                   {"m@v1/a.go", "package a\n", true, D::kSigned},
                                   {.name = "m@v1/tricky.bin",
                                    .content = first + second,
                                    .deflate = true,
                                    .descriptor = D::kSigned,
                                    .deflated = StoredBlocks({first, second})},
                                   {"m@v1/z.go", "package z\n", true, D::kUnsigned}};
    const std::string zip = BuildZip(files);
    const std::string expected = HashZip(Reader(zip), zip.size()).value();
    for (size_t piece : {size_t{1}, size_t{3}, size_t{4096}, zip.size()}) {
      auto streamed = Streamed(zip, piece);
      EXPECT_FALSE(streamed->stopped()) << fakes << " " << piece;
      EXPECT_EQ(streamed->hashed(), files.size()) << fakes << " " << piece;
      // tricky.bin is decoded whole past two look-alikes, inflated as it streams past six or
      // from one that claims more than a whole entry may hold.
      EXPECT_EQ(streamed->decoded_whole(), fakes == 2 ? 4u : 3u) << fakes << " " << piece;
      auto h = HashZip(ReaderWithoutEntries(zip), zip.size(), {}, streamed.get());
      ASSERT_TRUE(h.ok()) << fakes << " " << piece << ": " << h.status().ToString();
      EXPECT_EQ(*h, expected) << fakes << " " << piece;
    }
  }
}

TEST(ZipStreamHasherTest, WhatTheStreamCannotFollowIsReadFromTheArchive) {
  // A stored entry with a data descriptor has no length the stream can see: it and everything
  // after it are read from the archive; the result is the same.
  std::vector<ZipEntry> files = {
      {"m@v1/a", "first\n", true},
      {"m@v1/b", "stored, length after\n", false, ZipEntry::Descriptor::kSigned},
      {"m@v1/c", "third\n", true}};
  std::string zip = BuildZip(files);
  auto streamed = Streamed(zip, 5);
  EXPECT_TRUE(streamed->stopped());
  EXPECT_EQ(streamed->hashed(), 1u);
  EXPECT_EQ(HashZip(Reader(zip), zip.size(), {}, streamed.get()).value(),
            HashZip(Reader(zip), zip.size()).value());
  // Bytes before the first local header (a self-extracting stub): nothing is taken from the
  // stream. The archive then does not parse either way.
  std::string stub = "#!/bin/sh\nexit 0\n" + zip;
  auto from_stub = Streamed(stub, 64);
  EXPECT_EQ(from_stub->hashed(), 0u);
  EXPECT_EQ(HashZip(Reader(stub), stub.size(), {}, from_stub.get()).ok(),
            HashZip(Reader(stub), stub.size()).ok());
  // Past the unpacked-size bound the hasher stops, and HashZip's own bound decides.
  auto bounded = Streamed(BuildZip({{"m@v1/x", std::string(4096, 'z'), true}}), 100, 1000);
  EXPECT_TRUE(bounded->stopped());
  EXPECT_EQ(bounded->hashed(), 0u);
}

// The central directory is what the go command reads: a stream hash is used only when the
// directory's record for that offset agrees, so an archive whose directory disagrees with its
// local headers gets exactly the verdict it gets without the stream hasher.
TEST(ZipStreamHasherTest, CentralDirectoryThatDisagreesGetsTheSameVerdict) {
  std::vector<ZipEntry> files = {{"m@v1/a.go", "package a\n", true},
                                 {"m@v1/b.go", "package b\n", true}};
  const std::string zip = BuildZip(files);
  const uint64_t cd = CentralDirectoryOffset(zip);
  // The directory's CRC-32 of the first entry changed: a CRC mismatch either way.
  std::string bad_crc = zip;
  bad_crc[cd + 16] ^= 1;
  auto streamed = Streamed(bad_crc, 3);
  EXPECT_EQ(streamed->hashed(), 2u);
  EXPECT_EQ(HashZip(Reader(bad_crc), bad_crc.size(), {}, streamed.get()).status().code(),
            StatusCode::kDataLoss);
  EXPECT_EQ(HashZip(Reader(bad_crc), bad_crc.size()).status().code(), StatusCode::kDataLoss);
  // A directory whose second record points at the first local header (the file listed under
  // the other name): both ways hash a.go's bytes for that name.
  std::string aliased = zip;
  const size_t second = cd + 46 + files[0].name.size();
  for (int i = 0; i < 4; ++i) aliased[second + 42 + i] = 0;  // local header offset 0
  // The sizes and CRC of record 2 still describe b.go: the stream hash for offset 0 (a.go) does
  // not match them, so the archive is read, and the CRC check fails the same way.
  auto streamed_aliased = Streamed(aliased, 11);
  auto with = HashZip(Reader(aliased), aliased.size(), {}, streamed_aliased.get());
  auto without = HashZip(Reader(aliased), aliased.size());
  EXPECT_EQ(with.ok(), without.ok());
  if (with.ok()) {
    EXPECT_EQ(*with, *without);
  } else {
    EXPECT_EQ(with.status().code(), without.status().code());
  }
}

}  // namespace
}  // namespace buildcache::goproxy
