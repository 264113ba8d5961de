// Owned file descriptors and the write/mkdir loops every component needs. Errors come back as a
// Status built from the errno (ErrnoStatus: ENOSPC and EDQUOT are kResourceExhausted).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::fs {

// Owns a file descriptor; closes it when destroyed or reset. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership: the caller closes the returned descriptor.
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the held descriptor (if any) and holds `fd` instead.
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Writes all of `data` to fd, continuing after short writes and EINTR. `what` names the file in
// the error.
Status WriteAll(int fd, std::string_view data, std::string_view what = "write");

// Reads fd from its current offset to the end, passing the bytes to `sink` in chunks of at most
// 1 MiB, continuing after EINTR; stops at the first error of read (named by `what`) or of sink.
Status ReadChunks(int fd, std::string_view what,
                  const std::function<Status(std::string_view)>& sink);

// fsync(2) as a Status; `what` names the file in the error.
Status Fsync(int fd, std::string_view what);

// Makes the directory `path` and any missing parent, each new one with `mode` (less the umask);
// directories that exist are left as they are. Fails with the errno of the first component that
// cannot be made, or ENOTDIR when something other than a directory is in the way.
Status MakeDirs(const std::string& path, mode_t mode = 0755);

// What a reload check compares to tell whether a file changed since it was read: a Kubernetes
// Secret or projected-token volume swaps a symlink (the path then names another inode); a file
// written in place changes its size, mtime or ctime.
struct FileStamp {
  uint64_t dev = 0;
  uint64_t ino = 0;
  int64_t size = -1;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

// The stamp of path, following symlinks; the errno's status when it cannot be stat'ed.
Result<FileStamp> StampOf(const std::string& path);

}  // namespace buildcache::fs
