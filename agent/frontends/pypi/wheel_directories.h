#pragma once

// pypi.wheelDirectories, watched: each directory is scanned again every interval (a bounded
// rescan rather than inotify: pip's cache keeps wheels four hashed directory levels deep, which
// would need a watch per directory created under the pods' feet and a full rescan after every
// queue overflow anyway; a walk of a few thousand entries every few seconds costs little, works
// on every file system a hostPath can be, and a missed event cannot leave a wheel unlisted).
//
// A *.whl file (any depth, regular, reached without a symbolic link) is indexed once its size and
// modification time held still from one scan to the next (or it was last modified an interval
// or more ago; files there at the directory's first scan are read at once), so a file being
// written is not read; it must then read as a sound wheel of the
// project and version its name gives (WheelHouse::AddFile with check_archive). A file that
// fails is logged ("pypi wheel skipped", with the reason) and tried again only when it changes.
// A file indexed by this watcher that disappears (or changes) is unlisted (WheelHouse::Unlist);
// wheels of the same name from elsewhere (an upload, a build) are left alone. A missing
// directory is logged once and looked for again at every scan.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/frontends/pypi/wheel_house.h"
#include "common/base/thread_annotations.h"

namespace buildcache::pypi {

struct WheelDirectoryOptions {
  std::vector<std::filesystem::path> dirs;
  std::chrono::milliseconds interval{std::chrono::seconds(5)};
  // Scan on a thread of its own (the first scan before the constructor returns). false: only
  // Step scans (tests).
  bool thread = true;
};

struct WheelDirectoryScan {
  uint64_t added = 0;    // indexed in this scan
  uint64_t removed = 0;  // unlisted in this scan
  uint64_t waiting = 0;  // seen, not yet still (or changed): looked at again next scan
  uint64_t failed = 0;   // skipped: links, bad names, unsound wheels (logged)
};

class WheelDirectoryWatcher {
 public:
  // The wheel house must outlive the watcher.
  WheelDirectoryWatcher(WheelHouse& house, WheelDirectoryOptions options);
  ~WheelDirectoryWatcher();

  // One scan of every directory. Thread-compatible with itself (the thread or a test calls it).
  WheelDirectoryScan Step() EXCLUDES(mu_);

 private:
  struct Seen {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    enum class State { kWaiting, kIndexed, kFailed } state = State::kWaiting;
    std::string project, filename, sha256;  // kIndexed
  };
  using Files = std::map<std::string, Seen>;  // by path relative to the directory
  // first: the directory's first scan (what is there is read at once).
  void ScanOne(const std::filesystem::path& dir, Files& files, bool first,
               WheelDirectoryScan& scan);
  void Loop() EXCLUDES(mu_);

  WheelHouse& house_;
  const WheelDirectoryOptions options_;
  std::map<std::string, Files> dirs_;    // only Step touches it
  std::map<std::string, bool> missing_;  // directories logged as missing
  std::set<std::string> scanned_;        // directories scanned (present) at least once
  Mutex mu_;
  CondVar cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace buildcache::pypi
