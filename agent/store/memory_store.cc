#include "agent/store/memory_store.h"

#include <cstring>
#include <utility>
#include <vector>

namespace buildcache::store {
namespace {

class MemoryReader : public BlobReader {
 public:
  MemoryReader(BlobInfo info, std::shared_ptr<const std::string> data)
      : info_(info), data_(std::move(data)) {}

  // BlobReader
  const BlobInfo& info() const override { return info_; }
  int fd() const override { return -1; }
  Result<size_t> ReadAt(uint64_t offset, std::span<char> buf) override {
    if (offset >= data_->size()) {
      return size_t{0};
    }
    size_t n = std::min<uint64_t>(buf.size(), data_->size() - offset);
    std::memcpy(buf.data(), data_->data() + offset, n);
    return n;
  }

 private:
  const BlobInfo info_;
  const std::shared_ptr<const std::string> data_;
};

void Notify(const std::function<void(const BlobInfo&)>& fn, const std::vector<BlobInfo>& blobs) {
  if (!fn) {
    return;
  }
  for (const BlobInfo& b : blobs) {
    fn(b);
  }
}

}  // namespace

class MemoryStore::Writer : public BlobWriter {
 public:
  Writer(MemoryStore* store, std::string key, WriteOptions options, uint64_t reserved)
      : store_(store), key_(std::move(key)), options_(options), reserved_(reserved) {}
  ~Writer() override {
    if (reserved_ > 0) {
      store_->Release(reserved_);
    }
    store_->callers_.Remove(options_.caller, caller_held_);
  }

  // BlobWriter
  Status Write(std::string_view data) override {
    if (done_) {
      return FailedPrecondition("writer already committed or failed");
    }
    uint64_t total = data_.size() + data.size();
    if (options_.expected_size && total > *options_.expected_size) {
      Fail();
      return DataLoss("content longer than expected_size " +
                      std::to_string(*options_.expected_size));
    }
    if (total > reserved_) {
      const uint64_t n = total - reserved_;
      if (Status s = store_->callers_.Add(options_.caller, total, n); !s.ok()) {
        Fail();
        return s;
      }
      caller_held_ += n;
      std::vector<BlobInfo> evicted;
      Status s = store_->Reserve(n, &evicted);
      Notify(store_->options_.observer.on_evicted, evicted);
      if (!s.ok()) {
        Fail();
        return s;
      }
      reserved_ = total;
    }
    data_.append(data);
    hash_.Update(data);
    return Status::Ok();
  }

  Result<BlobInfo> Commit() override {
    if (done_) {
      return FailedPrecondition("writer already committed or failed");
    }
    Digest digest = hash_.Finish();
    if (options_.expected_size && data_.size() != *options_.expected_size) {
      Fail();
      return DataLoss("content is " + std::to_string(data_.size()) + " bytes, expected " +
                      std::to_string(*options_.expected_size));
    }
    if (options_.expected_digest && digest != *options_.expected_digest) {
      Fail();
      return DataLoss("content digest " + digest.Hex() + " does not match expected " +
                      options_.expected_digest->Hex());
    }
    if (options_.on_verified) {
      options_.on_verified();
    }
    done_ = true;
    store_->callers_.Remove(options_.caller, std::exchange(caller_held_, 0));
    uint64_t reserved = std::exchange(reserved_, 0);
    return store_->CommitBlob(key_, digest, std::move(data_), reserved);
  }

 private:
  void Fail() {
    done_ = true;
    data_.clear();
    data_.shrink_to_fit();
    if (reserved_ > 0) {
      store_->Release(std::exchange(reserved_, 0));
    }
    store_->callers_.Remove(options_.caller, std::exchange(caller_held_, 0));
  }

  MemoryStore* const store_;
  const std::string key_;
  const WriteOptions options_;
  uint64_t reserved_;
  std::string data_;
  uint64_t caller_held_ = 0;  // bytes counted against options_.caller in store_->callers_
  Sha256 hash_;
  bool done_ = false;
};

MemoryStore::MemoryStore(MemoryStoreOptions options)
    : options_(std::move(options)), callers_(options_.limits) {}
MemoryStore::~MemoryStore() = default;

Result<std::unique_ptr<BlobWriter>> MemoryStore::NewWriter(std::string_view key,
                                                           const WriteOptions& options) {
  BC_RETURN_IF_ERROR(
      CheckAnnouncedWrite(callers_, options_.max_bytes, options.caller, options.expected_size));
  return std::unique_ptr<BlobWriter>(std::make_unique<Writer>(this, std::string(key), options, 0));
}

Status MemoryStore::Reserve(uint64_t n, std::vector<BlobInfo>* evicted) {
  MutexLock lock(mu_);
  const uint64_t max = options_.max_bytes;
  if (max == 0) {
    reserved_ += n;
    return Status::Ok();
  }
  if (n > max || reserved_ + n > max) {
    return ResourceExhausted("object does not fit in the store quota of " + std::to_string(max) +
                             " bytes");
  }
  while (bytes_ + reserved_ + n > max && !lru_.empty()) {
    auto it = blobs_.find(lru_.front());
    evicted->push_back(BlobInfo{it->first, it->second.size});
    ++evictions_;
    evicted_bytes_ += it->second.size;
    RemoveBlobLocked(it);
  }
  if (bytes_ + reserved_ + n > max) {
    return ResourceExhausted("store quota of " + std::to_string(max) +
                             " bytes is held by in-flight writes");
  }
  reserved_ += n;
  return Status::Ok();
}

void MemoryStore::Release(uint64_t n) {
  MutexLock lock(mu_);
  reserved_ -= n;
}

BlobInfo MemoryStore::CommitBlob(std::string_view key, const Digest& digest, std::string data,
                                 uint64_t reserved) {
  MutexLock lock(mu_);
  reserved_ -= reserved;
  auto it = blobs_.find(digest);
  if (it == blobs_.end()) {
    Blob blob;
    blob.size = data.size();
    blob.data = std::make_shared<const std::string>(std::move(data));
    blob.lru = lru_.insert(lru_.end(), digest);
    bytes_ += blob.size;
    it = blobs_.emplace(digest, std::move(blob)).first;
  } else {
    Touch(it->second);
  }
  auto k = keys_.find(key);
  if (k == keys_.end() || k->second != digest) {
    if (k != keys_.end()) {
      UnmapKeyLocked(key);
    }
    keys_.emplace(std::string(key), digest);
    it->second.keys.emplace(key);
  }
  return BlobInfo{digest, it->second.size};
}

Result<std::unique_ptr<BlobReader>> MemoryStore::Open(std::string_view key) {
  Digest digest;
  {
    MutexLock lock(mu_);
    auto k = keys_.find(key);
    if (k == keys_.end()) {
      return NotFound("no such key");
    }
    digest = k->second;
  }
  return OpenBlob(digest, /*not_found=*/"no such key");
}

Result<std::unique_ptr<BlobReader>> MemoryStore::OpenDigest(const Digest& digest) {
  return OpenBlob(digest, "no such blob");
}

Result<std::unique_ptr<BlobReader>> MemoryStore::OpenBlob(const Digest& digest,
                                                          std::string_view not_found) {
  std::shared_ptr<const std::string> data;
  BlobInfo info;
  {
    MutexLock lock(mu_);
    auto it = blobs_.find(digest);
    if (it == blobs_.end()) {
      return NotFound(std::string(not_found));  // deleted or evicted since the key lookup
    }
    Touch(it->second);
    data = it->second.data;
    info = BlobInfo{digest, it->second.size};
  }
  // Hash outside the lock; the bytes are immutable and kept alive by `data`.
  if (data->size() == info.size && Digest::Of(*data) == digest) {
    return std::unique_ptr<BlobReader>(std::make_unique<MemoryReader>(info, std::move(data)));
  }
  bool dropped = false;
  {
    MutexLock lock(mu_);
    auto it = blobs_.find(digest);
    if (it != blobs_.end() && it->second.data == data) {
      RemoveBlobLocked(it);
      ++corrupt_dropped_;
      dropped = true;
    }
  }
  if (dropped && options_.observer.on_corrupt) {
    options_.observer.on_corrupt(info);
  }
  return NotFound("blob content does not match its digest; dropped");
}

Result<BlobInfo> MemoryStore::Stat(std::string_view key) {
  MutexLock lock(mu_);
  auto k = keys_.find(key);
  if (k == keys_.end()) {
    return NotFound("no such key");
  }
  return BlobInfo{k->second, blobs_.at(k->second).size};
}

bool MemoryStore::HasDigest(const Digest& digest) {
  MutexLock lock(mu_);
  return blobs_.contains(digest);
}

Status MemoryStore::Delete(std::string_view key) {
  MutexLock lock(mu_);
  if (!keys_.contains(key)) {
    return NotFound("no such key");
  }
  UnmapKeyLocked(key);
  return Status::Ok();
}

Status MemoryStore::Rename(std::string_view from, std::string_view to, const Digest& digest) {
  MutexLock lock(mu_);
  auto f = keys_.find(from);
  if (f == keys_.end() || f->second != digest) {
    return NotFound("no such key with that digest");
  }
  if (from == to) {
    return Status::Ok();
  }
  auto it = blobs_.find(digest);
  Touch(it->second);
  auto k = keys_.find(to);
  if (k == keys_.end() || k->second != digest) {
    if (k != keys_.end()) {
      UnmapKeyLocked(to);
    }
    keys_.emplace(std::string(to), digest);
    it->second.keys.emplace(to);
  }
  UnmapKeyLocked(from);
  return Status::Ok();
}

StoreStats MemoryStore::Stats() {
  MutexLock lock(mu_);
  StoreStats s;
  s.bytes = bytes_;
  s.blobs = blobs_.size();
  s.keys = keys_.size();
  s.max_bytes = options_.max_bytes;
  s.evictions = evictions_;
  s.evicted_bytes = evicted_bytes_;
  s.corrupt_dropped = corrupt_dropped_;
  s.reserved_bytes = reserved_;
  return s;
}

Result<KeyListing> MemoryStore::ListKeys(std::string_view prefix, std::string_view after,
                                         size_t limit) {
  if (limit == 0) {
    return InvalidArgument("list keys: limit must be above 0");
  }
  MutexLock lock(mu_);
  // Keys are ordered: the matches are one range, and `next` is the last key listed.
  auto it = keys_.lower_bound(prefix);
  if (!after.empty() && after >= prefix) {
    it = keys_.upper_bound(after);
  }
  KeyListing out;
  for (; it != keys_.end() && it->first.starts_with(prefix); ++it) {
    if (out.keys.size() == limit) {
      out.next = out.keys.back();
      break;
    }
    out.keys.push_back(it->first);
  }
  return out;
}

Status MemoryStore::CorruptForTest(const Digest& digest, uint64_t offset) {
  MutexLock lock(mu_);
  auto it = blobs_.find(digest);
  if (it == blobs_.end()) {
    return NotFound("no such blob");
  }
  std::string bytes = *it->second.data;
  if (bytes.empty()) {
    bytes.push_back('x');
  } else {
    bytes[offset % bytes.size()] ^= 0x01;
  }
  it->second.data = std::make_shared<const std::string>(std::move(bytes));
  return Status::Ok();
}

void MemoryStore::RemoveBlobLocked(std::unordered_map<Digest, Blob, DigestHash>::iterator it) {
  for (const std::string& key : it->second.keys) {
    auto k = keys_.find(key);
    if (k != keys_.end() && k->second == it->first) {
      keys_.erase(k);
    }
  }
  lru_.erase(it->second.lru);
  bytes_ -= it->second.size;
  blobs_.erase(it);
}

void MemoryStore::UnmapKeyLocked(std::string_view key) {
  auto k = keys_.find(key);
  auto it = blobs_.find(k->second);
  keys_.erase(k);
  auto ki = it->second.keys.find(key);
  it->second.keys.erase(ki);
  if (it->second.keys.empty()) {
    RemoveBlobLocked(it);
  }
}

void MemoryStore::Touch(Blob& blob) { lru_.splice(lru_.end(), lru_, blob.lru); }

}  // namespace buildcache::store
