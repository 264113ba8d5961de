#include "agent/store/fingerprint.h"

namespace buildcache::store {
namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  // splitmix64 finaliser over the running value: a change in any field changes the result.
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace

int64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return TimespecNs(ts);
}

int64_t TimespecNs(const timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

uint64_t FileFingerprint(const struct stat& st, uint64_t salt) {
  uint64_t h = Mix(salt, static_cast<uint64_t>(st.st_size));
  h = Mix(h, static_cast<uint64_t>(TimespecNs(st.st_mtim)));
  h = Mix(h, static_cast<uint64_t>(TimespecNs(st.st_ctim)));
  h = Mix(h, static_cast<uint64_t>(st.st_ino));
  return h == 0 ? 1 : h;
}

}  // namespace buildcache::store
