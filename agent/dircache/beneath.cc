#include "agent/dircache/beneath.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

namespace buildcache::dircache {
namespace {

// Whether openat2 may be tried; cleared once the kernel (or a seccomp filter) refuses it.
std::atomic<bool> g_openat2{true};

// openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS; -1 with errno ENOSYS when unavailable.
int OpenAt2(int dir_fd, const char* path, int flags, mode_t mode) {
#ifdef SYS_openat2
  if (g_openat2.load(std::memory_order_relaxed)) {
    struct open_how how = {};
    how.flags = static_cast<uint64_t>(flags);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    for (int attempt = 0;; ++attempt) {
      long fd = ::syscall(SYS_openat2, dir_fd, path, &how, sizeof(how));
      if (fd >= 0) {
        return static_cast<int>(fd);
      }
      if ((errno == EINTR || errno == EAGAIN) && attempt < 16) {
        continue;  // EAGAIN: a concurrent rename raced the lookup (RESOLVE_* retries are ours)
      }
      if (errno == ENOSYS || errno == EPERM) {
        // EPERM: a seccomp profile that blocks the call; the walk below is equivalent.
        if (errno == ENOSYS) {
          g_openat2 = false;
        }
        break;
      }
      return -1;
    }
  }
#endif
  errno = ENOSYS;
  return -1;
}

// One component at a time, O_NOFOLLOW each: a symlink anywhere fails with ELOOP (or ENOTDIR for
// an intermediate one opened with O_DIRECTORY).
int WalkOpen(int dir_fd, std::string_view rel, int flags, mode_t mode) {
  UniqueFd current(::openat(dir_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!current.valid()) {
    return -1;
  }
  while (true) {
    size_t slash = rel.find('/');
    std::string element(rel.substr(0, slash));
    if (element.empty() || element == "." || element == "..") {
      errno = EXDEV;
      return -1;
    }
    if (slash == std::string_view::npos) {
      return ::openat(current.get(), element.c_str(), flags | O_NOFOLLOW, mode);
    }
    UniqueFd next(
        ::openat(current.get(), element.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      return -1;
    }
    current = std::move(next);
    rel.remove_prefix(slash + 1);
  }
}

}  // namespace

int OpenBeneath(int dir_fd, std::string_view rel, int flags, mode_t mode) {
  flags |= O_CLOEXEC;
  if (rel.empty()) {
    int fd = ::openat(dir_fd, ".", flags, mode);  // the directory itself, never a link
    return fd >= 0 ? fd : -errno;
  }
  flags |= O_NOFOLLOW;
  std::string path(rel);
  int fd = OpenAt2(dir_fd, path.c_str(), flags, mode);
  if (fd < 0 && errno == ENOSYS) {
    fd = WalkOpen(dir_fd, rel, flags, mode);
  }
  return fd >= 0 ? fd : -errno;
}

Result<UniqueFd> OpenParentBeneath(int dir_fd, std::string_view rel, bool create, mode_t dir_mode,
                                   std::string* leaf) {
  size_t last = rel.rfind('/');
  *leaf = std::string(last == std::string_view::npos ? rel : rel.substr(last + 1));
  if (leaf->empty()) {
    return InvalidArgument("empty file name: " + std::string(rel));
  }
  std::string_view parents =
      last == std::string_view::npos ? std::string_view() : rel.substr(0, last);
  if (!create) {
    int fd = OpenBeneath(dir_fd, parents, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
      return ErrnoStatus(-fd, parents.empty() ? std::string(".") : std::string(parents));
    }
    return UniqueFd(fd);
  }
  // Each directory is opened (without following links) from the one before, so what was made is
  // what is used: a rename or a symlink swapped in between only makes the next step fail.
  UniqueFd current(OpenBeneath(dir_fd, "", O_RDONLY | O_DIRECTORY));
  if (!current.valid()) {
    return ErrnoStatus(errno, "directory root");
  }
  while (!parents.empty()) {
    size_t slash = parents.find('/');
    std::string element(parents.substr(0, slash));
    if (element.empty() || element == "." || element == "..") {
      return InvalidArgument("unsafe path: " + std::string(rel));
    }
    bool made = ::mkdirat(current.get(), element.c_str(), 0700) == 0;
    if (!made && errno != EEXIST) {
      return ErrnoStatus(errno, element);
    }
    UniqueFd next(
        ::openat(current.get(), element.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      if (errno == ELOOP || errno == ENOTDIR) {
        return FailedPrecondition(std::string(rel) + ": " + element + " is not a directory");
      }
      return ErrnoStatus(errno, element);
    }
    if (made && ::fchmod(next.get(), dir_mode) != 0) {
      return ErrnoStatus(errno, "fchmod " + element);
    }
    current = std::move(next);
    parents.remove_prefix(slash == std::string_view::npos ? parents.size() : slash + 1);
  }
  return current;
}

void UseOpenat2ForTesting(bool use) { g_openat2 = use; }

int StatBeneath(int dir_fd, std::string_view rel, struct stat* st) {
  int fd = OpenBeneath(dir_fd, rel, O_PATH);
  if (fd < 0) {
    return -fd;
  }
  UniqueFd owned(fd);
  return ::fstat(owned.get(), st) == 0 ? 0 : errno;
}

}  // namespace buildcache::dircache
