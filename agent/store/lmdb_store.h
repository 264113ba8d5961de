#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "agent/store/access_log.h"
#include "agent/store/blob_store.h"
#include "agent/store/group_commit.h"
#include "agent/store/resident_trim.h"
#include "agent/store/write_limits.h"
#include "common/base/thread_annotations.h"

struct MDB_env;
struct MDB_txn;
struct stat;

namespace buildcache::store {
namespace lmdb_internal {
struct BlobRecord;
class Index;
class ReadTxnPool;
class WriteTxn;
}  // namespace lmdb_internal

// How much Open() hashes before it returns a reader.
enum class VerifyReads {
  // Hash the file when its stat fingerprint (size, mtime, ctime, inode) differs from the one
  // recorded when it was last verified, or when none is recorded. Any write to a file changes its
  // ctime, which user space cannot set back, so a file whose fingerprint still matches has not been
  // written through the file system since it was verified. Bit rot below the file system is caught
  // by Scrub().
  kWhenChanged,
  // Hash every blob on every Open.
  kAlways,
};

// Where LmdbStoreOptions::inject_fault is consulted. Tests use it to fail a step (return an errno)
// or to crash there (call _exit in a forked child).
enum class FaultPoint {
  kTempCreate,        // before the temporary file is created
  kTempWrite,         // before each write(2) to the temporary file
  kTempSync,          // before fsync of the temporary file (all bytes written)
  kPublish,           // before the temporary file is renamed into blobs/ (inside the index txn)
  kAfterPublish,      // after the rename, before the index is updated
  kIndexCommit,       // index updated inside the transaction, before it commits
  kAfterIndexCommit,  // after the commit (the returned errno is ignored: a crash point only)
  kDirSync,           // before the blob directories are fsynced (inside the index txn)
  kContentSync,       // before unsynced contents are synced (background sync and Close)
};

struct LmdbStoreOptions {
  // Root directory; created if missing. Holds index/ (LMDB), blobs/<2 hex>/<64 hex> and tmp/.
  std::string data_dir;
  // Byte quota for committed blobs plus in-flight writes; 0 = unlimited. Lowering it below what is
  // stored evicts at Open.
  uint64_t max_bytes = 0;
  // Caps on the quota in-flight writers may hold, per writer and per caller.
  WriteLimits limits;
  VerifyReads verify_reads = VerifyReads::kWhenChanged;
  // true: Commit returns only when the blob file, its directory entry and the index are on disk
  // (fsync file, fsync directory, LMDB synchronous commit; concurrent commits share the syncs).
  // false: only LMDB's one fdatasync per index transaction (MDB_NOMETASYNC). Crash-safe either way
  // for process crashes (kill -9); after a machine crash the most recent writes may be missing,
  // never wrong (an unclean shutdown makes every blob be re-verified on its next read).
  bool sync = true;
  // Contents committed without their own fsync (WriteOptions::sync_content = false) are made
  // durable together: one syncfs(2) of the data directory's file system this often while there
  // are any (0: left to the kernel's writeback), and always before Close marks the store clean.
  // Only with `sync`.
  std::chrono::milliseconds content_sync_interval{2000};
  // After a clean shutdown Open skips stat-ing every blob file (tmp/ is still cleared). After a
  // crash the full reconcile always runs.
  bool full_reconcile_after_clean_shutdown = false;
  // Virtual size reserved for the LMDB index (no disk is used until needed). 64 GiB holds well over
  // 100 million entries; a full index fails writes with kResourceExhausted.
  uint64_t index_map_bytes = 64ull << 30;
  // How often recorded read accesses are written to the index (also before every eviction, with
  // every write transaction, and at close).
  std::chrono::milliseconds flush_interval{1000};
  // Index pages this process has read are mapped into it and count towards its RSS, although they
  // are clean page cache the kernel can drop at any time. When more than this many bytes of
  // file-backed memory are resident (checked every 100 ms), the index map is unmapped from the
  // process (madvise DONTNEED; later reads fault pages back in from the page cache). This keeps
  // RSS small when idle or writing (measured with a million objects: peak about 100 MiB while
  // indexing them); under sustained random reads over all objects the kernel's fault-around maps
  // the whole index back faster than it is trimmed, so RSS tends to the index size (about 225
  // bytes per object). 0 disables.
  uint64_t index_resident_limit_bytes = 64ull << 20;
  // Wall clock in nanoseconds since the epoch, for last-access times. Defaults to the system clock.
  std::function<int64_t()> clock;
  // Fault injection (tests): returns 0 to proceed, or an errno that the step then fails with as if
  // its system call had.
  std::function<int(FaultPoint)> inject_fault;
  StoreObserver observer;
};

// What Open() repaired (counts from the start-up reconcile).
struct RecoveryReport {
  bool full_scan = false;              // every blob file was stat-ed (after a crash or on request)
  bool clean_shutdown = false;         // the previous process closed the store cleanly
  uint64_t temp_files_removed = 0;     // unfinished writes found in tmp/
  uint64_t orphans_removed = 0;        // blob files the index did not know
  uint64_t missing_dropped = 0;        // index entries whose blob file was missing
  uint64_t size_mismatch_dropped = 0;  // index entries whose file had the wrong size (file removed)
  uint64_t evicted_to_quota = 0;       // blobs evicted because the quota is below what was stored
};

struct ScrubReport {
  uint64_t checked = 0;
  uint64_t corrupt_dropped = 0;
  uint64_t missing_dropped = 0;
};

// A BlobStore on local disk: blob files named by their SHA-256 plus an LMDB index.
//
// Index (compact: about 220 bytes per object, whatever the key length): keys are indexed by a
// 128-bit hash, blobs by a 64-bit id (the first 8 bytes of the digest; a second digest with the
// same id is refused with kFailedPrecondition, which never happens in practice). Tables: keys
// (key hash -> id), blobs (id -> rest of digest, size, last access, verified fingerprint, first
// key), lru (last access -> id), refs (id -> further keys of a blob), names (key hash -> the key's
// full name, for ListKeys; written and removed with the key), meta. See agent/store/lmdb_index.h.
//
// Durability: a write goes to tmp/, is fsynced, renamed into blobs/ and then indexed in one LMDB
// transaction; a crash at any point leaves the whole entry or none, and the next Open removes the
// leftovers (see RecoveryReport). Concurrent commits are grouped into one index transaction, so
// they share the directory fsyncs and the two LMDB syncs; an uncontended PUT with sync costs four
// fsyncs (file, directory, LMDB data and meta), without sync one (LMDB data).
//
// Unsynced writes (WriteOptions::sync_content = false) skip the file's fsync; a batch of only
// such writes also skips the blob directories' fsyncs and LMDB's meta-page sync (MDB_NOMETASYNC,
// which keeps the index intact), so an uncontended one costs one fsync (LMDB data). Their files,
// directory entries and index pages reach the disk with the next content sync
// (content_sync_interval), the next synced commit (index only) or Close, which syncs before it
// marks the store clean. Until then a machine crash may leave such an entry indexed with its file
// missing, short or unwritten, or undo its index commit: the unclean Open drops missing and
// mis-sized files and orphans, and the new fingerprint salt makes every other blob be re-hashed
// on its next read, so the entry is absent, never wrong.
//
// Verification: see VerifyReads. A blob whose content does not match its digest is never returned:
// it is dropped with all its keys, counted in StoreStats::corrupt_dropped, reported to
// observer.on_corrupt, and the Open fails with kNotFound. The commit records a blob's fingerprint
// only when its file's ctime is already older than the timestamp-granularity window (see
// Trusted); a blob written just before its commit (the usual case) has none, so its first
// verifying Open hashes it, and records the fingerprint once the file is past that window.
//
// Quota: writers reserve bytes before they write (each Write's length; an announced expected_size
// reserves nothing and evicts nothing, so a client that announces much and sends little holds
// little), evicting least recently used blobs to make room, so committed bytes plus reservations
// never exceed max_bytes. LmdbStoreOptions::limits caps what one writer and one caller hold. A
// reservation that in-flight writes alone make impossible fails at once with kResourceExhausted
// (writers do not wait for each other). Reads are recorded in memory and written to the index in
// batches. Eviction unlinks files; readers that already opened them keep reading.
//
// Thread-safe. Readers are independent of the store (they own a file descriptor); writers must be
// destroyed before the store. One LmdbStore per data_dir per machine.
class LmdbStore : public BlobStore {
 public:
  // Opens (creating if needed) the store in options.data_dir and reconciles it with the files on
  // disk.
  static Result<std::unique_ptr<LmdbStore>> Open(LmdbStoreOptions options);
  ~LmdbStore() override;

  LmdbStore(const LmdbStore&) = delete;
  LmdbStore& operator=(const LmdbStore&) = delete;

  // BlobStore
  Result<std::unique_ptr<BlobWriter>> NewWriter(std::string_view key,
                                                const WriteOptions& options) override;
  Result<std::unique_ptr<BlobReader>> Open(std::string_view key) override;
  Result<std::unique_ptr<BlobReader>> OpenDigest(const Digest& digest) override;
  // Without the hash unless verify_reads is kAlways; the size is still checked.
  Result<std::unique_ptr<BlobReader>> OpenForRelay(std::string_view key) override;
  Result<std::unique_ptr<BlobReader>> OpenDigestForRelay(const Digest& digest) override;
  Result<BlobInfo> Stat(std::string_view key) override;
  bool HasDigest(const Digest& digest) override;
  Status Delete(std::string_view key) override;
  // One index transaction, no file is touched; committed like an unsynced put (no meta-page
  // sync; the next content sync makes it durable).
  Status Rename(std::string_view from, std::string_view to, const Digest& digest) override;
  StoreStats Stats() override;
  // Scans the "names" table (in key-hash order, not by name): a call looks at no more than
  // kListScanLimit names, so with a rare prefix it may return few or no keys and a `next`.
  // `unnamed` counts keys mapped by a store older than the names table (format 2 without it):
  // they have no recorded name until they are written again, are never listed, and a prefix
  // purge cannot find them (purge them by key, or remove the data directory).
  Result<KeyListing> ListKeys(std::string_view prefix, std::string_view after,
                              size_t limit) override;
  static constexpr size_t kListScanLimit = 65536;

  // What the start-up reconcile found and repaired.
  RecoveryReport recovery() const { return recovery_; }

  // Hashes every blob (for a periodic scrubber; runs concurrently with other calls, one file at a
  // time). Corrupt or missing blobs are dropped as in Open; verified fingerprints are refreshed.
  Result<ScrubReport> Scrub();

  // Writes recorded read accesses to the index now (otherwise done every flush_interval).
  Status FlushAccessTimes();

  // The path of a blob's file (tests corrupt files through it).
  std::string BlobPath(const Digest& digest) const;

  // How many times a blob file was hashed in full since Open (tests; a metric for the scrubber).
  uint64_t full_verifications() const { return full_verifications_.load(); }

  // Makes every content committed so far without its own fsync durable now (one syncfs of the
  // data directory's file system; nothing when there is none). Otherwise done every
  // content_sync_interval and by Close.
  Status SyncContent();
  // Content syncs that ran since Open (tests).
  uint64_t content_syncs() const { return content_syncs_.load(); }
  // Index commits of batches of only unsynced puts, made without LMDB's meta-page sync (tests).
  uint64_t relaxed_index_commits() const { return relaxed_index_commits_.load(); }

 private:
  class Writer;
  class Reader;
  struct Op;
  struct Batch;

  explicit LmdbStore(LmdbStoreOptions options);

  // Open, in steps (lmdb_store_recovery.cc).
  Status Init();
  Status MakeDirectories();
  Status RemoveTempFiles();
  Status ProbeTimestampGranularity();
  // Opens the index and its tables, checks the format, reads the meta keys and marks the index
  // unclean until Close. Sets *clean and *meta_bytes (nullopt when not recorded).
  Status OpenIndex(bool* clean, std::optional<uint64_t>* meta_bytes);
  Status Reconcile(bool full);
  Status DropMissingAndMisSized();
  Status RemoveOrphans();
  Status LoadLastAtime();
  Status EvictToQuota();
  void LogRecovery(std::chrono::steady_clock::time_point start);
  // Writes outstanding access times and marks the index clean (the destructor).
  void Close();

  int64_t Now() const;
  int Fault(FaultPoint point) const;

  Result<std::unique_ptr<BlobReader>> OpenByKey(std::string_view key, bool verify);
  Result<std::unique_ptr<BlobReader>> OpenByDigest(const Digest& digest, bool verify);
  Result<std::unique_ptr<BlobReader>> OpenBlob(const Digest& digest, bool verify,
                                               const lmdb_internal::BlobRecord& rec);
  bool VerifyFile(int fd, const Digest& digest, uint64_t size);
  // Whether a file's timestamps, read by an fstat that started at before_stat, will change on any
  // later write (false while the clock is still within the file system's timestamp granularity).
  bool Trusted(const struct stat& st, int64_t before_stat) const;
  // Records a read access; returns the fingerprint to compare against (a verified one recorded in
  // memory since the last flush, else indexed_fingerprint).
  uint64_t RecordTouch(const Digest& digest, uint64_t indexed_fingerprint);

  // Quota.
  Status Reserve(uint64_t n) EXCLUDES(quota_mu_, evict_mu_, write_mu_);
  void Release(uint64_t n) EXCLUDES(quota_mu_);
  Status EvictAtLeast(uint64_t need, bool* evicted_any) EXCLUDES(write_mu_);
  // Ends an eviction's or drop's transaction: when `s` is ok, writes the meta byte count and
  // commits; on any failure restores the in-memory counters saved before the transaction.
  Status FinishRemoval(lmdb_internal::WriteTxn& txn, Status s, uint64_t saved_bytes,
                       uint64_t saved_atime) REQUIRES(write_mu_);

  // Group commit: commit_queue_ hands batches of queued ops to ApplyBatch, one index transaction
  // each.
  void ApplyBatch(const std::vector<Op*>& batch) EXCLUDES(write_mu_);
  Status ApplyOp(MDB_txn* txn, Op* op, Batch* b) REQUIRES(write_mu_);
  Status ApplyPut(MDB_txn* txn, Op* op, const lmdb_internal::BlobRecord* old, Batch* b)
      REQUIRES(write_mu_);
  Status ApplyRename(MDB_txn* txn, Op* op, const lmdb_internal::BlobRecord* old, Batch* b)
      REQUIRES(write_mu_);
  // Renames a put's temporary file into blobs/ (or keeps a file removed earlier in the batch);
  // false with op->status set when it could not be published.
  bool PublishBlob(Op* op, Batch* b, uint64_t* fingerprint) REQUIRES(write_mu_);
  // For a synced put whose blob file already existed: fsyncs that file; false with op->status
  // set when it could not.
  bool SyncReusedBlob(Op* op, Batch* b) REQUIRES(write_mu_);
  Status CommitBatch(lmdb_internal::WriteTxn& txn, Batch* b) REQUIRES(write_mu_);
  void AbortBatch(const std::vector<Op*>& ops, Batch* b, const Status& s) REQUIRES(write_mu_);

  // Write-transaction helpers.
  // Writes up to `limit` recorded read accesses (oldest first within the chunk).
  Status ApplyTouchesLocked(MDB_txn* txn, size_t limit) REQUIRES(write_mu_);
  uint64_t NextAtimeLocked(int64_t at_least) REQUIRES(write_mu_);
  // Removes a blob's index entries (record, LRU entry, every key); returns its size. The file is
  // unlinked by the caller after the transaction commits.
  Result<uint64_t> RemoveBlobLocked(MDB_txn* txn, const Digest& digest) REQUIRES(write_mu_);
  Status UnmapKeyLocked(MDB_txn* txn, std::string_view index_key, const Digest& digest,
                        std::vector<std::pair<Digest, uint64_t>>* removed) REQUIRES(write_mu_);
  void UnlinkBlobs(const std::vector<std::pair<Digest, uint64_t>>& removed) REQUIRES(write_mu_);
  // Publishes the index's byte count to the quota after a commit.
  void SyncQuotaBytes() REQUIRES(write_mu_) EXCLUDES(quota_mu_);
  // Drops a blob whose file is corrupt (same inode as `ino`) or missing (ino == 0).
  void DropBad(const Digest& digest, uint64_t ino, bool missing) EXCLUDES(write_mu_);

  void FlusherLoop() EXCLUDES(flusher_mu_);
  void ContentSyncLoop() EXCLUDES(flusher_mu_);

  int BlobDirFd(const Digest& digest) const { return blob_dir_fds_[digest.bytes()[0]]; }

  const LmdbStoreOptions options_;
  MDB_env* env_ = nullptr;
  std::unique_ptr<lmdb_internal::Index> index_;
  std::unique_ptr<lmdb_internal::ReadTxnPool> read_pool_;
  int tmp_dir_fd_ = -1;
  std::array<int, 256> blob_dir_fds_;
  std::string temp_prefix_;  // "<pid>-": temporary file names are unique per process
  uint64_t fingerprint_salt_ = 0;
  std::chrono::nanoseconds racy_window_{0};
  RecoveryReport recovery_;
  ResidentTrimmer trimmer_;

  // Lock order: evict_mu_ (one evictor at a time), then write_mu_ (serialises write
  // transactions and every rename into / unlink from blobs/), then quota_mu_.
  Mutex evict_mu_ ACQUIRED_BEFORE(write_mu_);
  Mutex write_mu_ ACQUIRED_BEFORE(quota_mu_);
  uint64_t last_atime_ GUARDED_BY(write_mu_) = 0;
  uint64_t index_bytes_ GUARDED_BY(write_mu_) = 0;  // bytes of blobs in the index

  Mutex quota_mu_;
  uint64_t bytes_ GUARDED_BY(quota_mu_) = 0;     // index_bytes_ as of the last commit
  uint64_t reserved_ GUARDED_BY(quota_mu_) = 0;  // in-flight reservations
  CallerLedger callers_;

  GroupCommitQueue<Op> commit_queue_;
  AccessLog access_log_;

  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> evicted_bytes_{0};
  std::atomic<uint64_t> corrupt_dropped_{0};
  std::atomic<uint64_t> temp_seq_{0};
  std::atomic<uint64_t> full_verifications_{0};
  // Commits since the last content sync whose file (and, in an all-unsynced batch, directory
  // entry) was not synced.
  std::atomic<uint64_t> unsynced_commits_{0};
  std::atomic<uint64_t> content_syncs_{0};
  std::atomic<uint64_t> relaxed_index_commits_{0};
  Mutex content_sync_mu_;  // one syncfs at a time

  Mutex flusher_mu_;
  CondVar flusher_cv_;
  bool stopping_ GUARDED_BY(flusher_mu_) = false;
  std::thread flusher_;
  std::thread content_syncer_;
};

}  // namespace buildcache::store
