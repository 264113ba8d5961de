#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::store {

// Caps on what in-flight writes may hold of a store's quota. A writer reserves quota only as its
// bytes arrive (an announced size reserves nothing), so what it holds is what it has written and
// not yet committed; these caps bound that per writer and per caller (WriteOptions::caller), so
// one client cannot hold or evict the whole store with a few slow or oversized uploads.
struct WriteLimits {
  // Most bytes one writer may hold in flight; 0 = only the quota bounds it.
  uint64_t max_writer_bytes = 0;
  // Most bytes all writers of one caller may hold in flight together; 0 = no per-caller cap.
  // Both caps apply only to writers with a caller (WriteOptions::caller): the agent's own writes
  // (upstream fetches, which it chose to make) are bounded by the quota alone.
  uint64_t max_caller_bytes = 0;
};

// The per-caller bookkeeping behind WriteLimits, shared by every BlobStore implementation.
// Thread-safe.
class CallerLedger {
 public:
  explicit CallerLedger(WriteLimits limits) : limits_(limits) {}

  const WriteLimits& limits() const { return limits_; }

  // Whether an object of `size` bytes (an announced size) could ever be written by this caller
  // under the caps; kResourceExhausted naming the cap otherwise. Reserves nothing.
  Status CheckAnnounced(std::string_view caller, uint64_t size) const;

  // Adds n bytes to the caller's in-flight total, for a writer that will then hold
  // `writer_total` bytes. kResourceExhausted (nothing added) when either cap would be exceeded.
  Status Add(std::string_view caller, uint64_t writer_total, uint64_t n);
  // Returns n bytes a writer of this caller held (committed or discarded).
  void Remove(std::string_view caller, uint64_t n);

  // Bytes the caller holds in flight now (tests).
  uint64_t held(std::string_view caller) const;

 private:
  const WriteLimits limits_;
  mutable Mutex mu_;
  std::unordered_map<std::string, uint64_t> held_ GUARDED_BY(mu_);  // no zero entries
};

// What a BlobStore's NewWriter checks before it creates anything: an announced `size` (nullopt:
// none) must fit the store quota `max_bytes` (0: no quota) and the caller's caps;
// kResourceExhausted naming the limit otherwise. Reserves and evicts nothing: a client could
// announce the whole quota and send nothing.
Status CheckAnnouncedWrite(const CallerLedger& callers, uint64_t max_bytes, std::string_view caller,
                           std::optional<uint64_t> size);

}  // namespace buildcache::store
