#include "agent/store/resident_trim.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "common/log/log.h"

namespace buildcache::store {

void ResidentTrimmer::Attach(const std::string& path, uint64_t limit_bytes) {
  limit_ = limit_bytes;
  FindMap(path);
  baseline_ = ResidentFileBytes();
}

void ResidentTrimmer::FindMap(const std::string& path) {
  struct stat st;
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
      map_ = lo;
      map_len_ = static_cast<uint64_t>(static_cast<char*>(hi) - static_cast<char*>(lo));
      return;
    }
  }
}

uint64_t ResidentTrimmer::ResidentFileBytes() {
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

void ResidentTrimmer::Trim() const {
  if (limit_ == 0 || map_ == nullptr) {
    return;
  }
  if (ResidentFileBytes() <= baseline_ + limit_) {
    return;
  }
  // The map is read-only and file-backed (no MDB_WRITEMAP): dropping our page-table entries loses
  // nothing, later reads fault the pages back in from the page cache.
  if (::madvise(map_, map_len_, MADV_DONTNEED) != 0) {
    log::Warn("store index trim failed", {{"error", std::strerror(errno)}});
  }
}

}  // namespace buildcache::store
