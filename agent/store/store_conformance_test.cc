// The behaviour every BlobStore implementation must have. Each implementation is one parameter.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "agent/store/blob_store.h"
#include "agent/store/lmdb_store.h"
#include "agent/store/memory_store.h"
#include "agent/store/store_test_util.h"

namespace buildcache::store {
namespace {

// Test names carry "store" so that `ctest -R store` selects them.

using testing::Content;
using testing::Get;
using testing::TempDir;

struct StoreKind {
  std::string name;
  std::function<std::unique_ptr<BlobStore>(const std::string& dir, uint64_t max_bytes,
                                           StoreObserver observer, WriteLimits limits)>
      make;
  // Changes the stored bytes of a blob behind the store's back.
  std::function<void(BlobStore& store, const Digest& digest)> corrupt;
};

StoreKind MemoryKind() {
  return {"Memory",
          [](const std::string&, uint64_t max_bytes, StoreObserver observer, WriteLimits limits) {
            return std::make_unique<MemoryStore>(
                MemoryStoreOptions{max_bytes, std::move(observer), limits});
          },
          [](BlobStore& store, const Digest& digest) {
            ASSERT_TRUE(dynamic_cast<MemoryStore&>(store).CorruptForTest(digest).ok());
          }};
}

StoreKind LmdbKind() {
  return {"Lmdb",
          [](const std::string& dir, uint64_t max_bytes, StoreObserver observer,
             WriteLimits limits) -> std::unique_ptr<BlobStore> {
            LmdbStoreOptions o;
            o.data_dir = dir;
            o.max_bytes = max_bytes;
            o.limits = limits;
            o.observer = std::move(observer);
            auto store = LmdbStore::Open(std::move(o));
            EXPECT_TRUE(store.ok()) << store.status().ToString();
            return store.ok() ? std::move(store).value() : nullptr;
          },
          [](BlobStore& store, const Digest& digest) {
            std::string path = dynamic_cast<LmdbStore&>(store).BlobPath(digest);
            int fd = ::open(path.c_str(), O_RDWR);
            ASSERT_GE(fd, 0) << path;
            char c = 0;
            if (::pread(fd, &c, 1, 0) == 1) {
              c ^= 1;
              ASSERT_EQ(::pwrite(fd, &c, 1, 0), 1);
            } else {
              ASSERT_EQ(::pwrite(fd, "x", 1, 0), 1);
            }
            ::close(fd);
          }};
}

class StoreConformanceTest : public ::testing::TestWithParam<StoreKind> {
 protected:
  BlobStore& Make(uint64_t max_bytes = 0, StoreObserver observer = {}) {
    return MakeWithLimits(max_bytes, {}, std::move(observer));
  }
  BlobStore& MakeWithLimits(uint64_t max_bytes, WriteLimits limits, StoreObserver observer = {}) {
    store_.reset();
    store_ = GetParam().make(dir_.path(), max_bytes, std::move(observer), limits);
    CHECK(store_ != nullptr) << "cannot create the store under test";
    return *store_;
  }
  void Corrupt(const Digest& digest) { GetParam().corrupt(*store_, digest); }

  TempDir dir_;
  std::unique_ptr<BlobStore> store_;
};

TEST_P(StoreConformanceTest, PutThenOpenReturnsTheSameBytes) {
  BlobStore& store = Make();
  std::string data = Content(1, 100000);
  auto put = PutBytes(store, "k", data);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->digest, Digest::Of(data));
  EXPECT_EQ(put->size, data.size());

  auto got = Get(store, "k");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data);
  auto stat = store.Stat("k");
  ASSERT_TRUE(stat.ok());
  EXPECT_EQ(stat->digest, Digest::Of(data));
  EXPECT_EQ(stat->size, data.size());
  EXPECT_TRUE(store.HasDigest(Digest::Of(data)));
  auto by_digest = store.OpenDigest(Digest::Of(data));
  ASSERT_TRUE(by_digest.ok());
  EXPECT_EQ(*ReadAll(**by_digest), data);
  EXPECT_EQ((*by_digest)->info().size, data.size());

  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.bytes, data.size());
  EXPECT_EQ(stats.blobs, 1u);
  EXPECT_EQ(stats.keys, 1u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
}

TEST_P(StoreConformanceTest, ReadAtReadsAnyRange) {
  BlobStore& store = Make();
  std::string data = Content(2, 5000);
  ASSERT_TRUE(PutBytes(store, "k", data).ok());
  auto reader = store.Open("k");
  ASSERT_TRUE(reader.ok());
  char buf[100];
  auto n = (*reader)->ReadAt(4950, std::span<char>(buf, sizeof(buf)));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), data.substr(4950));
  n = (*reader)->ReadAt(5000, std::span<char>(buf, sizeof(buf)));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST_P(StoreConformanceTest, EmptyObjectIsStored) {
  BlobStore& store = Make();
  auto put = PutBytes(store, "empty", "");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->digest, Digest::Of(""));
  auto got = Get(store, "empty");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "");
}

TEST_P(StoreConformanceTest, MissingKeyIsNotFound) {
  BlobStore& store = Make();
  EXPECT_EQ(store.Open("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Stat("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Delete("nope").code(), StatusCode::kNotFound);
  EXPECT_EQ(store.OpenDigest(Digest::Of("nope")).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(store.HasDigest(Digest::Of("nope")));
}

TEST_P(StoreConformanceTest, LongEmptyAndBinaryKeysAreDistinct) {
  BlobStore& store = Make();
  std::string long_a(3000, 'a'), long_b(3000, 'a');
  long_b.back() = 'b';
  std::vector<std::string> keys = {
      long_a, long_b, "", std::string("\0x", 2), std::string("\xff", 1), "plain"};
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(PutBytes(store, keys[i], Content(i, 10)).ok()) << i;
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    auto got = Get(store, keys[i]);
    ASSERT_TRUE(got.ok()) << i;
    EXPECT_EQ(*got, Content(i, 10)) << i;
  }
  EXPECT_EQ(store.Stats().keys, keys.size());
  ASSERT_TRUE(store.Delete(long_a).ok());
  EXPECT_TRUE(store.Stat(long_b).ok());
}

TEST_P(StoreConformanceTest, OverwritingKeyMapsNewContentAndDropsUnreferencedBlob) {
  BlobStore& store = Make();
  ASSERT_TRUE(PutBytes(store, "k", "old content").ok());
  ASSERT_TRUE(PutBytes(store, "k", "new content!").ok());
  EXPECT_EQ(*Get(store, "k"), "new content!");
  EXPECT_FALSE(store.HasDigest(Digest::Of("old content")));
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.blobs, 1u);
  EXPECT_EQ(stats.keys, 1u);
  EXPECT_EQ(stats.bytes, 12u);
}

TEST_P(StoreConformanceTest, TwoKeysShareOneBlobUntilBothAreDeleted) {
  BlobStore& store = Make();
  std::string data = Content(3, 1000);
  ASSERT_TRUE(PutBytes(store, "a", data).ok());
  ASSERT_TRUE(PutBytes(store, "b", data).ok());
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.blobs, 1u);
  EXPECT_EQ(stats.keys, 2u);
  EXPECT_EQ(stats.bytes, data.size());

  ASSERT_TRUE(store.Delete("a").ok());
  EXPECT_EQ(store.Stat("a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*Get(store, "b"), data);
  EXPECT_TRUE(store.HasDigest(Digest::Of(data)));
  EXPECT_EQ(store.Stats().blobs, 1u);

  ASSERT_TRUE(store.Delete("b").ok());
  EXPECT_FALSE(store.HasDigest(Digest::Of(data)));
  stats = store.Stats();
  EXPECT_EQ(stats.blobs, 0u);
  EXPECT_EQ(stats.keys, 0u);
  EXPECT_EQ(stats.bytes, 0u);
}

TEST_P(StoreConformanceTest, ManyKeysOfOneBlobCanBeDeletedInAnyOrder) {
  BlobStore& store = Make();
  std::string data = Content(4, 2000);
  std::vector<std::string> keys;
  for (int i = 0; i < 10; ++i) {
    keys.push_back("k" + std::to_string(i));
    ASSERT_TRUE(PutBytes(store, keys.back(), data).ok());
  }
  std::shuffle(keys.begin(), keys.end(), std::mt19937(7));
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(store.Delete(keys[i]).ok()) << keys[i];
    EXPECT_EQ(store.Stat(keys[i]).status().code(), StatusCode::kNotFound);
    for (size_t j = i + 1; j < keys.size(); ++j) {
      auto got = Get(store, keys[j]);
      ASSERT_TRUE(got.ok()) << keys[j] << " after deleting " << keys[i];
      EXPECT_TRUE(*got == data);
    }
    StoreStats stats = store.Stats();
    EXPECT_EQ(stats.keys, keys.size() - i - 1);
    EXPECT_EQ(stats.blobs, i + 1 < keys.size() ? 1u : 0u);
  }
  EXPECT_EQ(store.Stats().bytes, 0u);
}

TEST_P(StoreConformanceTest, EvictsLeastRecentlyUsedFirstAndReadsCountAsUse) {
  std::vector<Digest> evicted;
  std::mutex mu;
  StoreObserver observer;
  observer.on_evicted = [&](const BlobInfo& b) {
    std::lock_guard lock(mu);
    evicted.push_back(b.digest);
  };
  BlobStore& store = Make(300, observer);
  ASSERT_TRUE(PutBytes(store, "a", Content(10, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "b", Content(11, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "c", Content(12, 100)).ok());
  ASSERT_TRUE(store.Open("a").ok());  // a is now more recent than b and c
  ASSERT_TRUE(PutBytes(store, "d", Content(13, 100)).ok());

  EXPECT_EQ(store.Stat("b").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store.Stat("a").ok());
  EXPECT_TRUE(store.Stat("c").ok());
  EXPECT_TRUE(store.Stat("d").ok());
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0], Digest::Of(Content(11, 100)));

  ASSERT_TRUE(PutBytes(store, "e", Content(14, 100)).ok());  // next oldest: c
  EXPECT_EQ(store.Stat("c").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store.Stat("a").ok());
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.evictions, 2u);
  EXPECT_EQ(stats.evicted_bytes, 200u);
  EXPECT_EQ(stats.bytes, 300u);
}

TEST_P(StoreConformanceTest, RewritingExistingContentCountsAsUse) {
  // Room for four; a rewrite reserves its size while it streams, so leave room for that too.
  BlobStore& store = Make(400);
  ASSERT_TRUE(PutBytes(store, "a", Content(10, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "b", Content(11, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "c", Content(12, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "a2", Content(10, 100)).ok());  // same content as a
  EXPECT_EQ(store.Stats().evictions, 0u);
  ASSERT_TRUE(PutBytes(store, "d", Content(13, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "e", Content(14, 100)).ok());
  EXPECT_EQ(store.Stat("b").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store.Stat("a").ok());
  EXPECT_TRUE(store.Stat("a2").ok());
  EXPECT_TRUE(store.Stat("c").ok());
}

TEST_P(StoreConformanceTest, EvictionRemovesEveryKeyOfTheBlob) {
  BlobStore& store = Make(200);
  ASSERT_TRUE(PutBytes(store, "a1", Content(10, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "a2", Content(10, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "b", Content(11, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "c", Content(12, 100)).ok());
  EXPECT_EQ(store.Stat("a1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Stat("a2").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Stats().keys, 2u);
}

TEST_P(StoreConformanceTest, ReaderKeepsReadingAfterItsBlobIsEvicted) {
  BlobStore& store = Make(200);
  std::string data = Content(20, 100);
  ASSERT_TRUE(PutBytes(store, "a", data).ok());
  auto reader = store.Open("a");
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(PutBytes(store, "b", Content(21, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "c", Content(22, 100)).ok());
  ASSERT_FALSE(store.HasDigest(Digest::Of(data)));
  EXPECT_EQ(*ReadAll(**reader), data);
}

TEST_P(StoreConformanceTest, ObjectLargerThanQuotaIsRejected) {
  BlobStore& store = Make(1000);
  auto put = PutBytes(store, "big", Content(30, 1001));
  EXPECT_EQ(put.status().code(), StatusCode::kResourceExhausted);
  WriteOptions sized;
  sized.expected_size = 1001;
  EXPECT_EQ(store.NewWriter("big", sized).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(store.Stat("big").status().code(), StatusCode::kNotFound);
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.bytes, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  // A fitting object still goes in, evicting what it must.
  ASSERT_TRUE(PutBytes(store, "small", Content(31, 600)).ok());
  ASSERT_TRUE(PutBytes(store, "exact", Content(32, 1000)).ok());
  EXPECT_EQ(store.Stat("small").status().code(), StatusCode::kNotFound);
}

TEST_P(StoreConformanceTest, ReservationsOfInFlightWritesCountAgainstQuota) {
  BlobStore& store = Make(1000);
  WriteOptions sized;
  sized.expected_size = 800;
  auto writer = store.NewWriter("big", sized);
  ASSERT_TRUE(writer.ok());
  // The announcement reserves nothing; the bytes do, as they arrive.
  EXPECT_EQ(store.Stats().reserved_bytes, 0u);
  ASSERT_TRUE((*writer)->Write(Content(41, 800)).ok());
  EXPECT_EQ(store.Stats().reserved_bytes, 800u);
  EXPECT_EQ(PutBytes(store, "other", Content(40, 300)).status().code(),
            StatusCode::kResourceExhausted);
  ASSERT_TRUE((*writer)->Commit().ok());
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.bytes, 800u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
}

// The attack of issue 11 item 5: a writer (a peer's Put, an HTTP PUT with Content-Length)
// announcing the whole quota and then sending little or nothing must not evict anything.
TEST_P(StoreConformanceTest, AnnouncingTheQuotaEvictsNothing) {
  std::vector<BlobInfo> evicted;
  StoreObserver observer;
  observer.on_evicted = [&](const BlobInfo& b) { evicted.push_back(b); };
  BlobStore& store = Make(10000, observer);
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE(PutBytes(store, "victim/" + std::to_string(i), Content(60 + i, 1000)).ok());
  }
  WriteOptions peer_style;
  peer_style.expected_size = 10000;
  peer_style.expected_digest = Digest::Of(Content(70, 10000));
  peer_style.caller = "10.0.0.66";
  {
    auto writer = store.NewWriter("attacker", peer_style);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Write(Content(70, 10000).substr(0, 10)).ok());
    StoreStats during = store.Stats();
    EXPECT_EQ(during.bytes, 9000u);
    EXPECT_EQ(during.reserved_bytes, 10u);
    // Another writer still gets the room that is really free.
    ASSERT_TRUE(PutBytes(store, "other", Content(71, 900)).ok());
  }  // the attacker goes away without committing
  EXPECT_TRUE(evicted.empty());
  for (int i = 0; i < 9; ++i) {
    EXPECT_TRUE(store.Stat("victim/" + std::to_string(i)).ok()) << i;
  }
  EXPECT_EQ(store.Stat("attacker").status().code(), StatusCode::kNotFound);
  StoreStats after = store.Stats();
  EXPECT_EQ(after.bytes, 9900u);
  EXPECT_EQ(after.reserved_bytes, 0u);
  EXPECT_EQ(after.evictions, 0u);
}

TEST_P(StoreConformanceTest, PerWriterAndPerCallerCapsBoundInFlightBytes) {
  WriteLimits limits;
  limits.max_writer_bytes = 3000;
  limits.max_caller_bytes = 4000;
  BlobStore& store = MakeWithLimits(100000, limits);
  WriteOptions from_a;
  from_a.caller = "10.0.0.1";
  // An announced size over a cap fails at once, before anything is reserved.
  WriteOptions too_big = from_a;
  too_big.expected_size = 3001;
  EXPECT_EQ(store.NewWriter("k", too_big).status().code(), StatusCode::kResourceExhausted);
  // One writer cannot hold more than its cap, however it announces itself.
  {
    auto w = store.NewWriter("one", from_a);
    ASSERT_TRUE(w.ok());
    EXPECT_TRUE((*w)->Write(Content(80, 3000)).ok());
    EXPECT_EQ((*w)->Write("x").code(), StatusCode::kResourceExhausted);
  }
  EXPECT_EQ(store.Stats().reserved_bytes, 0u);
  // Two writers of one caller together stop at the caller's cap; another caller is unaffected.
  auto w1 = store.NewWriter("a1", from_a);
  auto w2 = store.NewWriter("a2", from_a);
  ASSERT_TRUE(w1.ok() && w2.ok());
  ASSERT_TRUE((*w1)->Write(Content(81, 2500)).ok());
  EXPECT_EQ((*w2)->Write(Content(82, 2000)).code(), StatusCode::kResourceExhausted);
  WriteOptions from_b;
  from_b.caller = "10.0.0.2";
  EXPECT_TRUE(PutBytes(store, "b", Content(83, 2500), from_b).ok());
  // The agent's own writes (no caller) are bounded by the quota alone.
  EXPECT_TRUE(PutBytes(store, "own", Content(84, 5000)).ok());
  // Committing returns the caller's share.
  ASSERT_TRUE((*w1)->Commit().ok());
  EXPECT_TRUE(PutBytes(store, "a3", Content(85, 3000), from_a).ok());
  EXPECT_EQ(store.Stats().reserved_bytes, 0u);
}

TEST_P(StoreConformanceTest, QuotaIsNeverExceededDuringConcurrentWrites) {
  constexpr uint64_t kMax = 64 * uint64_t{1024};
  BlobStore& store = Make(kMax);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> worst{0};
  std::thread monitor([&] {
    while (!stop) {
      StoreStats s = store.Stats();
      uint64_t used = s.bytes + s.reserved_bytes;
      uint64_t w = worst.load();
      while (used > w && !worst.compare_exchange_weak(w, used)) {
      }
    }
  });
  std::atomic<int> ok{0}, exhausted{0}, other{0};
  std::vector<std::thread> threads;
  threads.reserve(8);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 60; ++i) {
        std::string data = Content(t * 1000 + i, 1024 + rng() % (12 * size_t{1024}));
        WriteOptions o;
        if (i % 2 == 0) {
          o.expected_size = data.size();
        }
        auto w = store.NewWriter("t" + std::to_string(t) + "/" + std::to_string(i), o);
        Status s = w.status();
        for (size_t off = 0; s.ok() && off < data.size(); off += 1024) {
          s = (*w)->Write(std::string_view(data).substr(off, 1024));
        }
        if (s.ok()) {
          s = (*w)->Commit().status();
        }
        if (s.ok()) {
          ++ok;
        } else if (s.code() == StatusCode::kResourceExhausted) {
          ++exhausted;
        } else {
          ++other;
          ADD_FAILURE() << s.ToString();
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  stop = true;
  monitor.join();
  EXPECT_LE(worst.load(), kMax);
  EXPECT_GT(ok.load(), 100);
  EXPECT_EQ(other.load(), 0);
  StoreStats s = store.Stats();
  EXPECT_LE(s.bytes, kMax);
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_GT(s.evictions, 0u);
}

TEST_P(StoreConformanceTest, ExpectedDigestMismatchIsDataLossAndStoresNothing) {
  BlobStore& store = Make(10000);
  WriteOptions o;
  o.expected_digest = Digest::Of("something else");
  auto put = PutBytes(store, "k", "content", o);
  EXPECT_EQ(put.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(store.Stat("k").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(store.HasDigest(Digest::Of("content")));
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.bytes, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);

  o.expected_digest = Digest::Of("content");
  EXPECT_TRUE(PutBytes(store, "k", "content", o).ok());
}

TEST_P(StoreConformanceTest, OnVerifiedIsCalledOnlyForContentThatMatched) {
  BlobStore& store = Make(10000);
  int verified = 0;
  WriteOptions o;
  o.on_verified = [&] { ++verified; };
  o.expected_digest = Digest::Of("something else");
  EXPECT_EQ(PutBytes(store, "k", "content", o).status().code(), StatusCode::kDataLoss);
  o.expected_digest.reset();
  o.expected_size = 3;
  EXPECT_EQ(PutBytes(store, "k", "content", o).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(verified, 0);
  o.expected_size = 7;
  o.expected_digest = Digest::Of("content");
  ASSERT_TRUE(PutBytes(store, "k", "content", o).ok());
  EXPECT_EQ(verified, 1);
}

TEST_P(StoreConformanceTest, ExpectedSizeMismatchIsDataLossAndStoresNothing) {
  BlobStore& store = Make(10000);
  WriteOptions o;
  o.expected_size = 8;
  EXPECT_EQ(PutBytes(store, "short", "content", o).status().code(), StatusCode::kDataLoss);
  o.expected_size = 6;
  EXPECT_EQ(PutBytes(store, "long", "content", o).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(store.Stat("short").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Stat("long").status().code(), StatusCode::kNotFound);
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.blobs, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
}

TEST_P(StoreConformanceTest, FailedWriterRefusesFurtherUse) {
  BlobStore& store = Make();
  WriteOptions o;
  o.expected_size = 2;
  auto w = store.NewWriter("k", o);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->Write("abc").code(), StatusCode::kDataLoss);
  EXPECT_FALSE((*w)->Write("ab").ok());
  EXPECT_FALSE((*w)->Commit().ok());
  EXPECT_EQ(store.Stat("k").status().code(), StatusCode::kNotFound);
}

TEST_P(StoreConformanceTest, WriterDestroyedWithoutCommitLeavesNothing) {
  BlobStore& store = Make(10000);
  {
    auto w = store.NewWriter("k", {});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write(Content(50, 5000)).ok());
    EXPECT_EQ(store.Stats().reserved_bytes, 5000u);
  }
  EXPECT_EQ(store.Stat("k").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(store.HasDigest(Digest::Of(Content(50, 5000))));
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.bytes, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.blobs, 0u);
}

TEST_P(StoreConformanceTest, ConcurrentWritersOfTheSameContentEndAsOneBlob) {
  BlobStore& store = Make();
  std::string data = Content(60, 1 << 20);
  constexpr int kThreads = 8;
  std::barrier sync(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(8);
  std::atomic<int> ok{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto w = store.NewWriter("k" + std::to_string(t), {});
      ASSERT_TRUE(w.ok());
      sync.arrive_and_wait();
      for (size_t off = 0; off < data.size(); off += 64 * size_t{1024}) {
        ASSERT_TRUE((*w)->Write(std::string_view(data).substr(off, 64 * size_t{1024})).ok());
      }
      sync.arrive_and_wait();
      auto info = (*w)->Commit();
      ASSERT_TRUE(info.ok()) << info.status().ToString();
      EXPECT_EQ(info->digest, Digest::Of(data));
      ++ok;
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  ASSERT_EQ(ok.load(), kThreads);
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.blobs, 1u);
  EXPECT_EQ(stats.keys, static_cast<uint64_t>(kThreads));
  EXPECT_EQ(stats.bytes, data.size());
  EXPECT_EQ(stats.reserved_bytes, 0u);
  for (int t = 0; t < kThreads - 1; ++t) {
    ASSERT_TRUE(store.Delete("k" + std::to_string(t)).ok());
  }
  auto got = Get(store, "k" + std::to_string(kThreads - 1));
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got == data);
  ASSERT_TRUE(store.Delete("k" + std::to_string(kThreads - 1)).ok());
  EXPECT_EQ(store.Stats().blobs, 0u);
  EXPECT_EQ(store.Stats().bytes, 0u);
}

TEST_P(StoreConformanceTest, RandomOperationsFromManyThreadsKeepInvariants) {
  constexpr uint64_t kMax = 48 * uint64_t{1024};
  constexpr int kContents = 24, kKeys = 40;
  BlobStore& store = Make(kMax);
  std::vector<std::string> contents;
  std::map<Digest, size_t> content_of;
  for (int i = 0; i < kContents; ++i) {
    contents.push_back(Content(100 + i, (i * 977) % 6000));
    content_of[Digest::Of(contents.back())] = i;
  }
  std::vector<std::thread> threads;
  threads.reserve(8);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      for (int i = 0; i < 250; ++i) {
        std::string key = "key" + std::to_string(rng() % kKeys);
        switch (rng() % 4) {
          case 0:
          case 1: {
            auto put = PutBytes(store, key, contents[rng() % kContents]);
            if (!put.ok()) {
              EXPECT_EQ(put.status().code(), StatusCode::kResourceExhausted)
                  << put.status().ToString();
            }
            break;
          }
          case 2: {
            auto reader = store.Open(key);
            if (!reader.ok()) {
              EXPECT_EQ(reader.status().code(), StatusCode::kNotFound);
              break;
            }
            auto data = ReadAll(**reader);
            ASSERT_TRUE(data.ok());
            EXPECT_EQ(Digest::Of(*data), (*reader)->info().digest);
            EXPECT_TRUE(content_of.contains((*reader)->info().digest));
            break;
          }
          case 3: {
            Status s = store.Delete(key);
            EXPECT_TRUE(s.ok() || s.code() == StatusCode::kNotFound) << s.ToString();
            break;
          }
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }

  uint64_t keys = 0;
  std::set<Digest> digests;
  uint64_t bytes = 0;
  for (int k = 0; k < kKeys; ++k) {
    std::string key = "key" + std::to_string(k);
    auto stat = store.Stat(key);
    if (!stat.ok()) {
      continue;
    }
    ++keys;
    auto data = Get(store, key);
    ASSERT_TRUE(data.ok());
    EXPECT_EQ(Digest::Of(*data), stat->digest);
    if (digests.insert(stat->digest).second) {
      bytes += stat->size;
    }
  }
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.keys, keys);
  EXPECT_EQ(stats.blobs, digests.size());
  EXPECT_EQ(stats.bytes, bytes);
  EXPECT_LE(stats.bytes, kMax);
  EXPECT_EQ(stats.reserved_bytes, 0u);
}

TEST_P(StoreConformanceTest, CorruptBlobIsNotServedAndIsDroppedWithAllItsKeys) {
  std::vector<Digest> corrupt;
  StoreObserver observer;
  observer.on_corrupt = [&](const BlobInfo& b) { corrupt.push_back(b.digest); };
  BlobStore& store = Make(0, observer);
  std::string data = Content(70, 4096);
  Digest digest = Digest::Of(data);
  ASSERT_TRUE(PutBytes(store, "a", data).ok());
  ASSERT_TRUE(PutBytes(store, "b", data).ok());
  ASSERT_TRUE(PutBytes(store, "other", "fine").ok());
  Corrupt(digest);

  EXPECT_EQ(store.Open("a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Stat("b").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(store.HasDigest(digest));
  EXPECT_EQ(store.OpenDigest(digest).status().code(), StatusCode::kNotFound);
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.corrupt_dropped, 1u);
  EXPECT_EQ(stats.blobs, 1u);
  EXPECT_EQ(stats.keys, 1u);
  EXPECT_EQ(stats.bytes, 4u);
  ASSERT_EQ(corrupt.size(), 1u);
  EXPECT_EQ(corrupt[0], digest);
  EXPECT_EQ(*Get(store, "other"), "fine");

  // The content can be stored again.
  ASSERT_TRUE(PutBytes(store, "a", data).ok());
  EXPECT_EQ(*Get(store, "a"), data);
}

TEST_P(StoreConformanceTest, CorruptionAfterVerifiedReadsIsStillDetected) {
  BlobStore& store = Make();
  std::string data = Content(71, 10000);
  ASSERT_TRUE(PutBytes(store, "a", data).ok());
  // Let any timestamp granularity pass, and read so a verified state is recorded.
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  ASSERT_TRUE(Get(store, "a").ok());
  ASSERT_TRUE(Get(store, "a").ok());
  if (auto* lmdb = dynamic_cast<LmdbStore*>(&store)) {
    ASSERT_TRUE(lmdb->FlushAccessTimes().ok());
  }
  ASSERT_TRUE(Get(store, "a").ok());
  Corrupt(Digest::Of(data));
  EXPECT_EQ(store.Open("a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Stats().corrupt_dropped, 1u);
}

// Every key starting with prefix, page by page (at most `limit` keys a page); fails the test on
// an error or a page over the limit. Bounded: a listing that never ends fails.
std::vector<std::string> ListAll(BlobStore& store, std::string_view prefix, size_t limit,
                                 const std::function<void(const KeyListing&)>& per_page = {}) {
  std::vector<std::string> all;
  std::string after;
  for (int pages = 0; pages < 10000; ++pages) {
    Result<KeyListing> page = store.ListKeys(prefix, after, limit);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok()) return all;
    EXPECT_LE(page->keys.size(), limit);
    EXPECT_EQ(page->unnamed, 0u);
    all.insert(all.end(), page->keys.begin(), page->keys.end());
    if (per_page) per_page(*page);
    if (page->next.empty()) return all;
    after = page->next;
  }
  ADD_FAILURE() << "listing did not end";
  return all;
}

std::multiset<std::string> Sorted(const std::vector<std::string>& v) {
  return {v.begin(), v.end()};
}

TEST_P(StoreConformanceTest, ListKeysByPrefixListsEveryMatchOnceAcrossPages) {
  BlobStore& store = Make();
  std::multiset<std::string> want;
  for (int i = 0; i < 23; ++i) {
    std::string key = "pypi/file/pkg-" + std::to_string(i);
    ASSERT_TRUE(PutBytes(store, key, Content(i, 10)).ok());
    want.insert(key);
  }
  // Binary and long keys, and a key sharing one blob with another.
  const std::string binary("pypi/file/\0\xff", 12);
  const std::string long_key = "pypi/file/" + std::string(3000, 'x');
  ASSERT_TRUE(PutBytes(store, binary, Content(1, 10)).ok());
  ASSERT_TRUE(PutBytes(store, long_key, Content(99, 10)).ok());
  want.insert(binary);
  want.insert(long_key);
  // Not matching: another front end, a prefix of the prefix, a key differing in case.
  ASSERT_TRUE(PutBytes(store, "npm/file/pkg-1", Content(1, 10)).ok());
  ASSERT_TRUE(PutBytes(store, "pypi/fil", Content(2, 10)).ok());
  ASSERT_TRUE(PutBytes(store, "PYPI/file/x", Content(3, 10)).ok());
  // Overwritten: listed once.
  ASSERT_TRUE(PutBytes(store, "pypi/file/pkg-3", Content(77, 10)).ok());

  EXPECT_EQ(Sorted(ListAll(store, "pypi/file/", 4)), want);
  EXPECT_EQ(Sorted(ListAll(store, "pypi/file/", 1000)), want);
  EXPECT_EQ(Sorted(ListAll(store, "npm/", 1)), std::multiset<std::string>{"npm/file/pkg-1"});
  EXPECT_TRUE(ListAll(store, "maven/", 3).empty());
  EXPECT_EQ(ListAll(store, "", 7).size(), want.size() + 3);
  EXPECT_EQ(store.ListKeys("pypi/", "", 0).status().code(), StatusCode::kInvalidArgument);
}

TEST_P(StoreConformanceTest, ListKeysOmitsDeletedEvictedAndUnmappedKeys) {
  BlobStore& store = Make(/*max_bytes=*/300);
  ASSERT_TRUE(PutBytes(store, "p/old", Content(1, 100)).ok());  // evicted below
  ASSERT_TRUE(PutBytes(store, "p/alias-of-old", Content(1, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "p/deleted", Content(2, 100)).ok());
  ASSERT_TRUE(store.Delete("p/deleted").ok());
  ASSERT_TRUE(PutBytes(store, "p/b", Content(3, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "p/c", Content(4, 100)).ok());
  ASSERT_TRUE(PutBytes(store, "p/d", Content(5, 100)).ok());  // evicts the blob of p/old
  ASSERT_EQ(store.Stat("p/old").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Sorted(ListAll(store, "p/", 2)), (std::multiset<std::string>{"p/b", "p/c", "p/d"}));
}

TEST_P(StoreConformanceTest, DeletingListedKeysBetweenPagesKeepsTheListingGoing) {
  BlobStore& store = Make();
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(PutBytes(store, "purge/" + std::to_string(i), Content(i, 10)).ok());
    ASSERT_TRUE(PutBytes(store, "keep/" + std::to_string(i), Content(i, 10)).ok());
  }
  size_t deleted = 0;
  std::vector<std::string> listed = ListAll(store, "purge/", 3, [&](const KeyListing& page) {
    for (const std::string& key : page.keys) {
      ASSERT_TRUE(store.Delete(key).ok()) << key;
      ++deleted;
    }
  });
  EXPECT_EQ(listed.size(), 40u);
  EXPECT_EQ(deleted, 40u);
  EXPECT_TRUE(ListAll(store, "purge/", 100).empty());
  EXPECT_EQ(ListAll(store, "keep/", 100).size(), 40u);
  // Content shared with a purged key is still served under the kept key.
  EXPECT_EQ(Get(store, "keep/7").value(), Content(7, 10));
}

TEST_P(StoreConformanceTest, RenameMovesTheKeyToTheSameBlob) {
  BlobStore& store = Make();
  std::string data = Content(21, 5000);
  ASSERT_TRUE(PutBytes(store, "staged/x", data).ok());
  ASSERT_TRUE(store.Rename("staged/x", "final/x", Digest::Of(data)).ok());
  EXPECT_EQ(store.Stat("staged/x").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Get(store, "final/x").value(), data);
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.blobs, 1u);
  EXPECT_EQ(stats.keys, 1u);
  EXPECT_EQ(stats.bytes, data.size());
  auto listed = store.ListKeys("", "", 10);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->keys, std::vector<std::string>{"final/x"});
  // The blob goes with its last key, as after any write.
  ASSERT_TRUE(store.Delete("final/x").ok());
  EXPECT_FALSE(store.HasDigest(Digest::Of(data)));
  EXPECT_EQ(store.Stats().bytes, 0u);
}

TEST_P(StoreConformanceTest, RenameOfOtherContentOrAnAbsentKeyChangesNothing) {
  BlobStore& store = Make();
  std::string data = Content(22, 100);
  ASSERT_TRUE(PutBytes(store, "staged", data).ok());
  EXPECT_EQ(store.Rename("staged", "final", Digest::Of("other")).code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Rename("absent", "final", Digest::Of(data)).code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Stat("final").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Get(store, "staged").value(), data);
  EXPECT_EQ(store.Stats().keys, 1u);
}

TEST_P(StoreConformanceTest, RenameReplacesWhatTheTargetMapped) {
  BlobStore& store = Make();
  std::string old_data = Content(23, 300);
  std::string new_data = Content(24, 400);
  ASSERT_TRUE(PutBytes(store, "final", old_data).ok());
  ASSERT_TRUE(PutBytes(store, "staged", new_data).ok());
  ASSERT_TRUE(store.Rename("staged", "final", Digest::Of(new_data)).ok());
  EXPECT_EQ(Get(store, "final").value(), new_data);
  EXPECT_FALSE(store.HasDigest(Digest::Of(old_data)));
  StoreStats stats = store.Stats();
  EXPECT_EQ(stats.blobs, 1u);
  EXPECT_EQ(stats.keys, 1u);
  EXPECT_EQ(stats.bytes, new_data.size());
  // Onto a key that already maps to the same blob: the source goes, the blob stays.
  ASSERT_TRUE(PutBytes(store, "again", new_data).ok());
  ASSERT_TRUE(store.Rename("again", "final", Digest::Of(new_data)).ok());
  EXPECT_EQ(store.Stat("again").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Get(store, "final").value(), new_data);
  EXPECT_EQ(store.Stats().keys, 1u);
}

INSTANTIATE_TEST_SUITE_P(store, StoreConformanceTest, ::testing::Values(MemoryKind(), LmdbKind()),
                         [](const ::testing::TestParamInfo<StoreKind>& info) {
                           return info.param.name;
                         });

// A store that keeps BlobStore's default Rename (a copy, then a delete).
class DefaultRenameStore : public MemoryStore {
 public:
  Status Rename(std::string_view from, std::string_view to, const Digest& digest) override {
    return BlobStore::Rename(from, to, digest);
  }
};

TEST(StoreDefaultRename, CopiesThenDeletesAndChecksTheDigest) {
  DefaultRenameStore store;
  std::string data = Content(25, 700000);
  ASSERT_TRUE(PutBytes(store, "staged", data).ok());
  EXPECT_EQ(store.Rename("staged", "final", Digest::Of("x")).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store.Rename("staged", "final", Digest::Of(data)).ok());
  EXPECT_EQ(Get(store, "final").value(), data);
  EXPECT_EQ(store.Stat("staged").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Stats().blobs, 1u);
}

}  // namespace
}  // namespace buildcache::store
