#include "agent/dircache/inotify_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log/log.h"

namespace buildcache::dircache {
namespace {

constexpr uint32_t kDirMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE |
                              IN_MODIFY | IN_DELETE_SELF | IN_EXCL_UNLINK;

std::string Join(const std::string& dir, std::string_view name) {
  return dir.empty() ? std::string(name) : dir + "/" + std::string(name);
}

}  // namespace

Result<std::unique_ptr<InotifyTreeWatcher>> InotifyTreeWatcher::Create(std::string name,
                                                                       std::string root) {
  fs::UniqueFd inotify(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify.valid()) {
    return ErrnoStatus(errno, "inotify_init1");
  }
  fs::UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake.valid()) {
    return ErrnoStatus(errno, "eventfd");
  }
  return std::unique_ptr<InotifyTreeWatcher>(new InotifyTreeWatcher(
      std::move(name), std::move(root), std::move(inotify), std::move(wake)));
}

bool InotifyTreeWatcher::Watch(const std::string& rel, int dir_fd) {
  std::string proc = "/proc/self/fd/" + std::to_string(dir_fd);
  int wd = ::inotify_add_watch(inotify_.get(), proc.c_str(), kDirMask | IN_ONLYDIR);
  std::string abs = rel.empty() ? root_ : root_ + "/" + rel;
  if (wd < 0 && errno == ENOENT) {
    wd = ::inotify_add_watch(inotify_.get(), abs.c_str(),
                             kDirMask | IN_ONLYDIR | IN_DONT_FOLLOW);  // no /proc
  }
  if (wd < 0) {
    if (errno != ENOENT && errno != ENOTDIR) {
      log::Warn("directory not watched",
                {{"directory", name_}, {"path", abs}, {"error", std::strerror(errno)}});
    }
    return false;
  }
  MutexLock lock(mu_);
  watches_[wd] = rel;
  return true;
}

void InotifyTreeWatcher::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof(one));
}

void InotifyTreeWatcher::Wait(std::chrono::milliseconds timeout, std::vector<TreeEvent>* events) {
  struct pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
  int timeout_ms = static_cast<int>(std::clamp<int64_t>(timeout.count(), 0, INT32_MAX));
  int n = ::poll(fds, 2, timeout_ms);
  if (n <= 0) {
    return;
  }
  if (fds[1].revents & POLLIN) {
    uint64_t count;
    (void)!::read(wake_.get(), &count, sizeof(count));
  }
  if (fds[0].revents & POLLIN) {
    alignas(struct inotify_event) char buf[64 * 1024];
    for (int i = 0; i < 64; ++i) {
      ssize_t len = ::read(inotify_.get(), buf, sizeof(buf));
      if (len <= 0) {
        break;
      }
      Translate(buf, static_cast<size_t>(len), events);
    }
  }
}

void InotifyTreeWatcher::Translate(const char* buf, size_t len, std::vector<TreeEvent>* events) {
  using Kind = TreeEvent::Kind;
  MutexLock lock(mu_);
  for (const char* p = buf; p < buf + len;) {
    const auto* ev = reinterpret_cast<const struct inotify_event*>(p);
    p += sizeof(struct inotify_event) + ev->len;
    if (ev->mask & IN_Q_OVERFLOW) {
      events->push_back({Kind::kOverflow, ""});
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
    if (ev->mask & IN_ISDIR) {
      if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
        events->push_back({Kind::kDirAdded, rel});
      }
      if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
        UnwatchTreeLocked(rel);
        events->push_back({Kind::kDirGone, rel});
      }
      continue;
    }
    if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
      events->push_back({Kind::kFileGone, rel});
    }
    if (ev->mask & IN_MODIFY) {
      events->push_back({Kind::kFileModified, rel});
    }
    if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
      events->push_back({Kind::kFileWritten, rel});
    }
  }
}

void InotifyTreeWatcher::UnwatchTreeLocked(const std::string& rel) {
  std::string prefix = rel + "/";
  for (auto it = watches_.begin(); it != watches_.end();) {
    if (it->second == rel || it->second.starts_with(prefix)) {
      ::inotify_rm_watch(inotify_.get(), it->first);
      it = watches_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace buildcache::dircache
