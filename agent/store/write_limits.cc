#include "agent/store/write_limits.h"

#include <algorithm>

namespace buildcache::store {

Status CallerLedger::CheckAnnounced(std::string_view caller, uint64_t size) const {
  if (caller.empty()) {
    return Status::Ok();
  }
  if (limits_.max_writer_bytes > 0 && size > limits_.max_writer_bytes) {
    return ResourceExhausted("object of " + std::to_string(size) +
                             " bytes exceeds the per-writer in-flight limit of " +
                             std::to_string(limits_.max_writer_bytes) + " bytes");
  }
  if (limits_.max_caller_bytes > 0 && size > limits_.max_caller_bytes) {
    return ResourceExhausted("object of " + std::to_string(size) +
                             " bytes exceeds the per-client in-flight limit of " +
                             std::to_string(limits_.max_caller_bytes) + " bytes");
  }
  return Status::Ok();
}

Status CallerLedger::Add(std::string_view caller, uint64_t writer_total, uint64_t n) {
  if (caller.empty()) {
    return Status::Ok();
  }
  if (limits_.max_writer_bytes > 0 && writer_total > limits_.max_writer_bytes) {
    return ResourceExhausted("write exceeds the per-writer in-flight limit of " +
                             std::to_string(limits_.max_writer_bytes) + " bytes");
  }
  if (limits_.max_caller_bytes == 0) {
    return Status::Ok();
  }
  MutexLock lock(mu_);
  auto it = held_.find(std::string(caller));
  uint64_t now = it == held_.end() ? 0 : it->second;
  if (now + n > limits_.max_caller_bytes) {
    return ResourceExhausted("client " + std::string(caller) +
                             " already holds its in-flight write limit of " +
                             std::to_string(limits_.max_caller_bytes) + " bytes");
  }
  if (it == held_.end()) {
    held_.emplace(std::string(caller), n);
  } else {
    it->second += n;
  }
  return Status::Ok();
}

void CallerLedger::Remove(std::string_view caller, uint64_t n) {
  if (caller.empty() || limits_.max_caller_bytes == 0 || n == 0) {
    return;
  }
  MutexLock lock(mu_);
  auto it = held_.find(std::string(caller));
  if (it == held_.end()) {
    return;
  }
  it->second -= std::min(it->second, n);
  if (it->second == 0) {
    held_.erase(it);
  }
}

uint64_t CallerLedger::held(std::string_view caller) const {
  MutexLock lock(mu_);
  auto it = held_.find(std::string(caller));
  return it == held_.end() ? 0 : it->second;
}

Status CheckAnnouncedWrite(const CallerLedger& callers, uint64_t max_bytes, std::string_view caller,
                           std::optional<uint64_t> size) {
  if (!size) return Status::Ok();
  if (max_bytes > 0 && *size > max_bytes) {
    return ResourceExhausted("object of " + std::to_string(*size) +
                             " bytes is larger than the store quota of " +
                             std::to_string(max_bytes) + " bytes");
  }
  return callers.CheckAnnounced(caller, *size);
}

}  // namespace buildcache::store
