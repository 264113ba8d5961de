#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "agent/store/blob_store.h"
#include "agent/store/write_limits.h"
#include "common/base/thread_annotations.h"

namespace buildcache::store {

struct MemoryStoreOptions {
  // Byte quota for committed blobs plus in-flight writes; 0 = unlimited.
  uint64_t max_bytes = 0;
  StoreObserver observer;
  // Caps on the quota in-flight writers may hold, per writer and per caller.
  WriteLimits limits;
};

// A BlobStore that keeps everything in memory: for tests, and for front ends that need a store
// without a disk. Same contract as every BlobStore (quota, LRU eviction, dedup, verification on
// Open). Open hashes the blob on every call, so it is meant for small data sets.
//
// Thread-safe. Readers own a reference to the bytes they opened and stay valid after the blob is
// evicted or deleted and after the store is destroyed. Writers must be destroyed before the store.
class MemoryStore : public BlobStore {
 public:
  explicit MemoryStore(MemoryStoreOptions options = {});
  ~MemoryStore() override;

  // BlobStore
  Result<std::unique_ptr<BlobWriter>> NewWriter(std::string_view key,
                                                const WriteOptions& options) override;
  Result<std::unique_ptr<BlobReader>> Open(std::string_view key) override;
  Result<std::unique_ptr<BlobReader>> OpenDigest(const Digest& digest) override;
  Result<BlobInfo> Stat(std::string_view key) override;
  bool HasDigest(const Digest& digest) override;
  Status Delete(std::string_view key) override;
  Status Rename(std::string_view from, std::string_view to, const Digest& digest) override;
  StoreStats Stats() override;
  // In key order; `next` is the last key listed.
  Result<KeyListing> ListKeys(std::string_view prefix, std::string_view after,
                              size_t limit) override;

  // Test hook: flips one bit of the stored blob's bytes at `offset` (modulo its size; appends a
  // byte to an empty blob) so the next Open sees corrupt content. kNotFound if absent.
  Status CorruptForTest(const Digest& digest, uint64_t offset = 0);

 private:
  class Writer;
  friend class Writer;

  struct Blob {
    std::shared_ptr<const std::string> data;
    uint64_t size = 0;  // the committed size; `data` may differ after CorruptForTest
    std::set<std::string, std::less<>> keys;
    std::list<Digest>::iterator lru;  // position in lru_ (front = least recently used)
  };

  // Reserves n quota bytes for an in-flight write, evicting least recently used blobs as needed.
  // On success the caller owns n bytes of reserved_. Evicted blobs are appended to *evicted.
  Status Reserve(uint64_t n, std::vector<BlobInfo>* evicted) EXCLUDES(mu_);
  void Release(uint64_t n) EXCLUDES(mu_);
  // Commits content under key; `reserved` bytes of reservation are consumed or released.
  BlobInfo CommitBlob(std::string_view key, const Digest& digest, std::string data,
                      uint64_t reserved) EXCLUDES(mu_);
  // Opens and verifies a blob (hashing outside the lock); kNotFound with `not_found` when absent.
  Result<std::unique_ptr<BlobReader>> OpenBlob(const Digest& digest, std::string_view not_found)
      EXCLUDES(mu_);
  // Removes a blob and every key mapping to it.
  void RemoveBlobLocked(std::unordered_map<Digest, Blob, DigestHash>::iterator it) REQUIRES(mu_);
  void UnmapKeyLocked(std::string_view key) REQUIRES(mu_);
  void Touch(Blob& blob) REQUIRES(mu_);

  const MemoryStoreOptions options_;
  CallerLedger callers_;
  Mutex mu_;
  std::map<std::string, Digest, std::less<>> keys_ GUARDED_BY(mu_);
  std::unordered_map<Digest, Blob, DigestHash> blobs_ GUARDED_BY(mu_);
  std::list<Digest> lru_ GUARDED_BY(mu_);
  uint64_t bytes_ GUARDED_BY(mu_) = 0;
  uint64_t reserved_ GUARDED_BY(mu_) = 0;
  uint64_t evictions_ GUARDED_BY(mu_) = 0;
  uint64_t evicted_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t corrupt_dropped_ GUARDED_BY(mu_) = 0;
};

}  // namespace buildcache::store
