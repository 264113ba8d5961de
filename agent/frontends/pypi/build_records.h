#pragma once

// What the wheel builder remembers of a build (BuildRecord), and how records persist: one small
// JSON document per build in the agent's local store, so /pypi/builds/, the failure memory
// (pypi.buildFailureTtl) and the logs outlive a restart.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/store/blob_store.h"
#include "common/status/status.h"

namespace buildcache::pypi {

struct BuildRecord {
  std::string id;  // 16 hex digits, a hash of the key
  std::string project, version, sdist, sha256, builder, platform;
  // kInterrupted: the agent stopped (or crashed) while the build was queued or running; found so
  // when it started again. Not a failure: the next request builds again.
  enum class State { kQueued, kRunning, kSucceeded, kFailed, kInterrupted } state = State::kQueued;
  std::string error;  // why it failed
  std::string wheel;  // the stored wheel's file name
  double seconds = 0;
  // When it finished, on the builder's clock (WheelBuildOptions::now) and as wall-clock
  // milliseconds since the epoch (what persists; a restarted agent translates it back).
  std::chrono::steady_clock::time_point finished;
  int64_t finished_unix_ms = 0;

  bool done() const { return state != State::kQueued && state != State::kRunning; }
};
std::string_view BuildStateName(BuildRecord::State s);

// One record as JSON, and back. Decode checks the fields a record is keyed and served by (id:
// 16 hex digits, sha256: 64, a known state); kInvalidArgument otherwise. `finished` is not
// encoded (see finished_unix_ms).
std::string EncodeBuildRecord(const BuildRecord& record);
Result<BuildRecord> DecodeBuildRecord(std::string_view json);

// Records in `store` under `prefix` + id. The store must be the agent's local one: records are
// this agent's own history and are never replicated. Thread-safe as the store is.
class BuildRecordStore {
 public:
  BuildRecordStore(store::BlobStore& store, std::string prefix);

  // Writes (replaces) the record. Failures are logged, not returned: a record that did not
  // persist only costs a rebuild after a restart.
  void Save(const BuildRecord& record);
  void Remove(std::string_view id);
  // Every readable record; unreadable ones are logged and removed.
  std::vector<BuildRecord> LoadAll();

 private:
  std::string Key(std::string_view id) const;

  store::BlobStore& store_;
  const std::string prefix_;
};

}  // namespace buildcache::pypi
