#include "agent/dircache/directory_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "agent/dircache/beneath.h"
#include "agent/dircache/ignore.h"
#include "agent/dircache/inotify_watcher.h"
#include "common/base/check.h"
#include "common/log/log.h"

namespace buildcache::dircache {
namespace {

// How often changed deletions are written to the store while the watcher runs.
constexpr std::chrono::seconds kTombstoneSaveInterval{5};
// The longest one round of the watcher thread waits for events.
constexpr std::chrono::milliseconds kMaxWatchWait{1000};

int64_t Ns(const struct timespec& ts) { return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec; }

std::string Join(const std::string& dir, std::string_view name) {
  if (dir.empty()) {
    return std::string(name);
  }
  std::string out = dir;
  out += '/';
  out += name;
  return out;
}

}  // namespace

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
  size_t count;
  {
    MutexLock lock(mu_);
    count = index_.LoadTombstones(*text);
  }
  if (count > 0) {
    log::Info("directory cache deletions remembered",
              {{"directory", options_.name}, {"count", count}});
  }
}

void DirectoryCache::SaveTombstones() {
  std::optional<std::string> text;
  {
    MutexLock lock(mu_);
    text = index_.TakeTombstonesIfChanged();
  }
  if (!text) {
    return;
  }
  auto saved = store::PutBytes(store_, TombstonesKey(), *text);
  if (!saved.ok()) {
    log::Warn("directory cache deletions not saved",
              {{"directory", options_.name}, {"error", saved.status().ToString()}});
    MutexLock lock(mu_);
    index_.MarkTombstonesChanged();  // tried again later
  }
}

DirectoryCache::DirectoryCache(DirectoryCacheOptions options, store::BlobStore& store,
                               DirCacheObserver observer)
    : options_(std::move(options)),
      store_(store),
      observer_(std::move(observer)),
      index_(options_.max_tombstones) {}

DirectoryCache::~DirectoryCache() {
  Stop();
  if (root_fd_ >= 0) {
    ::close(root_fd_);
  }
}

Status DirectoryCache::Start() {
  if (watcher_ != nullptr) {
    return FailedPrecondition("directory cache already started");
  }
  if (options_.new_watcher) {
    watcher_ = options_.new_watcher();
  } else {
    BC_ASSIGN_OR_RETURN(watcher_, InotifyTreeWatcher::Create(options_.name, options_.root));
  }
  // Watches first, then the walk: a file written between the two is seen by one or the other.
  AddWatchTree("", /*discover_files=*/false);
  Rescan();
  next_rescan_ = Clock::now() + options_.rescan_interval;
  next_save_ = Clock::now() + kTombstoneSaveInterval;
  if (options_.watcher_thread) {
    thread_ = std::thread([this] { WatchLoop(); });
  }
  log::Info("directory cache watching",
            {{"directory", options_.name},
             {"path", options_.root},
             {"max_bytes", options_.max_size},
             {"settle_ms", static_cast<int64_t>(options_.settle.count())}});
  return Status::Ok();
}

void DirectoryCache::Stop() {
  stopping_ = true;
  if (watcher_ != nullptr) {
    watcher_->Wake();
  }
  if (thread_.joinable()) {
    thread_.join();
  }
  SaveTombstones();
  watcher_.reset();
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

void DirectoryCache::NoteDenied(Denied kind, const std::string& rel, const std::string& error) {
  MutexLock lock(denied_mu_);
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
               {"error", error},
               {"skipped", denied_count_[k]},
               {"hint", "written by another uid without read permission for others"}});
  } else {
    log::Warn("directory not writable for pulls",
              {{"directory", options_.name},
               {"path", rel},
               {"error", error},
               {"skipped", denied_count_[k]},
               {"hint", "a directory another uid created without write permission for others"}});
  }
  denied_logged_[k] = now;
  denied_count_[k] = 0;
}

void DirectoryCache::ReportUsageLocked() {
  if (observer_.on_usage) {
    observer_.on_usage(options_.name, index_.live_files(), index_.live_bytes());
  }
}

bool DirectoryCache::WalkTree(
    const std::string& start, const std::function<bool(const std::string&, fs::DirReader&)>& on_dir,
    const std::function<void(const std::string&, fs::DirReader&, const fs::DirEntry&)>& on_file) {
  std::vector<std::string> stack = {start};
  size_t seen = 0;
  while (!stack.empty()) {
    std::string dir = std::move(stack.back());
    stack.pop_back();
    int fd = OpenBeneath(root_fd_, dir, O_RDONLY | O_DIRECTORY);
    auto reader = fd >= 0 ? fs::DirReader::FromFd(UniqueFd(fd))
                          : Result<fs::DirReader>(ErrnoStatus(-fd, dir));
    if (!reader.ok()) {
      if (fd == -EACCES || fd == -EPERM) {
        NoteDenied(Denied::kRead, dir, std::strerror(-fd));
      }
      continue;
    }
    if (!on_dir(dir, *reader)) {
      continue;
    }
    fs::DirEntry entry;
    while (reader->Next(&entry)) {
      if (++seen > options_.max_scan_entries) {
        return false;
      }
      std::string child = Join(dir, entry.name);
      if (IsIgnoredPath(child)) {
        continue;
      }
      if (reader->IsDir(entry)) {
        stack.push_back(std::move(child));
      } else {
        on_file(child, *reader, entry);
      }
    }
  }
  return true;
}

void DirectoryCache::AddWatchTree(const std::string& rel, bool discover_files) {
  if (!rel.empty() && IsIgnoredPath(rel)) {
    return;
  }
  // The watch follows the descriptor opened beneath the root, so a symlink swapped in on the
  // path cannot make it watch a directory elsewhere.
  // A directory that cannot be watched (gone, or the watch limit reached) is not descended into,
  // so a full watch table costs one warning, not one per directory below.
  auto watch = [&](const std::string& dir, fs::DirReader& reader) {
    return watcher_->Watch(dir, reader.fd());
  };
  auto discover = [&](const std::string& child, fs::DirReader&, const fs::DirEntry& entry) {
    Fingerprint fp;
    if (discover_files && (entry.type == DT_REG || entry.type == DT_UNKNOWN) &&
        StatFile(child, &fp, nullptr, nullptr)) {
      MutexLock lock(mu_);
      pending_[child] = Pending{Clock::now() + options_.settle, fp};
    }
  };
  WalkTree(rel, watch, discover);
}

void DirectoryCache::Rescan() {
  std::map<std::string, Fingerprint> found;
  auto record = [&](const std::string& child, fs::DirReader& reader, const fs::DirEntry& entry) {
    std::string name(entry.name);
    struct stat st;
    if (::fstatat(reader.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(st.st_mode)) {
      Fingerprint fp;
      FromStat(st, &fp, nullptr, nullptr);
      found.emplace(child, fp);
    }
  };
  auto every_dir = [](const std::string&, fs::DirReader&) { return true; };
  bool complete = WalkTree("", every_dir, record);
  if (!complete) {
    log::Warn("directory rescan truncated",
              {{"directory", options_.name}, {"max_entries", options_.max_scan_entries}});
  }
  MutexLock lock(mu_);
  auto now = Clock::now();
  for (const auto& [rel, fp] : found) {
    if (writing_.count(rel) > 0 || index_.IsCurrent(rel, fp) || pending_.count(rel) > 0) {
      continue;  // being written, indexed as it is, or already settling
    }
    pending_[rel] = Pending{now + options_.settle, fp};
  }
  if (!complete) {
    return;  // entries not walked may exist: deleting them would be a guess
  }
  std::vector<std::string> vanished;
  index_.ForEachLive([&](const std::string& rel, const DirectoryIndex::Indexed&) {
    if (found.count(rel) == 0) {
      vanished.push_back(rel);
    }
  });
  for (const std::string& rel : vanished) {
    MarkDeletedLocked(rel);
  }
}

void DirectoryCache::MarkDeletedLocked(const std::string& rel) {
  if (index_.MarkDeleted(rel, Clock::now())) {
    ReportUsageLocked();
  }
}

void DirectoryCache::MarkTreeDeletedLocked(const std::string& rel_dir) {
  for (const std::string& rel : index_.LiveBelow(rel_dir)) {
    MarkDeletedLocked(rel);
  }
  std::string prefix = rel_dir + "/";
  for (auto it = pending_.lower_bound(prefix); it != pending_.end();) {
    if (!it->first.starts_with(prefix)) {
      break;
    }
    it = pending_.erase(it);
  }
}

void DirectoryCache::WatchLoop() {
  while (!stopping_) {
    Step(kMaxWatchWait);
  }
}

void DirectoryCache::Step(std::chrono::milliseconds max_wait) {
  CHECK(watcher_ != nullptr) << "DirectoryCache::Step before Start";
  auto now = Clock::now();
  auto wake = next_rescan_;
  {
    MutexLock lock(mu_);
    for (const auto& [rel, p] : pending_) {
      wake = std::min(wake, p.due);
    }
  }
  auto until_due = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now) +
                   std::chrono::milliseconds(1);
  std::vector<TreeEvent> events;
  watcher_->Wait(std::clamp(until_due, std::chrono::milliseconds(0), max_wait), &events);
  if (stopping_) {
    return;
  }
  HandleEvents(events);
  if (rescan_now_.exchange(false) || Clock::now() >= next_rescan_) {
    AddWatchTree("", /*discover_files=*/false);  // re-adds watches lost to an overflow
    Rescan();
    next_rescan_ = Clock::now() + options_.rescan_interval;
  }
  ProcessDue();
  if (Clock::now() >= next_save_) {
    SaveTombstones();
    PruneDeleted();
    next_save_ = Clock::now() + kTombstoneSaveInterval;
  }
}

void DirectoryCache::HandleEvents(const std::vector<TreeEvent>& events) {
  using Kind = TreeEvent::Kind;
  std::vector<std::string> new_dirs;
  {
    MutexLock lock(mu_);
    for (const TreeEvent& ev : events) {
      if (ev.kind == Kind::kOverflow) {
        log::Warn("inotify queue overflow", {{"directory", options_.name}});
        rescan_now_ = true;
        // What was being written is unknown now; the rescan's settle check still applies.
        writing_.clear();
        continue;
      }
      const std::string& rel = ev.rel;
      if (rel.empty() || IsIgnoredPath(rel)) {
        continue;
      }
      switch (ev.kind) {
        case Kind::kDirAdded:
          new_dirs.push_back(rel);
          break;
        case Kind::kDirGone:
          // Moved away (to another name, an ignored one included, or out of the tree): the
          // watcher dropped its watches, which would report later events under this name.
          MarkTreeDeletedLocked(rel);
          break;
        case Kind::kFileGone:
          writing_.erase(rel);
          pending_.erase(rel);
          MarkDeletedLocked(rel);
          break;
        case Kind::kFileModified:
          writing_.insert(rel);
          pending_.erase(rel);
          break;
        case Kind::kFileWritten: {
          writing_.erase(rel);
          Fingerprint fp;
          if (StatFile(rel, &fp, nullptr, nullptr)) {
            pending_[rel] = Pending{Clock::now() + options_.settle, fp};
          }
          break;
        }
        case Kind::kOverflow:
          break;
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
    MutexLock lock(mu_);
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
    MutexLock lock(mu_);
    if (index_.IsCurrent(rel, seen)) {
      return;
    }
  }
  // Beneath the root, no link followed in any component (a directory on the path may have been
  // swapped for a link to elsewhere since the event); O_NONBLOCK: a FIFO swapped in for the file
  // must not block the watcher.
  int opened = OpenBeneath(root_fd_, rel, O_RDONLY | O_NONBLOCK);
  if (opened < 0) {
    if (opened == -EACCES || opened == -EPERM) {
      NoteDenied(Denied::kRead, rel, std::strerror(-opened));
    }
    return;
  }
  UniqueFd fd(opened);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
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
  Status s = fs::ReadChunks(fd.get(), options_.root + "/" + rel,
                            [&](std::string_view chunk) { return (*writer)->Write(chunk); });
  struct stat after;
  if (s.ok() && (::fstat(fd.get(), &after) != 0 || !same(after))) {
    s = Unavailable("file changed while it was read");
  }
  Result<store::BlobInfo> info = s.ok() ? (*writer)->Commit() : Result<store::BlobInfo>(s);
  if (!info.ok()) {
    // A file that grew or shrank while being read settles again; other errors are logged.
    log::Warn("directory file not indexed",
              {{"directory", options_.name}, {"path", rel}, {"error", info.status().ToString()}});
    MutexLock lock(mu_);
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
  MutexLock lock(mu_);
  bool changed =
      index_.Put(ManifestEntry{rel, info->size, mode, info->digest, last_use, false}, fp);
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
  MutexLock lock(mu_);
  Manifest m = index_.List(since, listing_after, options_.manifest_page_entries,
                           options_.manifest_page_bytes);
  m.directory = options_.name;
  return m;
}

size_t DirectoryCache::PruneDeleted() {
  size_t pruned;
  {
    MutexLock lock(mu_);
    pruned = index_.PruneDeleted(Clock::now(), options_.deleted_retention);
  }
  if (pruned > 0) {
    log::Debug("directory deletions pruned", {{"directory", options_.name}, {"count", pruned}});
  }
  return pruned;
}

size_t DirectoryCache::tracked_entries() {
  MutexLock lock(mu_);
  return index_.tracked();
}

uint64_t DirectoryCache::used_bytes() {
  MutexLock lock(mu_);
  return index_.live_bytes();
}

uint64_t DirectoryCache::live_files() {
  MutexLock lock(mu_);
  return index_.live_files();
}

void DirectoryCache::NoteConflict(const ManifestEntry& e) {
  MutexLock lock(mu_);
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
  MutexLock lock(mu_);
  const DirectoryIndex::Indexed* idx = index_.Find(e.path);
  if (idx != nullptr && !idx->entry.deleted) {
    return idx->entry.digest == e.digest ? Plan::kPresent : Plan::kConflict;
  }
  if (index_.IsTombstoned(e.path, e.digest)) {
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

}  // namespace buildcache::dircache
