// LmdbStore: reads (Open, Stat, HasDigest, Stats, ListKeys) and the verification of blob files.
// The rest of the class is in lmdb_store.cc and lmdb_store_recovery.cc.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "agent/store/fingerprint.h"
#include "agent/store/lmdb_index.h"
#include "agent/store/lmdb_store.h"

namespace buildcache::store {

using lmdb_internal::BlobRecord;
using lmdb_internal::IndexKey;
using lmdb_internal::MdbStatus;
using lmdb_internal::ReadTxn;

namespace {

constexpr size_t kVerifyBufferBytes = 1 << 20;

// ListKeys' cursor: the hex of a 16-byte index key (through Digest's hex codec, zero-padded).
std::string CursorFromIndexKey(std::string_view index_key) {
  std::array<uint8_t, 32> bytes{};
  std::memcpy(bytes.data(), index_key.data(), std::min(index_key.size(), bytes.size()));
  return Digest(bytes).Hex().substr(0, 2 * index_key.size());
}

std::optional<std::string> IndexKeyFromCursor(std::string_view cursor) {
  if (cursor.size() != 2 * lmdb_internal::kIndexKeyBytes) {
    return std::nullopt;
  }
  std::optional<Digest> d = Digest::FromHex(std::string(cursor) + std::string(cursor.size(), '0'));
  if (!d) {
    return std::nullopt;
  }
  return std::string(d->raw().substr(0, lmdb_internal::kIndexKeyBytes));
}

}  // namespace

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
    ReadTxn txn(*read_pool_);
    BC_RETURN_IF_ERROR(txn.status());
    int rc = index_->GetKey(txn.get(), ik, &rec);
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
    ReadTxn txn(*read_pool_);
    BC_RETURN_IF_ERROR(txn.status());
    int rc = index_->GetBlob(txn.get(), digest, &rec);
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
  uint64_t fp = FileFingerprint(st, fingerprint_salt_);
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
    access_log_.RecordFingerprint(digest, fp);
  }
  return std::unique_ptr<BlobReader>(std::make_unique<Reader>(BlobInfo{digest, rec.size}, fd));
}

bool LmdbStore::Trusted(const struct stat& st, int64_t before_stat) const {
  return before_stat - TimespecNs(st.st_ctim) > racy_window_.count();
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

Result<BlobInfo> LmdbStore::Stat(std::string_view key) {
  std::string ik = IndexKey(key);
  ReadTxn txn(*read_pool_);
  BC_RETURN_IF_ERROR(txn.status());
  BlobRecord rec;
  int rc = index_->GetKey(txn.get(), ik, &rec);
  if (rc == MDB_NOTFOUND) {
    return NotFound("no such key");
  }
  if (rc != 0) {
    return MdbStatus(rc, "index lookup");
  }
  return BlobInfo{rec.digest, rec.size};
}

bool LmdbStore::HasDigest(const Digest& digest) {
  ReadTxn txn(*read_pool_);
  if (!txn.status().ok()) {
    return false;
  }
  BlobRecord rec;
  return index_->GetBlob(txn.get(), digest, &rec) == 0;
}

StoreStats LmdbStore::Stats() {
  StoreStats s;
  s.max_bytes = options_.max_bytes;
  s.evictions = evictions_.load();
  s.evicted_bytes = evicted_bytes_.load();
  s.corrupt_dropped = corrupt_dropped_.load();
  {
    MutexLock lock(quota_mu_);
    s.bytes = bytes_;
    s.reserved_bytes = reserved_;
  }
  ReadTxn txn(*read_pool_);
  if (txn.status().ok()) {
    s.keys = index_->KeyCount(txn.get());
    s.blobs = index_->BlobCount(txn.get());
  }
  return s;
}

Result<KeyListing> LmdbStore::ListKeys(std::string_view prefix, std::string_view after,
                                       size_t limit) {
  if (limit == 0) {
    return InvalidArgument("list keys: limit must be above 0");
  }
  std::string start;
  if (!after.empty()) {
    std::optional<std::string> ik = IndexKeyFromCursor(after);
    if (!ik) {
      return InvalidArgument("list keys: bad cursor (a previous listing's next)");
    }
    start = std::move(*ik);
  }
  ReadTxn txn(*read_pool_);
  BC_RETURN_IF_ERROR(txn.status());
  BC_ASSIGN_OR_RETURN(KeyListing page,
                      index_->ListNames(txn.get(), prefix, start, limit, kListScanLimit));
  if (!page.next.empty()) {
    page.next = CursorFromIndexKey(page.next);
  }
  const uint64_t keys = index_->KeyCount(txn.get());
  const uint64_t names = index_->NameCount(txn.get());
  page.unnamed = keys > names ? keys - names : 0;
  return page;
}

}  // namespace buildcache::store
