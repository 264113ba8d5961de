#include "agent/store/lmdb_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <utility>

#include "common/log/log.h"

namespace buildcache::store {
namespace lmdb_internal {

// A "blobs" entry. Stored under the blob's id (the first 8 bytes of its digest) as 64 bytes: the
// rest of the digest, size, last access (its LRU key), the stat fingerprint of the file when its
// content was last verified (0 = never: the next Open hashes it), and one key mapping to the blob
// (the others, rare, are in "refs").
struct BlobRecord {
  Digest digest;
  uint64_t size = 0;
  uint64_t atime = 0;
  uint64_t fingerprint = 0;
  std::array<char, 16> first_key{};
};

}  // namespace lmdb_internal

using lmdb_internal::BlobRecord;

namespace {

constexpr size_t kVerifyBufferBytes = 1 << 20;
constexpr size_t kMaxBatch = 256;
// Read accesses kept in memory before the flusher is woken early.
constexpr uint64_t kTouchFlushThreshold = 1 << 16;
// Read accesses written per flush transaction, and at most with each write transaction. Each
// access updates records spread over the whole index, and every page fault maps up to 16
// neighbouring index pages into the process (kernel fault-around), so a batch costs up to
// about 64 KiB x 3 of RSS per access until the next trim: small batches, trimmed between them,
// keep the peak RSS bounded with millions of objects.
constexpr size_t kTouchesPerTxn = 128;
constexpr size_t kTouchesPerWriteTxn = 512;
// How often the flusher checks how much of the index is resident (see TrimIndexPages).
constexpr std::chrono::milliseconds kTrimCheckInterval{100};

constexpr size_t kIdBytes = 8;
constexpr size_t kBlobValueBytes = 64;
constexpr size_t kIndexKeyBytes = 16;
// Bumped when the index layout changes; an index of another format is refused.
constexpr char kIndexFormat = 2;

void PutLe64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    p[i] = static_cast<char>(v >> (8 * i));
  }
}
uint64_t GetLe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  }
  return v;
}
void PutBe64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    p[i] = static_cast<char>(v >> (8 * (7 - i)));
  }
}
uint64_t GetBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v = v << 8 | static_cast<uint8_t>(p[i]);
  }
  return v;
}

// A blob's id in the index: the first 8 bytes of its digest. Two stored digests sharing an id is
// refused at write time (p ~ n/2^64 per write: never in practice).
std::string_view IdOf(const Digest& d) { return d.raw().substr(0, kIdBytes); }

std::array<char, kBlobValueBytes> EncodeRecord(const BlobRecord& r) {
  std::array<char, kBlobValueBytes> out;
  std::memcpy(out.data(), r.digest.bytes().data() + kIdBytes, 32 - kIdBytes);
  PutLe64(out.data() + 24, r.size);
  PutLe64(out.data() + 32, r.atime);
  PutLe64(out.data() + 40, r.fingerprint);
  std::memcpy(out.data() + 48, r.first_key.data(), r.first_key.size());
  return out;
}
bool DecodeRecord(const MDB_val& id, const MDB_val& v, BlobRecord* r) {
  if (id.mv_size != kIdBytes || v.mv_size != kBlobValueBytes) {
    return false;
  }
  const char* p = static_cast<const char*>(v.mv_data);
  std::array<uint8_t, 32> digest;
  std::memcpy(digest.data(), id.mv_data, kIdBytes);
  std::memcpy(digest.data() + kIdBytes, p, 32 - kIdBytes);
  r->digest = Digest(digest);
  r->size = GetLe64(p + 24);
  r->atime = GetLe64(p + 32);
  r->fingerprint = GetLe64(p + 40);
  std::memcpy(r->first_key.data(), p + 48, r->first_key.size());
  return true;
}

MDB_val Val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view View(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }
Status MdbStatus(int rc, std::string_view what) {
  if (rc == MDB_MAP_FULL) {
    return ResourceExhausted(std::string(what) + ": index map full (raise index_map_bytes)");
  }
  if (rc > 0) {
    return ErrnoStatus(rc, what);
  }
  return Internal(std::string(what) + ": " + mdb_strerror(rc));
}

int64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t Ns(const timespec& ts) { return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec; }

uint64_t Mix(uint64_t h, uint64_t v) {
  // splitmix64 finaliser over the running value: a change in any field changes the result.
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

uint64_t Fingerprint(const struct stat& st, uint64_t salt) {
  uint64_t h = Mix(salt, static_cast<uint64_t>(st.st_size));
  h = Mix(h, static_cast<uint64_t>(Ns(st.st_mtim)));
  h = Mix(h, static_cast<uint64_t>(Ns(st.st_ctim)));
  h = Mix(h, static_cast<uint64_t>(st.st_ino));
  return h == 0 ? 1 : h;
}

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return ErrnoStatus(errno, "write temporary blob file");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) {
    return Status::Ok();
  }
  return ErrnoStatus(errno, "mkdir " + path);
}

Status MakeDirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      BC_RETURN_IF_ERROR(MakeDir(path.substr(0, i)));
    }
  }
  return Status::Ok();
}

Result<int> OpenDir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoStatus(errno, "open " + path);
  }
  return fd;
}

// Calls fn(name) for every entry of the directory except "." and "..".
template <typename Fn>
Status ForEachEntry(int dir_fd, Fn fn) {
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoStatus(errno, "open directory");
  }
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    ::close(fd);
    return ErrnoStatus(errno, "fdopendir");
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(dir)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") {
      continue;
    }
    names.emplace_back(name);
  }
  ::closedir(dir);
  for (const std::string& name : names) {
    fn(name);
  }
  return Status::Ok();
}

std::string HexByte(uint8_t b) {
  static constexpr char kHex[] = "0123456789abcdef";
  return {kHex[b >> 4], kHex[b & 0xf]};
}

}  // namespace

struct LmdbStore::Dbs {
  MDB_dbi keys;   // index key (16) -> blob id (8)
  MDB_dbi blobs;  // blob id (8) -> BlobRecord (64)
  MDB_dbi lru;    // big-endian last access (8, unique) -> blob id (8); oldest first
  MDB_dbi refs;   // blob id -> index keys (DUPFIXED), beyond the record's first_key
  MDB_dbi meta;   // "format", "bytes", "clean", "salt"
};

// A pooled read-only transaction (see BeginRead).
class LmdbStore::ReadTxn {
 public:
  explicit ReadTxn(LmdbStore* store) : store_(store) {
    Result<MDB_txn*> t = store->BeginRead();
    if (t.ok()) {
      txn_ = *t;
    } else {
      status_ = t.status();
    }
  }
  ~ReadTxn() {
    if (txn_ != nullptr) {
      store_->EndRead(txn_);
    }
  }
  const Status& status() const { return status_; }
  MDB_txn* get() const { return txn_; }

 private:
  LmdbStore* store_;
  MDB_txn* txn_ = nullptr;
  Status status_;
};

// A write transaction, aborted unless committed. Requires write_mu_.
class LmdbStore::WriteTxn {
 public:
  explicit WriteTxn(MDB_env* env) {
    int rc = mdb_txn_begin(env, nullptr, 0, &txn_);
    if (rc != 0) {
      txn_ = nullptr;
      status_ = MdbStatus(rc, "begin index write");
    }
  }
  ~WriteTxn() {
    if (txn_ != nullptr) {
      mdb_txn_abort(txn_);
    }
  }
  const Status& status() const { return status_; }
  MDB_txn* get() const { return txn_; }
  Status Commit() {
    int rc = mdb_txn_commit(txn_);
    txn_ = nullptr;
    return rc == 0 ? Status::Ok() : MdbStatus(rc, "commit index");
  }

 private:
  MDB_txn* txn_ = nullptr;
  Status status_;
};

// One queued index mutation (see Submit).
struct LmdbStore::Op {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string index_key;
  // kPut:
  Digest digest;
  uint64_t size = 0;
  std::string temp_name;  // in tmp/
  int fd = -1;
  uint64_t reserved = 0;  // quota the writer holds; the leader zeroes it when it takes it over
  // Results.
  Status status;
  bool published = false;  // the temporary file was renamed into blobs/
  bool done = false;
};

class LmdbStore::Reader : public BlobReader {
 public:
  Reader(BlobInfo info, int fd) : info_(info), fd_(fd) {}
  ~Reader() override { ::close(fd_); }

  // BlobReader
  const BlobInfo& info() const override { return info_; }
  int fd() const override { return fd_; }
  Result<size_t> ReadAt(uint64_t offset, std::span<char> buf) override {
    if (offset >= info_.size || buf.empty()) {
      return size_t{0};
    }
    size_t want = std::min<uint64_t>(buf.size(), info_.size - offset);
    for (;;) {
      ssize_t n = ::pread(fd_, buf.data(), want, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        return ErrnoStatus(errno, "read blob");
      }
      if (n == 0) {
        return DataLoss("blob file is shorter than its index entry");
      }
      return static_cast<size_t>(n);
    }
  }

 private:
  const BlobInfo info_;
  const int fd_;
};

class LmdbStore::Writer : public BlobWriter {
 public:
  Writer(LmdbStore* store, std::string index_key, WriteOptions options, uint64_t reserved, int fd,
         std::string temp_name)
      : store_(store),
        index_key_(std::move(index_key)),
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
    Status s = WriteAll(fd_, data);
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
    if (store_->options_.sync) {
      if (int e = store_->Fault(FaultPoint::kTempSync)) {
        return Fail(ErrnoStatus(e, "fsync temporary blob file"));
      }
      if (::fsync(fd_) != 0) {
        return Fail(ErrnoStatus(errno, "fsync temporary blob file"));
      }
    }
    Op op;
    op.kind = Op::Kind::kPut;
    op.index_key = index_key_;
    op.digest = digest;
    op.size = written_;
    op.temp_name = temp_name_;
    op.fd = fd_;
    op.reserved = std::exchange(reserved_, 0);
    store_->Submit(&op);
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
  const std::string index_key_;
  const WriteOptions options_;
  uint64_t reserved_;
  int fd_;
  const std::string temp_name_;
  uint64_t written_ = 0;
  uint64_t caller_held_ = 0;  // bytes counted against options_.caller in store_->callers_
  Sha256 hash_;
  bool done_ = false;
};

// ---------------------------------------------------------------------------------------------
// Opening and reconciling.

Result<std::unique_ptr<LmdbStore>> LmdbStore::Open(LmdbStoreOptions options) {
  if (options.data_dir.empty()) {
    return InvalidArgument("LmdbStore needs a data_dir");
  }
  std::unique_ptr<LmdbStore> store(new LmdbStore(std::move(options)));
  BC_RETURN_IF_ERROR(store->Init());
  return store;
}

LmdbStore::LmdbStore(LmdbStoreOptions options)
    : options_(std::move(options)), callers_(options_.limits) {
  blob_dir_fds_.fill(-1);
}

LmdbStore::~LmdbStore() {
  if (flusher_.joinable()) {
    {
      std::lock_guard lock(flusher_mu_);
      stopping_ = true;
    }
    flusher_cv_.notify_all();
    flusher_.join();
  }
  if (env_ != nullptr) {
    if (dbs_ != nullptr) {
      Status s = FlushAccessTimes();
      std::lock_guard lock(write_mu_);
      WriteTxn txn(env_);
      if (s.ok()) {
        s = txn.status();
      }
      if (s.ok()) {
        char one = 1;
        MDB_val k = Val("clean"), v{1, &one};
        int rc = mdb_put(txn.get(), dbs_->meta, &k, &v, 0);
        s = rc == 0 ? txn.Commit() : MdbStatus(rc, "mark clean");
      }
      if (!s.ok()) {
        log::Error("store close failed", {{"error", s.ToString()}});
      }
    }
    for (MDB_txn* t : read_pool_) {
      mdb_txn_abort(t);
    }
    read_pool_.clear();
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

Status LmdbStore::Init() {
  const std::string& root = options_.data_dir;
  BC_RETURN_IF_ERROR(MakeDirs(root));
  BC_RETURN_IF_ERROR(MakeDir(root + "/index"));
  BC_RETURN_IF_ERROR(MakeDir(root + "/blobs"));
  BC_RETURN_IF_ERROR(MakeDir(root + "/tmp"));
  BC_ASSIGN_OR_RETURN(tmp_dir_fd_, OpenDir(root + "/tmp"));
  temp_prefix_ = std::to_string(::getpid()) + "-";
  for (int i = 0; i < 256; ++i) {
    std::string dir = root + "/blobs/" + HexByte(static_cast<uint8_t>(i));
    BC_RETURN_IF_ERROR(MakeDir(dir));
    BC_ASSIGN_OR_RETURN(blob_dir_fds_[i], OpenDir(dir));
  }

  // Unfinished writes of a previous process.
  BC_RETURN_IF_ERROR(ForEachEntry(tmp_dir_fd_, [&](const std::string& name) {
    if (::unlinkat(tmp_dir_fd_, name.c_str(), 0) == 0) ++recovery_.temp_files_removed;
  }));

  // Timestamps are only trusted to reveal a later write once the clock has moved past the
  // file system's timestamp granularity (the "racy git" problem). Nanosecond file systems still
  // take times from the coarse kernel clock (one tick); others may round to whole seconds.
  {
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
  }

  int rc = mdb_env_create(&env_);
  if (rc != 0) {
    env_ = nullptr;
    return MdbStatus(rc, "create index env");
  }
  if ((rc = mdb_env_set_maxdbs(env_, 8)) != 0) {
    return MdbStatus(rc, "set maxdbs");
  }
  if ((rc = mdb_env_set_maxreaders(env_, 1024)) != 0) {
    return MdbStatus(rc, "set maxreaders");
  }
  if ((rc = mdb_env_set_mapsize(env_, options_.index_map_bytes)) != 0) {
    return MdbStatus(rc, "set mapsize");
  }
  // NOTLS: read transactions are not tied to threads (pooled). NORDAHEAD: the index is read at
  // random; readahead would only fill memory. NOMETASYNC without `sync`: one fdatasync per commit,
  // and a machine crash loses at most the last transactions, never the database.
  unsigned flags = MDB_NOTLS | MDB_NORDAHEAD | (options_.sync ? 0 : MDB_NOMETASYNC);
  std::string index_dir = root + "/index";
  if ((rc = mdb_env_open(env_, index_dir.c_str(), flags, 0644)) != 0) {
    return MdbStatus(rc, "open index " + index_dir);
  }

  bool clean = false;
  bool have_bytes = false;
  uint64_t meta_bytes = 0;
  {
    std::lock_guard lock(write_mu_);
    WriteTxn txn(env_);
    BC_RETURN_IF_ERROR(txn.status());
    auto dbs = std::make_unique<Dbs>();
    struct {
      const char* name;
      unsigned flags;
      MDB_dbi* dbi;
    } opens[] = {{"keys", 0, &dbs->keys},
                 {"blobs", 0, &dbs->blobs},
                 {"lru", 0, &dbs->lru},
                 {"refs", MDB_DUPSORT | MDB_DUPFIXED, &dbs->refs},
                 {"meta", 0, &dbs->meta}};
    for (const auto& o : opens) {
      if ((rc = mdb_dbi_open(txn.get(), o.name, o.flags | MDB_CREATE, o.dbi)) != 0) {
        return MdbStatus(rc, std::string("open index table ") + o.name);
      }
    }
    MDB_val k = Val("format"), v;
    rc = mdb_get(txn.get(), dbs->meta, &k, &v);
    if (rc == 0 && (v.mv_size != 1 || *static_cast<const char*>(v.mv_data) != kIndexFormat)) {
      return FailedPrecondition("index in " + index_dir +
                                " has another format; remove the data directory to start over");
    }
    if (rc == MDB_NOTFOUND) {
      MDB_stat st;
      if (mdb_stat(txn.get(), dbs->blobs, &st) == 0 && st.ms_entries > 0) {
        return FailedPrecondition("index in " + index_dir + " has no format marker");
      }
      char format = kIndexFormat;
      MDB_val fv{1, &format};
      if ((rc = mdb_put(txn.get(), dbs->meta, &k, &fv, 0)) != 0) {
        return MdbStatus(rc, "write meta");
      }
    }
    k = Val("clean");
    if (mdb_get(txn.get(), dbs->meta, &k, &v) == 0 && v.mv_size == 1) {
      clean = *static_cast<const char*>(v.mv_data) == 1;
    }
    k = Val("salt");
    if (clean && mdb_get(txn.get(), dbs->meta, &k, &v) == 0 && v.mv_size == 8) {
      fingerprint_salt_ = GetLe64(static_cast<const char*>(v.mv_data));
    } else {
      // After a crash, written data may not have reached the disk although file metadata did, so
      // no recorded fingerprint is trusted: a new salt makes every blob be re-hashed on next read.
      std::random_device rd;
      fingerprint_salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    }
    k = Val("bytes");
    if (mdb_get(txn.get(), dbs->meta, &k, &v) == 0 && v.mv_size == 8) {
      have_bytes = true;
      meta_bytes = GetLe64(static_cast<const char*>(v.mv_data));
    }
    char salt[8];
    PutLe64(salt, fingerprint_salt_);
    char zero = 0;
    k = Val("salt");
    v = MDB_val{8, salt};
    if ((rc = mdb_put(txn.get(), dbs->meta, &k, &v, 0)) != 0) {
      return MdbStatus(rc, "write meta");
    }
    k = Val("clean");
    v = MDB_val{1, &zero};
    if ((rc = mdb_put(txn.get(), dbs->meta, &k, &v, 0)) != 0) {
      return MdbStatus(rc, "write meta");
    }
    BC_RETURN_IF_ERROR(txn.Commit());
    dbs_ = std::move(dbs);
  }
  recovery_.clean_shutdown = clean;

  auto start = std::chrono::steady_clock::now();
  bool full = !clean || options_.full_reconcile_after_clean_shutdown || !have_bytes;
  BC_RETURN_IF_ERROR(Reconcile(full));
  if (!full) {
    index_bytes_ = meta_bytes;
  }
  {
    std::lock_guard lock(quota_mu_);
    bytes_ = index_bytes_;
  }

  {
    ReadTxn txn(this);
    BC_RETURN_IF_ERROR(txn.status());
    MDB_cursor* cur;
    if ((rc = mdb_cursor_open(txn.get(), dbs_->lru, &cur)) != 0) {
      return MdbStatus(rc, "cursor");
    }
    MDB_val k, v;
    if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) {
      last_atime_ = GetBe64(static_cast<const char*>(k.mv_data));
    }
    mdb_cursor_close(cur);
  }

  if (options_.max_bytes > 0 && index_bytes_ > options_.max_bytes) {
    uint64_t before = evictions_.load();
    bool any = false;
    BC_RETURN_IF_ERROR(EvictAtLeast(index_bytes_ - options_.max_bytes, &any));
    recovery_.evicted_to_quota = evictions_.load() - before;
  }

  StoreStats stats = Stats();
  log::Info("store reconciled",
            {{"data_dir", root},
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

  FindIndexMap();
  resident_baseline_ = ResidentFileBytes();
  flusher_ = std::thread([this] { FlusherLoop(); });
  return Status::Ok();
}

Status LmdbStore::Reconcile(bool full) {
  recovery_.full_scan = full;
  int rc;
  if (!full) {
    return Status::Ok();
  }

  // 1. Index entries whose file is missing or has the wrong size.
  std::vector<Digest> missing, wrong_size;
  uint64_t bytes = 0;
  {
    ReadTxn txn(this);
    BC_RETURN_IF_ERROR(txn.status());
    MDB_cursor* cur;
    if ((rc = mdb_cursor_open(txn.get(), dbs_->blobs, &cur)) != 0) {
      return MdbStatus(rc, "cursor");
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      BlobRecord r;
      if (!DecodeRecord(k, v, &r)) {
        continue;  // unreachable: fixed formats
      }
      const Digest& d = r.digest;
      struct stat st;
      if (::fstatat(BlobDirFd(d), d.Hex().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        missing.push_back(d);
      } else if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != r.size) {
        wrong_size.push_back(d);
      } else {
        bytes += r.size;
      }
    }
    mdb_cursor_close(cur);
  }
  {
    std::lock_guard lock(write_mu_);
    WriteTxn txn(env_);
    BC_RETURN_IF_ERROR(txn.status());
    for (const auto* list : {&missing, &wrong_size}) {
      for (const Digest& d : *list) {
        BC_RETURN_IF_ERROR(RemoveBlobLocked(txn.get(), d).status());
      }
    }
    char b[8];
    PutLe64(b, bytes);
    MDB_val k = Val("bytes"), v{8, b};
    if ((rc = mdb_put(txn.get(), dbs_->meta, &k, &v, 0)) != 0) {
      return MdbStatus(rc, "write meta");
    }
    BC_RETURN_IF_ERROR(txn.Commit());
    index_bytes_ = bytes;
  }
  for (const Digest& d : wrong_size) {
    ::unlinkat(BlobDirFd(d), d.Hex().c_str(), 0);
  }
  recovery_.missing_dropped = missing.size();
  recovery_.size_mismatch_dropped = wrong_size.size();

  // 2. Blob files the index does not know: renamed in by a transaction that never committed, or
  // left by an unlink that never ran.
  for (int i = 0; i < 256; ++i) {
    ReadTxn txn(this);
    BC_RETURN_IF_ERROR(txn.status());
    BC_RETURN_IF_ERROR(ForEachEntry(blob_dir_fds_[i], [&](const std::string& name) {
      std::optional<Digest> d = Digest::FromHex(name);
      bool known = false;
      if (d && d->bytes()[0] == i && name == d->Hex()) {
        BlobRecord rec;
        known = GetBlob(txn.get(), *d, &rec) == 0;
      }
      if (!known && ::unlinkat(blob_dir_fds_[i], name.c_str(), 0) == 0) {
        ++recovery_.orphans_removed;
      }
    }));
  }
  return Status::Ok();
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

std::string LmdbStore::IndexKey(std::string_view key) {
  // Keys are indexed by the first 16 bytes of their SHA-256: fixed-size, short index entries
  // whatever the key length (front-end keys are often 70+ bytes), and any byte string is a valid
  // key. Two keys colliding in 128 bits is not a practical concern (p < 1e-20 at 1e9 keys), and
  // even then the content served is verified against its own digest.
  Digest d = Digest::Of(key);
  return std::string(d.raw().substr(0, kIndexKeyBytes));
}

Result<MDB_txn*> LmdbStore::BeginRead() {
  MDB_txn* txn = nullptr;
  {
    std::lock_guard lock(read_pool_mu_);
    if (!read_pool_.empty()) {
      txn = read_pool_.back();
      read_pool_.pop_back();
    }
  }
  if (txn != nullptr) {
    if (mdb_txn_renew(txn) == 0) {
      return txn;
    }
    mdb_txn_abort(txn);
  }
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
  if (rc != 0) {
    return MdbStatus(rc, "begin index read");
  }
  return txn;
}

void LmdbStore::EndRead(MDB_txn* txn) {
  mdb_txn_reset(txn);
  std::lock_guard lock(read_pool_mu_);
  read_pool_.push_back(txn);
}

// ---------------------------------------------------------------------------------------------
// Reads.

Result<std::unique_ptr<BlobReader>> LmdbStore::Open(std::string_view key) {
  return OpenByKey(key, /*verify=*/true);
}

Result<std::unique_ptr<BlobReader>> LmdbStore::OpenForRelay(std::string_view key) {
  return OpenByKey(key, /*verify=*/false);
}

Result<std::unique_ptr<BlobReader>> LmdbStore::OpenDigest(const Digest& digest) {
  return OpenByDigest(digest, /*verify=*/true);
}

Result<std::unique_ptr<BlobReader>> LmdbStore::OpenDigestForRelay(const Digest& digest) {
  return OpenByDigest(digest, /*verify=*/false);
}

Result<std::unique_ptr<BlobReader>> LmdbStore::OpenByKey(std::string_view key, bool verify) {
  std::string ik = IndexKey(key);
  BlobRecord rec;
  {
    ReadTxn txn(this);
    BC_RETURN_IF_ERROR(txn.status());
    int rc = GetKey(txn.get(), ik, &rec);
    if (rc == MDB_NOTFOUND) {
      return NotFound("no such key");
    }
    if (rc != 0) {
      return MdbStatus(rc, "index lookup");
    }
  }
  return OpenBlob(rec.digest, verify, rec);
}

Result<std::unique_ptr<BlobReader>> LmdbStore::OpenByDigest(const Digest& digest, bool verify) {
  BlobRecord rec;
  {
    ReadTxn txn(this);
    BC_RETURN_IF_ERROR(txn.status());
    int rc = GetBlob(txn.get(), digest, &rec);
    if (rc == MDB_NOTFOUND) {
      return NotFound("no such blob");
    }
    if (rc != 0) {
      return MdbStatus(rc, "index lookup");
    }
  }
  return OpenBlob(digest, verify, rec);
}

Result<std::unique_ptr<BlobReader>> LmdbStore::OpenBlob(const Digest& digest, bool verify,
                                                        const BlobRecord& rec) {
  std::string hex = digest.Hex();
  int fd = ::openat(BlobDirFd(digest), hex.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      // Evicted or deleted since the lookup, or removed behind our back.
      DropBad(digest, 0, /*missing=*/true);
      return NotFound("no such blob");
    }
    return ErrnoStatus(err, "open blob");
  }
  int64_t before_stat = RealtimeNs();
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "stat blob");
  }
  uint64_t fp = Fingerprint(st, fingerprint_salt_);
  uint64_t expected = RecordTouch(digest, rec.fingerprint);
  bool verified = false;
  if (options_.verify_reads != VerifyReads::kAlways && !verify) {
    if (static_cast<uint64_t>(st.st_size) != rec.size) {
      ::close(fd);
      DropBad(digest, st.st_ino, /*missing=*/false);
      return NotFound("blob size does not match its record; dropped");
    }
  } else if (options_.verify_reads == VerifyReads::kAlways || fp != expected) {
    if (static_cast<uint64_t>(st.st_size) != rec.size || !VerifyFile(fd, digest, rec.size)) {
      ::close(fd);
      DropBad(digest, st.st_ino, /*missing=*/false);
      return NotFound("blob content does not match its digest; dropped");
    }
    verified = true;
  }
  if (verified && fp != expected && Trusted(st, before_stat)) {
    RecordFingerprint(digest, fp);
  }
  return std::unique_ptr<BlobReader>(std::make_unique<Reader>(BlobInfo{digest, rec.size}, fd));
}

bool LmdbStore::Trusted(const struct stat& st, int64_t before_stat) const {
  return before_stat - Ns(st.st_ctim) > racy_window_.count();
}

bool LmdbStore::VerifyFile(int fd, const Digest& digest, uint64_t size) {
  full_verifications_.fetch_add(1);
  std::unique_ptr<char[]> buf(new char[kVerifyBufferBytes]);
  Sha256 hash;
  uint64_t offset = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf.get(), kVerifyBufferBytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return false;
    }
    if (n == 0) {
      break;
    }
    hash.Update(std::string_view(buf.get(), static_cast<size_t>(n)));
    offset += static_cast<uint64_t>(n);
  }
  return offset == size && hash.Finish() == digest;
}

uint64_t LmdbStore::RecordTouch(const Digest& digest, uint64_t indexed_fingerprint) {
  int64_t now = Now();
  TouchShard& shard = touches_[digest.bytes()[1] % kTouchShards];
  uint64_t fp;
  size_t pending;
  {
    std::lock_guard lock(shard.mu);
    auto [it, inserted] = shard.pending.try_emplace(digest);
    it->second.time = std::max(it->second.time, now);
    fp = it->second.fingerprint != 0 ? it->second.fingerprint : indexed_fingerprint;
    pending = inserted ? pending_touches_.fetch_add(1) + 1 : 0;
  }
  if (pending > kTouchFlushThreshold) {
    flusher_cv_.notify_all();
  }
  return fp;
}

void LmdbStore::RecordFingerprint(const Digest& digest, uint64_t fingerprint) {
  TouchShard& shard = touches_[digest.bytes()[1] % kTouchShards];
  std::lock_guard lock(shard.mu);
  auto [it, inserted] = shard.pending.try_emplace(digest);
  it->second.fingerprint = fingerprint;
  if (inserted) {
    pending_touches_.fetch_add(1);
  }
}

Result<BlobInfo> LmdbStore::Stat(std::string_view key) {
  std::string ik = IndexKey(key);
  ReadTxn txn(this);
  BC_RETURN_IF_ERROR(txn.status());
  BlobRecord rec;
  int rc = GetKey(txn.get(), ik, &rec);
  if (rc == MDB_NOTFOUND) {
    return NotFound("no such key");
  }
  if (rc != 0) {
    return MdbStatus(rc, "index lookup");
  }
  return BlobInfo{rec.digest, rec.size};
}

bool LmdbStore::HasDigest(const Digest& digest) {
  ReadTxn txn(this);
  if (!txn.status().ok()) {
    return false;
  }
  BlobRecord rec;
  return GetBlob(txn.get(), digest, &rec) == 0;
}

// ---------------------------------------------------------------------------------------------
// Index access.

int LmdbStore::GetBlobById(MDB_txn* txn, std::string_view id, BlobRecord* rec) const {
  MDB_val k = Val(id), v;
  int rc = mdb_get(txn, dbs_->blobs, &k, &v);
  if (rc != 0) {
    return rc;
  }
  return DecodeRecord(k, v, rec) ? 0 : MDB_CORRUPTED;
}

int LmdbStore::GetBlob(MDB_txn* txn, const Digest& digest, BlobRecord* rec) const {
  int rc = GetBlobById(txn, IdOf(digest), rec);
  if (rc == 0 && rec->digest != digest) {
    return MDB_NOTFOUND;
  }
  return rc;
}

int LmdbStore::GetKey(MDB_txn* txn, std::string_view index_key, BlobRecord* rec) const {
  MDB_val k = Val(index_key), v;
  int rc = mdb_get(txn, dbs_->keys, &k, &v);
  if (rc != 0) {
    return rc;
  }
  if (v.mv_size != kIdBytes) {
    return MDB_CORRUPTED;
  }
  return GetBlobById(txn, View(v), rec);
}

Status LmdbStore::PutBlobLocked(MDB_txn* txn, const BlobRecord& rec) {
  auto enc = EncodeRecord(rec);
  MDB_val k = Val(IdOf(rec.digest)), v{enc.size(), enc.data()};
  int rc = mdb_put(txn, dbs_->blobs, &k, &v, 0);
  return rc == 0 ? Status::Ok() : MdbStatus(rc, "index put");
}

StoreStats LmdbStore::Stats() {
  StoreStats s;
  s.max_bytes = options_.max_bytes;
  s.evictions = evictions_.load();
  s.evicted_bytes = evicted_bytes_.load();
  s.corrupt_dropped = corrupt_dropped_.load();
  {
    std::lock_guard lock(quota_mu_);
    s.bytes = bytes_;
    s.reserved_bytes = reserved_;
  }
  ReadTxn txn(this);
  if (txn.status().ok()) {
    MDB_stat st;
    if (mdb_stat(txn.get(), dbs_->keys, &st) == 0) {
      s.keys = st.ms_entries;
    }
    if (mdb_stat(txn.get(), dbs_->blobs, &st) == 0) {
      s.blobs = st.ms_entries;
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Writes.

Result<std::unique_ptr<BlobWriter>> LmdbStore::NewWriter(std::string_view key,
                                                         const WriteOptions& options) {
  // An announced size reserves nothing and evicts nothing (a client could announce the whole
  // quota and send nothing); it only fails early what can never fit.
  if (options.expected_size) {
    const uint64_t size = *options.expected_size;
    if (options_.max_bytes > 0 && size > options_.max_bytes) {
      return ResourceExhausted("object of " + std::to_string(size) +
                               " bytes is larger than the store quota of " +
                               std::to_string(options_.max_bytes) + " bytes");
    }
    BC_RETURN_IF_ERROR(callers_.CheckAnnounced(options.caller, size));
  }
  if (int e = Fault(FaultPoint::kTempCreate)) {
    return ErrnoStatus(e, "create temporary blob file");
  }
  if (options.expected_size && *options.expected_size > 0) {
    // Free disk plus what eviction could free: a larger object fails before it is streamed.
    struct statvfs vfs {};
    if (::fstatvfs(tmp_dir_fd_, &vfs) == 0) {
      uint64_t room = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
      if (options_.max_bytes > 0) {
        std::lock_guard lock(quota_mu_);
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
      std::make_unique<Writer>(this, IndexKey(key), options, 0, fd, std::move(name)));
}

Status LmdbStore::Delete(std::string_view key) {
  Op op;
  op.kind = Op::Kind::kDelete;
  op.index_key = IndexKey(key);
  Submit(&op);
  return op.status;
}

void LmdbStore::Submit(Op* op) {
  std::unique_lock lock(commit_mu_);
  commit_queue_.push_back(op);
  while (!op->done && op != commit_queue_.front()) {
    commit_cv_.wait(lock);
  }
  if (op->done) {
    return;
  }
  // This thread leads: it applies everything queued so far in one transaction.
  std::vector<Op*> batch;
  for (Op* o : commit_queue_) {
    if (batch.size() == kMaxBatch) {
      break;
    }
    batch.push_back(o);
  }
  lock.unlock();
  ApplyBatch(batch);
  lock.lock();
  for (size_t i = 0; i < batch.size(); ++i) {
    commit_queue_.front()->done = true;
    commit_queue_.pop_front();
  }
  commit_cv_.notify_all();
}

void LmdbStore::ApplyBatch(const std::vector<Op*>& batch) {
  std::lock_guard lock(write_mu_);
  auto fail_all = [&](const Status& s) {
    for (Op* op : batch) {
      if (op->status.ok()) {
        op->status = s;
      }
    }
  };
  WriteTxn txn(env_);
  if (!txn.status().ok()) {
    return fail_all(txn.status());
  }
  const uint64_t saved_bytes = index_bytes_;
  const uint64_t saved_atime = last_atime_;
  std::vector<std::pair<Digest, uint64_t>> removed;  // files to unlink once committed
  std::set<int> dirs;                                // blob directories to fsync
  std::vector<Op*> published;

  // Undoes the renames of a transaction that will not commit.
  auto abort = [&](const Status& s) {
    for (Op* op : published) {
      ::unlinkat(BlobDirFd(op->digest), op->digest.Hex().c_str(), 0);
      op->published = false;
    }
    index_bytes_ = saved_bytes;
    last_atime_ = saved_atime;
    log::Error("store index update failed", {{"error", s.ToString()}, {"ops", batch.size()}});
    fail_all(s);
  };

  Status s = ApplyTouchesLocked(txn.get(), kTouchesPerWriteTxn);
  if (!s.ok()) {
    return abort(s);
  }

  for (Op* op : batch) {
    MDB_txn* t = txn.get();
    const std::string_view id = IdOf(op->digest);
    BlobRecord old;
    int rc = GetKey(t, op->index_key, &old);
    if (rc != 0 && rc != MDB_NOTFOUND) {
      return abort(MdbStatus(rc, "index lookup"));
    }
    const bool mapped = rc == 0;
    if (op->kind == Op::Kind::kDelete) {
      if (!mapped) {
        op->status = NotFound("no such key");
      } else if (!(s = UnmapKeyLocked(t, op->index_key, old.digest, &removed)).ok()) {
        return abort(s);
      }
      continue;
    }

    // kPut. Is the content stored already?
    BlobRecord rec;
    rc = GetBlobById(t, id, &rec);
    if (rc != 0 && rc != MDB_NOTFOUND) {
      return abort(MdbStatus(rc, "index lookup"));
    }
    const bool exists = rc == 0 && rec.digest == op->digest;
    if (rc == 0 && !exists) {
      op->status = FailedPrecondition("another stored blob has the same 64-bit id; not stored");
      log::Warn("blob id collision", {{"digest", op->digest.Hex()}, {"stored", rec.digest.Hex()}});
      continue;
    }
    // New content: publish its file first, so that a failure here changes nothing in the index.
    uint64_t fingerprint = 0;
    if (!exists) {
      auto pending_unlink = std::find_if(removed.begin(), removed.end(),
                                         [&](const auto& r) { return r.first == op->digest; });
      if (pending_unlink != removed.end()) {
        // Removed earlier in this batch and its file not yet unlinked: keep that file (same
        // content) and index it again, unverified.
        removed.erase(pending_unlink);
      } else {
        if (int e = Fault(FaultPoint::kPublish)) {
          op->status = ErrnoStatus(e, "publish blob");
          continue;
        }
        std::string hex = op->digest.Hex();
        if (::renameat(tmp_dir_fd_, op->temp_name.c_str(), BlobDirFd(op->digest), hex.c_str()) !=
            0) {
          op->status = ErrnoStatus(errno, "publish blob");
          continue;
        }
        op->published = true;
        if (int e = Fault(FaultPoint::kAfterPublish)) {
          ::unlinkat(BlobDirFd(op->digest), hex.c_str(), 0);
          op->published = false;
          op->status = ErrnoStatus(e, "publish blob");
          continue;
        }
        published.push_back(op);
        dirs.insert(op->digest.bytes()[0]);
        int64_t before_stat = RealtimeNs();
        struct stat st;
        if (::fstat(op->fd, &st) == 0 && Trusted(st, before_stat)) {
          fingerprint = Fingerprint(st, fingerprint_salt_);
        }
      }
    }
    // Unmap the key from other content (which may remove that blob).
    const bool already = mapped && old.digest == op->digest;
    if (mapped && !already) {
      if (!(s = UnmapKeyLocked(t, op->index_key, old.digest, &removed)).ok()) {
        return abort(s);
      }
    }
    if (exists) {
      // A write counts as use.
      if (!already) {
        MDB_val k = Val(id), ref = Val(op->index_key);
        rc = mdb_put(t, dbs_->refs, &k, &ref, MDB_NODUPDATA);
        if (rc != 0 && rc != MDB_KEYEXIST) {
          return abort(MdbStatus(rc, "index put"));
        }
      }
      if (!(s = SetAtimeLocked(t, &rec, NextAtimeLocked(Now()))).ok()) {
        return abort(s);
      }
    } else {
      rec = BlobRecord{};
      rec.digest = op->digest;
      rec.size = op->size;
      rec.fingerprint = fingerprint;
      std::memcpy(rec.first_key.data(), op->index_key.data(), rec.first_key.size());
      rec.atime = NextAtimeLocked(Now());
      if (!(s = PutBlobLocked(t, rec)).ok()) {
        return abort(s);
      }
      if (!(s = PutLruLocked(t, rec.atime, id)).ok()) {
        return abort(s);
      }
      index_bytes_ += rec.size;
    }
    if (!already) {
      MDB_val k = Val(op->index_key), v = Val(id);
      if ((rc = mdb_put(t, dbs_->keys, &k, &v, 0)) != 0) {
        return abort(MdbStatus(rc, "index put"));
      }
    }
  }

  if (options_.sync) {
    for (int dir : dirs) {
      if (::fsync(blob_dir_fds_[dir]) != 0) {
        return abort(ErrnoStatus(errno, "fsync blob dir"));
      }
    }
  }
  char b[8];
  PutLe64(b, index_bytes_);
  MDB_val mk = Val("bytes"), mv{8, b};
  if (int rc = mdb_put(txn.get(), dbs_->meta, &mk, &mv, 0); rc != 0) {
    return abort(MdbStatus(rc, "index put"));
  }
  if (int e = Fault(FaultPoint::kIndexCommit)) {
    return abort(ErrnoStatus(e, "commit index"));
  }
  s = txn.Commit();
  if (!s.ok()) {
    return abort(s);
  }
  Fault(FaultPoint::kAfterIndexCommit);

  UnlinkBlobs(removed);
  std::lock_guard qlock(quota_mu_);
  bytes_ = index_bytes_;
  for (Op* op : batch) {
    if (op->status.ok()) {
      reserved_ -= std::exchange(op->reserved, 0);
    }
  }
}

Status LmdbStore::PutLruLocked(MDB_txn* txn, uint64_t atime, std::string_view id) {
  char key[8];
  PutBe64(key, atime);
  MDB_val k{8, key}, v = Val(id);
  // Access times only grow, so the entry goes at the end: APPEND keeps LRU pages full.
  int rc = mdb_put(txn, dbs_->lru, &k, &v, MDB_APPEND);
  if (rc == MDB_KEYEXIST) {
    rc = mdb_put(txn, dbs_->lru, &k, &v, 0);
  }
  return rc == 0 ? Status::Ok() : MdbStatus(rc, "index put");
}

Status LmdbStore::SetAtimeLocked(MDB_txn* txn, BlobRecord* rec, uint64_t atime) {
  char old[8];
  PutBe64(old, rec->atime);
  MDB_val ok{8, old};
  int rc = mdb_del(txn, dbs_->lru, &ok, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index delete");
  }
  rec->atime = atime;
  BC_RETURN_IF_ERROR(PutLruLocked(txn, atime, IdOf(rec->digest)));
  return PutBlobLocked(txn, *rec);
}

uint64_t LmdbStore::NextAtimeLocked(int64_t at_least) {
  last_atime_ =
      std::max<uint64_t>(static_cast<uint64_t>(std::max<int64_t>(at_least, 0)), last_atime_ + 1);
  return last_atime_;
}

Status LmdbStore::ApplyTouchesLocked(MDB_txn* txn, size_t limit) {
  if (pending_touches_.load() == 0) {
    return Status::Ok();
  }
  std::vector<std::pair<Digest, Touch>> touches;
  for (TouchShard& shard : touches_) {
    if (touches.size() >= limit) {
      break;
    }
    std::lock_guard lock(shard.mu);
    while (!shard.pending.empty() && touches.size() < limit) {
      auto node = shard.pending.extract(shard.pending.begin());
      touches.emplace_back(node.key(), node.mapped());
    }
  }
  pending_touches_.fetch_sub(touches.size());
  std::sort(touches.begin(), touches.end(),
            [](const auto& a, const auto& b) { return a.second.time < b.second.time; });
  for (const auto& [digest, touch] : touches) {
    BlobRecord rec;
    int rc = GetBlob(txn, digest, &rec);
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
      BC_RETURN_IF_ERROR(SetAtimeLocked(txn, &rec, NextAtimeLocked(touch.time)));
    } else {
      BC_RETURN_IF_ERROR(PutBlobLocked(txn, rec));
    }
  }
  return Status::Ok();
}

Result<uint64_t> LmdbStore::RemoveBlobLocked(MDB_txn* txn, const Digest& digest) {
  BlobRecord rec;
  int rc = GetBlob(txn, digest, &rec);
  if (rc == MDB_NOTFOUND) {
    return uint64_t{0};
  }
  if (rc != 0) {
    return MdbStatus(rc, "index lookup");
  }
  const std::string_view id = IdOf(digest);
  char lk[8];
  PutBe64(lk, rec.atime);
  MDB_val lkv{8, lk};
  rc = mdb_del(txn, dbs_->lru, &lkv, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index delete");
  }

  std::vector<std::string> keys = {std::string(rec.first_key.data(), rec.first_key.size())};
  MDB_cursor* cur;
  if ((rc = mdb_cursor_open(txn, dbs_->refs, &cur)) != 0) {
    return MdbStatus(rc, "cursor");
  }
  MDB_val rk = Val(id), rv;
  for (rc = mdb_cursor_get(cur, &rk, &rv, MDB_SET); rc == 0;
       rc = mdb_cursor_get(cur, &rk, &rv, MDB_NEXT_DUP)) {
    keys.emplace_back(View(rv));
  }
  mdb_cursor_close(cur);
  for (const std::string& key : keys) {
    MDB_val kk = Val(key), kv;
    if (mdb_get(txn, dbs_->keys, &kk, &kv) == 0 && View(kv) == id) {
      if ((rc = mdb_del(txn, dbs_->keys, &kk, nullptr)) != 0) {
        return MdbStatus(rc, "index delete");
      }
    }
  }
  rk = Val(id);
  rc = mdb_del(txn, dbs_->refs, &rk, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index delete");
  }
  MDB_val k = Val(id);
  if ((rc = mdb_del(txn, dbs_->blobs, &k, nullptr)) != 0) {
    return MdbStatus(rc, "index delete");
  }
  index_bytes_ -= std::min(index_bytes_, rec.size);
  return rec.size;
}

Status LmdbStore::UnmapKeyLocked(MDB_txn* txn, std::string_view index_key, const Digest& digest,
                                 std::vector<std::pair<Digest, uint64_t>>* removed) {
  MDB_val k = Val(index_key);
  int rc = mdb_del(txn, dbs_->keys, &k, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index delete");
  }
  BlobRecord rec;
  rc = GetBlob(txn, digest, &rec);
  if (rc == MDB_NOTFOUND) {
    return Status::Ok();
  }
  if (rc != 0) {
    return MdbStatus(rc, "index lookup");
  }
  const std::string_view id = IdOf(digest);
  if (std::string_view(rec.first_key.data(), rec.first_key.size()) != index_key) {
    MDB_val dk = Val(id), ref = Val(index_key);
    rc = mdb_del(txn, dbs_->refs, &dk, &ref);
    return rc == 0 || rc == MDB_NOTFOUND ? Status::Ok() : MdbStatus(rc, "index delete");
  }
  // The record's own key goes: promote another key of the blob, or remove the blob.
  MDB_cursor* cur;
  if ((rc = mdb_cursor_open(txn, dbs_->refs, &cur)) != 0) {
    return MdbStatus(rc, "cursor");
  }
  MDB_val rk = Val(id), rv;
  rc = mdb_cursor_get(cur, &rk, &rv, MDB_SET);
  if (rc == 0 && rv.mv_size == rec.first_key.size()) {
    std::memcpy(rec.first_key.data(), rv.mv_data, rec.first_key.size());
    rc = mdb_cursor_del(cur, 0);
    mdb_cursor_close(cur);
    if (rc != 0) {
      return MdbStatus(rc, "index delete");
    }
    return PutBlobLocked(txn, rec);
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index lookup");
  }
  BC_ASSIGN_OR_RETURN(uint64_t size, RemoveBlobLocked(txn, digest));
  removed->emplace_back(digest, size);
  return Status::Ok();
}

void LmdbStore::UnlinkBlobs(const std::vector<std::pair<Digest, uint64_t>>& removed) {
  for (const auto& [digest, size] : removed) {
    ::unlinkat(BlobDirFd(digest), digest.Hex().c_str(), 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Quota and eviction.

Status LmdbStore::Reserve(uint64_t n) {
  const uint64_t max = options_.max_bytes;
  if (max == 0) {
    std::lock_guard lock(quota_mu_);
    reserved_ += n;
    return Status::Ok();
  }
  if (n > max) {
    return ResourceExhausted("object larger than the store quota of " + std::to_string(max) +
                             " bytes");
  }
  auto try_reserve = [&](uint64_t* need) -> std::optional<Status> {
    std::lock_guard lock(quota_mu_);
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
    std::lock_guard evict_lock(evict_mu_);
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
  std::lock_guard lock(quota_mu_);
  reserved_ -= n;
}

Status LmdbStore::EvictAtLeast(uint64_t need, bool* evicted_any) {
  *evicted_any = false;
  std::vector<BlobInfo> evicted;
  // Recorded reads first, so the order is current.
  Status flushed = FlushAccessTimes();
  if (!flushed.ok()) {
    log::Warn("store access time flush failed", {{"error", flushed.ToString()}});
  }
  {
    std::lock_guard lock(write_mu_);
    WriteTxn txn(env_);
    BC_RETURN_IF_ERROR(txn.status());
    const uint64_t saved_bytes = index_bytes_;
    const uint64_t saved_atime = last_atime_;
    auto restore = [&](Status s) {
      index_bytes_ = saved_bytes;
      last_atime_ = saved_atime;
      log::Error("store eviction failed", {{"error", s.ToString()}});
      return s;
    };
    // Reads recorded since the flush above.
    Status s = ApplyTouchesLocked(txn.get(), kTouchesPerTxn);
    if (!s.ok()) {
      return restore(s);
    }
    std::vector<Digest> victims;
    {
      MDB_cursor* cur;
      int rc = mdb_cursor_open(txn.get(), dbs_->lru, &cur);
      if (rc != 0) {
        return restore(MdbStatus(rc, "cursor"));
      }
      uint64_t freed = 0;
      MDB_val k, v;
      for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && freed < need;
           rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        BlobRecord rec;
        if (GetBlobById(txn.get(), View(v), &rec) != 0) {
          continue;
        }
        victims.push_back(rec.digest);
        freed += rec.size;
      }
      mdb_cursor_close(cur);
    }
    std::vector<std::pair<Digest, uint64_t>> removed;
    for (const Digest& d : victims) {
      Result<uint64_t> size = RemoveBlobLocked(txn.get(), d);
      if (!size.ok()) {
        return restore(size.status());
      }
      removed.emplace_back(d, *size);
    }
    char b[8];
    PutLe64(b, index_bytes_);
    MDB_val mk = Val("bytes"), mv{8, b};
    if (int rc = mdb_put(txn.get(), dbs_->meta, &mk, &mv, 0); rc != 0) {
      return restore(MdbStatus(rc, "index put"));
    }
    s = txn.Commit();
    if (!s.ok()) {
      return restore(s);
    }
    UnlinkBlobs(removed);
    {
      std::lock_guard qlock(quota_mu_);
      bytes_ = index_bytes_;
    }
    uint64_t total = 0;
    for (const auto& [d, size] : removed) {
      evicted.push_back(BlobInfo{d, size});
      total += size;
      log::Debug("blob evicted", {{"digest", d.Hex()}, {"bytes", size}});
    }
    evictions_.fetch_add(removed.size());
    evicted_bytes_.fetch_add(total);
  }
  *evicted_any = !evicted.empty();
  if (options_.observer.on_evicted) {
    for (const BlobInfo& b : evicted) {
      options_.observer.on_evicted(b);
    }
  }
  return Status::Ok();
}

void LmdbStore::DropBad(const Digest& digest, uint64_t ino, bool missing) {
  uint64_t size = 0;
  {
    std::lock_guard lock(write_mu_);
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
    const uint64_t saved_bytes = index_bytes_;
    BlobRecord rec;
    if (GetBlob(txn.get(), digest, &rec) != 0) {
      return;  // already gone
    }
    Result<uint64_t> removed = RemoveBlobLocked(txn.get(), digest);
    char b[8];
    PutLe64(b, index_bytes_);
    MDB_val mk = Val("bytes"), mv{8, b};
    Status s = removed.status();
    if (s.ok()) {
      int rc = mdb_put(txn.get(), dbs_->meta, &mk, &mv, 0);
      s = rc == 0 ? txn.Commit() : MdbStatus(rc, "index put");
    }
    if (!s.ok()) {
      index_bytes_ = saved_bytes;
      log::Error("store drop failed", {{"digest", hex}, {"error", s.ToString()}});
      return;
    }
    size = *removed;
    if (exists) {
      ::unlinkat(BlobDirFd(digest), hex.c_str(), 0);
    }
    std::lock_guard qlock(quota_mu_);
    bytes_ = index_bytes_;
  }
  corrupt_dropped_.fetch_add(1);
  log::Warn("corrupt blob dropped", {{"digest", digest.Hex()},
                                     {"bytes", size},
                                     {"reason", missing ? "missing" : "content mismatch"}});
  if (options_.observer.on_corrupt) {
    options_.observer.on_corrupt(BlobInfo{digest, size});
  }
}

// ---------------------------------------------------------------------------------------------
// Background work.

Status LmdbStore::FlushAccessTimes() {
  // In bounded transactions: LMDB keeps every page a transaction dirties in memory until commit.
  // Only what is pending now, so that a steady stream of reads cannot keep this going.
  for (uint64_t todo = pending_touches_.load(); todo > 0 && pending_touches_.load() > 0;
       todo -= std::min<uint64_t>(todo, kTouchesPerTxn)) {
    std::lock_guard lock(write_mu_);
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
    TrimIndexPages();
  }
  return Status::Ok();
}

void LmdbStore::FlusherLoop() {
  using Clock = std::chrono::steady_clock;
  auto next_flush = Clock::now() + options_.flush_interval;
  std::unique_lock lock(flusher_mu_);
  while (!stopping_) {
    auto wait = std::min<Clock::duration>(kTrimCheckInterval, next_flush - Clock::now());
    flusher_cv_.wait_for(
        lock, wait, [&] { return stopping_ || pending_touches_.load() > kTouchFlushThreshold; });
    if (stopping_) {
      break;
    }
    lock.unlock();
    if (Clock::now() >= next_flush || pending_touches_.load() > kTouchFlushThreshold) {
      Status s = FlushAccessTimes();
      if (!s.ok()) {
        log::Warn("store access time flush failed", {{"error", s.ToString()}});
      }
      next_flush = Clock::now() + options_.flush_interval;
    }
    TrimIndexPages();
    lock.lock();
  }
}

uint64_t LmdbStore::ResidentFileBytes() {
  // statm: size resident shared ... (pages); "shared" is the resident file-backed pages.
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) {
    return 0;
  }
  unsigned long long size = 0, resident = 0, shared = 0;
  int n = std::fscanf(f, "%llu %llu %llu", &size, &resident, &shared);
  std::fclose(f);
  return n == 3 ? shared * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

void LmdbStore::TrimIndexPages() {
  if (options_.index_resident_limit_bytes == 0 || index_map_ == nullptr) {
    return;
  }
  uint64_t resident = ResidentFileBytes();
  if (resident <= resident_baseline_ + options_.index_resident_limit_bytes) {
    return;
  }
  // The map is read-only and file-backed (no MDB_WRITEMAP): dropping our page-table entries loses
  // nothing, later reads fault the pages back in from the page cache.
  if (::madvise(index_map_, index_map_len_, MADV_DONTNEED) != 0) {
    log::Warn("store index trim failed", {{"error", std::strerror(errno)}});
  }
}

void LmdbStore::FindIndexMap() {
  // LMDB does not expose its map address (mdb_env_info reports it only for MDB_FIXEDMAP); find
  // the shared mapping of data.mdb by inode. The map never moves: its size is fixed at Open.
  struct stat st;
  std::string path = options_.data_dir + "/index/data.mdb";
  if (::stat(path.c_str(), &st) != 0) {
    return;
  }
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    void* lo = nullptr;
    void* hi = nullptr;
    unsigned long long offset, inode;
    char perms[8], dev[32];
    if (std::sscanf(line.c_str(), "%p-%p %7s %llx %31s %llu", &lo, &hi, perms, &offset, dev,
                    &inode) != 6) {
      continue;
    }
    if (inode == st.st_ino && offset == 0 && perms[3] == 's') {
      index_map_ = lo;
      index_map_len_ = static_cast<uint64_t>(static_cast<char*>(hi) - static_cast<char*>(lo));
      return;
    }
  }
}

Result<ScrubReport> LmdbStore::Scrub() {
  ScrubReport report;
  std::optional<Digest> after;
  for (;;) {
    std::vector<std::pair<Digest, BlobRecord>> chunk;
    {
      ReadTxn txn(this);
      BC_RETURN_IF_ERROR(txn.status());
      MDB_cursor* cur;
      int rc = mdb_cursor_open(txn.get(), dbs_->blobs, &cur);
      if (rc != 0) {
        return MdbStatus(rc, "cursor");
      }
      MDB_val k, v;
      if (after) {
        k = Val(IdOf(*after));
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && View(k) == IdOf(*after)) {
          rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
      } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
      }
      for (; rc == 0 && chunk.size() < 1024; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        BlobRecord rec;
        if (DecodeRecord(k, v, &rec)) {
          chunk.emplace_back(rec.digest, rec);
        }
      }
      mdb_cursor_close(cur);
    }
    if (chunk.empty()) {
      break;
    }
    after = chunk.back().first;
    for (const auto& [digest, rec] : chunk) {
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
        uint64_t fp = Fingerprint(st, fingerprint_salt_);
        if (fp != rec.fingerprint) {
          RecordFingerprint(digest, fp);
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

}  // namespace buildcache::store
