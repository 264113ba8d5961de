#pragma once

// The wheel builder: when a pip or uv client on a known platform downloads a verified upstream
// sdist and the wheel house has no wheel for it, the agent builds one in the background with a
// configured local interpreter, in a sandbox (build_sandbox.h), checks it (wheel_check.h) and
// lists it in the wheel house with its provenance. The client that asked still gets the sdist it
// chose; the next one gets the wheel.
//
// Where a build runs is a BuildRunner (build_runner.h): the local sandbox for builders with a
// python, WheelBuildOptions::pod_runner for builders with an image.
//
// One build per (sdist sha256, builder identity, builder platform): requests for a build that
// is queued or running share it (deduplicated); a failed build is remembered for failure_ttl
// (its log stays readable) and not tried again before; a build over its deadline is killed.
//
// Records persist (WheelBuildOptions::records_store, build_records.h): a restarted agent lists
// the builds it remembers, still refuses a remembered failure within failure_ttl and serves its
// log; a build that was queued or running when the agent stopped is listed as interrupted (and
// built again on the next request). Where a build runs in a cluster (the sdist's owner) is
// decided above this class (PypiFrontend); this class runs the builds it is given.

#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/frontends/pypi/build_records.h"
#include "agent/frontends/pypi/build_runner.h"
#include "agent/frontends/pypi/build_sandbox.h"
#include "agent/frontends/pypi/platform.h"
#include "agent/frontends/pypi/sandbox_runner.h"
#include "agent/frontends/pypi/wheel_house.h"
#include "agent/store/blob_store.h"
#include "common/base/thread_annotations.h"
#include "common/metrics/metrics.h"
#include "common/status/status.h"

namespace buildcache::pypi {

// Runs `python` once in the sandbox (run: sandbox, bwrap, read_only_paths; run.scratch must be
// an existing empty directory) to learn its platform and tool versions. kFailedPrecondition
// when it does not run or is no CPython/PyPy on a known libc.
Result<BuilderSpec> ProbeBuilder(std::string name, std::string python, SandboxRun run);

// Null members are not counted.
struct WheelBuildMetrics {
  metrics::Counter* started = nullptr;
  metrics::Counter* succeeded = nullptr;
  metrics::Counter* failed = nullptr;
  metrics::Counter* deduplicated = nullptr;
  metrics::Histogram* seconds = nullptr;
};

struct WheelBuildOptions {
  std::vector<BuilderSpec> builders;
  // Scratch directories and build logs are kept below it (created).
  std::filesystem::path work_dir;
  Sandbox sandbox = Sandbox::kBubblewrap;
  std::string bwrap = "/usr/bin/bwrap";
  // Runs the builds of builders with an image (pod_runner.h); required when there are any.
  std::shared_ptr<BuildRunner> pod_runner;
  std::chrono::milliseconds deadline{std::chrono::minutes(15)};
  // How long a failed build is remembered (not tried again).
  std::chrono::milliseconds failure_ttl{std::chrono::hours(1)};
  size_t workers = 1;
  size_t max_queue = 64;  // requests beyond it are dropped (counted as not started)
  uint64_t max_wheel_bytes = uint64_t{1} << 30;
  size_t max_records = 1000;  // finished builds kept for Builds() and Log()
  // Where records persist (the agent's local store, never a replicating one), under
  // records_prefix + id; null: in memory only.
  store::BlobStore* records_store = nullptr;
  std::string records_prefix = "pypi/builds/";
  // Called on a worker thread after a build finished (its record final, its wheel listed when it
  // succeeded); must not call back into the builder. Used to tell the peers that asked for it.
  std::function<void(const BuildRecord&)> on_finished;
  WheelBuildMetrics metrics;
  std::function<std::chrono::steady_clock::time_point()> now = [] {
    return std::chrono::steady_clock::now();
  };
};

enum class BuildDecision {
  kStarted,         // queued
  kDeduplicated,    // the same build is queued or running
  kFailedRecently,  // it failed less than failure_ttl ago
  kNoBuilder,       // no builder serves the client's platform
  kQueueFull,
};
std::string_view BuildDecisionName(BuildDecision d);

class WheelBuilder {
 public:
  // The store and wheel house must outlive the builder.
  WheelBuilder(store::BlobStore& store, WheelHouse& house, WheelBuildOptions options);
  // Kills running builds and joins the workers.
  ~WheelBuilder();

  // Queues a build of sdist for client's platform, or joins the one queued or running. *id
  // (optional) is set to the build's id whenever a builder serves the platform.
  BuildDecision Request(const SdistRef& sdist, const ClientPlatform& client,
                        std::string* id = nullptr) EXCLUDES(mu_);

  // Queued, running and remembered builds (by id).
  std::vector<BuildRecord> Builds() const EXCLUDES(mu_);
  // The log of a build (its output, then the agent's verdict), at most max_bytes from its end.
  Result<std::string> Log(std::string_view id, size_t max_bytes = size_t{1} << 20) const
      EXCLUDES(mu_);
  // The agent's own simple index ("http://127.0.0.1:PORT/pypi/simple/"), known once it listens.
  // Builds started after it is set download their build requirements through it and build with
  // build isolation; before (and in tests that never set it) they use the builder's own
  // environment (--no-build-isolation).
  void SetIndexUrl(std::string url) EXCLUDES(mu_);

  // Waits until nothing is queued or running (tests). False on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout) EXCLUDES(mu_);

 private:
  struct Job {
    std::string id;
    SdistRef sdist;
    ClientPlatform client;
    const BuilderSpec* builder;
  };
  void Worker() EXCLUDES(mu_);
  // Runs one build (its runner, then StoreWheel); the wheel's file name, or why it failed.
  Result<std::string> Build(const Job& job, const std::filesystem::path& log);
  // Copies the sdist out of the store to `sdist`, checked against its digest.
  Status CopySdist(const Job& job, const std::filesystem::path& sdist);
  std::string IndexUrl() const EXCLUDES(mu_);
  Result<std::string> StoreWheel(const Job& job, const std::filesystem::path& out_dir);
  void Finish(const Job& job, const Result<std::string>& result, double seconds) EXCLUDES(mu_);
  void ForgetOldestRecords() REQUIRES(mu_);
  // Loads the persisted records at start; queued and running ones become interrupted.
  void LoadRecords() EXCLUDES(mu_);
  void SaveRecord(const BuildRecord& record);
  std::filesystem::path LogPath(std::string_view id) const;

  store::BlobStore& store_;
  WheelHouse& house_;
  const WheelBuildOptions options_;
  SandboxRunner local_runner_;
  std::unique_ptr<BuildRecordStore> record_store_;  // null without options.records_store
  std::atomic<bool> stopping_{false};

  mutable Mutex mu_;
  CondVar changed_;
  std::deque<Job> queue_ GUARDED_BY(mu_);
  size_t running_ GUARDED_BY(mu_) = 0;
  std::map<std::string, BuildRecord, std::less<>> records_ GUARDED_BY(mu_);
  std::string index_url_ GUARDED_BY(mu_);
  std::vector<std::thread> workers_;
};

}  // namespace buildcache::pypi
