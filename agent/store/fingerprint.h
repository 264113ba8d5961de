// Stat fingerprints of LmdbStore's blob files (see VerifyReads): a file whose fingerprint still
// matches the one recorded when it was verified has not been written through the file system.
#pragma once

#include <sys/stat.h>
#include <time.h>

#include <cstdint>

namespace buildcache::store {

// Wall clock, nanoseconds since the epoch.
int64_t RealtimeNs();
int64_t TimespecNs(const timespec& ts);
// A salted hash of size, mtime, ctime and inode; never 0 (0 means "none recorded").
uint64_t FileFingerprint(const struct stat& st, uint64_t salt);

}  // namespace buildcache::store
