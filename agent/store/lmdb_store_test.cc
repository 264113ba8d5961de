// LmdbStore behaviour beyond the BlobStore contract: persistence, crash recovery, disk full,
// verification cost. The shared contract is in store_conformance_test.cc.

#include "agent/store/lmdb_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "agent/store/store_test_util.h"

namespace buildcache::store {
namespace {

// Test names carry "store" so that `ctest -R store` selects them.

using testing::Content;
using testing::CountFiles;
using testing::Get;
using testing::TempDir;

LmdbStoreOptions Options(const std::string& dir) {
  LmdbStoreOptions o;
  o.data_dir = dir;
  return o;
}

std::unique_ptr<LmdbStore> OpenStore(LmdbStoreOptions options) {
  auto store = LmdbStore::Open(std::move(options));
  if (!store.ok()) {
    ADD_FAILURE() << store.status().ToString();
    return nullptr;
  }
  return std::move(store).value();
}

// Runs fn in a forked child (which must not return into the test) and returns its exit code, or
// -signal if it was killed. The test process has no other threads when this is called.
int RunInChild(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::_exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

void WriteFile(const std::string& path, std::string_view data) {
  std::ofstream(path, std::ios::binary) << data;
}

// The store's files agree with its index: one file per blob, no temporaries.
void ExpectFilesMatchIndex(LmdbStore& store, const std::string& dir) {
  EXPECT_EQ(CountFiles(dir + "/blobs"), store.Stats().blobs);
  EXPECT_EQ(CountFiles(dir + "/tmp"), 0u);
}

TEST(store_LmdbStoreTest, ReopenKeepsEverything) {
  TempDir dir;
  StoreStats before;
  {
    auto store = OpenStore(Options(dir.path()));
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(PutBytes(*store, "k" + std::to_string(i), Content(i, size_t{100} * i)).ok());
    }
    ASSERT_TRUE(PutBytes(*store, "alias", Content(3, 300)).ok());
    ASSERT_TRUE(store->Delete("k5").ok());
    before = store->Stats();
  }
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 20; ++i) {
    auto got = Get(*store, "k" + std::to_string(i));
    if (i == 5) {
      EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
      continue;
    }
    ASSERT_TRUE(got.ok()) << i;
    EXPECT_EQ(*got, Content(i, size_t{100} * i));
  }
  EXPECT_EQ(*Get(*store, "alias"), Content(3, 300));
  StoreStats after = store->Stats();
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(after.blobs, before.blobs);
  EXPECT_EQ(after.keys, before.keys);
  RecoveryReport r = store->recovery();
  EXPECT_TRUE(r.clean_shutdown);
  EXPECT_FALSE(r.full_scan);
  EXPECT_EQ(r.orphans_removed + r.missing_dropped + r.size_mismatch_dropped, 0u);
  ExpectFilesMatchIndex(*store, dir.path());
}

TEST(store_LmdbStoreTest, StartupRemovesOrphansAndTemporariesAndDropsBrokenEntries) {
  TempDir dir;
  Digest missing = Digest::Of(Content(1, 1000)), truncated = Digest::Of(Content(2, 1000));
  {
    auto store = OpenStore(Options(dir.path()));
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(PutBytes(*store, "missing", Content(1, 1000)).ok());
    ASSERT_TRUE(PutBytes(*store, "truncated", Content(2, 1000)).ok());
    ASSERT_TRUE(PutBytes(*store, "truncated-alias", Content(2, 1000)).ok());
    ASSERT_TRUE(PutBytes(*store, "fine", Content(3, 1000)).ok());
    std::filesystem::remove(store->BlobPath(missing));
    std::filesystem::resize_file(store->BlobPath(truncated), 10);
    Digest orphan = Digest::Of("orphan");
    WriteFile(store->BlobPath(orphan), "orphan");
  }
  WriteFile(dir.path() + "/blobs/00/not-a-digest", "junk");
  WriteFile(dir.path() + "/tmp/123-4", "partial");

  LmdbStoreOptions o = Options(dir.path());
  o.full_reconcile_after_clean_shutdown = true;
  auto store = OpenStore(o);
  ASSERT_NE(store, nullptr);
  RecoveryReport r = store->recovery();
  EXPECT_TRUE(r.full_scan);
  EXPECT_EQ(r.temp_files_removed, 1u);
  EXPECT_EQ(r.orphans_removed, 2u);
  EXPECT_EQ(r.missing_dropped, 1u);
  EXPECT_EQ(r.size_mismatch_dropped, 1u);
  EXPECT_EQ(store->Stat("missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stat("truncated").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stat("truncated-alias").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*Get(*store, "fine"), Content(3, 1000));
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.blobs, 1u);
  EXPECT_EQ(stats.keys, 1u);
  EXPECT_EQ(stats.bytes, 1000u);
  ExpectFilesMatchIndex(*store, dir.path());
}

TEST(store_LmdbStoreTest, CleanReopenSkipsTheFullScanButClearsTemporaries) {
  TempDir dir;
  { ASSERT_NE(OpenStore(Options(dir.path())), nullptr); }
  WriteFile(dir.path() + "/tmp/leftover", "x");
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->recovery().clean_shutdown);
  EXPECT_FALSE(store->recovery().full_scan);
  EXPECT_EQ(store->recovery().temp_files_removed, 1u);
}

TEST(store_LmdbStoreTest, AccessOrderSurvivesReopen) {
  TempDir dir;
  LmdbStoreOptions o = Options(dir.path());
  o.max_bytes = 300;
  {
    auto store = OpenStore(o);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(PutBytes(*store, "a", Content(1, 100)).ok());
    ASSERT_TRUE(PutBytes(*store, "b", Content(2, 100)).ok());
    ASSERT_TRUE(PutBytes(*store, "c", Content(3, 100)).ok());
    ASSERT_TRUE(store->Open("a").ok());  // recorded in memory, written at close
  }
  auto store = OpenStore(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(PutBytes(*store, "d", Content(4, 100)).ok());
  EXPECT_EQ(store->Stat("b").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->Stat("a").ok());
}

TEST(store_LmdbStoreTest, LoweringTheQuotaEvictsOldestAtOpen) {
  TempDir dir;
  {
    auto store = OpenStore(Options(dir.path()));
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(PutBytes(*store, "k" + std::to_string(i), Content(i, 100)).ok());
    }
  }
  LmdbStoreOptions o = Options(dir.path());
  o.max_bytes = 250;
  auto store = OpenStore(o);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->recovery().evicted_to_quota, 3u);
  EXPECT_EQ(store->Stats().bytes, 200u);
  EXPECT_EQ(store->Stat("k2").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->Stat("k3").ok());
  EXPECT_TRUE(store->Stat("k4").ok());
  ExpectFilesMatchIndex(*store, dir.path());
}

TEST(store_LmdbStoreTest, ConcurrentWritersOfTheSameContentLeaveOneFileAndNoTemporaries) {
  TempDir dir;
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  std::string data = Content(9, 256 * size_t{1024});
  std::barrier sync(6);
  std::vector<std::thread> threads;
  threads.reserve(8);
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      auto w = store->NewWriter("k" + std::to_string(t), {});
      ASSERT_TRUE(w.ok());
      ASSERT_TRUE((*w)->Write(data).ok());
      sync.arrive_and_wait();
      EXPECT_TRUE((*w)->Commit().ok());
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(CountFiles(dir.path() + "/blobs"), 1u);
  EXPECT_EQ(CountFiles(dir.path() + "/tmp"), 0u);
  EXPECT_EQ(store->Stats().keys, 6u);
}

TEST(store_LmdbStoreTest, BlobFileRemovedBehindOurBackIsNotFoundAndItsEntryDropped) {
  TempDir dir;
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(PutBytes(*store, "a", "content").ok());
  std::filesystem::remove(store->BlobPath(Digest::Of("content")));
  EXPECT_EQ(store->Open("a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stat("a").status().code(), StatusCode::kNotFound);
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.keys, 0u);
  EXPECT_EQ(stats.bytes, 0u);
  EXPECT_EQ(stats.corrupt_dropped, 1u);
}

TEST(store_LmdbStoreTest, UnchangedBlobIsNotRehashedOnEveryOpen) {
  TempDir dir;
  std::string data = Content(5, 100000);
  {
    auto store = OpenStore(Options(dir.path()));
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(PutBytes(*store, "a", data).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(120));  // past timestamp granularity
    for (int i = 0; i < 5; ++i) {
      ASSERT_EQ(*Get(*store, "a"), data);
    }
    EXPECT_LE(store->full_verifications(), 1u);  // at most once: the commit's stat was too recent
    ASSERT_TRUE(store->FlushAccessTimes().ok());
    ASSERT_EQ(*Get(*store, "a"), data);
    EXPECT_LE(store->full_verifications(), 1u);
  }
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(*Get(*store, "a"), data);
  EXPECT_EQ(store->full_verifications(), 0u);
}

TEST(store_LmdbStoreTest, VerifyAlwaysHashesOnEveryOpen) {
  TempDir dir;
  LmdbStoreOptions o = Options(dir.path());
  o.verify_reads = VerifyReads::kAlways;
  auto store = OpenStore(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(PutBytes(*store, "a", "content").ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(store->Open("a").ok());
  }
  EXPECT_EQ(store->full_verifications(), 3u);
}

TEST(store_LmdbStoreTest, OpenForRelaySkipsTheHashButNotTheSizeCheck) {
  TempDir dir;
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  std::string data = Content(6, 100000);
  ASSERT_TRUE(PutBytes(*store, "a", data).ok());
  // A fresh blob, which a verifying Open would hash first.
  auto relay = store->OpenForRelay("a");
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  EXPECT_EQ(*ReadAll(**relay), data);
  auto by_digest = store->OpenDigestForRelay(Digest::Of(data));
  ASSERT_TRUE(by_digest.ok());
  EXPECT_EQ(store->full_verifications(), 0u);
  // Rotten content goes out as it is (the receiver checks it); a wrong size is still caught.
  std::filesystem::permissions(store->BlobPath(Digest::Of(data)),
                               std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  {
    std::fstream f(store->BlobPath(Digest::Of(data)), std::ios::in | std::ios::out);
    f.seekp(10);
    f.put('#');
  }
  auto rotten = store->OpenForRelay("a");
  ASSERT_TRUE(rotten.ok());
  EXPECT_NE(*ReadAll(**rotten), data);
  std::filesystem::resize_file(store->BlobPath(Digest::Of(data)), 10);
  EXPECT_EQ(store->OpenForRelay("a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stats().corrupt_dropped, 1u);
}

TEST(store_LmdbStoreTest, UncleanShutdownMakesEveryBlobBeReverified) {
  TempDir dir;
  int rc = RunInChild([&] {
    auto store = LmdbStore::Open(Options(dir.path()));
    if (!store.ok()) {
      return 1;
    }
    if (!PutBytes(**store, "a", "content").ok()) {
      return 2;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    if (!(*store)->Open("a").ok() || !(*store)->FlushAccessTimes().ok()) {
      return 3;
    }
    ::_exit(0);  // no clean close
  });
  ASSERT_EQ(rc, 0);
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  EXPECT_FALSE(store->recovery().clean_shutdown);
  ASSERT_EQ(*Get(*store, "a"), "content");
  EXPECT_EQ(store->full_verifications(), 1u);
}

TEST(store_LmdbStoreTest, ScrubDropsCorruptAndMissingBlobs) {
  TempDir dir;
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(PutBytes(*store, "k" + std::to_string(i), Content(i, 5000)).ok());
  }
  {
    std::fstream f(store->BlobPath(Digest::Of(Content(1, 5000))),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4000);
    f.put('!');
  }
  std::filesystem::remove(store->BlobPath(Digest::Of(Content(3, 5000))));
  auto report = store->Scrub();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->checked, 5u);
  EXPECT_EQ(report->corrupt_dropped, 1u);
  EXPECT_EQ(report->missing_dropped, 1u);
  EXPECT_EQ(store->Stat("k1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stat("k3").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stats().blobs, 3u);
  EXPECT_EQ(store->Stats().corrupt_dropped, 2u);
  ExpectFilesMatchIndex(*store, dir.path());
}

// --- Crash and failure injection at every step of a write. ---

const FaultPoint kAllFaultPoints[] = {FaultPoint::kTempCreate,   FaultPoint::kTempWrite,
                                      FaultPoint::kTempSync,     FaultPoint::kPublish,
                                      FaultPoint::kAfterPublish, FaultPoint::kDirSync,
                                      FaultPoint::kIndexCommit,  FaultPoint::kAfterIndexCommit};

std::string FaultPointName(FaultPoint p) {
  switch (p) {
    case FaultPoint::kTempCreate:
      return "TempCreate";
    case FaultPoint::kTempWrite:
      return "TempWrite";
    case FaultPoint::kTempSync:
      return "TempSync";
    case FaultPoint::kPublish:
      return "Publish";
    case FaultPoint::kAfterPublish:
      return "AfterPublish";
    case FaultPoint::kIndexCommit:
      return "IndexCommit";
    case FaultPoint::kAfterIndexCommit:
      return "AfterIndexCommit";
    case FaultPoint::kDirSync:
      return "DirSync";
    case FaultPoint::kContentSync:
      return "ContentSync";
  }
  return "Unknown";
}

class LmdbStoreFaultTest : public ::testing::TestWithParam<FaultPoint> {};

TEST_P(LmdbStoreFaultTest, CrashLeavesTheWholeEntryOrNoneAndIsRepairedAtOpen) {
  constexpr int kCrashed = 42;
  const FaultPoint point = GetParam();
  TempDir dir;
  std::string victim = Content(2, 70000);
  int rc = RunInChild([&] {
    std::atomic<bool> armed{false};
    LmdbStoreOptions o = Options(dir.path());
    o.inject_fault = [&](FaultPoint p) {
      if (armed && p == point) {
        ::_exit(kCrashed);
      }
      return 0;
    };
    auto store = LmdbStore::Open(o);
    if (!store.ok()) {
      return 1;
    }
    if (!PutBytes(**store, "before", Content(1, 5000)).ok()) {
      return 2;
    }
    if (!PutBytes(**store, "replaced", "old").ok()) {
      return 3;
    }
    armed = true;
    auto w = (*store)->NewWriter("victim", {});
    if (!w.ok() || !(*w)->Write(std::string_view(victim).substr(0, 30000)).ok() ||
        !(*w)->Write(std::string_view(victim).substr(30000)).ok() || !(*w)->Commit().ok()) {
      return 4;
    }
    return 5;  // the fault point was never reached
  });
  ASSERT_EQ(rc, kCrashed);

  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  RecoveryReport r = store->recovery();
  EXPECT_FALSE(r.clean_shutdown);
  EXPECT_TRUE(r.full_scan);
  EXPECT_EQ(*Get(*store, "before"), Content(1, 5000));
  EXPECT_EQ(*Get(*store, "replaced"), "old");
  auto got = Get(*store, "victim");
  if (point == FaultPoint::kAfterIndexCommit) {
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(*got == victim);
  } else {
    EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
    EXPECT_FALSE(store->HasDigest(Digest::Of(victim)));
  }
  bool temp_left = point == FaultPoint::kTempWrite || point == FaultPoint::kTempSync ||
                   point == FaultPoint::kPublish;
  bool orphan_left = point == FaultPoint::kAfterPublish || point == FaultPoint::kDirSync ||
                     point == FaultPoint::kIndexCommit;
  EXPECT_EQ(r.temp_files_removed, temp_left ? 1u : 0u);
  EXPECT_EQ(r.orphans_removed, orphan_left ? 1u : 0u);
  EXPECT_EQ(r.missing_dropped, 0u);
  EXPECT_EQ(r.size_mismatch_dropped, 0u);
  ExpectFilesMatchIndex(*store, dir.path());
  // The store keeps working.
  ASSERT_TRUE(PutBytes(*store, "victim", victim).ok());
  EXPECT_TRUE(*Get(*store, "victim") == victim);
}

TEST_P(LmdbStoreFaultTest, DiskFullAtThisStepFailsOnlyThatWrite) {
  const FaultPoint point = GetParam();
  TempDir dir;
  std::atomic<bool> armed{false};
  LmdbStoreOptions o = Options(dir.path());
  o.max_bytes = 1 << 20;
  o.inject_fault = [&](FaultPoint p) { return armed && p == point ? ENOSPC : 0; };
  auto store = OpenStore(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(PutBytes(*store, "before", Content(1, 5000)).ok());
  ASSERT_TRUE(PutBytes(*store, "replaced", "old").ok());
  StoreStats before = store->Stats();

  armed = true;
  auto put = PutBytes(*store, "replaced", Content(2, 70000));
  armed = false;
  if (point == FaultPoint::kAfterIndexCommit) {
    ASSERT_TRUE(put.ok());  // a crash point only
    return;
  }
  EXPECT_EQ(put.status().code(), StatusCode::kResourceExhausted) << put.status().ToString();
  EXPECT_EQ(*Get(*store, "before"), Content(1, 5000));
  EXPECT_EQ(*Get(*store, "replaced"), "old");
  StoreStats after = store->Stats();
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(after.blobs, before.blobs);
  EXPECT_EQ(after.keys, before.keys);
  EXPECT_EQ(after.reserved_bytes, 0u);
  ExpectFilesMatchIndex(*store, dir.path());
  ASSERT_TRUE(PutBytes(*store, "replaced", Content(2, 70000)).ok());
  EXPECT_TRUE(*Get(*store, "replaced") == Content(2, 70000));
}

// WriteOptions::sync_content = false skips the object's own fsync and, in a batch of only such
// writes, the blob directory's and LMDB's meta-page sync (the fault points before the first two
// are never reached), and nothing else: the object is committed, indexed and read back.
TEST(store_LmdbStoreTest, WriteWithoutContentSyncSkipsTheFileAndDirectorySyncs) {
  TempDir dir;
  std::atomic<int> file_syncs{0}, dir_syncs{0};
  LmdbStoreOptions o = Options(dir.path());
  o.content_sync_interval = std::chrono::milliseconds(0);
  o.inject_fault = [&](FaultPoint p) {
    if (p == FaultPoint::kTempSync) ++file_syncs;
    if (p == FaultPoint::kDirSync) ++dir_syncs;
    return 0;
  };
  auto store = OpenStore(o);
  ASSERT_NE(store, nullptr);
  WriteOptions unsynced;
  unsynced.sync_content = false;
  ASSERT_TRUE(PutBytes(*store, "build-entry", Content(3, 9000), unsynced).ok());
  EXPECT_EQ(file_syncs.load(), 0);
  EXPECT_EQ(dir_syncs.load(), 0);
  EXPECT_EQ(store->relaxed_index_commits(), 1u);
  ASSERT_TRUE(PutBytes(*store, "artifact", Content(4, 9000)).ok());
  EXPECT_EQ(file_syncs.load(), 1);
  EXPECT_EQ(dir_syncs.load(), 1);
  // Synced writes and deletes keep every index sync.
  ASSERT_TRUE(store->Delete("artifact").ok());
  EXPECT_EQ(store->relaxed_index_commits(), 1u);
  EXPECT_EQ(*Get(*store, "build-entry"), Content(3, 9000));
  ExpectFilesMatchIndex(*store, dir.path());
}

// A synced write of content that an unsynced write stored first must not rely on that file
// being on disk: it syncs the stored file and its directory; once a content sync ran, not.
TEST(store_LmdbStoreTest, SyncedWriteOfContentStoredUnsyncedSyncsTheStoredFile) {
  TempDir dir;
  std::atomic<int> dir_syncs{0};
  LmdbStoreOptions o = Options(dir.path());
  o.content_sync_interval = std::chrono::milliseconds(0);
  o.inject_fault = [&](FaultPoint p) {
    if (p == FaultPoint::kDirSync) ++dir_syncs;
    return 0;
  };
  auto store = OpenStore(o);
  ASSERT_NE(store, nullptr);
  WriteOptions unsynced;
  unsynced.sync_content = false;
  ASSERT_TRUE(PutBytes(*store, "fetched", Content(5, 7000), unsynced).ok());
  ASSERT_EQ(dir_syncs.load(), 0);
  ASSERT_TRUE(PutBytes(*store, "uploaded", Content(5, 7000)).ok());
  EXPECT_EQ(dir_syncs.load(), 1);
  EXPECT_EQ(store->Stats().blobs, 1u);

  ASSERT_TRUE(PutBytes(*store, "fetched-2", Content(6, 7000), unsynced).ok());
  ASSERT_TRUE(store->SyncContent().ok());
  EXPECT_EQ(store->content_syncs(), 1u);
  ASSERT_TRUE(PutBytes(*store, "uploaded-2", Content(6, 7000)).ok());
  EXPECT_EQ(dir_syncs.load(), 1);
  EXPECT_EQ(*Get(*store, "uploaded-2"), Content(6, 7000));
}

// "clean" makes the next Open trust recorded fingerprints, so Close syncs unsynced contents
// first; when that sync fails the store stays unclean and every blob is re-hashed on its next
// read.
TEST(store_LmdbStoreTest, CloseMarksTheStoreCleanOnlyAfterUnsyncedContentsAreSynced) {
  TempDir dir;
  std::atomic<bool> fail{true};
  std::atomic<int> content_syncs{0};
  LmdbStoreOptions o = Options(dir.path());
  o.content_sync_interval = std::chrono::milliseconds(0);
  o.inject_fault = [&](FaultPoint p) {
    if (p != FaultPoint::kContentSync) return 0;
    ++content_syncs;
    return fail ? EIO : 0;
  };
  WriteOptions unsynced;
  unsynced.sync_content = false;
  {
    auto store = OpenStore(o);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(PutBytes(*store, "a", Content(7, 3000), unsynced).ok());
  }
  EXPECT_EQ(content_syncs.load(), 1);
  fail = false;
  {
    auto store = OpenStore(o);
    ASSERT_NE(store, nullptr);
    EXPECT_FALSE(store->recovery().clean_shutdown);
    EXPECT_EQ(*Get(*store, "a"), Content(7, 3000));
    EXPECT_EQ(store->full_verifications(), 1u);
    ASSERT_TRUE(PutBytes(*store, "b", Content(8, 3000), unsynced).ok());
  }
  EXPECT_EQ(content_syncs.load(), 2);
  {
    auto store = OpenStore(o);
    ASSERT_NE(store, nullptr);
    EXPECT_TRUE(store->recovery().clean_shutdown);
    ASSERT_TRUE(PutBytes(*store, "c", Content(9, 3000)).ok());  // synced: nothing left to sync
  }
  EXPECT_EQ(content_syncs.load(), 2);
}

TEST(store_LmdbStoreTest, UnsyncedContentsAreSyncedInTheBackground) {
  TempDir dir;
  LmdbStoreOptions o = Options(dir.path());
  o.content_sync_interval = std::chrono::milliseconds(10);
  auto store = OpenStore(o);
  ASSERT_NE(store, nullptr);
  WriteOptions unsynced;
  unsynced.sync_content = false;
  ASSERT_TRUE(PutBytes(*store, "a", Content(10, 3000), unsynced).ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (store->content_syncs() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(store->content_syncs(), 1u);
}

INSTANTIATE_TEST_SUITE_P(store, LmdbStoreFaultTest, ::testing::ValuesIn(kAllFaultPoints),
                         [](const ::testing::TestParamInfo<FaultPoint>& info) {
                           return FaultPointName(info.param);
                         });

// Content written by the kill test for key (thread, i).
std::string KillTestContent(int thread, int i) {
  return Content(thread * 1000003 + i, static_cast<size_t>((i * 7919) % 40000));
}

TEST(store_LmdbStoreTest, KillDashNineWhileWritingLeavesOnlyWholeEntries) {
  TempDir dir;
  constexpr int kThreads = 2, kRounds = 3, kPerRound = 100000;
  std::mt19937 rng(std::random_device{}());
  for (int round = 0; round < kRounds; ++round) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      LmdbStoreOptions o = Options(dir.path());
      o.sync = round % 2 == 0;  // synced rounds die mostly in fsync, unsynced ones write more
      auto store = LmdbStore::Open(o);
      if (!store.ok()) {
        ::_exit(1);
      }
      std::vector<std::thread> threads;
      threads.reserve(8);
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          for (int i = round * kPerRound;; ++i) {
            std::string key = std::to_string(t) + "/" + std::to_string(i);
            WriteOptions wo;
            wo.sync_content = t == 0;  // thread 1 writes as the upstream caches do
            if (!PutBytes(**store, key, KillTestContent(t, i), wo).ok()) {
              ::_exit(2);
            }
            if (t == 0 && i == round * kPerRound + 3 && ::write(ready[1], "r", 1) != 1) {
              ::_exit(3);
            }
            if (i % 5 == 0) {
              (void)(*store)->Delete(std::to_string(t) + "/" + std::to_string(i - 3));
            }
          }
        });
      }
      for (auto& t : threads) {
        t.join();
      }
      ::_exit(0);
    }
    // Kill at a random time once the child is writing (a loaded machine may be slow to start it).
    ::close(ready[1]);
    char c;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
    ::close(ready[0]);
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);

    auto store = OpenStore(Options(dir.path()));
    ASSERT_NE(store, nullptr);
    RecoveryReport r = store->recovery();
    EXPECT_FALSE(r.clean_shutdown);
    EXPECT_LE(r.temp_files_removed, static_cast<uint64_t>(kThreads));
    EXPECT_LE(r.orphans_removed, static_cast<uint64_t>(kThreads));
    EXPECT_EQ(r.missing_dropped, 0u);
    EXPECT_EQ(r.size_mismatch_dropped, 0u);
    uint64_t present = 0;
    for (int rr = 0; rr <= round; ++rr) {
      for (int t = 0; t < kThreads; ++t) {
        int misses = 0;
        for (int i = rr * kPerRound; misses < 50; ++i) {
          auto got = Get(*store, std::to_string(t) + "/" + std::to_string(i));
          if (!got.ok()) {
            ASSERT_EQ(got.status().code(), StatusCode::kNotFound);
            ++misses;
            continue;
          }
          misses = 0;
          ++present;
          ASSERT_TRUE(*got == KillTestContent(t, i)) << t << "/" << i;
        }
      }
    }
    EXPECT_GT(present, 0u);
    EXPECT_EQ(store->Stats().keys, present);
    EXPECT_EQ(store->Stats().corrupt_dropped, 0u);
    ExpectFilesMatchIndex(*store, dir.path());
  }
}

// A real full file system: a small tmpfs in a private mount namespace (needs CAP_SYS_ADMIN;
// skipped otherwise). The injected variant above covers every step without privileges.
TEST(store_LmdbStoreTest, RealDiskFullFailsOnlyThatWriteAndLosesNothing) {
  TempDir dir;
  constexpr int kSkip = 77;
  int rc = RunInChild([&]() -> int {
    if (::unshare(CLONE_NEWNS) != 0) {
      return kSkip;
    }
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      return kSkip;
    }
    if (::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=3m") != 0) {
      return kSkip;
    }
    std::string root = dir.path() + "/store";
    std::vector<std::string> stored;
    {
      auto opened = LmdbStore::Open(Options(root));
      if (!opened.ok()) {
        return 10;
      }
      LmdbStore& store = **opened;
      Status failure;
      for (int i = 0; i < 100; ++i) {
        auto put = PutBytes(store, "k" + std::to_string(i), Content(i, 200 * size_t{1024}));
        if (!put.ok()) {
          failure = put.status();
          break;
        }
        stored.push_back("k" + std::to_string(i));
      }
      if (failure.code() != StatusCode::kResourceExhausted) {
        std::fprintf(stderr, "first failure: %s\n", failure.ToString().c_str());
        return 11;
      }
      if (stored.size() < 3) {
        return 12;
      }
      for (size_t i = 0; i < stored.size(); ++i) {
        auto got = Get(store, stored[i]);
        if (!got.ok() || *got != Content(i, 200 * size_t{1024})) {
          return 13;
        }
      }
      if (CountFiles(root + "/tmp") != 0) {
        return 14;
      }
      if (CountFiles(root + "/blobs") != store.Stats().blobs) {
        return 15;
      }
      // A known size that cannot fit fails before streaming.
      WriteOptions sized;
      sized.expected_size = 8 << 20;
      if (store.NewWriter("huge", sized).status().code() != StatusCode::kResourceExhausted) {
        return 16;
      }
      // Freeing space makes writes work again.
      if (!store.Delete(stored[0]).ok() || !store.Delete(stored[1]).ok()) {
        return 17;
      }
      if (!PutBytes(store, "after", Content(999, 200 * size_t{1024})).ok()) {
        return 18;
      }
    }
    auto reopened = LmdbStore::Open(Options(root));
    if (!reopened.ok()) {
      return 19;
    }
    for (size_t i = 2; i < stored.size(); ++i) {
      auto got = Get(**reopened, stored[i]);
      if (!got.ok() || *got != Content(i, 200 * size_t{1024})) {
        return 20;
      }
    }
    if (!Get(**reopened, "after").ok()) {
      return 21;
    }
    return 0;
  });
  if (rc == kSkip) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs CAP_SYS_ADMIN)";
  }
  EXPECT_EQ(rc, 0) << "see the child's exit code in the test source";
}

}  // namespace
}  // namespace buildcache::store

namespace buildcache::store {
namespace {

std::set<std::string> ListAllKeys(LmdbStore& store, std::string_view prefix, uint64_t* unnamed) {
  std::set<std::string> keys;
  std::string after;
  for (int pages = 0; pages < 1000; ++pages) {
    Result<KeyListing> page = store.ListKeys(prefix, after, 5);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok()) break;
    keys.insert(page->keys.begin(), page->keys.end());
    *unnamed = page->unnamed;
    if (page->next.empty()) break;
    after = page->next;
  }
  return keys;
}

TEST(store_LmdbStoreTest, KeyNamesSurviveReopenAndBadCursorsAreRefused) {
  TempDir dir;
  {
    auto store = OpenStore(Options(dir.path()));
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 12; ++i) {
      ASSERT_TRUE(PutBytes(*store, "n/" + std::to_string(i), Content(i, 10)).ok());
    }
  }
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  uint64_t unnamed = 99;
  EXPECT_EQ(ListAllKeys(*store, "n/", &unnamed).size(), 12u);
  EXPECT_EQ(unnamed, 0u);
  for (const char* bad : {"zz", "0123", "0123456789abcdef0123456789abcdeg"}) {
    EXPECT_EQ(store->ListKeys("n/", bad, 5).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

// A store written before the names table existed: its keys have no name. They are counted as
// unnamed and never listed, until written again.
TEST(store_LmdbStoreTest, KeysOfAStoreWithoutNamesAreUnnamedUntilRewritten) {
  TempDir dir;
  {
    auto store = OpenStore(Options(dir.path()));
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(PutBytes(*store, "old/" + std::to_string(i), Content(i, 10)).ok());
    }
  }
  {
    // What an older version left: the same index without the "names" table.
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 8), 0);
    ASSERT_EQ(mdb_env_open(env, (dir.path() + "/index").c_str(), 0, 0644), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    MDB_dbi names;
    ASSERT_EQ(mdb_dbi_open(txn, "names", 0, &names), 0);
    ASSERT_EQ(mdb_drop(txn, names, 1), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  auto store = OpenStore(Options(dir.path()));
  ASSERT_NE(store, nullptr);
  uint64_t unnamed = 0;
  EXPECT_TRUE(ListAllKeys(*store, "old/", &unnamed).empty());
  EXPECT_EQ(unnamed, 6u);
  EXPECT_EQ(Get(*store, "old/2").value(), Content(2, 10));  // still served
  // Rewriting a key (same content) records its name; deleting an unnamed key works as before.
  ASSERT_TRUE(PutBytes(*store, "old/2", Content(2, 10)).ok());
  ASSERT_TRUE(store->Delete("old/3").ok());
  EXPECT_EQ(ListAllKeys(*store, "old/", &unnamed), std::set<std::string>{"old/2"});
  EXPECT_EQ(unnamed, 4u);
}

}  // namespace
}  // namespace buildcache::store
