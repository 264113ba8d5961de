#include "agent/dircache/directory_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "agent/dircache/beneath.h"
#include "agent/dircache/ignore.h"
#include "common/log/log.h"

namespace buildcache::dircache {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kDirMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE |
                              IN_MODIFY | IN_DELETE_SELF | IN_EXCL_UNLINK;

int64_t Ns(const struct timespec& ts) { return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec; }

int64_t NowUnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Join(const std::string& dir, std::string_view name) {
  if (dir.empty()) {
    return std::string(name);
  }
  std::string out = dir;
  out += '/';
  out += name;
  return out;
}

// Closes a file descriptor when it goes out of scope.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return ErrnoStatus(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// Copies a stored blob into fd: a reflink where the file system shares blocks (no second copy
// of the bytes on disk), else an in-kernel copy, else read/write.
Status CopyBlob(store::BlobReader& reader, int out) {
  uint64_t size = reader.info().size;
  int in = reader.fd();
  if (in >= 0) {
    if (::ioctl(out, FICLONE, in) == 0) {
      return Status::Ok();
    }
    loff_t in_off = 0;
    loff_t out_off = 0;
    bool kernel_copy = true;
    while (static_cast<uint64_t>(in_off) < size) {
      ssize_t n = ::copy_file_range(in, &in_off, out, &out_off, size - in_off, 0);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        if (in_off == 0 && n < 0 &&
            (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
          kernel_copy = false;
          break;
        }
        return n < 0 ? ErrnoStatus(errno, "copy_file_range")
                     : DataLoss("stored blob shorter than its size");
      }
    }
    if (kernel_copy) {
      return Status::Ok();
    }
  }
  std::vector<char> buf(1 << 20);
  uint64_t off = 0;
  while (off < size) {
    BC_ASSIGN_OR_RETURN(size_t n, reader.ReadAt(off, std::span<char>(buf)));
    if (n == 0) {
      return DataLoss("stored blob shorter than its size");
    }
    BC_RETURN_IF_ERROR(WriteAll(out, std::string_view(buf.data(), n)));
    off += n;
  }
  return Status::Ok();
}

// Some file systems leave d_type unknown; symlinks to directories are not followed.
bool IsDir(DIR* d, const struct dirent* de) {
  if (de->d_type != DT_UNKNOWN) {
    return de->d_type == DT_DIR;
  }
  struct stat st;
  return ::fstatat(::dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

// Opens a directory beneath the root for reading its entries; nullptr (errno set) when it is
// gone, is not a directory, or a component on the way is a symlink.
DIR* OpenDirBeneath(int root_fd, const std::string& rel) {
  int fd = OpenBeneath(root_fd, rel, O_RDONLY | O_DIRECTORY);
  if (fd < 0) {
    errno = -fd;
    return nullptr;
  }
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    ::close(fd);
    errno = err;
  }
  return d;
}

Result<store::Digest> HashFileAt(int dir_fd, const std::string& name) {
  Fd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (fd.fd < 0) {
    return ErrnoStatus(errno, name);
  }
  const std::string& path = name;
  store::Sha256 sha;
  std::vector<char> buf(1 << 20);
  while (true) {
    ssize_t n = ::read(fd.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return ErrnoStatus(errno, path);
    }
    if (n == 0) {
      break;
    }
    sha.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  return sha.Finish();
}

}  // namespace

// How often changed deletions are written to the store while the watcher runs.
constexpr std::chrono::seconds kTombstoneSaveInterval{5};

Result<std::unique_ptr<DirectoryCache>> DirectoryCache::Open(DirectoryCacheOptions options,
                                                             store::BlobStore& store,
                                                             DirCacheObserver observer) {
  if (options.name.empty()) {
    return InvalidArgument("directory cache: empty name");
  }
  if (options.root.empty() || options.root.front() != '/') {
    return InvalidArgument("directory cache " + options.name + ": path must be absolute");
  }
  while (options.root.size() > 1 && options.root.back() == '/') {
    options.root.pop_back();
  }
  if (::mkdir(options.root.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, "directory cache " + options.name + ": " + options.root);
  }
  // The root itself is configuration (it may be reached through a link); everything below it is
  // resolved beneath this descriptor.
  UniqueFd root_fd(::open(options.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd.valid()) {
    return errno == ENOTDIR ? FailedPrecondition(options.root + ": not a directory")
                            : ErrnoStatus(errno, options.root);
  }
  struct stat st;
  if (::fstat(root_fd.get(), &st) != 0) {
    return ErrnoStatus(errno, options.root);
  }
  if ((st.st_mode & 07777) != options.dir_mode && st.st_uid == ::geteuid()) {
    if (::fchmod(root_fd.get(), options.dir_mode) != 0) {
      log::Warn(
          "directory cache mode not set",
          {{"directory", options.name}, {"path", options.root}, {"error", std::strerror(errno)}});
    }
  }
  std::unique_ptr<DirectoryCache> cache(
      new DirectoryCache(std::move(options), store, std::move(observer)));
  cache->root_fd_ = root_fd.release();
  cache->LoadTombstones();
  return cache;
}

// One line per remembered deletion, oldest first: the digest in hex, a tab, the path (paths are
// safe relative paths: no newline).
void DirectoryCache::LoadTombstones() {
  auto reader = store_.Open(TombstonesKey());
  if (!reader.ok()) {
    return;  // none yet, or evicted: nothing remembered
  }
  auto text = store::ReadAll(**reader);
  if (!text.ok()) {
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::string_view rest = *text;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    size_t tab = line.find('\t');
    if (tab == std::string_view::npos) {
      continue;
    }
    auto digest = store::Digest::FromHex(line.substr(0, tab));
    std::string path(line.substr(tab + 1));
    if (!digest || !IsSafeRelativePath(path)) {
      continue;
    }
    auto key = std::make_pair(std::move(path), *digest);
    if (tombstones_.insert(key).second) {
      tombstone_order_.push_back(std::move(key));
    }
  }
  while (tombstone_order_.size() > options_.max_tombstones) {
    tombstones_.erase(tombstone_order_.front());
    tombstone_order_.pop_front();
  }
  if (!tombstone_order_.empty()) {
    log::Info("directory cache deletions remembered",
              {{"directory", options_.name}, {"count", tombstone_order_.size()}});
  }
}

void DirectoryCache::SaveTombstones() {
  std::string text;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!tombstones_dirty_) {
      return;
    }
    tombstones_dirty_ = false;
    for (const auto& [path, digest] : tombstone_order_) {
      text += digest.Hex() + "\t" + path + "\n";
    }
  }
  auto saved = store::PutBytes(store_, TombstonesKey(), text);
  if (!saved.ok()) {
    log::Warn("directory cache deletions not saved",
              {{"directory", options_.name}, {"error", saved.status().ToString()}});
    std::lock_guard<std::mutex> lock(mu_);
    tombstones_dirty_ = true;  // tried again later
  }
}

DirectoryCache::DirectoryCache(DirectoryCacheOptions options, store::BlobStore& store,
                               DirCacheObserver observer)
    : options_(std::move(options)), store_(store), observer_(std::move(observer)) {
  generation_ = static_cast<uint64_t>(NowUnixMicros());
}

DirectoryCache::~DirectoryCache() {
  Stop();
  if (root_fd_ >= 0) {
    ::close(root_fd_);
  }
}

Status DirectoryCache::Start() {
  if (watcher_.joinable()) {
    return FailedPrecondition("directory cache already started");
  }
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    return ErrnoStatus(errno, "inotify_init1");
  }
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    return ErrnoStatus(errno, "eventfd");
  }
  // Watches first, then the walk: a file written between the two is seen by one or the other.
  AddWatchTree("", /*discover_files=*/false);
  Rescan();
  watcher_ = std::thread([this] { WatchLoop(); });
  log::Info("directory cache watching",
            {{"directory", options_.name},
             {"path", options_.root},
             {"max_bytes", options_.max_size},
             {"settle_ms", static_cast<int64_t>(options_.settle.count())}});
  return Status::Ok();
}

void DirectoryCache::Stop() {
  stopping_ = true;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
  if (watcher_.joinable()) {
    watcher_.join();
  }
  SaveTombstones();
  if (inotify_fd_ >= 0) {
    ::close(inotify_fd_);
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
  }
  inotify_fd_ = -1;
  wake_fd_ = -1;
}

std::string DirectoryCache::Abs(const std::string& rel) const {
  return rel.empty() ? options_.root : options_.root + "/" + rel;
}

std::string DirectoryCache::StoreKey(const std::string& rel) const {
  return "dir/" + options_.name + "/" + rel;
}

bool DirectoryCache::StatFile(const std::string& rel, Fingerprint* fp, int64_t* last_use_ms,
                              uint32_t* mode) {
  struct stat st;
  if (StatBeneath(root_fd_, rel, &st) != 0 || !S_ISREG(st.st_mode)) {
    return false;
  }
  FromStat(st, fp, last_use_ms, mode);
  return true;
}

void DirectoryCache::FromStat(const struct stat& st, Fingerprint* fp, int64_t* last_use_ms,
                              uint32_t* mode) {
  fp->size = static_cast<uint64_t>(st.st_size);
  fp->mtime_ns = Ns(st.st_mtim);
  fp->ctime_ns = Ns(st.st_ctim);
  fp->ino = st.st_ino;
  if (last_use_ms) {
    *last_use_ms = std::max(Ns(st.st_atim), Ns(st.st_mtim)) / 1'000'000;
  }
  if (mode) {
    *mode = st.st_mode & 07777;
  }
}

uint64_t DirectoryCache::NextGenerationLocked() {
  generation_ = std::max(generation_ + 1, static_cast<uint64_t>(NowUnixMicros()));
  return generation_;
}

void DirectoryCache::BumpGenerationLocked(const std::string& rel, Indexed& idx) {
  if (idx.generation != 0) {
    by_generation_.erase(idx.generation);
  }
  idx.generation = NextGenerationLocked();
  by_generation_[idx.generation] = rel;
}

void DirectoryCache::NoteDenied(Denied kind, const std::string& rel, int err) {
  std::lock_guard<std::mutex> lock(denied_mu_);
  size_t k = static_cast<size_t>(kind);
  ++denied_count_[k];
  auto now = Clock::now();
  if (denied_logged_[k] != Clock::time_point() &&
      now - denied_logged_[k] < std::chrono::minutes(1)) {
    return;
  }
  if (kind == Denied::kRead) {
    log::Warn("directory file not readable",
              {{"directory", options_.name},
               {"path", rel},
               {"error", std::strerror(err)},
               {"skipped", denied_count_[k]},
               {"hint", "written by another uid without read permission for others"}});
  } else {
    log::Warn("directory not writable for pulls",
              {{"directory", options_.name},
               {"path", rel},
               {"error", std::strerror(err)},
               {"skipped", denied_count_[k]},
               {"hint", "a directory another uid created without write permission for others"}});
  }
  denied_logged_[k] = now;
  denied_count_[k] = 0;
}

void DirectoryCache::ReportUsageLocked() {
  if (observer_.on_usage) {
    observer_.on_usage(options_.name, live_files_, live_bytes_);
  }
}

void DirectoryCache::AddWatchTree(const std::string& rel, bool discover_files) {
  if (!rel.empty() && IsIgnoredPath(rel)) {
    return;
  }
  std::vector<std::string> stack = {rel};
  size_t seen = 0;
  while (!stack.empty() && seen < options_.max_scan_entries) {
    std::string dir = std::move(stack.back());
    stack.pop_back();
    // The watch is added through the descriptor opened beneath the root (its /proc/self/fd
    // name), so a symlink swapped in on the path cannot make it watch a directory elsewhere.
    DIR* d = OpenDirBeneath(root_fd_, dir);
    if (d == nullptr) {
      if (errno == EACCES || errno == EPERM) {
        NoteDenied(Denied::kRead, dir, errno);
      }
      continue;
    }
    std::string proc = "/proc/self/fd/" + std::to_string(::dirfd(d));
    int wd = ::inotify_add_watch(inotify_fd_, proc.c_str(), kDirMask | IN_ONLYDIR);
    if (wd < 0 && errno == ENOENT) {
      wd = ::inotify_add_watch(inotify_fd_, Abs(dir).c_str(),
                               kDirMask | IN_ONLYDIR | IN_DONT_FOLLOW);  // no /proc
    }
    if (wd < 0) {
      if (errno != ENOENT && errno != ENOTDIR) {
        log::Warn(
            "directory not watched",
            {{"directory", options_.name}, {"path", Abs(dir)}, {"error", std::strerror(errno)}});
      }
      ::closedir(d);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      watches_[wd] = dir;
    }
    while (struct dirent* de = ::readdir(d)) {
      std::string_view name = de->d_name;
      if (name == "." || name == "..") {
        continue;
      }
      ++seen;
      std::string child = Join(dir, name);
      if (IsIgnoredPath(child)) {
        continue;
      }
      if (IsDir(d, de)) {
        stack.push_back(child);
      } else if (discover_files && (de->d_type == DT_REG || de->d_type == DT_UNKNOWN)) {
        Fingerprint fp;
        if (StatFile(child, &fp, nullptr, nullptr)) {
          std::lock_guard<std::mutex> lock(mu_);
          pending_[child] = Pending{Clock::now() + options_.settle, fp};
        }
      }
    }
    ::closedir(d);
  }
}

void DirectoryCache::RemoveWatchTreeLocked(const std::string& rel) {
  std::string prefix = rel + "/";
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (it->second == rel || it->second.starts_with(prefix)) {
      ::inotify_rm_watch(inotify_fd_, it->first);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
}

void DirectoryCache::Rescan() {
  std::map<std::string, Fingerprint> found;
  std::vector<std::string> stack = {""};
  size_t seen = 0;
  bool truncated = false;
  while (!stack.empty()) {
    std::string dir = std::move(stack.back());
    stack.pop_back();
    DIR* d = OpenDirBeneath(root_fd_, dir);
    if (d == nullptr) {
      if (errno == EACCES || errno == EPERM) {
        NoteDenied(Denied::kRead, dir, errno);
      }
      continue;
    }
    while (struct dirent* de = ::readdir(d)) {
      std::string_view name = de->d_name;
      if (name == "." || name == "..") {
        continue;
      }
      if (++seen > options_.max_scan_entries) {
        truncated = true;
        break;
      }
      std::string child = Join(dir, name);
      if (IsIgnoredPath(child)) {
        continue;
      }
      if (IsDir(d, de)) {
        stack.push_back(child);
        continue;
      }
      struct stat st;
      if (::fstatat(::dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
        Fingerprint fp;
        FromStat(st, &fp, nullptr, nullptr);
        found.emplace(child, fp);
      }
    }
    ::closedir(d);
    if (truncated) {
      break;
    }
  }
  if (truncated) {
    log::Warn("directory rescan truncated",
              {{"directory", options_.name}, {"max_entries", options_.max_scan_entries}});
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto now = Clock::now();
  for (const auto& [rel, fp] : found) {
    if (writing_.count(rel) > 0) {
      continue;
    }
    auto it = entries_.find(rel);
    if (it != entries_.end() && !it->second.entry.deleted && it->second.fp == fp) {
      continue;
    }
    auto p = pending_.find(rel);
    if (p != pending_.end()) {
      continue;  // already settling
    }
    pending_[rel] = Pending{now + options_.settle, fp};
  }
  if (truncated) {
    return;  // entries not walked may exist: deleting them would be a guess
  }
  std::vector<std::string> vanished;
  for (const auto& [rel, idx] : entries_) {
    if (!idx.entry.deleted && found.count(rel) == 0) {
      vanished.push_back(rel);
    }
  }
  for (const std::string& rel : vanished) {
    MarkDeletedLocked(rel);
  }
}

void DirectoryCache::MarkDeletedLocked(const std::string& rel) {
  auto it = entries_.find(rel);
  if (it == entries_.end() || it->second.entry.deleted) {
    return;
  }
  Indexed& idx = it->second;
  idx.entry.deleted = true;
  idx.deleted_at = Clock::now();
  BumpGenerationLocked(rel, idx);
  live_bytes_ -= idx.entry.size;
  --live_files_;
  auto key = std::make_pair(rel, idx.entry.digest);
  if (tombstones_.insert(key).second) {
    tombstone_order_.push_back(key);
    tombstones_dirty_ = true;
    while (tombstone_order_.size() > options_.max_tombstones) {
      tombstones_.erase(tombstone_order_.front());
      tombstone_order_.pop_front();
    }
  }
  ReportUsageLocked();
}

void DirectoryCache::MarkTreeDeletedLocked(const std::string& rel_dir) {
  std::string prefix = rel_dir + "/";
  std::vector<std::string> gone;
  for (auto it = entries_.lower_bound(prefix); it != entries_.end(); ++it) {
    if (!it->first.starts_with(prefix)) {
      break;
    }
    gone.push_back(it->first);
  }
  for (const std::string& rel : gone) {
    MarkDeletedLocked(rel);
  }
  for (auto it = pending_.lower_bound(prefix); it != pending_.end();) {
    if (!it->first.starts_with(prefix)) {
      break;
    }
    it = pending_.erase(it);
  }
}

void DirectoryCache::WatchLoop() {
  alignas(struct inotify_event) char buf[64 * 1024];
  auto next_rescan = Clock::now() + options_.rescan_interval;
  auto next_save = Clock::now() + kTombstoneSaveInterval;
  while (!stopping_) {
    auto now = Clock::now();
    auto wake = next_rescan;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [rel, p] : pending_) {
        wake = std::min(wake, p.due);
      }
    }
    int timeout_ms = static_cast<int>(std::clamp<int64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1, 0, 1000));
    struct pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int n = ::poll(fds, 2, timeout_ms);
    if (stopping_) {
      break;
    }
    if (n > 0 && (fds[0].revents & POLLIN)) {
      // Bounded: drain at most 64 buffers before settling files and rescanning.
      for (int i = 0; i < 64; ++i) {
        ssize_t len = ::read(inotify_fd_, buf, sizeof(buf));
        if (len <= 0) {
          break;
        }
        HandleEvents(buf, len);
      }
    }
    if (rescan_now_.exchange(false) || Clock::now() >= next_rescan) {
      AddWatchTree("", /*discover_files=*/false);  // re-adds watches lost to an overflow
      Rescan();
      next_rescan = Clock::now() + options_.rescan_interval;
    }
    ProcessDue();
    if (Clock::now() >= next_save) {
      SaveTombstones();
      PruneDeleted();
      next_save = Clock::now() + kTombstoneSaveInterval;
    }
  }
}

void DirectoryCache::HandleEvents(const char* buf, ssize_t len) {
  std::vector<std::string> new_dirs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const char* p = buf; p < buf + len;) {
      const auto* ev = reinterpret_cast<const struct inotify_event*>(p);
      p += sizeof(struct inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        log::Warn("inotify queue overflow", {{"directory", options_.name}});
        rescan_now_ = true;
        // What was being written is unknown now; the rescan's settle check still applies.
        writing_.clear();
        continue;
      }
      auto w = watches_.find(ev->wd);
      if (w == watches_.end()) {
        continue;
      }
      if (ev->mask & IN_IGNORED) {
        watches_.erase(w);
        continue;
      }
      if (ev->len == 0) {
        continue;
      }
      std::string rel = Join(w->second, ev->name);
      if (IsIgnoredPath(rel)) {
        continue;
      }
      if (ev->mask & IN_ISDIR) {
        if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
          new_dirs.push_back(rel);
        }
        if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
          // Moved away (to another name, an ignored one included, or out of the tree): its
          // watches would report later events under this name, which may by then be a link.
          RemoveWatchTreeLocked(rel);
          MarkTreeDeletedLocked(rel);
        }
        continue;
      }
      if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
        writing_.erase(rel);
        pending_.erase(rel);
        MarkDeletedLocked(rel);
      }
      if (ev->mask & IN_MODIFY) {
        writing_.insert(rel);
        pending_.erase(rel);
      }
      if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
        writing_.erase(rel);
        Fingerprint fp;
        if (StatFile(rel, &fp, nullptr, nullptr)) {
          pending_[rel] = Pending{Clock::now() + options_.settle, fp};
        }
      }
    }
  }
  // A directory created or moved in: watch it, and settle the files already inside (they may
  // have been written before the watch existed).
  for (const std::string& rel : new_dirs) {
    AddWatchTree(rel, /*discover_files=*/true);
  }
}

void DirectoryCache::ProcessDue() {
  std::vector<std::pair<std::string, Fingerprint>> due;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = Clock::now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.due > now) {
        ++it;
        continue;
      }
      Fingerprint fp;
      if (!StatFile(it->first, &fp, nullptr, nullptr)) {
        it = pending_.erase(it);
        continue;
      }
      if (!(fp == it->second.fp)) {  // still changing: settle again from now
        it->second = Pending{now + options_.settle, fp};
        ++it;
        continue;
      }
      due.emplace_back(it->first, fp);
      it = pending_.erase(it);
    }
  }
  for (const auto& [rel, fp] : due) {
    if (stopping_) {
      return;
    }
    IndexFile(rel, fp);
  }
  if (!due.empty()) {
    EnforceQuota();
  }
}

void DirectoryCache::IndexFile(const std::string& rel, const Fingerprint& seen) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(rel);
    if (it != entries_.end() && !it->second.entry.deleted && it->second.fp == seen) {
      return;
    }
  }
  std::string abs = Abs(rel);
  // Beneath the root, no link followed in any component (a directory on the path may have been
  // swapped for a link to elsewhere since the event); O_NONBLOCK: a FIFO swapped in for the file
  // must not block the watcher.
  Fd fd(OpenBeneath(root_fd_, rel, O_RDONLY | O_NONBLOCK));
  if (fd.fd < 0) {
    if (fd.fd == -EACCES || fd.fd == -EPERM) {
      NoteDenied(Denied::kRead, rel, -fd.fd);
    }
    return;
  }
  struct stat st;
  if (::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return;
  }
  auto same = [&](const struct stat& s) {
    return static_cast<uint64_t>(s.st_size) == seen.size && Ns(s.st_mtim) == seen.mtime_ns &&
           s.st_ino == seen.ino;
  };
  if (!same(st)) {
    return;  // changed since it settled: the next event or rescan settles it again
  }
  store::WriteOptions wo;
  wo.expected_size = seen.size;
  auto writer = store_.NewWriter(StoreKey(rel), wo);
  if (!writer.ok()) {
    log::Warn("directory file not indexed",
              {{"directory", options_.name}, {"path", rel}, {"error", writer.status().ToString()}});
    return;
  }
  std::vector<char> buf(1 << 20);
  Status s;
  while (s.ok()) {
    ssize_t n = ::read(fd.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      s = ErrnoStatus(errno, abs);
      break;
    }
    if (n == 0) {
      break;
    }
    s = (*writer)->Write(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  struct stat after;
  if (s.ok() && (::fstat(fd.fd, &after) != 0 || !same(after))) {
    s = Unavailable("file changed while it was read");
  }
  Result<store::BlobInfo> info = s.ok() ? (*writer)->Commit() : Result<store::BlobInfo>(s);
  if (!info.ok()) {
    // A file that grew or shrank while being read settles again; other errors are logged.
    log::Warn("directory file not indexed",
              {{"directory", options_.name}, {"path", rel}, {"error", info.status().ToString()}});
    std::lock_guard<std::mutex> lock(mu_);
    Fingerprint fp;
    if (StatFile(rel, &fp, nullptr, nullptr) && !(fp == seen)) {
      pending_[rel] = Pending{Clock::now() + options_.settle, fp};
    }
    return;
  }
  Fingerprint fp;
  int64_t last_use = 0;
  uint32_t mode = 0;
  FromStat(after, &fp, &last_use, &mode);  // the file that was read, whatever the path is now
  std::lock_guard<std::mutex> lock(mu_);
  Indexed& idx = entries_[rel];
  bool was_live = !idx.entry.path.empty() && !idx.entry.deleted;
  bool changed = !was_live || idx.entry.digest != info->digest || idx.entry.mode != mode;
  if (was_live) {
    live_bytes_ -= idx.entry.size;
  } else {
    ++live_files_;
  }
  idx.entry = ManifestEntry{rel, info->size, mode, info->digest, last_use, false};
  idx.fp = fp;
  live_bytes_ += info->size;
  if (changed) {
    BumpGenerationLocked(rel, idx);
  }
  ReportUsageLocked();
  if (changed && observer_.on_indexed) {
    observer_.on_indexed(options_.name, info->size);
  }
  log::Debug("directory file indexed", {{"directory", options_.name},
                                        {"path", rel},
                                        {"bytes", info->size},
                                        {"digest", info->digest.Hex()}});
}

Manifest DirectoryCache::GetManifest(uint64_t since, uint64_t listing_after) {
  std::lock_guard<std::mutex> lock(mu_);
  Manifest m;
  m.directory = options_.name;
  m.generation = generation_;
  if (since != 0 && since < pruned_generation_) {
    // Deletions after `since` were forgotten: the asker must replace its view with a listing.
    since = 0;
    listing_after = 0;
    m.full = true;
  }
  size_t max_entries = std::max<size_t>(options_.manifest_page_entries, 1);
  size_t bytes = 0;
  uint64_t after = since != 0 ? since : listing_after;
  for (auto it = by_generation_.upper_bound(after); it != by_generation_.end(); ++it) {
    const Indexed& idx = entries_.at(it->second);
    if (since == 0 && idx.entry.deleted) {
      continue;
    }
    if (m.entries.size() >= max_entries || bytes >= options_.manifest_page_bytes) {
      m.more = true;  // the cursor is the last generation listed
      break;
    }
    m.entries.push_back(idx.entry);
    bytes += idx.entry.path.size() + 64;  // the entry's other fields, roughly, as protobuf
    m.generation = it->first;
  }
  if (!m.more) {
    m.generation = generation_;
  }
  return m;
}

size_t DirectoryCache::PruneDeleted() {
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.size() == live_files_) {
    return 0;  // nothing deleted: no walk
  }
  auto now = Clock::now();
  size_t pruned = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Indexed& idx = it->second;
    if (!idx.entry.deleted || now - idx.deleted_at < options_.deleted_retention) {
      ++it;
      continue;
    }
    pruned_generation_ = std::max(pruned_generation_, idx.generation);
    by_generation_.erase(idx.generation);
    it = entries_.erase(it);
    ++pruned;
  }
  if (pruned > 0) {
    log::Debug("directory deletions pruned", {{"directory", options_.name}, {"count", pruned}});
  }
  return pruned;
}

size_t DirectoryCache::tracked_entries() {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

uint64_t DirectoryCache::used_bytes() {
  std::lock_guard<std::mutex> lock(mu_);
  return live_bytes_;
}

uint64_t DirectoryCache::live_files() {
  std::lock_guard<std::mutex> lock(mu_);
  return live_files_;
}

void DirectoryCache::NoteConflict(const ManifestEntry& e) {
  std::lock_guard<std::mutex> lock(mu_);
  if (conflicts_.insert({e.path, e.digest}).second) {
    log::Warn("directory conflict",
              {{"directory", options_.name}, {"path", e.path}, {"peer_digest", e.digest.Hex()}});
    if (observer_.on_conflict) {
      observer_.on_conflict(options_.name);
    }
  }
}

DirectoryCache::Plan DirectoryCache::Classify(const ManifestEntry& e) {
  if (e.deleted || !IsSafeRelativePath(e.path) || IsIgnoredPath(e.path)) {
    return Plan::kRejected;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(e.path);
  if (it != entries_.end() && !it->second.entry.deleted) {
    return it->second.entry.digest == e.digest ? Plan::kPresent : Plan::kConflict;
  }
  if (tombstones_.count({e.path, e.digest}) > 0) {
    return Plan::kDeleted;
  }
  if (pending_.count(e.path) > 0 || writing_.count(e.path) > 0) {
    return Plan::kBusy;
  }
  struct stat st;
  if (StatBeneath(root_fd_, e.path, &st) != ENOENT) {
    return Plan::kBusy;  // something is there, or a link or a file stands on the path
  }
  return Plan::kPull;
}

Status DirectoryCache::Pull(const ManifestEntry& e, const Fetch& fetch,
                            const std::function<bool()>& cancelled) {
  auto conflict = [&]() {
    NoteConflict(e);
    return FailedPrecondition(e.path + ": a different file exists here");
  };
  switch (Classify(e)) {
    case Plan::kPull:
      break;
    case Plan::kPresent:
      return AlreadyExists(e.path + ": present");
    case Plan::kConflict:
      return conflict();
    case Plan::kDeleted:
      return FailedPrecondition(e.path + ": deleted here");
    case Plan::kBusy:
      return Unavailable(e.path + ": a local file is not indexed yet");
    case Plan::kRejected:
      return InvalidArgument("rejected manifest entry: " + e.path);
  }

  // 1. A temporary file beside the target (same file system, so the rename is atomic), in the
  // parent directory held open: the parents are made and opened one by one beneath the root
  // without following links, and the temporary file, the rename and the fsync all go through
  // that descriptor, so swapping a directory on the path for a link cannot redirect them.
  std::string leaf;
  BC_ASSIGN_OR_RETURN(
      UniqueFd dir, OpenParentBeneath(root_fd_, e.path, /*create=*/true, options_.dir_mode, &leaf));
  if (options_.test_after_parents) {
    options_.test_after_parents();
  }
  std::string temp =
      ".tmp.bc-pull-" + std::to_string(::getpid()) + "-" + std::to_string(temp_seq_.fetch_add(1));
  Fd out(::openat(dir.get(), temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                  0600));
  if (out.fd < 0) {
    int err = errno;
    if (err == EACCES || err == EPERM) {
      NoteDenied(Denied::kWrite, e.path, err);
    }
    return ErrnoStatus(err, e.path + ": " + temp);
  }
  auto discard = [&](Status s) {
    ::unlinkat(dir.get(), temp.c_str(), 0);
    return s;
  };

  // 2. The bytes. From a peer they go to the store and the temporary file in one pass (no
  // re-read); the store verifies them against the digest at Commit, and the file is only renamed
  // into place after that. A blob the store already has is copied from it (a reflink where the
  // file system shares blocks).
  if (!store_.HasDigest(e.digest)) {
    store::WriteOptions wo;
    wo.expected_digest = e.digest;
    wo.expected_size = e.size;
    auto writer = store_.NewWriter(StoreKey(e.path), wo);
    if (!writer.ok()) {
      return discard(writer.status());
    }
    Status fs = fetch([&](std::string_view chunk) -> Status {
      if (cancelled && cancelled()) {
        return Cancelled("pull cancelled");
      }
      BC_RETURN_IF_ERROR((*writer)->Write(chunk));
      return WriteAll(out.fd, chunk);
    });
    if (!fs.ok()) {
      return discard(fs);
    }
    Result<store::BlobInfo> committed = (*writer)->Commit();
    if (!committed.ok()) {
      return discard(committed.status());
    }
  } else {
    auto reader = store_.OpenDigest(e.digest);
    if (!reader.ok()) {
      return discard(reader.status());
    }
    Status cs = CopyBlob(**reader, out.fd);
    if (!cs.ok()) {
      return discard(cs);
    }
  }

  // 3. Mode (readable by every pod: the agent cannot give the file to a pod's uid), fsync,
  // rename without replacing.
  if (::fchmod(out.fd, (e.mode & 07777) | 0444) != 0) {
    return discard(ErrnoStatus(errno, "fchmod"));
  }
  if (::fsync(out.fd) != 0) {
    return discard(ErrnoStatus(errno, "fsync"));
  }
  struct stat st;
  if (::fstat(out.fd, &st) != 0) {
    return discard(ErrnoStatus(errno, "fstat"));
  }
  if (static_cast<uint64_t>(st.st_size) != e.size) {
    return discard(DataLoss(e.path + ": written size differs from the entry"));
  }
  std::lock_guard<std::mutex> pull_lock(pull_mu_);
  if (::renameat2(dir.get(), temp.c_str(), dir.get(), leaf.c_str(), RENAME_NOREPLACE) != 0) {
    int err = errno;
    if (err == EEXIST) {
      ::unlinkat(dir.get(), temp.c_str(), 0);
      auto existing = HashFileAt(dir.get(), leaf);
      if (existing.ok() && *existing == e.digest) {
        return AlreadyExists(e.path + ": present");
      }
      return conflict();
    }
    return discard(ErrnoStatus(err, "rename " + e.path));
  }
  ::fsync(dir.get());

  // 4. Indexed at once, so the watcher's IN_MOVED_TO finds it known and does not hash it again.
  // The file is the one just written (its descriptor), wherever its directory is now; it is
  // listed under e.path only while that path still leads to it beneath the root. A pod that
  // removed it the moment it appeared deleted it: remembered like any deletion (the watcher's
  // event may have come first and found nothing to mark).
  Fingerprint fp;
  int64_t last_use = 0;
  uint32_t mode = 0;
  struct stat written;
  struct stat at_path;
  int err = ::fstat(out.fd, &written) == 0 ? StatBeneath(root_fd_, e.path, &at_path) : EIO;
  bool here = err == 0 && at_path.st_ino == written.st_ino && at_path.st_dev == written.st_dev;
  if (here || err == ENOENT) {
    FromStat(written, &fp, &last_use, &mode);
    std::lock_guard<std::mutex> lock(mu_);
    Indexed& idx = entries_[e.path];
    if (!idx.entry.path.empty() && !idx.entry.deleted) {
      live_bytes_ -= idx.entry.size;
    }
    if (idx.entry.path.empty() || idx.entry.deleted) {
      ++live_files_;
    }
    idx.entry = ManifestEntry{e.path, e.size, mode, e.digest, last_use, false};
    idx.fp = fp;
    BumpGenerationLocked(e.path, idx);
    live_bytes_ += e.size;
    pending_.erase(e.path);
    ReportUsageLocked();
    if (!here) {
      MarkDeletedLocked(e.path);
    }
  }
  if (observer_.on_pulled) {
    observer_.on_pulled(options_.name, e.size);
  }
  return Status::Ok();
}

size_t DirectoryCache::EnforceQuota() {
  if (options_.max_size == 0) {
    return 0;
  }
  struct Candidate {
    int64_t last_use;
    std::string rel;
    Fingerprint fp;
    uint64_t size;
  };
  std::vector<Candidate> candidates;
  uint64_t used;
  {
    std::lock_guard<std::mutex> lock(mu_);
    used = live_bytes_;
    if (used <= options_.max_size) {
      return 0;
    }
    for (const auto& [rel, idx] : entries_) {
      if (!idx.entry.deleted) {
        candidates.push_back({0, rel, idx.fp, idx.entry.size});
      }
    }
  }
  // Last use as of now: pods read files after they were indexed.
  for (Candidate& c : candidates) {
    Fingerprint fp;
    if (!StatFile(c.rel, &fp, &c.last_use, nullptr)) {
      c.last_use = INT64_MIN;
    }
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return a.last_use != b.last_use ? a.last_use < b.last_use : a.rel < b.rel;
  });
  std::lock_guard<std::mutex> pull_lock(pull_mu_);
  size_t removed = 0;
  for (const Candidate& c : candidates) {
    if (used <= options_.max_size) {
      break;
    }
    std::string leaf;
    auto parent = OpenParentBeneath(root_fd_, c.rel, /*create=*/false, 0, &leaf);
    Fingerprint now;
    struct stat st;
    bool exists = parent.ok() &&
                  ::fstatat(parent->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                  S_ISREG(st.st_mode);
    if (exists) {
      FromStat(st, &now, nullptr, nullptr);
    }
    // A file being rewritten (or replaced) since it was indexed is not ours to judge yet. Only
    // size and inode are compared: tools mark use by setting mtime (Go's cache does).
    if (exists && (now.size != c.fp.size || now.ino != c.fp.ino)) {
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.count(c.rel) > 0 || writing_.count(c.rel) > 0) {
      continue;
    }
    if (exists && ::unlinkat(parent->get(), leaf.c_str(), 0) != 0) {
      continue;
    }
    MarkDeletedLocked(c.rel);
    used = live_bytes_;
    ++removed;
    if (observer_.on_evicted) {
      observer_.on_evicted(options_.name, c.size);
    }
    log::Info("directory file evicted",
              {{"directory", options_.name}, {"path", c.rel}, {"bytes", c.size}});
  }
  return removed;
}

}  // namespace buildcache::dircache
