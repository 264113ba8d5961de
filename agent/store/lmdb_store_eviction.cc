// LmdbStore: the quota, eviction and the access times that order it (the LRU): reservations
// against maxBytes, evicting the least recently used blobs, and the flusher that writes read
// accesses into the index. Writes are in lmdb_store.cc, reads in lmdb_store_read.cc.

#include <algorithm>
#include <chrono>
#include <utility>

#include "agent/store/lmdb_index.h"
#include "agent/store/lmdb_store.h"
#include "common/log/log.h"

namespace buildcache::store {

using lmdb_internal::BlobRecord;
using lmdb_internal::MdbStatus;
using lmdb_internal::RemovedBlobs;
using lmdb_internal::WriteTxn;

namespace {

// Read accesses kept in memory before the flusher is woken early.
constexpr uint64_t kTouchFlushThreshold = 1 << 16;
// Read accesses written per flush transaction. Each access updates records spread over the
// whole index, and every page fault maps up to 16 neighbouring index pages into the process
// (kernel fault-around), so a batch costs up to about 64 KiB x 3 of RSS per access until the
// next trim: small batches, trimmed between them, keep the peak RSS bounded with millions of
// objects.
constexpr size_t kTouchesPerTxn = 128;
// How often the flusher checks how much of the index is resident (see ResidentTrimmer).
constexpr std::chrono::milliseconds kTrimCheckInterval{100};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Quota and eviction.

Status LmdbStore::Reserve(uint64_t n) {
  const uint64_t max = options_.max_bytes;
  if (max == 0) {
    MutexLock lock(quota_mu_);
    reserved_ += n;
    return Status::Ok();
  }
  if (n > max) {
    return ResourceExhausted("object larger than the store quota of " + std::to_string(max) +
                             " bytes");
  }
  auto try_reserve = [&](uint64_t* need) -> std::optional<Status> {
    MutexLock lock(quota_mu_);
    if (bytes_ + reserved_ + n <= max) {
      reserved_ += n;
      return Status::Ok();
    }
    if (reserved_ + n > max) {
      return ResourceExhausted("store quota of " + std::to_string(max) +
                               " bytes is held by in-flight writes");
    }
    *need = bytes_ + reserved_ + n - max;
    return std::nullopt;
  };
  for (;;) {
    uint64_t need = 0;
    if (auto s = try_reserve(&need)) {
      return *s;
    }
    MutexLock evict_lock(evict_mu_);
    // Another writer may have made room while this one waited.
    if (auto s = try_reserve(&need)) {
      return *s;
    }
    bool any = false;
    BC_RETURN_IF_ERROR(EvictAtLeast(need, &any));
    if (!any) {
      return ResourceExhausted("store quota exhausted and nothing left to evict");
    }
  }
}

void LmdbStore::Release(uint64_t n) {
  MutexLock lock(quota_mu_);
  reserved_ -= n;
}

Status LmdbStore::FinishRemoval(WriteTxn& txn, Status s, uint64_t saved_bytes,
                                uint64_t saved_atime) {
  if (s.ok()) {
    s = index_->PutMeta64(txn.get(), "bytes", index_bytes_);
  }
  if (s.ok()) {
    s = txn.Commit();
  }
  if (!s.ok()) {
    index_bytes_ = saved_bytes;
    last_atime_ = saved_atime;
  }
  return s;
}

Status LmdbStore::EvictAtLeast(uint64_t need, bool* evicted_any) {
  *evicted_any = false;
  // Recorded reads first, so the order is current.
  Status flushed = FlushAccessTimes();
  if (!flushed.ok()) {
    log::Warn("store access time flush failed", {{"error", flushed.ToString()}});
  }
  RemovedBlobs removed;
  {
    MutexLock lock(write_mu_);
    WriteTxn txn(env_);
    BC_RETURN_IF_ERROR(txn.status());
    const uint64_t saved_bytes = index_bytes_;
    const uint64_t saved_atime = last_atime_;
    // Reads recorded since the flush above.
    Status s = ApplyTouchesLocked(txn.get(), kTouchesPerTxn);
    std::vector<Digest> victims;
    if (s.ok()) {
      s = index_->OldestBlobs(txn.get(), need, &victims);
    }
    for (size_t i = 0; s.ok() && i < victims.size(); ++i) {
      Result<uint64_t> size = RemoveBlobLocked(txn.get(), victims[i]);
      s = size.status();
      if (s.ok()) {
        removed.emplace_back(victims[i], *size);
      }
    }
    s = FinishRemoval(txn, s, saved_bytes, saved_atime);
    if (!s.ok()) {
      log::Error("store eviction failed", {{"error", s.ToString()}});
      return s;
    }
    UnlinkBlobs(removed);
    SyncQuotaBytes();
  }
  uint64_t total = 0;
  for (const auto& [d, size] : removed) {
    total += size;
    log::Debug("blob evicted", {{"digest", d.Hex()}, {"bytes", size}});
  }
  evictions_.fetch_add(removed.size());
  evicted_bytes_.fetch_add(total);
  *evicted_any = !removed.empty();
  if (options_.observer.on_evicted) {
    for (const auto& [d, size] : removed) {
      options_.observer.on_evicted(BlobInfo{d, size});
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Access times.

uint64_t LmdbStore::NextAtimeLocked(int64_t at_least) {
  last_atime_ =
      std::max<uint64_t>(static_cast<uint64_t>(std::max<int64_t>(at_least, 0)), last_atime_ + 1);
  return last_atime_;
}

Status LmdbStore::ApplyTouchesLocked(MDB_txn* txn, size_t limit) {
  for (const auto& [digest, touch] : access_log_.Take(limit)) {
    BlobRecord rec;
    int rc = index_->GetBlob(txn, digest, &rec);
    if (rc == MDB_NOTFOUND) {
      continue;  // evicted or deleted since
    }
    if (rc != 0) {
      return MdbStatus(rc, "index lookup");
    }
    if (touch.fingerprint != 0) {
      rec.fingerprint = touch.fingerprint;
    }
    if (touch.time != 0) {
      BC_RETURN_IF_ERROR(index_->SetAtime(txn, &rec, NextAtimeLocked(touch.time)));
    } else {
      BC_RETURN_IF_ERROR(index_->PutBlob(txn, rec));
    }
  }
  return Status::Ok();
}
uint64_t LmdbStore::RecordTouch(const Digest& digest, uint64_t indexed_fingerprint) {
  bool added = false;
  uint64_t fp = access_log_.Record(digest, Now(), indexed_fingerprint, &added);
  if (added && access_log_.pending() > kTouchFlushThreshold) {
    flusher_cv_.NotifyAll();
  }
  return fp;
}

Status LmdbStore::FlushAccessTimes() {
  // In bounded transactions: LMDB keeps every page a transaction dirties in memory until commit.
  // Only what is pending now, so that a steady stream of reads cannot keep this going.
  for (uint64_t todo = access_log_.pending(); todo > 0 && access_log_.pending() > 0;
       todo -= std::min<uint64_t>(todo, kTouchesPerTxn)) {
    MutexLock lock(write_mu_);
    WriteTxn txn(env_);
    BC_RETURN_IF_ERROR(txn.status());
    const uint64_t saved_atime = last_atime_;
    Status s = ApplyTouchesLocked(txn.get(), kTouchesPerTxn);
    if (s.ok()) {
      s = txn.Commit();
    }
    if (!s.ok()) {
      last_atime_ = saved_atime;
      return s;
    }
    trimmer_.Trim();
  }
  return Status::Ok();
}
void LmdbStore::FlusherLoop() {
  using Clock = std::chrono::steady_clock;
  auto next_flush = Clock::now() + options_.flush_interval;
  MutexLock lock(flusher_mu_);
  while (!stopping_) {
    auto wait = std::min<Clock::duration>(kTrimCheckInterval, next_flush - Clock::now());
    const auto deadline = Clock::now() + wait;
    while (!stopping_ && access_log_.pending() <= kTouchFlushThreshold &&
           flusher_cv_.WaitUntil(flusher_mu_, deadline)) {
    }
    if (stopping_) {
      break;
    }
    flusher_mu_.Unlock();
    if (Clock::now() >= next_flush || access_log_.pending() > kTouchFlushThreshold) {
      Status s = FlushAccessTimes();
      if (!s.ok()) {
        log::Warn("store access time flush failed", {{"error", s.ToString()}});
      }
      next_flush = Clock::now() + options_.flush_interval;
    }
    trimmer_.Trim();
    flusher_mu_.Lock();
  }
}

}  // namespace buildcache::store
