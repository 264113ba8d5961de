// The LMDB index of LmdbStore: its tables, the record codec, the meta keys and the typed
// operations on them. Knows nothing about blob files, quotas or locks: LmdbStore decides when a
// transaction runs and what happens to the files around it.
#pragma once

#include <lmdb.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/store/blob_store.h"
#include "agent/store/digest.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::store::lmdb_internal {

inline constexpr size_t kIdBytes = 8;
inline constexpr size_t kBlobValueBytes = 64;
inline constexpr size_t kIndexKeyBytes = 16;
// Bumped when the index layout changes incompatibly; an index of another format is refused. The
// "names" table (format 2 plus names) is compatible: an older index simply lacks names.
inline constexpr char kIndexFormat = 2;

// A "blobs" entry. Stored under the blob's id (the first 8 bytes of its digest) as 64 bytes: the
// rest of the digest, size, last access (its LRU key), the stat fingerprint of the file when its
// content was last verified (0 = never: the next Open hashes it), and one key mapping to the blob
// (the others, rare, are in "refs").
struct BlobRecord {
  Digest digest;
  uint64_t size = 0;
  uint64_t atime = 0;
  uint64_t fingerprint = 0;
  std::array<char, kIndexKeyBytes> first_key{};
};

// Blobs removed from the index in a transaction (digest, size): their files are unlinked once it
// commits.
using RemovedBlobs = std::vector<std::pair<Digest, uint64_t>>;

void PutLe64(char* p, uint64_t v);
uint64_t GetLe64(const char* p);
void PutBe64(char* p, uint64_t v);
uint64_t GetBe64(const char* p);

// A blob's id in the index: the first 8 bytes of its digest. Two stored digests sharing an id is
// refused at write time (p ~ n/2^64 per write: never in practice).
std::string_view IdOf(const Digest& d);

// The index's fixed-size stand-in for a key: the first 16 bytes of its SHA-256. Fixed-size, short
// index entries whatever the key length (front-end keys are often 70+ bytes), and any byte string
// is a valid key. Two keys colliding in 128 bits is not a practical concern (p < 1e-20 at 1e9
// keys), and even then the content served is verified against its own digest.
std::string IndexKey(std::string_view key);

std::array<char, kBlobValueBytes> EncodeRecord(const BlobRecord& r);
bool DecodeRecord(const MDB_val& id, const MDB_val& v, BlobRecord* r);

MDB_val Val(std::string_view s);
std::string_view View(const MDB_val& v);
// An LMDB return code as a Status (MDB_MAP_FULL is kResourceExhausted).
Status MdbStatus(int rc, std::string_view what);

// Creates and opens the LMDB environment in `dir`. NOTLS: read transactions are not tied to
// threads (pooled). NORDAHEAD: the index is read at random; readahead would only fill memory.
// NOMETASYNC without `sync`: one fdatasync per commit, and a machine crash loses at most the last
// transactions, never the database.
Result<MDB_env*> OpenEnv(const std::string& dir, uint64_t map_bytes, bool sync);

// A write transaction, aborted unless committed. The caller serialises write transactions.
class WriteTxn {
 public:
  explicit WriteTxn(MDB_env* env);
  ~WriteTxn();
  WriteTxn(const WriteTxn&) = delete;
  WriteTxn& operator=(const WriteTxn&) = delete;
  const Status& status() const { return status_; }
  MDB_txn* get() const { return txn_; }
  Status Commit();

 private:
  MDB_txn* txn_ = nullptr;
  Status status_;
};

// Read-only transactions, pooled (MDB_NOTLS): reset on release, renewed by the next reader.
class ReadTxnPool {
 public:
  explicit ReadTxnPool(MDB_env* env) : env_(env) {}
  // Aborts the pooled transactions; must run before the environment is closed.
  ~ReadTxnPool();
  Result<MDB_txn*> Begin() EXCLUDES(mu_);
  void End(MDB_txn* txn) EXCLUDES(mu_);

 private:
  MDB_env* const env_;
  Mutex mu_;
  std::vector<MDB_txn*> pool_ GUARDED_BY(mu_);
};

// A pooled read transaction for one scope.
class ReadTxn {
 public:
  explicit ReadTxn(ReadTxnPool& pool);
  ~ReadTxn();
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;
  const Status& status() const { return status_; }
  MDB_txn* get() const { return txn_; }

 private:
  ReadTxnPool& pool_;
  MDB_txn* txn_ = nullptr;
  Status status_;
};

// The tables and typed operations on them. Lookups return 0 with *rec filled, MDB_NOTFOUND, or an
// LMDB error; mutations return a Status. Methods taking a transaction work in a read or a write
// transaction as their name says (Put/Set/Remove/Unmap/Map need a write transaction).
//
//   keys   index key (16) -> blob id (8)
//   blobs  blob id (8) -> BlobRecord (64)
//   lru    big-endian last access (8, unique) -> blob id (8); oldest first
//   refs   blob id -> index keys (DUPFIXED), beyond the record's first_key
//   names  index key (16) -> the key's full name (written with its "keys" entry, removed with it;
//          keys written by a store older than this table have none: see LmdbStore::ListKeys)
//   meta   "format", "bytes", "clean", "salt"
class Index {
 public:
  // Opens (creating) the tables in a write transaction.
  Status Open(MDB_txn* txn);

  // GetBlobById may find another digest with the same id (callers compare rec->digest); GetBlob
  // finds only this digest; GetKey finds the blob a key maps to.
  int GetBlobById(MDB_txn* txn, std::string_view id, BlobRecord* rec) const;
  int GetBlob(MDB_txn* txn, const Digest& digest, BlobRecord* rec) const;
  int GetKey(MDB_txn* txn, std::string_view index_key, BlobRecord* rec) const;

  Status PutBlob(MDB_txn* txn, const BlobRecord& rec);
  Status PutLru(MDB_txn* txn, uint64_t atime, std::string_view id);
  // Moves the blob's LRU entry to `atime` and rewrites its record.
  Status SetAtime(MDB_txn* txn, BlobRecord* rec, uint64_t atime);
  // Maps index_key to the blob `id` and records the key's name (unless already recorded).
  Status MapKey(MDB_txn* txn, std::string_view index_key, std::string_view id,
                std::string_view name);
  // Records the key's name unless one is recorded.
  Status PutName(MDB_txn* txn, std::string_view index_key, std::string_view name);
  // Records index_key as a further key of the blob `id` (beyond its first_key).
  Status AddRef(MDB_txn* txn, std::string_view id, std::string_view index_key);
  // Removes a blob's entries (record, LRU entry, every key and its name); returns its size, 0 when
  // the blob is not indexed.
  Result<uint64_t> RemoveBlob(MDB_txn* txn, const Digest& digest);
  // Removes index_key (mapped to `digest`) and its name; the blob goes with its last key and is
  // then appended to *removed.
  Status UnmapKey(MDB_txn* txn, std::string_view index_key, const Digest& digest,
                  RemovedBlobs* removed);

  // Every blob record in id order, starting after `after` when set; fn returns false to stop.
  Status ScanBlobs(MDB_txn* txn, const std::optional<Digest>& after,
                   const std::function<bool(const BlobRecord&)>& fn) const;
  // The least recently used blobs whose sizes add up to at least `need` (or all).
  Status OldestBlobs(MDB_txn* txn, uint64_t need, std::vector<Digest>* victims) const;
  // The newest LRU entry's access time, 0 when empty.
  Result<uint64_t> LastAtime(MDB_txn* txn) const;
  // Keys whose name starts with `prefix`, in index order after the index key `after` (raw 16
  // bytes, "" = from the start), at most `limit` of them. Stops after scanning `scan_limit` names
  // even when fewer matched, so one call is bounded whatever the prefix.
  Result<KeyListing> ListNames(MDB_txn* txn, std::string_view prefix, std::string_view after,
                               size_t limit, size_t scan_limit) const;

  uint64_t KeyCount(MDB_txn* txn) const { return Entries(txn, keys_); }
  uint64_t BlobCount(MDB_txn* txn) const { return Entries(txn, blobs_); }
  uint64_t NameCount(MDB_txn* txn) const { return Entries(txn, names_); }

  // meta: Get returns 0 with *value (valid until the transaction ends), MDB_NOTFOUND or an error.
  int GetMeta(MDB_txn* txn, std::string_view name, std::string_view* value) const;
  Status PutMeta(MDB_txn* txn, std::string_view name, std::string_view value);
  Status PutMeta64(MDB_txn* txn, std::string_view name, uint64_t value);

 private:
  uint64_t Entries(MDB_txn* txn, MDB_dbi dbi) const;
  // Deletes index_key from keys (when it maps to `id`, or always when id is empty) and its name.
  Status DeleteKey(MDB_txn* txn, std::string_view index_key, std::string_view id);

  MDB_dbi keys_ = 0;
  MDB_dbi blobs_ = 0;
  MDB_dbi lru_ = 0;
  MDB_dbi refs_ = 0;
  MDB_dbi names_ = 0;
  MDB_dbi meta_ = 0;
};

}  // namespace buildcache::store::lmdb_internal
