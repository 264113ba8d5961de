// Read accesses of LmdbStore recorded in memory between index flushes: a read must not write the
// index, so its access time (and a fingerprint it freshly verified) waits here until the store
// writes a batch of them (every flush interval, before an eviction, with each write transaction).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agent/store/digest.h"
#include "common/base/thread_annotations.h"

namespace buildcache::store {

// What is recorded for one blob since the last flush.
struct Touch {
  int64_t time = 0;          // latest read (0: only a fingerprint was recorded)
  uint64_t fingerprint = 0;  // a freshly verified fingerprint to record, or 0
};

// Thread-safe; sharded by digest so that readers rarely share a lock.
class AccessLog {
 public:
  // Records a read of `digest` at `now`. Returns the fingerprint the caller should compare its
  // file against: one verified since the last flush if recorded, else indexed_fingerprint. Sets
  // *added when the blob had nothing recorded (pending() grew).
  uint64_t Record(const Digest& digest, int64_t now, uint64_t indexed_fingerprint, bool* added);
  // Records a freshly verified fingerprint (written with the next flush).
  void RecordFingerprint(const Digest& digest, uint64_t fingerprint);
  // Blobs with something recorded.
  uint64_t pending() const { return pending_.load(); }
  // Takes up to `limit` recorded entries, oldest read first.
  std::vector<std::pair<Digest, Touch>> Take(size_t limit);

 private:
  static constexpr int kShards = 16;
  struct Shard {
    Mutex mu;
    std::unordered_map<Digest, Touch, DigestHash> pending GUARDED_BY(mu);
  };
  Shard& ShardOf(const Digest& digest) { return shards_[digest.bytes()[1] % kShards]; }

  std::array<Shard, kShards> shards_;
  std::atomic<uint64_t> pending_{0};
};

}  // namespace buildcache::store
