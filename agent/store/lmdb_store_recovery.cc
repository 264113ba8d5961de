// LmdbStore: opening (Init and its steps), the start-up reconcile, closing, Scrub and dropping
// corrupt or missing blobs. The rest of the class is in lmdb_store.cc.

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "agent/store/fingerprint.h"
#include "agent/store/lmdb_index.h"
#include "agent/store/lmdb_store.h"
#include "common/fs/dir_reader.h"
#include "common/fs/file.h"
#include "common/log/log.h"

namespace buildcache::store {

using lmdb_internal::BlobRecord;
using lmdb_internal::ReadTxn;
using lmdb_internal::WriteTxn;

namespace {

Result<int> OpenDir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoStatus(errno, "open " + path);
  }
  return fd;
}

// Calls fn(name) for every entry of the directory except "." and ".." (all names are read first,
// so fn may remove entries).
template <typename Fn>
Status ForEachEntry(int dir_fd, Fn fn) {
  fs::UniqueFd fd(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    return ErrnoStatus(errno, "open directory");
  }
  BC_ASSIGN_OR_RETURN(fs::DirReader dir, fs::DirReader::FromFd(std::move(fd)));
  std::vector<std::string> names;
  fs::DirEntry e;
  while (dir.Next(&e)) {
    names.emplace_back(e.name);
  }
  for (const std::string& name : names) {
    fn(name);
  }
  return Status::Ok();
}

std::string HexByte(uint8_t b) {
  static constexpr char kHex[] = "0123456789abcdef";
  return {kHex[b >> 4], kHex[b & 0xf]};
}

// Blobs Scrub hashes per read transaction.
constexpr size_t kScrubChunk = 1024;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Opening.

Result<std::unique_ptr<LmdbStore>> LmdbStore::Open(LmdbStoreOptions options) {
  if (options.data_dir.empty()) {
    return InvalidArgument("LmdbStore needs a data_dir");
  }
  std::unique_ptr<LmdbStore> store(new LmdbStore(std::move(options)));
  BC_RETURN_IF_ERROR(store->Init());
  return store;
}

Status LmdbStore::Init() {
  BC_RETURN_IF_ERROR(MakeDirectories());
  BC_RETURN_IF_ERROR(RemoveTempFiles());
  BC_RETURN_IF_ERROR(ProbeTimestampGranularity());
  bool clean = false;
  std::optional<uint64_t> meta_bytes;
  BC_RETURN_IF_ERROR(OpenIndex(&clean, &meta_bytes));
  recovery_.clean_shutdown = clean;

  auto start = std::chrono::steady_clock::now();
  const bool full = !clean || options_.full_reconcile_after_clean_shutdown || !meta_bytes;
  BC_RETURN_IF_ERROR(Reconcile(full));
  {
    MutexLock lock(write_mu_);
    if (!full) {
      index_bytes_ = *meta_bytes;
    }
    SyncQuotaBytes();
  }
  BC_RETURN_IF_ERROR(LoadLastAtime());
  BC_RETURN_IF_ERROR(EvictToQuota());
  LogRecovery(start);

  trimmer_.Attach(options_.data_dir + "/index/data.mdb", options_.index_resident_limit_bytes);
  flusher_ = std::thread([this] { FlusherLoop(); });
  if (options_.sync && options_.content_sync_interval.count() > 0) {
    content_syncer_ = std::thread([this] { ContentSyncLoop(); });
  }
  return Status::Ok();
}

Status LmdbStore::MakeDirectories() {
  const std::string& root = options_.data_dir;
  for (const std::string& dir : {root, root + "/index", root + "/blobs", root + "/tmp"}) {
    BC_RETURN_IF_ERROR(fs::MakeDirs(dir));
  }
  BC_ASSIGN_OR_RETURN(tmp_dir_fd_, OpenDir(root + "/tmp"));
  temp_prefix_ = std::to_string(::getpid()) + "-";
  for (int i = 0; i < 256; ++i) {
    std::string dir = root + "/blobs/" + HexByte(static_cast<uint8_t>(i));
    BC_RETURN_IF_ERROR(fs::MakeDirs(dir));
    BC_ASSIGN_OR_RETURN(blob_dir_fds_[i], OpenDir(dir));
  }
  return Status::Ok();
}

Status LmdbStore::RemoveTempFiles() {
  // Unfinished writes of a previous process.
  return ForEachEntry(tmp_dir_fd_, [&](const std::string& name) {
    if (::unlinkat(tmp_dir_fd_, name.c_str(), 0) == 0) ++recovery_.temp_files_removed;
  });
}

Status LmdbStore::ProbeTimestampGranularity() {
  // Timestamps are only trusted to reveal a later write once the clock has moved past the
  // file system's timestamp granularity (the "racy git" problem). Nanosecond file systems still
  // take times from the coarse kernel clock (one tick); others may round to whole seconds.
  bool fine = false;
  for (int i = 0; i < 3 && !fine; ++i) {
    std::string name = "probe-" + std::to_string(::getpid()) + "-" + std::to_string(i);
    int fd = ::openat(tmp_dir_fd_, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      return ErrnoStatus(errno, "create probe file in tmp/");
    }
    struct stat st;
    if (::fstat(fd, &st) == 0 && st.st_ctim.tv_nsec != 0) {
      fine = true;
    }
    ::close(fd);
    ::unlinkat(tmp_dir_fd_, name.c_str(), 0);
  }
  racy_window_ = fine ? std::chrono::milliseconds(50) : std::chrono::milliseconds(2500);
  return Status::Ok();
}

Status LmdbStore::OpenIndex(bool* clean, std::optional<uint64_t>* meta_bytes) {
  const std::string index_dir = options_.data_dir + "/index";
  BC_ASSIGN_OR_RETURN(env_,
                      lmdb_internal::OpenEnv(index_dir, options_.index_map_bytes, options_.sync));
  read_pool_ = std::make_unique<lmdb_internal::ReadTxnPool>(env_);
  MutexLock lock(write_mu_);
  WriteTxn txn(env_);
  BC_RETURN_IF_ERROR(txn.status());
  auto index = std::make_unique<lmdb_internal::Index>();
  BC_RETURN_IF_ERROR(index->Open(txn.get()));
  std::string_view v;
  int rc = index->GetMeta(txn.get(), "format", &v);
  if (rc == 0 && v != std::string_view(&lmdb_internal::kIndexFormat, 1)) {
    return FailedPrecondition("index in " + index_dir +
                              " has another format; remove the data directory to start over");
  }
  if (rc == MDB_NOTFOUND) {
    if (index->BlobCount(txn.get()) > 0) {
      return FailedPrecondition("index in " + index_dir + " has no format marker");
    }
    BC_RETURN_IF_ERROR(
        index->PutMeta(txn.get(), "format", std::string_view(&lmdb_internal::kIndexFormat, 1)));
  }
  *clean = index->GetMeta(txn.get(), "clean", &v) == 0 && v == std::string_view("\1", 1);
  if (*clean && index->GetMeta(txn.get(), "salt", &v) == 0 && v.size() == 8) {
    fingerprint_salt_ = lmdb_internal::GetLe64(v.data());
  } else {
    // After a crash, written data may not have reached the disk although file metadata did, so
    // no recorded fingerprint is trusted: a new salt makes every blob be re-hashed on next read.
    std::random_device rd;
    fingerprint_salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  if (index->GetMeta(txn.get(), "bytes", &v) == 0 && v.size() == 8) {
    *meta_bytes = lmdb_internal::GetLe64(v.data());
  }
  BC_RETURN_IF_ERROR(index->PutMeta64(txn.get(), "salt", fingerprint_salt_));
  BC_RETURN_IF_ERROR(index->PutMeta(txn.get(), "clean", std::string_view("\0", 1)));
  BC_RETURN_IF_ERROR(txn.Commit());
  index_ = std::move(index);
  return Status::Ok();
}

Status LmdbStore::LoadLastAtime() {
  ReadTxn txn(*read_pool_);
  BC_RETURN_IF_ERROR(txn.status());
  BC_ASSIGN_OR_RETURN(uint64_t last, index_->LastAtime(txn.get()));
  MutexLock lock(write_mu_);
  if (last != 0) {
    last_atime_ = last;
  }
  return Status::Ok();
}

Status LmdbStore::EvictToQuota() {
  uint64_t stored;
  {
    MutexLock lock(write_mu_);
    stored = index_bytes_;
  }
  if (options_.max_bytes == 0 || stored <= options_.max_bytes) {
    return Status::Ok();
  }
  uint64_t before = evictions_.load();
  bool any = false;
  BC_RETURN_IF_ERROR(EvictAtLeast(stored - options_.max_bytes, &any));
  recovery_.evicted_to_quota = evictions_.load() - before;
  return Status::Ok();
}

void LmdbStore::LogRecovery(std::chrono::steady_clock::time_point start) {
  StoreStats stats = Stats();
  log::Info("store reconciled",
            {{"data_dir", options_.data_dir},
             {"full_scan", recovery_.full_scan},
             {"clean_shutdown", recovery_.clean_shutdown},
             {"temp_files_removed", recovery_.temp_files_removed},
             {"orphans_removed", recovery_.orphans_removed},
             {"missing_dropped", recovery_.missing_dropped},
             {"size_mismatch_dropped", recovery_.size_mismatch_dropped},
             {"evicted_to_quota", recovery_.evicted_to_quota},
             {"blobs", stats.blobs},
             {"keys", stats.keys},
             {"bytes", stats.bytes},
             {"seconds",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}});
}

// ---------------------------------------------------------------------------------------------
// Reconcile: the index against the files, after a crash (or on request).

Status LmdbStore::Reconcile(bool full) {
  recovery_.full_scan = full;
  if (!full) {
    return Status::Ok();
  }
  BC_RETURN_IF_ERROR(DropMissingAndMisSized());
  return RemoveOrphans();
}

Status LmdbStore::DropMissingAndMisSized() {
  // Index entries whose file is missing or has the wrong size.
  std::vector<Digest> missing, wrong_size;
  uint64_t bytes = 0;
  {
    ReadTxn txn(*read_pool_);
    BC_RETURN_IF_ERROR(txn.status());
    BC_RETURN_IF_ERROR(index_->ScanBlobs(txn.get(), std::nullopt, [&](const BlobRecord& r) {
      const Digest& d = r.digest;
      struct stat st;
      if (::fstatat(BlobDirFd(d), d.Hex().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        missing.push_back(d);
      } else if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != r.size) {
        wrong_size.push_back(d);
      } else {
        bytes += r.size;
      }
      return true;
    }));
  }
  {
    MutexLock lock(write_mu_);
    WriteTxn txn(env_);
    BC_RETURN_IF_ERROR(txn.status());
    for (const auto* list : {&missing, &wrong_size}) {
      for (const Digest& d : *list) {
        BC_RETURN_IF_ERROR(index_->RemoveBlob(txn.get(), d).status());
      }
    }
    BC_RETURN_IF_ERROR(index_->PutMeta64(txn.get(), "bytes", bytes));
    BC_RETURN_IF_ERROR(txn.Commit());
    index_bytes_ = bytes;
  }
  for (const Digest& d : wrong_size) {
    ::unlinkat(BlobDirFd(d), d.Hex().c_str(), 0);
  }
  recovery_.missing_dropped = missing.size();
  recovery_.size_mismatch_dropped = wrong_size.size();
  return Status::Ok();
}

Status LmdbStore::RemoveOrphans() {
  // Blob files the index does not know: renamed in by a transaction that never committed, or
  // left by an unlink that never ran.
  for (int i = 0; i < 256; ++i) {
    ReadTxn txn(*read_pool_);
    BC_RETURN_IF_ERROR(txn.status());
    BC_RETURN_IF_ERROR(ForEachEntry(blob_dir_fds_[i], [&](const std::string& name) {
      std::optional<Digest> d = Digest::FromHex(name);
      bool known = false;
      if (d && d->bytes()[0] == i && name == d->Hex()) {
        BlobRecord rec;
        known = index_->GetBlob(txn.get(), *d, &rec) == 0;
      }
      if (!known && ::unlinkat(blob_dir_fds_[i], name.c_str(), 0) == 0) {
        ++recovery_.orphans_removed;
      }
    }));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Closing.

LmdbStore::~LmdbStore() {
  if (flusher_.joinable()) {
    {
      MutexLock lock(flusher_mu_);
      stopping_ = true;
    }
    flusher_cv_.NotifyAll();
    flusher_.join();
    if (content_syncer_.joinable()) {
      content_syncer_.join();
    }
  }
  if (env_ != nullptr) {
    if (index_ != nullptr) {
      Close();
    }
    read_pool_.reset();
    mdb_env_close(env_);
  }
  if (tmp_dir_fd_ >= 0) {
    ::close(tmp_dir_fd_);
  }
  for (int fd : blob_dir_fds_) {
    if (fd >= 0) {
      ::close(fd);
    }
  }
}

void LmdbStore::Close() {
  Status s = FlushAccessTimes();
  if (s.ok()) {
    // "clean" lets the next Open trust recorded fingerprints, so every blob must be on disk
    // first: a content that never reached it would otherwise be served unverified after a
    // machine crash.
    s = SyncContent();
  }
  MutexLock lock(write_mu_);
  WriteTxn txn(env_);
  if (s.ok()) {
    s = txn.status();
  }
  if (s.ok()) {
    s = index_->PutMeta(txn.get(), "clean", std::string_view("\1", 1));
  }
  if (s.ok()) {
    s = txn.Commit();
  }
  if (!s.ok()) {
    log::Error("store close failed", {{"error", s.ToString()}});
  }
}

// ---------------------------------------------------------------------------------------------
// Scrub and dropping bad blobs.

Result<ScrubReport> LmdbStore::Scrub() {
  ScrubReport report;
  std::optional<Digest> after;
  for (;;) {
    std::vector<BlobRecord> chunk;
    {
      ReadTxn txn(*read_pool_);
      BC_RETURN_IF_ERROR(txn.status());
      BC_RETURN_IF_ERROR(index_->ScanBlobs(txn.get(), after, [&](const BlobRecord& rec) {
        chunk.push_back(rec);
        return chunk.size() < kScrubChunk;
      }));
    }
    if (chunk.empty()) {
      break;
    }
    after = chunk.back().digest;
    for (const BlobRecord& rec : chunk) {
      const Digest& digest = rec.digest;
      ++report.checked;
      int fd = ::openat(BlobDirFd(digest), digest.Hex().c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        if (errno == ENOENT) {
          uint64_t before = corrupt_dropped_.load();
          DropBad(digest, 0, /*missing=*/true);
          report.missing_dropped += corrupt_dropped_.load() - before;
        }
        continue;
      }
      int64_t before_stat = RealtimeNs();
      struct stat st {};
      bool ok = ::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) == rec.size &&
                VerifyFile(fd, digest, rec.size);
      ::close(fd);
      if (!ok) {
        uint64_t before = corrupt_dropped_.load();
        DropBad(digest, st.st_ino, /*missing=*/false);
        report.corrupt_dropped += corrupt_dropped_.load() - before;
        continue;
      }
      if (Trusted(st, before_stat)) {
        uint64_t fp = FileFingerprint(st, fingerprint_salt_);
        if (fp != rec.fingerprint) {
          access_log_.RecordFingerprint(digest, fp);
        }
      }
    }
  }
  log::Info("store scrubbed", {{"checked", report.checked},
                               {"corrupt_dropped", report.corrupt_dropped},
                               {"missing_dropped", report.missing_dropped}});
  BC_RETURN_IF_ERROR(FlushAccessTimes());
  return report;
}

void LmdbStore::DropBad(const Digest& digest, uint64_t ino, bool missing) {
  uint64_t size = 0;
  {
    MutexLock lock(write_mu_);
    std::string hex = digest.Hex();
    struct stat st;
    bool exists = ::fstatat(BlobDirFd(digest), hex.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    // Renames into and unlinks from blobs/ happen under write_mu_, so this is the current file.
    // A blob re-published since the caller looked is left alone.
    if (missing ? exists : (exists && st.st_ino != ino)) {
      return;
    }
    WriteTxn txn(env_);
    if (!txn.status().ok()) {
      return;
    }
    BlobRecord rec;
    if (index_->GetBlob(txn.get(), digest, &rec) != 0) {
      return;  // already gone
    }
    const uint64_t saved_bytes = index_bytes_;
    Result<uint64_t> removed = RemoveBlobLocked(txn.get(), digest);
    Status s = FinishRemoval(txn, removed.status(), saved_bytes, last_atime_);
    if (!s.ok()) {
      log::Error("store drop failed", {{"digest", hex}, {"error", s.ToString()}});
      return;
    }
    size = *removed;
    if (exists) {
      ::unlinkat(BlobDirFd(digest), hex.c_str(), 0);
    }
    SyncQuotaBytes();
  }
  corrupt_dropped_.fetch_add(1);
  log::Warn("corrupt blob dropped", {{"digest", digest.Hex()},
                                     {"bytes", size},
                                     {"reason", missing ? "missing" : "content mismatch"}});
  if (options_.observer.on_corrupt) {
    options_.observer.on_corrupt(BlobInfo{digest, size});
  }
}

}  // namespace buildcache::store
