#pragma once

// Where a wheel build runs. WheelBuilder (wheel_builder.h) owns everything around a build: the
// queue, the records, copying the verified sdist out of the store, checking the wheel and listing
// it. A BuildRunner only runs the build: SandboxRunner (sandbox_runner.h) with a local
// interpreter in bubblewrap, PodRunner (pod_runner.h) in a builder pod the operator starts.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "agent/frontends/pypi/platform.h"
#include "common/status/status.h"

namespace buildcache::pypi {

// One configured builder: a local interpreter (python) or a builder image (image), never both.
struct BuilderSpec {
  std::string name;    // its identity in build keys and provenance
  std::string python;  // absolute path of a local interpreter ("" for an image builder)
  std::string image;   // the image of a pod builder ("" for a local one)
  // Probed (local) or declared (image).
  ClientPlatform platform;
  std::string tools;  // tool versions, e.g. "CPython 3.11.2; pip 23.0.1; setuptools 66.1.1"
  // Host paths the sandbox mounts read-only (the interpreter's prefix when outside /usr).
  std::vector<std::string> read_only_paths;

  bool pod() const { return !image.empty(); }
  // Whether its wheels fit `client`: the same implementation, Python minor version, OS, CPU and
  // libc family, and a libc no newer than the client's (pip tags its builds linux_<cpu>, which
  // any glibc would accept, so the builder must not link against a newer one).
  bool Serves(const ClientPlatform& client) const;
  // The provenance's builder: "name (platform)" for a local builder, "name (image)" for a pod.
  std::string Provenance() const;
};

// A verified upstream sdist in the store.
struct SdistRef {
  std::string project;  // normalized
  std::string version;
  std::string filename;
  std::string sha256;  // lowercase hex, as verified against the index
  std::string store_key;
};

// One build, as the runner gets it. The directories exist; the runner may write below scratch.
struct BuildTask {
  std::string id;  // 16 lowercase hex
  SdistRef sdist;
  const BuilderSpec* builder = nullptr;
  std::filesystem::path scratch;     // the build's own directory
  std::filesystem::path sdist_path;  // the sdist, copied out of the store and verified, in scratch
  std::filesystem::path out_dir;     // empty; a successful run leaves exactly one wheel here
  std::filesystem::path log;         // exists and is empty; the runner appends the build's output
  std::chrono::steady_clock::time_point deadline;
  // The agent's own simple index ("" before the agent listens: no build requirements are
  // downloaded and the builder's own environment is used).
  std::string index_url;
  uint64_t max_wheel_bytes = uint64_t{1} << 30;
  // Set when the agent stops: the run ends as soon as it can.
  const std::atomic<bool>* cancel = nullptr;
};

// Runs builds. The caller checks what the run left in out_dir (wheel_check.h, WheelFits) and
// stores it; a runner never touches the wheel house. Thread-safe: Run is called from every build
// worker at once.
class BuildRunner {
 public:
  virtual ~BuildRunner() = default;
  // OK when the build ended well (out_dir then holds what it produced, checked by the caller);
  // otherwise why it did not (the message goes into the build's record and log): kUnavailable
  // for a build that failed, kDeadlineExceeded past task.deadline, kCancelled on task.cancel.
  virtual Status Run(const BuildTask& task) = 0;
};

}  // namespace buildcache::pypi
