#include "agent/store/lmdb_index.h"

#include <cstring>

namespace buildcache::store::lmdb_internal {
namespace {

// An open cursor, closed with the scope.
class Cursor {
 public:
  Cursor(MDB_txn* txn, MDB_dbi dbi) { rc_ = mdb_cursor_open(txn, dbi, &cur_); }
  ~Cursor() {
    if (rc_ == 0) mdb_cursor_close(cur_);
  }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  Status status() const { return rc_ == 0 ? Status::Ok() : MdbStatus(rc_, "cursor"); }
  MDB_cursor* get() const { return cur_; }

 private:
  MDB_cursor* cur_ = nullptr;
  int rc_ = 0;
};

// Positions `cur` on the first entry after key `after` ("" = the first entry).
int SeekAfter(MDB_cursor* cur, std::string_view after, MDB_val* k, MDB_val* v) {
  if (after.empty()) {
    return mdb_cursor_get(cur, k, v, MDB_FIRST);
  }
  *k = Val(after);
  int rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
  if (rc == 0 && View(*k) == after) {
    rc = mdb_cursor_get(cur, k, v, MDB_NEXT);
  }
  return rc;
}

}  // namespace

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

std::string_view IdOf(const Digest& d) { return d.raw().substr(0, kIdBytes); }

std::string IndexKey(std::string_view key) {
  Digest d = Digest::Of(key);
  return std::string(d.raw().substr(0, kIndexKeyBytes));
}

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

Result<MDB_env*> OpenEnv(const std::string& dir, uint64_t map_bytes, bool sync) {
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != 0) {
    return MdbStatus(rc, "create index env");
  }
  auto fail = [env](int rc, const std::string& what) {
    mdb_env_close(env);
    return MdbStatus(rc, what);
  };
  if ((rc = mdb_env_set_maxdbs(env, 8)) != 0) {
    return fail(rc, "set maxdbs");
  }
  if ((rc = mdb_env_set_maxreaders(env, 1024)) != 0) {
    return fail(rc, "set maxreaders");
  }
  if ((rc = mdb_env_set_mapsize(env, map_bytes)) != 0) {
    return fail(rc, "set mapsize");
  }
  unsigned flags = MDB_NOTLS | MDB_NORDAHEAD | (sync ? 0 : MDB_NOMETASYNC);
  if ((rc = mdb_env_open(env, dir.c_str(), flags, 0644)) != 0) {
    return fail(rc, "open index " + dir);
  }
  return env;
}

// ---------------------------------------------------------------------------------------------
// Transactions.

WriteTxn::WriteTxn(MDB_env* env) {
  int rc = mdb_txn_begin(env, nullptr, 0, &txn_);
  if (rc != 0) {
    txn_ = nullptr;
    status_ = MdbStatus(rc, "begin index write");
  }
}

WriteTxn::~WriteTxn() {
  if (txn_ != nullptr) {
    mdb_txn_abort(txn_);
  }
}

Status WriteTxn::Commit() {
  int rc = mdb_txn_commit(txn_);
  txn_ = nullptr;
  return rc == 0 ? Status::Ok() : MdbStatus(rc, "commit index");
}

ReadTxnPool::~ReadTxnPool() {
  MutexLock lock(mu_);
  for (MDB_txn* t : pool_) {
    mdb_txn_abort(t);
  }
  pool_.clear();
}

Result<MDB_txn*> ReadTxnPool::Begin() {
  MDB_txn* txn = nullptr;
  {
    MutexLock lock(mu_);
    if (!pool_.empty()) {
      txn = pool_.back();
      pool_.pop_back();
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

void ReadTxnPool::End(MDB_txn* txn) {
  mdb_txn_reset(txn);
  MutexLock lock(mu_);
  pool_.push_back(txn);
}

ReadTxn::ReadTxn(ReadTxnPool& pool) : pool_(pool) {
  Result<MDB_txn*> t = pool.Begin();
  if (t.ok()) {
    txn_ = *t;
  } else {
    status_ = t.status();
  }
}

ReadTxn::~ReadTxn() {
  if (txn_ != nullptr) {
    pool_.End(txn_);
  }
}

// ---------------------------------------------------------------------------------------------
// Tables.

Status Index::Open(MDB_txn* txn) {
  struct {
    const char* name;
    unsigned flags;
    MDB_dbi* dbi;
  } opens[] = {{"keys", 0, &keys_},   {"blobs", 0, &blobs_},
               {"lru", 0, &lru_},     {"refs", MDB_DUPSORT | MDB_DUPFIXED, &refs_},
               {"names", 0, &names_}, {"meta", 0, &meta_}};
  for (const auto& o : opens) {
    if (int rc = mdb_dbi_open(txn, o.name, o.flags | MDB_CREATE, o.dbi); rc != 0) {
      return MdbStatus(rc, std::string("open index table ") + o.name);
    }
  }
  return Status::Ok();
}

uint64_t Index::Entries(MDB_txn* txn, MDB_dbi dbi) const {
  MDB_stat st;
  return mdb_stat(txn, dbi, &st) == 0 ? st.ms_entries : 0;
}

int Index::GetBlobById(MDB_txn* txn, std::string_view id, BlobRecord* rec) const {
  MDB_val k = Val(id), v;
  int rc = mdb_get(txn, blobs_, &k, &v);
  if (rc != 0) {
    return rc;
  }
  return DecodeRecord(k, v, rec) ? 0 : MDB_CORRUPTED;
}

int Index::GetBlob(MDB_txn* txn, const Digest& digest, BlobRecord* rec) const {
  int rc = GetBlobById(txn, IdOf(digest), rec);
  if (rc == 0 && rec->digest != digest) {
    return MDB_NOTFOUND;
  }
  return rc;
}

int Index::GetKey(MDB_txn* txn, std::string_view index_key, BlobRecord* rec) const {
  MDB_val k = Val(index_key), v;
  int rc = mdb_get(txn, keys_, &k, &v);
  if (rc != 0) {
    return rc;
  }
  if (v.mv_size != kIdBytes) {
    return MDB_CORRUPTED;
  }
  return GetBlobById(txn, View(v), rec);
}

Status Index::PutBlob(MDB_txn* txn, const BlobRecord& rec) {
  auto enc = EncodeRecord(rec);
  MDB_val k = Val(IdOf(rec.digest)), v{enc.size(), enc.data()};
  int rc = mdb_put(txn, blobs_, &k, &v, 0);
  return rc == 0 ? Status::Ok() : MdbStatus(rc, "index put");
}

Status Index::PutLru(MDB_txn* txn, uint64_t atime, std::string_view id) {
  char key[8];
  PutBe64(key, atime);
  MDB_val k{8, key}, v = Val(id);
  // Access times only grow, so the entry goes at the end: APPEND keeps LRU pages full.
  int rc = mdb_put(txn, lru_, &k, &v, MDB_APPEND);
  if (rc == MDB_KEYEXIST) {
    rc = mdb_put(txn, lru_, &k, &v, 0);
  }
  return rc == 0 ? Status::Ok() : MdbStatus(rc, "index put");
}

Status Index::SetAtime(MDB_txn* txn, BlobRecord* rec, uint64_t atime) {
  char old[8];
  PutBe64(old, rec->atime);
  MDB_val ok{8, old};
  int rc = mdb_del(txn, lru_, &ok, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index delete");
  }
  rec->atime = atime;
  BC_RETURN_IF_ERROR(PutLru(txn, atime, IdOf(rec->digest)));
  return PutBlob(txn, *rec);
}

Status Index::MapKey(MDB_txn* txn, std::string_view index_key, std::string_view id,
                     std::string_view name) {
  MDB_val k = Val(index_key), v = Val(id);
  if (int rc = mdb_put(txn, keys_, &k, &v, 0); rc != 0) {
    return MdbStatus(rc, "index put");
  }
  return PutName(txn, index_key, name);
}

Status Index::PutName(MDB_txn* txn, std::string_view index_key, std::string_view name) {
  // The name of a key never changes: written once (also for a key an older store mapped without
  // one, the first time it is written again).
  MDB_val nk = Val(index_key), nv = Val(name);
  int rc = mdb_put(txn, names_, &nk, &nv, MDB_NOOVERWRITE);
  return rc == 0 || rc == MDB_KEYEXIST ? Status::Ok() : MdbStatus(rc, "index put");
}

Status Index::AddRef(MDB_txn* txn, std::string_view id, std::string_view index_key) {
  MDB_val k = Val(id), ref = Val(index_key);
  int rc = mdb_put(txn, refs_, &k, &ref, MDB_NODUPDATA);
  return rc == 0 || rc == MDB_KEYEXIST ? Status::Ok() : MdbStatus(rc, "index put");
}

Status Index::DeleteKey(MDB_txn* txn, std::string_view index_key, std::string_view id) {
  MDB_val kk = Val(index_key), kv;
  if (!id.empty() && !(mdb_get(txn, keys_, &kk, &kv) == 0 && View(kv) == id)) {
    return Status::Ok();  // mapped to another blob (or not at all)
  }
  int rc = mdb_del(txn, keys_, &kk, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index delete");
  }
  MDB_val nk = Val(index_key);
  rc = mdb_del(txn, names_, &nk, nullptr);
  return rc == 0 || rc == MDB_NOTFOUND ? Status::Ok() : MdbStatus(rc, "index delete");
}

Result<uint64_t> Index::RemoveBlob(MDB_txn* txn, const Digest& digest) {
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
  rc = mdb_del(txn, lru_, &lkv, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index delete");
  }

  std::vector<std::string> keys = {std::string(rec.first_key.data(), rec.first_key.size())};
  {
    Cursor cur(txn, refs_);
    BC_RETURN_IF_ERROR(cur.status());
    MDB_val rk = Val(id), rv;
    for (rc = mdb_cursor_get(cur.get(), &rk, &rv, MDB_SET); rc == 0;
         rc = mdb_cursor_get(cur.get(), &rk, &rv, MDB_NEXT_DUP)) {
      keys.emplace_back(View(rv));
    }
  }
  for (const std::string& key : keys) {
    BC_RETURN_IF_ERROR(DeleteKey(txn, key, id));
  }
  MDB_val rk = Val(id);
  rc = mdb_del(txn, refs_, &rk, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index delete");
  }
  MDB_val k = Val(id);
  if ((rc = mdb_del(txn, blobs_, &k, nullptr)) != 0) {
    return MdbStatus(rc, "index delete");
  }
  return rec.size;
}

Status Index::UnmapKey(MDB_txn* txn, std::string_view index_key, const Digest& digest,
                       RemovedBlobs* removed) {
  BC_RETURN_IF_ERROR(DeleteKey(txn, index_key, /*id=*/{}));
  BlobRecord rec;
  int rc = GetBlob(txn, digest, &rec);
  if (rc == MDB_NOTFOUND) {
    return Status::Ok();
  }
  if (rc != 0) {
    return MdbStatus(rc, "index lookup");
  }
  const std::string_view id = IdOf(digest);
  if (std::string_view(rec.first_key.data(), rec.first_key.size()) != index_key) {
    MDB_val dk = Val(id), ref = Val(index_key);
    rc = mdb_del(txn, refs_, &dk, &ref);
    return rc == 0 || rc == MDB_NOTFOUND ? Status::Ok() : MdbStatus(rc, "index delete");
  }
  // The record's own key goes: promote another key of the blob, or remove the blob.
  {
    Cursor cur(txn, refs_);
    BC_RETURN_IF_ERROR(cur.status());
    MDB_val rk = Val(id), rv;
    rc = mdb_cursor_get(cur.get(), &rk, &rv, MDB_SET);
    if (rc == 0 && rv.mv_size == rec.first_key.size()) {
      std::memcpy(rec.first_key.data(), rv.mv_data, rec.first_key.size());
      if ((rc = mdb_cursor_del(cur.get(), 0)) != 0) {
        return MdbStatus(rc, "index delete");
      }
      return PutBlob(txn, rec);
    }
  }
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return MdbStatus(rc, "index lookup");
  }
  BC_ASSIGN_OR_RETURN(uint64_t size, RemoveBlob(txn, digest));
  removed->emplace_back(digest, size);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Scans.

Status Index::ScanBlobs(MDB_txn* txn, const std::optional<Digest>& after,
                        const std::function<bool(const BlobRecord&)>& fn) const {
  Cursor cur(txn, blobs_);
  BC_RETURN_IF_ERROR(cur.status());
  MDB_val k, v;
  for (int rc = SeekAfter(cur.get(), after ? IdOf(*after) : std::string_view(), &k, &v); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    BlobRecord rec;
    if (DecodeRecord(k, v, &rec) && !fn(rec)) {
      break;
    }
  }
  return Status::Ok();
}

Status Index::OldestBlobs(MDB_txn* txn, uint64_t need, std::vector<Digest>* victims) const {
  Cursor cur(txn, lru_);
  BC_RETURN_IF_ERROR(cur.status());
  uint64_t freed = 0;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0 && freed < need;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    BlobRecord rec;
    if (GetBlobById(txn, View(v), &rec) != 0) {
      continue;
    }
    victims->push_back(rec.digest);
    freed += rec.size;
  }
  return Status::Ok();
}

Result<uint64_t> Index::LastAtime(MDB_txn* txn) const {
  Cursor cur(txn, lru_);
  BC_RETURN_IF_ERROR(cur.status());
  MDB_val k, v;
  if (mdb_cursor_get(cur.get(), &k, &v, MDB_LAST) == 0 && k.mv_size == 8) {
    return GetBe64(static_cast<const char*>(k.mv_data));
  }
  return uint64_t{0};
}

Result<KeyListing> Index::ListNames(MDB_txn* txn, std::string_view prefix, std::string_view after,
                                    size_t limit, size_t scan_limit) const {
  KeyListing out;
  Cursor cur(txn, names_);
  BC_RETURN_IF_ERROR(cur.status());
  MDB_val k, v;
  size_t scanned = 0;
  int rc = SeekAfter(cur.get(), after, &k, &v);
  for (; rc == 0; rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    if (out.keys.size() >= limit || scanned >= scan_limit) {
      break;  // more to come: resume after the last entry looked at
    }
    ++scanned;
    out.next = std::string(View(k));
    if (View(v).starts_with(prefix)) {
      out.keys.emplace_back(View(v));
    }
  }
  if (rc == MDB_NOTFOUND) {
    out.next.clear();  // the table ended
  } else if (rc != 0) {
    return MdbStatus(rc, "index scan");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Meta.

int Index::GetMeta(MDB_txn* txn, std::string_view name, std::string_view* value) const {
  MDB_val k = Val(name), v;
  int rc = mdb_get(txn, meta_, &k, &v);
  if (rc == 0) {
    *value = View(v);
  }
  return rc;
}

Status Index::PutMeta(MDB_txn* txn, std::string_view name, std::string_view value) {
  MDB_val k = Val(name), v = Val(value);
  int rc = mdb_put(txn, meta_, &k, &v, 0);
  return rc == 0 ? Status::Ok() : MdbStatus(rc, "write meta");
}

Status Index::PutMeta64(MDB_txn* txn, std::string_view name, uint64_t value) {
  char b[8];
  PutLe64(b, value);
  return PutMeta(txn, name, std::string_view(b, sizeof b));
}

}  // namespace buildcache::store::lmdb_internal
