#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agent/store/digest.h"
#include "common/status/status.h"

namespace buildcache::store {

// What the store knows about one blob.
struct BlobInfo {
  Digest digest;
  uint64_t size = 0;
};

// A readable, verified blob. Open() checks the content against the digest before returning (see
// BlobStore::Open), so every byte read here is verified content.
class BlobReader {
 public:
  virtual ~BlobReader() = default;
  virtual const BlobInfo& info() const = 0;
  // A file descriptor positioned-independently readable with pread/sendfile, or -1 when the
  // blob is not file-backed (memory store). Owned by the reader; valid until it is destroyed.
  virtual int fd() const = 0;
  // Reads up to buf.size() bytes at offset; returns 0 at the end.
  virtual Result<size_t> ReadAt(uint64_t offset, std::span<char> buf) = 0;
  // Where the bytes were when Open was called: "local", or "peer" when a replicating store
  // (agent/replication) fetched them from a peer agent to answer this Open. Front ends report it
  // as the response's source (X-Buildcache-Source), so peer hits are counted as such.
  virtual std::string_view origin() const { return "local"; }
};

struct WriteOptions {
  // When set, the content must hash to this digest or Commit fails with kDataLoss and nothing is
  // stored (Bazel CAS uploads, upstream artifacts with a known digest).
  std::optional<Digest> expected_digest;
  // When set, the content must be exactly this long (kDataLoss otherwise). The size is only
  // announced: it reserves no quota and evicts nothing (a writer reserves as its bytes arrive), but
  // an object that can never fit (larger than the quota, a WriteLimits cap or the free disk plus
  // what could be evicted) fails in NewWriter with kResourceExhausted before any byte is written.
  std::optional<uint64_t> expected_size;
  // Who is writing: the client's or peer's address (IP, without port), for the per-caller cap of
  // WriteLimits. Empty for the agent's own writes (upstream fetches), which are not capped.
  std::string caller;
  // Called by Commit once the content has matched expected_digest and expected_size, before it is
  // made durable and indexed: a caller that is handing the same bytes on (a peer pull streaming
  // to a client) can release them without waiting for the disk. Not called when Commit fails
  // verification. Runs on the committing thread.
  std::function<void()> on_verified;
  // false: Commit does not fsync this object's file before indexing it (the index and the blob
  // directory are still synced as the store's options say, shared with concurrent commits); the
  // kernel writes it back later. For reproducible content only (build-cache entries): a process
  // crash loses nothing that was committed, and after a machine crash the object may be absent
  // (a blob whose bytes did not reach the disk fails its re-hash on the first read after the
  // unclean stop and is dropped), never served wrong.
  bool sync_content = true;
};

// Streams one object into the store. Nothing is visible to readers until Commit succeeds. A
// writer destroyed without Commit removes its temporary data.
class BlobWriter {
 public:
  virtual ~BlobWriter() = default;
  // Appends bytes, reserving quota for exactly these bytes first (evicting least recently used
  // blobs if needed). Fails with kResourceExhausted when the quota cannot make room, a WriteLimits
  // cap would be exceeded or the disk is full; the writer is then unusable and holds no data.
  virtual Status Write(std::string_view data) = 0;
  // Makes the object durable and maps the writer's key to it. If the same content is already
  // stored, the existing blob is reused (one entry per digest).
  virtual Result<BlobInfo> Commit() = 0;
};

struct StoreStats {
  uint64_t bytes = 0;            // bytes of committed blobs
  uint64_t blobs = 0;            // committed blobs
  uint64_t keys = 0;             // keys mapped to blobs
  uint64_t max_bytes = 0;        // quota (0 = unlimited)
  uint64_t evictions = 0;        // blobs evicted since start
  uint64_t evicted_bytes = 0;    // bytes evicted since start
  uint64_t corrupt_dropped = 0;  // blobs dropped because their content no longer matched
  uint64_t reserved_bytes = 0;   // quota reserved by in-flight writers (bytes + this <= max_bytes)
};

// One page of BlobStore::ListKeys.
struct KeyListing {
  std::vector<std::string> keys;  // keys starting with the prefix (in the store's order)
  // Pass as `after` to continue; empty when the listing is complete.
  std::string next;
  // Keys the store holds but cannot name (an LmdbStore index written before key names were
  // recorded): never listed, whatever the prefix.
  uint64_t unnamed = 0;
};

// Called once per evicted or dropped blob (for metrics and replication bookkeeping).
struct StoreObserver {
  std::function<void(const BlobInfo&)> on_evicted;
  std::function<void(const BlobInfo&)> on_corrupt;
};

// A content-addressed blob store with a key -> digest index.
//
// Keys are opaque byte strings chosen by front ends (for example "httpcache/ab/cdef..." or
// "pypi/file/<name>"); several keys may map to the same blob. Blobs are evicted least recently
// used first (reads and writes count as use) when the byte quota would be exceeded. All methods
// are safe to call from any thread.
class BlobStore {
 public:
  virtual ~BlobStore() = default;

  // Starts writing an object for `key`. Committing replaces any previous mapping of the key.
  virtual Result<std::unique_ptr<BlobWriter>> NewWriter(std::string_view key,
                                                        const WriteOptions& options) = 0;

  // Opens the blob mapped to key, or kNotFound. If the blob's content no longer matches its
  // digest it is dropped (with every key mapping to it), counted, and kNotFound is returned.
  virtual Result<std::unique_ptr<BlobReader>> Open(std::string_view key) = 0;
  // Opens a blob by digest, with the same verification.
  virtual Result<std::unique_ptr<BlobReader>> OpenDigest(const Digest& digest) = 0;
  // Open and OpenDigest for a caller that only relays the bytes to a receiver which checks them
  // against info().digest itself (a peer agent: its store writer has the digest as
  // expected_digest, and a mismatch there is counted against the sender). The store may skip its
  // own hash of the content; the reader may then return bytes that do not match the digest.
  // Default: the verifying Open and OpenDigest.
  virtual Result<std::unique_ptr<BlobReader>> OpenForRelay(std::string_view key) {
    return Open(key);
  }
  virtual Result<std::unique_ptr<BlobReader>> OpenDigestForRelay(const Digest& digest) {
    return OpenDigest(digest);
  }

  // The blob mapped to key, without reading or verifying it; kNotFound if absent.
  virtual Result<BlobInfo> Stat(std::string_view key) = 0;
  virtual bool HasDigest(const Digest& digest) = 0;

  // Removes the key's mapping; the blob goes when no key maps to it. kNotFound if absent.
  virtual Status Delete(std::string_view key) = 0;

  // Moves a key: maps `to` to the blob `from` maps to (replacing what `to` mapped to) and removes
  // `from`, without copying the bytes, provided `from` maps to `digest`; kNotFound, changing
  // nothing, when it does not (absent, or remapped meanwhile). Readers see `to` mapped before
  // `from` is gone (a store may do both in one step). Durable like an unsynced write
  // (WriteOptions::sync_content = false): after a machine crash the move may be undone, never
  // half done. For a front end that verifies a staged object before publishing it under its
  // final key. The default copies the blob through NewWriter, then deletes `from`.
  virtual Status Rename(std::string_view from, std::string_view to, const Digest& digest);

  virtual StoreStats Stats() = 0;

  // Keys that start with `prefix`, at most `limit` (> 0) per call, resuming after a previous
  // call's `next` ("" = from the start). A page may hold fewer keys than `limit` (even none) and
  // still have a `next`: continue until `next` is empty. Keys mapped or removed between calls may
  // or may not be listed; deleting listed keys between calls does not disturb the listing.
  // kInvalidArgument for a bad `after`; the default (stores that cannot list) kFailedPrecondition.
  virtual Result<KeyListing> ListKeys(std::string_view prefix, std::string_view after,
                                      size_t limit);
};

// Convenience: writes a whole buffer under key.
Result<BlobInfo> PutBytes(BlobStore& store, std::string_view key, std::string_view data,
                          const WriteOptions& options = {});
// Convenience: reads a whole blob (tests and small objects only).
Result<std::string> ReadAll(BlobReader& reader);

// The inner reader with origin() reporting `origin` (a string literal: it must outlive the
// reader), e.g. "peer" for a blob a replicating store just pulled for this read.
std::unique_ptr<BlobReader> WithOrigin(std::unique_ptr<BlobReader> inner, std::string_view origin);

}  // namespace buildcache::store
