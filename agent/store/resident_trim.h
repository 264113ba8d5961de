// Linux only: keeps a read-only, file-backed shared mapping (LmdbStore's index map) from counting
// towards the process's RSS. Pages of it the process has read stay mapped although they are clean
// page cache the kernel can drop at any time; above a limit, Trim unmaps them from the process
// (madvise DONTNEED; later reads fault them back in from the page cache).
#pragma once

#include <cstdint>
#include <string>

namespace buildcache::store {

class ResidentTrimmer {
 public:
  // Finds the shared mapping of `path` at offset 0 in /proc/self/maps (LMDB does not expose its
  // map address) and records the current file-backed RSS (the binary and its libraries) as the
  // baseline. Without such a mapping, or with limit_bytes 0, Trim does nothing. The mapping must
  // not move while this is in use (LMDB's map size is fixed at open).
  void Attach(const std::string& path, uint64_t limit_bytes);
  // Unmaps the mapping's pages from the process when file-backed RSS exceeds baseline + limit.
  void Trim() const;
  // Resident file-backed bytes of this process (/proc/self/statm), 0 when unknown.
  static uint64_t ResidentFileBytes();

 private:
  void FindMap(const std::string& path);

  void* map_ = nullptr;
  uint64_t map_len_ = 0;
  uint64_t baseline_ = 0;
  uint64_t limit_ = 0;
};

}  // namespace buildcache::store
