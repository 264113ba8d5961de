// LmdbStore: writes, the group-committed index updates and the content sync. Reads are in
// lmdb_store_read.cc; quota, eviction and access times in lmdb_store_eviction.cc; opening,
// reconcile, closing and scrub in lmdb_store_recovery.cc; the index tables and codec in
// lmdb_index.cc.

#include "agent/store/lmdb_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "agent/store/fingerprint.h"
#include "agent/store/lmdb_index.h"
#include "common/fs/file.h"
#include "common/log/log.h"

namespace buildcache::store {

using lmdb_internal::BlobRecord;
using lmdb_internal::IdOf;
using lmdb_internal::IndexKey;
using lmdb_internal::MdbStatus;
using lmdb_internal::RemovedBlobs;
using lmdb_internal::WriteTxn;

namespace {

constexpr size_t kMaxBatch = 256;
// Read accesses written with each write transaction (their cost: lmdb_store_eviction.cc).
constexpr size_t kTouchesPerWriteTxn = 512;

template <class Ops>
void FailAll(const Ops& ops, const Status& s) {
  for (auto* op : ops) {
    if (op->status.ok()) {
      op->status = s;
    }
  }
}

}  // namespace

// One queued index mutation (see GroupCommitQueue).
struct LmdbStore::Op {
  enum class Kind { kPut, kDelete, kRename };
  Kind kind = Kind::kPut;
  std::string key;  // the full key name (kPut, kRename: recorded in the names table)
  std::string index_key;
  std::string from_index_key;  // kRename: the key moved to `key` (digest: what it must map to)
  // kPut:
  Digest digest;
  uint64_t size = 0;
  std::string temp_name;  // in tmp/
  int fd = -1;
  bool synced = true;     // the temporary file was fsynced (its directory entry must be too)
  uint64_t reserved = 0;  // quota the writer holds; the batch zeroes it when it takes it over
  // Results.
  Status status;
  bool published = false;  // the temporary file was renamed into blobs/
};

// What one ApplyBatch transaction has done besides the index.
struct LmdbStore::Batch {
  RemovedBlobs removed;        // blobs whose files are unlinked once committed
  std::set<int> dirs;          // blob directories to fsync
  std::vector<Op*> published;  // ops whose files this batch renamed into blobs/
  uint64_t saved_bytes = 0;    // index_bytes_ and last_atime_ before the transaction
  uint64_t saved_atime = 0;
};

class LmdbStore::Writer : public BlobWriter {
 public:
  Writer(LmdbStore* store, std::string key, WriteOptions options, uint64_t reserved, int fd,
         std::string temp_name)
      : store_(store),
        key_(std::move(key)),
        options_(options),
        reserved_(reserved),
        fd_(fd),
        temp_name_(std::move(temp_name)) {}

  ~Writer() override {
    if (!done_) {
      Discard();
    }
  }

  // BlobWriter
  Status Write(std::string_view data) override {
    if (done_) {
      return FailedPrecondition("writer already committed or failed");
    }
    if (data.empty()) {
      return Status::Ok();
    }
    uint64_t total = written_ + data.size();
    if (options_.expected_size && total > *options_.expected_size) {
      return Fail(
          DataLoss("content longer than expected_size " + std::to_string(*options_.expected_size)));
    }
    if (total > reserved_) {
      const uint64_t n = total - reserved_;
      Status s = store_->callers_.Add(options_.caller, total, n);
      if (!s.ok()) {
        return Fail(s);
      }
      caller_held_ += n;
      s = store_->Reserve(n);
      if (!s.ok()) {
        return Fail(s);
      }
      reserved_ = total;
    }
    if (int e = store_->Fault(FaultPoint::kTempWrite)) {
      return Fail(ErrnoStatus(e, "write temporary blob file"));
    }
    Status s = fs::WriteAll(fd_, data, "write temporary blob file");
    if (!s.ok()) {
      return Fail(s);
    }
    hash_.Update(data);
    written_ = total;
    return Status::Ok();
  }

  Result<BlobInfo> Commit() override {
    if (done_) {
      return FailedPrecondition("writer already committed or failed");
    }
    Digest digest = hash_.Finish();
    if (options_.expected_size && written_ != *options_.expected_size) {
      return Fail(DataLoss("content is " + std::to_string(written_) + " bytes, expected " +
                           std::to_string(*options_.expected_size)));
    }
    if (options_.expected_digest && digest != *options_.expected_digest) {
      return Fail(DataLoss("content digest " + digest.Hex() + " does not match expected " +
                           options_.expected_digest->Hex()));
    }
    if (options_.on_verified) {
      options_.on_verified();
    }
    const bool synced = store_->options_.sync && options_.sync_content;
    if (synced) {
      if (int e = store_->Fault(FaultPoint::kTempSync)) {
        return Fail(ErrnoStatus(e, "fsync temporary blob file"));
      }
      if (::fsync(fd_) != 0) {
        return Fail(ErrnoStatus(errno, "fsync temporary blob file"));
      }
    } else {
      // Counted before the commit, after the last write: a content sync that reads the count
      // later covers these bytes.
      store_->unsynced_commits_.fetch_add(1);
    }
    Op op;
    op.kind = Op::Kind::kPut;
    op.synced = synced;
    op.key = key_;
    op.index_key = IndexKey(key_);
    op.digest = digest;
    op.size = written_;
    op.temp_name = temp_name_;
    op.fd = fd_;
    op.reserved = std::exchange(reserved_, 0);
    store_->commit_queue_.Submit(&op);
    reserved_ = op.reserved;
    if (!op.status.ok()) {
      return Fail(op.status);
    }
    done_ = true;
    store_->callers_.Remove(options_.caller, std::exchange(caller_held_, 0));
    if (!op.published) {
      ::unlinkat(store_->tmp_dir_fd_, temp_name_.c_str(), 0);
    }
    ::close(std::exchange(fd_, -1));
    return BlobInfo{digest, written_};
  }

 private:
  Status Fail(Status status) {
    log::Warn("store write failed", {{"error", status.ToString()}, {"bytes", written_}});
    Discard();
    return status;
  }

  void Discard() {
    done_ = true;
    if (fd_ >= 0) {
      ::close(std::exchange(fd_, -1));
    }
    ::unlinkat(store_->tmp_dir_fd_, temp_name_.c_str(), 0);
    if (reserved_ > 0) {
      store_->Release(std::exchange(reserved_, 0));
    }
    store_->callers_.Remove(options_.caller, std::exchange(caller_held_, 0));
  }

  LmdbStore* const store_;
  const std::string key_;
  const WriteOptions options_;
  uint64_t reserved_;
  int fd_;
  const std::string temp_name_;
  uint64_t written_ = 0;
  uint64_t caller_held_ = 0;  // bytes counted against options_.caller in store_->callers_
  Sha256 hash_;
  bool done_ = false;
};

LmdbStore::LmdbStore(LmdbStoreOptions options)
    : options_(std::move(options)),
      callers_(options_.limits),
      commit_queue_(kMaxBatch, [this](const std::vector<Op*>& batch) { ApplyBatch(batch); }) {
  blob_dir_fds_.fill(-1);
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

int64_t LmdbStore::Now() const { return options_.clock ? options_.clock() : RealtimeNs(); }

int LmdbStore::Fault(FaultPoint point) const {
  return options_.inject_fault ? options_.inject_fault(point) : 0;
}

std::string LmdbStore::BlobPath(const Digest& digest) const {
  std::string hex = digest.Hex();
  return options_.data_dir + "/blobs/" + hex.substr(0, 2) + "/" + hex;
}

// ---------------------------------------------------------------------------------------------
// Writes.

Result<std::unique_ptr<BlobWriter>> LmdbStore::NewWriter(std::string_view key,
                                                         const WriteOptions& options) {
  BC_RETURN_IF_ERROR(
      CheckAnnouncedWrite(callers_, options_.max_bytes, options.caller, options.expected_size));
  if (int e = Fault(FaultPoint::kTempCreate)) {
    return ErrnoStatus(e, "create temporary blob file");
  }
  if (options.expected_size && *options.expected_size > 0) {
    // Free disk plus what eviction could free: a larger object fails before it is streamed.
    struct statvfs vfs {};
    if (::fstatvfs(tmp_dir_fd_, &vfs) == 0) {
      uint64_t room = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
      if (options_.max_bytes > 0) {
        MutexLock lock(quota_mu_);
        room += bytes_;
      }
      if (*options.expected_size > room) {
        log::Warn("store write failed",
                  {{"error", "disk full"}, {"bytes", *options.expected_size}});
        return ErrnoStatus(ENOSPC, "object of " + std::to_string(*options.expected_size) +
                                       " bytes does not fit on the disk");
      }
    }
  }
  std::string name = temp_prefix_ + std::to_string(temp_seq_.fetch_add(1));
  int fd = ::openat(tmp_dir_fd_, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return ErrnoStatus(errno, "create temporary blob file");
  }
  return std::unique_ptr<BlobWriter>(
      std::make_unique<Writer>(this, std::string(key), options, 0, fd, std::move(name)));
}

Status LmdbStore::Rename(std::string_view from, std::string_view to, const Digest& digest) {
  Op op;
  op.kind = Op::Kind::kRename;
  op.key = std::string(to);
  op.index_key = IndexKey(to);
  op.from_index_key = IndexKey(from);
  op.digest = digest;
  op.synced = false;  // no new content; the move may be undone by a machine crash (see header)
  // Counted like an unsynced put: the next content sync (syncfs) covers its index pages.
  unsynced_commits_.fetch_add(1);
  commit_queue_.Submit(&op);
  return op.status;
}

Status LmdbStore::Delete(std::string_view key) {
  Op op;
  op.kind = Op::Kind::kDelete;
  op.key = std::string(key);
  op.index_key = IndexKey(key);
  commit_queue_.Submit(&op);
  return op.status;
}

// ---------------------------------------------------------------------------------------------
// Group commit: one index transaction per batch of queued ops.

void LmdbStore::ApplyBatch(const std::vector<Op*>& ops) {
  MutexLock lock(write_mu_);
  WriteTxn txn(env_);
  if (!txn.status().ok()) {
    return FailAll(ops, txn.status());
  }
  Batch b;
  b.saved_bytes = index_bytes_;
  b.saved_atime = last_atime_;
  Status s = ApplyTouchesLocked(txn.get(), kTouchesPerWriteTxn);
  for (size_t i = 0; s.ok() && i < ops.size(); ++i) {
    s = ApplyOp(txn.get(), ops[i], &b);
  }
  // A batch of only unsynced puts needs no more durability than its contents have: its index
  // commit skips LMDB's meta-page sync (MDB_NOMETASYNC keeps the index intact; a machine crash
  // may undo the transaction, leaving the entries absent), which the next synced commit, the
  // content sync or Close catches up.
  const bool relaxed = options_.sync && std::all_of(ops.begin(), ops.end(), [](const Op* op) {
                         return op->kind != Op::Kind::kDelete && !op->synced;
                       });
  if (s.ok()) {
    if (relaxed) {
      mdb_env_set_flags(env_, MDB_NOMETASYNC, 1);
    }
    s = CommitBatch(txn, &b);
    if (relaxed) {
      mdb_env_set_flags(env_, MDB_NOMETASYNC, 0);
      relaxed_index_commits_.fetch_add(1);
    }
  }
  if (!s.ok()) {
    return AbortBatch(ops, &b, s);
  }
  Fault(FaultPoint::kAfterIndexCommit);

  UnlinkBlobs(b.removed);
  MutexLock qlock(quota_mu_);
  bytes_ = index_bytes_;
  for (Op* op : ops) {
    if (op->status.ok()) {
      reserved_ -= std::exchange(op->reserved, 0);
    }
  }
}

Status LmdbStore::ApplyOp(MDB_txn* txn, Op* op, Batch* b) {
  BlobRecord old;
  int rc = index_->GetKey(txn, op->index_key, &old);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index lookup");
  }
  const BlobRecord* mapped = rc == 0 ? &old : nullptr;
  if (op->kind == Op::Kind::kPut) {
    return ApplyPut(txn, op, mapped, b);
  }
  if (op->kind == Op::Kind::kRename) {
    return ApplyRename(txn, op, mapped, b);
  }
  if (mapped == nullptr) {
    op->status = NotFound("no such key");
    return Status::Ok();
  }
  return UnmapKeyLocked(txn, op->index_key, old.digest, &b->removed);
}

Status LmdbStore::ApplyPut(MDB_txn* txn, Op* op, const BlobRecord* old, Batch* b) {
  // Is the content stored already?
  const std::string_view id = IdOf(op->digest);
  BlobRecord rec;
  int rc = index_->GetBlobById(txn, id, &rec);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index lookup");
  }
  const bool exists = rc == 0 && rec.digest == op->digest;
  if (rc == 0 && !exists) {
    op->status = FailedPrecondition("another stored blob has the same 64-bit id; not stored");
    log::Warn("blob id collision", {{"digest", op->digest.Hex()}, {"stored", rec.digest.Hex()}});
    return Status::Ok();
  }
  // New content: publish its file first, so that a failure here changes nothing in the index.
  uint64_t fingerprint = 0;
  if (!exists && !PublishBlob(op, b, &fingerprint)) {
    return Status::Ok();
  }
  if (!op->published && !SyncReusedBlob(op, b)) {
    return Status::Ok();
  }
  // Unmap the key from other content (which may remove that blob).
  const bool already = old != nullptr && old->digest == op->digest;
  if (old != nullptr && !already) {
    BC_RETURN_IF_ERROR(UnmapKeyLocked(txn, op->index_key, old->digest, &b->removed));
  }
  if (exists) {
    // A write counts as use.
    if (!already) {
      BC_RETURN_IF_ERROR(index_->AddRef(txn, id, op->index_key));
    }
    BC_RETURN_IF_ERROR(index_->SetAtime(txn, &rec, NextAtimeLocked(Now())));
  } else {
    rec = BlobRecord{};
    rec.digest = op->digest;
    rec.size = op->size;
    rec.fingerprint = fingerprint;
    std::memcpy(rec.first_key.data(), op->index_key.data(), rec.first_key.size());
    rec.atime = NextAtimeLocked(Now());
    BC_RETURN_IF_ERROR(index_->PutBlob(txn, rec));
    BC_RETURN_IF_ERROR(index_->PutLru(txn, rec.atime, id));
    index_bytes_ += rec.size;
  }
  // A key mapped already keeps its entry; its name is recorded if an older store left none.
  return already ? index_->PutName(txn, op->index_key, op->key)
                 : index_->MapKey(txn, op->index_key, id, op->key);
}

Status LmdbStore::ApplyRename(MDB_txn* txn, Op* op, const BlobRecord* old, Batch* b) {
  BlobRecord from;
  int rc = index_->GetKey(txn, op->from_index_key, &from);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index lookup");
  }
  if (rc == MDB_NOTFOUND || from.digest != op->digest) {
    op->status = NotFound("no such key with that digest");
    return Status::Ok();
  }
  if (op->from_index_key == op->index_key) {
    return Status::Ok();
  }
  // Map `to` first, so the blob keeps a key throughout.
  const std::string_view id = IdOf(op->digest);
  const bool already = old != nullptr && old->digest == op->digest;
  if (!already) {
    if (old != nullptr) {
      BC_RETURN_IF_ERROR(UnmapKeyLocked(txn, op->index_key, old->digest, &b->removed));
    }
    BC_RETURN_IF_ERROR(index_->AddRef(txn, id, op->index_key));
    BC_RETURN_IF_ERROR(index_->MapKey(txn, op->index_key, id, op->key));
  }
  BlobRecord rec;
  rc = index_->GetBlobById(txn, id, &rec);
  if (rc != 0) {
    return MdbStatus(rc, "index lookup");
  }
  BC_RETURN_IF_ERROR(index_->SetAtime(txn, &rec, NextAtimeLocked(Now())));
  return UnmapKeyLocked(txn, op->from_index_key, op->digest, &b->removed);
}

bool LmdbStore::PublishBlob(Op* op, Batch* b, uint64_t* fingerprint) {
  auto pending_unlink = std::find_if(b->removed.begin(), b->removed.end(),
                                     [&](const auto& r) { return r.first == op->digest; });
  if (pending_unlink != b->removed.end()) {
    // Removed earlier in this batch and its file not yet unlinked: keep that file (same
    // content) and index it again, unverified.
    b->removed.erase(pending_unlink);
    return true;
  }
  if (int e = Fault(FaultPoint::kPublish)) {
    op->status = ErrnoStatus(e, "publish blob");
    return false;
  }
  std::string hex = op->digest.Hex();
  if (::renameat(tmp_dir_fd_, op->temp_name.c_str(), BlobDirFd(op->digest), hex.c_str()) != 0) {
    op->status = ErrnoStatus(errno, "publish blob");
    return false;
  }
  op->published = true;
  if (int e = Fault(FaultPoint::kAfterPublish)) {
    ::unlinkat(BlobDirFd(op->digest), hex.c_str(), 0);
    op->published = false;
    op->status = ErrnoStatus(e, "publish blob");
    return false;
  }
  b->published.push_back(op);
  if (op->synced) {
    b->dirs.insert(op->digest.bytes()[0]);
  }
  int64_t before_stat = RealtimeNs();
  struct stat st;
  if (::fstat(op->fd, &st) == 0 && Trusted(st, before_stat)) {
    *fingerprint = FileFingerprint(st, fingerprint_salt_);
  }
  return true;
}

bool LmdbStore::SyncReusedBlob(Op* op, Batch* b) {
  // A synced write whose content is already stored relies on that file, which an unsynced write
  // may have left unwritten: sync it (only while some unsynced content may be pending).
  if (!op->synced || !options_.sync || unsynced_commits_.load() == 0) {
    return true;
  }
  const std::string hex = op->digest.Hex();
  fs::UniqueFd fd(::openat(BlobDirFd(op->digest), hex.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    op->status = ErrnoStatus(errno, "fsync stored blob file");
    return false;
  }
  b->dirs.insert(op->digest.bytes()[0]);
  return true;
}

Status LmdbStore::CommitBatch(WriteTxn& txn, Batch* b) {
  if (options_.sync && !b->dirs.empty()) {
    if (int e = Fault(FaultPoint::kDirSync)) {
      return ErrnoStatus(e, "fsync blob dir");
    }
    for (int dir : b->dirs) {
      if (::fsync(blob_dir_fds_[dir]) != 0) {
        return ErrnoStatus(errno, "fsync blob dir");
      }
    }
  }
  BC_RETURN_IF_ERROR(index_->PutMeta64(txn.get(), "bytes", index_bytes_));
  if (int e = Fault(FaultPoint::kIndexCommit)) {
    return ErrnoStatus(e, "commit index");
  }
  return txn.Commit();
}

void LmdbStore::AbortBatch(const std::vector<Op*>& ops, Batch* b, const Status& s) {
  // Undoes the renames of a transaction that did not commit.
  for (Op* op : b->published) {
    ::unlinkat(BlobDirFd(op->digest), op->digest.Hex().c_str(), 0);
    op->published = false;
  }
  index_bytes_ = b->saved_bytes;
  last_atime_ = b->saved_atime;
  log::Error("store index update failed", {{"error", s.ToString()}, {"ops", ops.size()}});
  FailAll(ops, s);
}

Result<uint64_t> LmdbStore::RemoveBlobLocked(MDB_txn* txn, const Digest& digest) {
  BC_ASSIGN_OR_RETURN(uint64_t size, index_->RemoveBlob(txn, digest));
  index_bytes_ -= std::min(index_bytes_, size);
  return size;
}

Status LmdbStore::UnmapKeyLocked(MDB_txn* txn, std::string_view index_key, const Digest& digest,
                                 RemovedBlobs* removed) {
  const size_t before = removed->size();
  BC_RETURN_IF_ERROR(index_->UnmapKey(txn, index_key, digest, removed));
  for (size_t i = before; i < removed->size(); ++i) {
    index_bytes_ -= std::min(index_bytes_, (*removed)[i].second);
  }
  return Status::Ok();
}

void LmdbStore::UnlinkBlobs(const RemovedBlobs& removed) {
  for (const auto& [digest, size] : removed) {
    ::unlinkat(BlobDirFd(digest), digest.Hex().c_str(), 0);
  }
}

void LmdbStore::SyncQuotaBytes() {
  MutexLock lock(quota_mu_);
  bytes_ = index_bytes_;
}

// ---------------------------------------------------------------------------------------------
// Content sync: blob contents written without their own fsync, made durable in groups.

Status LmdbStore::SyncContent() {
  MutexLock lock(content_sync_mu_);
  const uint64_t pending = unsynced_commits_.load();
  if (pending == 0) {
    return Status::Ok();
  }
  if (int e = Fault(FaultPoint::kContentSync)) {
    return ErrnoStatus(e, "sync unsynced blob contents");
  }
  // Every commit counted in `pending` wrote its bytes and renamed its file before it was
  // counted, so this one call makes them durable; later ones stay counted for the next.
  if (::syncfs(tmp_dir_fd_) != 0) {
    return ErrnoStatus(errno, "sync unsynced blob contents");
  }
  unsynced_commits_.fetch_sub(pending);
  content_syncs_.fetch_add(1);
  return Status::Ok();
}

void LmdbStore::ContentSyncLoop() {
  MutexLock lock(flusher_mu_);
  while (!stopping_) {
    const auto deadline = std::chrono::steady_clock::now() + options_.content_sync_interval;
    while (!stopping_ && flusher_cv_.WaitUntil(flusher_mu_, deadline)) {
    }
    if (stopping_) {
      break;
    }
    flusher_mu_.Unlock();
    Status s = SyncContent();
    if (!s.ok()) {
      log::Warn("store content sync failed", {{"error", s.ToString()}});
    }
    flusher_mu_.Lock();
  }
}

}  // namespace buildcache::store
