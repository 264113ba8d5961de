#pragma once

// Runs one wheel build (or a builder probe) as a child process with a deadline, in a sandbox.
//
// The sandbox is bubblewrap (Debian's `bubblewrap`, /usr/bin/bwrap): new user, PID, network,
// IPC, UTS and cgroup namespaces; no network at all (only a loopback device); the build runs
// as uid/gid 65534 on a read-only /usr (plus the builder's own read-only paths), with a fresh
// /tmp, /proc and /dev, an empty environment except PATH, HOME, TMPDIR and LANG, and one
// writable scratch directory mounted at /build. Nothing else of the host (the agent's data
// directory, /root, /etc beyond the loader cache and alternatives, credentials) is visible. It
// dies with the agent (--die-with-parent). bubblewrap rather than hand-made user namespaces:
// it is packaged, small, audited setuid-free code that gets mounts, /proc and the namespace
// corner cases right, and it runs unprivileged where user namespaces are allowed.
//
// kNone runs the command directly (tests, and hosts where the operator accepts the risk): the
// environment is still emptied and the deadline and output bound still apply.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/status/status.h"

namespace buildcache::pypi {

enum class Sandbox { kBubblewrap, kNone };

struct SandboxRun {
  Sandbox sandbox = Sandbox::kBubblewrap;
  std::string bwrap = "/usr/bin/bwrap";
  // Host paths mounted read-only at the same place (e.g. the interpreter's prefix when it is
  // not under /usr). Paths that do not exist are skipped.
  std::vector<std::string> read_only_paths;
  // The writable scratch directory; the command sees it as /build (kBubblewrap) or as itself
  // (kNone). Use ScratchPath to name files inside it for the command.
  std::filesystem::path scratch;
  std::vector<std::string> argv;
  // stdout and stderr go to this file (created; truncated unless append_log).
  std::filesystem::path log;
  bool append_log = false;
  // Keep the host's network (bubblewrap --share-net): only for downloading a build's requirements
  // as wheels from the agent's own index, a step that runs no code of the sdist.
  bool network = false;
  // The command and everything it started are killed at the deadline.
  std::chrono::milliseconds deadline{std::chrono::minutes(10)};
  // Largest file the command may write (RLIMIT_FSIZE; the log included).
  uint64_t max_file_bytes = uint64_t{1} << 30;
  // Checked while waiting; when set the command is killed (agent shutdown).
  const std::atomic<bool>* cancel = nullptr;
};

struct SandboxResult {
  int exit_code = -1;  // when it exited
  int signal = 0;      // when a signal ended it
  bool timed_out = false;
  bool cancelled = false;
  bool ok() const { return exit_code == 0 && !timed_out && !cancelled; }
  std::string Describe() const;
};

// Where `host` (a path inside run.scratch) is seen by the command.
std::string ScratchPath(const SandboxRun& run, const std::filesystem::path& host);

// Runs the command and waits for it (at most run.deadline). An error only when it could not be
// started (no bwrap, fork failure); a failing command is a SandboxResult.
Result<SandboxResult> RunSandboxed(const SandboxRun& run);

}  // namespace buildcache::pypi
