#include "agent/store/access_log.h"

#include <algorithm>

namespace buildcache::store {

uint64_t AccessLog::Record(const Digest& digest, int64_t now, uint64_t indexed_fingerprint,
                           bool* added) {
  Shard& shard = ShardOf(digest);
  MutexLock lock(shard.mu);
  auto [it, inserted] = shard.pending.try_emplace(digest);
  it->second.time = std::max(it->second.time, now);
  *added = inserted;
  if (inserted) {
    pending_.fetch_add(1);
  }
  return it->second.fingerprint != 0 ? it->second.fingerprint : indexed_fingerprint;
}

void AccessLog::RecordFingerprint(const Digest& digest, uint64_t fingerprint) {
  Shard& shard = ShardOf(digest);
  MutexLock lock(shard.mu);
  auto [it, inserted] = shard.pending.try_emplace(digest);
  it->second.fingerprint = fingerprint;
  if (inserted) {
    pending_.fetch_add(1);
  }
}

std::vector<std::pair<Digest, Touch>> AccessLog::Take(size_t limit) {
  std::vector<std::pair<Digest, Touch>> touches;
  if (pending_.load() == 0) {
    return touches;
  }
  for (Shard& shard : shards_) {
    if (touches.size() >= limit) {
      break;
    }
    MutexLock lock(shard.mu);
    while (!shard.pending.empty() && touches.size() < limit) {
      auto node = shard.pending.extract(shard.pending.begin());
      touches.emplace_back(node.key(), node.mapped());
    }
  }
  pending_.fetch_sub(touches.size());
  std::sort(touches.begin(), touches.end(),
            [](const auto& a, const auto& b) { return a.second.time < b.second.time; });
  return touches;
}

}  // namespace buildcache::store
