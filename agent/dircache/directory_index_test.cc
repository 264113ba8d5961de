#include "agent/dircache/directory_index.h"

#include <string>

#include "gtest/gtest.h"

namespace buildcache::dircache {
namespace {

using Clock = DirectoryIndex::Clock;

ManifestEntry Entry(const std::string& path, const std::string& content, uint32_t mode = 0644) {
  return ManifestEntry{path, content.size(), mode, store::Digest::Of(content), 0, false};
}

Fingerprint Fp(uint64_t size, int64_t mtime) { return Fingerprint{size, mtime, mtime, 7}; }

TEST(DirectoryIndexTest, CountsLiveFilesAndBytes) {
  DirectoryIndex index(100);
  EXPECT_TRUE(index.Put(Entry("a", "aaa"), Fp(3, 1)));
  EXPECT_TRUE(index.Put(Entry("b", "bb"), Fp(2, 1)));
  EXPECT_EQ(index.live_files(), 2u);
  EXPECT_EQ(index.live_bytes(), 5u);
  EXPECT_TRUE(index.Put(Entry("a", "aaaaaa"), Fp(6, 2)));  // replaced: counted once
  EXPECT_EQ(index.live_files(), 2u);
  EXPECT_EQ(index.live_bytes(), 8u);
  EXPECT_TRUE(index.MarkDeleted("b", Clock::now()));
  EXPECT_FALSE(index.MarkDeleted("b", Clock::now()));  // not live any more
  EXPECT_FALSE(index.MarkDeleted("never", Clock::now()));
  EXPECT_EQ(index.live_files(), 1u);
  EXPECT_EQ(index.live_bytes(), 6u);
  EXPECT_EQ(index.tracked(), 2u);
}

// The rule DirectoryIndex documents: a new generation when what peers see changes, the same for
// a file indexed from disk and one pulled.
TEST(DirectoryIndexTest, GenerationMovesOnlyWhenWhatPeersSeeChanges) {
  DirectoryIndex index(100);
  uint64_t start = index.generation();
  EXPECT_TRUE(index.Put(Entry("f", "one"), Fp(3, 1)));
  uint64_t g1 = index.generation();
  EXPECT_GT(g1, start);
  // Same content seen again (touched mtime, or a pulled file the watcher then sees).
  EXPECT_FALSE(index.Put(Entry("f", "one"), Fp(3, 99)));
  EXPECT_EQ(index.generation(), g1);
  EXPECT_TRUE(index.List(g1, 0, 100, 1 << 20).entries.empty());
  EXPECT_TRUE(index.IsCurrent("f", Fp(3, 99)));  // the new fingerprint is kept
  // A mode change, new content, a deletion and a return each move it.
  EXPECT_TRUE(index.Put(Entry("f", "one", 0755), Fp(3, 99)));
  uint64_t g2 = index.generation();
  EXPECT_GT(g2, g1);
  EXPECT_TRUE(index.Put(Entry("f", "two"), Fp(3, 100)));
  EXPECT_TRUE(index.MarkDeleted("f", Clock::now()));
  uint64_t g3 = index.generation();
  Manifest delta = index.List(g2, 0, 100, 1 << 20);
  ASSERT_EQ(delta.entries.size(), 1u);  // one entry, at its newest generation
  EXPECT_TRUE(delta.entries[0].deleted);
  EXPECT_EQ(delta.generation, g3);
  EXPECT_TRUE(index.Put(Entry("f", "two"), Fp(3, 101)));
  EXPECT_GT(index.generation(), g3);
}

TEST(DirectoryIndexTest, ListingsSkipDeletionsAndComeInPages) {
  DirectoryIndex index(100);
  for (int i = 0; i < 5; ++i) {
    index.Put(Entry("f" + std::to_string(i), std::to_string(i)), Fp(1, i));
  }
  index.MarkDeleted("f2", Clock::now());
  Manifest first = index.List(0, 0, 2, 1 << 20);
  ASSERT_EQ(first.entries.size(), 2u);
  EXPECT_TRUE(first.more);
  Manifest rest = index.List(0, first.generation, 10, 1 << 20);
  EXPECT_FALSE(rest.more);
  ASSERT_EQ(rest.entries.size(), 2u);  // f3, f4; f2 is deleted
  EXPECT_EQ(rest.entries[0].path, "f3");
  EXPECT_EQ(rest.generation, index.generation());
  index.Put(Entry("d/x", "x"), Fp(1, 1));
  index.Put(Entry("d/y", "y"), Fp(1, 1));
  index.Put(Entry("dd", "dd"), Fp(2, 1));
  index.MarkDeleted("d/y", Clock::now());
  EXPECT_EQ(index.LiveBelow("d"), std::vector<std::string>{"d/x"});
}

TEST(DirectoryIndexTest, PrunedDeletionsTurnOlderCursorsIntoFullListings) {
  DirectoryIndex index(100);
  index.Put(Entry("keep", "k"), Fp(1, 1));
  index.Put(Entry("gone", "g"), Fp(1, 1));
  uint64_t cursor = index.generation();
  auto deleted_at = Clock::now();
  index.MarkDeleted("gone", deleted_at);
  EXPECT_EQ(index.PruneDeleted(deleted_at, std::chrono::minutes(1)), 0u);  // retained
  EXPECT_EQ(index.PruneDeleted(deleted_at + std::chrono::minutes(1), std::chrono::minutes(1)), 1u);
  EXPECT_EQ(index.tracked(), 1u);
  Manifest full = index.List(cursor, 0, 100, 1 << 20);
  EXPECT_TRUE(full.full);
  ASSERT_EQ(full.entries.size(), 1u);
  EXPECT_EQ(full.entries[0].path, "keep");
  EXPECT_FALSE(index.List(index.generation(), 0, 100, 1 << 20).full);
  EXPECT_TRUE(index.IsTombstoned("gone", store::Digest::Of("g")));  // still not pulled back
}

TEST(DirectoryIndexTest, RemembersTheNewestDeletionsAndReadsThemBack) {
  DirectoryIndex index(2);
  for (const char* name : {"a", "b", "c"}) {
    index.Put(Entry(name, name), Fp(1, 1));
    index.MarkDeleted(name, Clock::now());
  }
  EXPECT_FALSE(index.IsTombstoned("a", store::Digest::Of("a")));  // the oldest is forgotten
  EXPECT_TRUE(index.IsTombstoned("c", store::Digest::Of("c")));
  std::optional<std::string> text = index.TakeTombstonesIfChanged();
  ASSERT_TRUE(text.has_value());
  EXPECT_FALSE(index.TakeTombstonesIfChanged().has_value());  // unchanged since
  index.MarkTombstonesChanged();
  EXPECT_TRUE(index.TakeTombstonesIfChanged().has_value());

  DirectoryIndex restarted(100);
  std::string hostile = *text + "zz\tx\n" + store::Digest::Of("p").Hex() + "\t../escape\nno tab\n";
  EXPECT_EQ(restarted.LoadTombstones(hostile), 2u);  // malformed and unsafe lines skipped
  EXPECT_TRUE(restarted.IsTombstoned("b", store::Digest::Of("b")));
  EXPECT_FALSE(restarted.IsTombstoned("b", store::Digest::Of("other content")));
  EXPECT_FALSE(restarted.IsTombstoned("../escape", store::Digest::Of("p")));
}

}  // namespace
}  // namespace buildcache::dircache
