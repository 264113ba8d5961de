#include "agent/frontends/pypi/wheel_directories.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "common/log/log.h"

namespace buildcache::pypi {
namespace {

namespace fsys = std::filesystem;

int64_t MtimeNs(const struct stat& st) {
  return int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

WheelDirectoryWatcher::WheelDirectoryWatcher(WheelHouse& house, WheelDirectoryOptions options)
    : house_(house), options_(std::move(options)) {
  if (!options_.thread) return;
  Step();
  thread_ = std::thread([this] { Loop(); });
}

WheelDirectoryWatcher::~WheelDirectoryWatcher() {
  {
    MutexLock lock(mu_);
    stop_ = true;
    cv_.NotifyAll();
  }
  if (thread_.joinable()) thread_.join();
}

void WheelDirectoryWatcher::Loop() {
  for (;;) {
    {
      MutexLock lock(mu_);
      const auto until = std::chrono::steady_clock::now() + options_.interval;
      while (!stop_ && cv_.WaitUntil(mu_, until)) {
      }
      if (stop_) return;
    }
    Step();
  }
}

WheelDirectoryScan WheelDirectoryWatcher::Step() {
  WheelDirectoryScan total;
  for (const fsys::path& dir : options_.dirs) {
    const bool first = scanned_.insert(dir.string()).second;
    WheelDirectoryScan scan;
    ScanOne(dir, dirs_[dir.string()], first, scan);
    if (first || scan.added > 0 || scan.removed > 0 || scan.failed > 0) {
      log::Info("pypi wheel scan done", {{"dir", dir.string()},
                                         {"added", scan.added},
                                         {"removed", scan.removed},
                                         {"waiting", scan.waiting},
                                         {"failed", scan.failed}});
    }
    total.added += scan.added;
    total.removed += scan.removed;
    total.waiting += scan.waiting;
    total.failed += scan.failed;
  }
  return total;
}

void WheelDirectoryWatcher::ScanOne(const fsys::path& dir, Files& files, bool first,
                                    WheelDirectoryScan& scan) {
  int root_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const int open_errno = errno;
  bool& was_missing = missing_[dir.string()];
  if (root_fd < 0) {
    if (!was_missing) {
      log::Warn("wheel directory not indexed",
                {{"dir", dir.string()}, {"error", ErrnoStatus(open_errno, "opening").ToString()}});
    }
    was_missing = true;
    // Its wheels stay listed: a directory that went away for a moment (a remount) should not
    // unlist everything; files removed from a directory that exists are unlisted.
    return;
  }
  was_missing = false;
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{root_fd};
  const int64_t now_ns = NowNs();
  const int64_t settle_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.interval).count();
  std::set<std::string> present;
  std::error_code ec;
  auto it =
      fsys::recursive_directory_iterator(dir, fsys::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fsys::recursive_directory_iterator(); it.increment(ec)) {
    const std::string filename = it->path().filename().string();
    const std::string rel = it->path().lexically_relative(dir).string();
    std::error_code link_ec;
    if (it->is_symlink(link_ec)) {
      // Pods write these directories: a link (to a file or a directory) is never followed. A
      // file swapped for one is unlisted.
      Seen& seen = files[rel];
      if (seen.state == Seen::State::kIndexed && !seen.sha256.empty() &&
          house_.Unlist(seen.project, seen.filename, seen.sha256).ok()) {
        ++scan.removed;
      }
      if (seen.state != Seen::State::kFailed) {
        log::Warn("pypi wheel skipped",
                  {{"path", it->path().string()}, {"error", "a symbolic link; not followed"}});
        ++scan.failed;
      }
      seen = Seen{};
      seen.state = Seen::State::kFailed;
      present.insert(rel);
      continue;
    }
    if (!filename.ends_with(".whl")) continue;
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    present.insert(rel);
    Seen& seen = files[rel];
    const bool same = seen.size == static_cast<uint64_t>(st.st_size) &&
                      seen.mtime_ns == MtimeNs(st) && seen.state != Seen::State::kWaiting;
    if (same) continue;  // indexed or failed, unchanged
    // What is there when the agent starts is read at once (as the one-time scan at start did): a
    // file still being written then fails the soundness check and is read again when it changes.
    const bool still =
        first || (seen.size == static_cast<uint64_t>(st.st_size) && seen.mtime_ns == MtimeNs(st)) ||
        now_ns - MtimeNs(st) >= settle_ns;
    if (seen.state == Seen::State::kIndexed && !seen.sha256.empty() &&
        house_.Unlist(seen.project, seen.filename, seen.sha256).ok()) {
      ++scan.removed;  // changed since it was indexed: the old content is no longer there
    }
    seen.size = static_cast<uint64_t>(st.st_size);
    seen.mtime_ns = MtimeNs(st);
    seen.state = Seen::State::kWaiting;
    if (!still) {
      ++scan.waiting;
      continue;
    }
    auto added = house_.AddFile(root_fd, rel, /*check_archive=*/true);
    if (added.ok() || added.status().code() == StatusCode::kAlreadyExists) {
      seen.state = Seen::State::kIndexed;
      if (added.ok()) {
        seen.project = ParseWheelFilename(filename)->project();
        seen.filename = filename;
        seen.sha256 = added->sha256;
        ++scan.added;
      } else {
        seen.sha256.clear();  // another wheel holds the name: nothing of ours to unlist
      }
      continue;
    }
    seen.state = Seen::State::kFailed;
    ++scan.failed;
    log::Warn("pypi wheel skipped",
              {{"path", it->path().string()}, {"error", added.status().ToString()}});
  }
  if (ec) {
    log::Warn("pypi wheel scan error", {{"dir", dir.string()}, {"error", ec.message()}});
    return;  // an incomplete walk unlists nothing
  }
  for (auto f = files.begin(); f != files.end();) {
    if (present.contains(f->first)) {
      ++f;
      continue;
    }
    if (f->second.state == Seen::State::kIndexed && !f->second.sha256.empty()) {
      if (house_.Unlist(f->second.project, f->second.filename, f->second.sha256).ok()) {
        ++scan.removed;
      }
    }
    f = files.erase(f);
  }
}

}  // namespace buildcache::pypi
