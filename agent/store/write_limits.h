#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

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
  mutable std::mutex mu_;
  std::unordered_map<std::string, uint64_t> held_;  // guarded by mu_; no zero entries
};

}  // namespace buildcache::store
