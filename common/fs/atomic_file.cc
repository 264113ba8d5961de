#include "common/fs/atomic_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace buildcache::fs {
namespace {

std::atomic<uint64_t> g_temp_seq{0};

}  // namespace

Result<AtomicFile> AtomicFile::CreateIn(int temp_dir_fd, int dest_dir_fd, std::string leaf,
                                        std::string_view temp_prefix) {
  if (leaf.empty() || leaf.find('/') != std::string::npos || leaf == "." || leaf == "..") {
    return InvalidArgument("atomic file: not a single name: " + leaf);
  }
  std::string temp = std::string(temp_prefix) + std::to_string(::getpid()) + "-" +
                     std::to_string(g_temp_seq.fetch_add(1));
  UniqueFd fd(::openat(temp_dir_fd, temp.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) {
    return ErrnoStatus(errno, leaf + ": " + temp);
  }
  return AtomicFile(temp_dir_fd, dest_dir_fd, std::move(leaf), std::move(temp), std::move(fd));
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : temp_dir_fd_(other.temp_dir_fd_),
      dest_dir_fd_(other.dest_dir_fd_),
      leaf_(std::move(other.leaf_)),
      temp_(std::move(other.temp_)),
      fd_(std::move(other.fd_)),
      synced_(other.synced_),
      committed_(other.committed_),
      discarded_(other.discarded_) {
  other.discarded_ = true;  // the moved-from object owns no temporary file
}

Status AtomicFile::Write(std::string_view data) {
  synced_ = false;
  return WriteAll(fd_.get(), data, "write " + temp_);
}

Status AtomicFile::Sync() {
  BC_RETURN_IF_ERROR(Fsync(fd_.get(), temp_));
  synced_ = true;
  return Status::Ok();
}

Status AtomicFile::Commit(Replace replace, SyncDir sync_dir) {
  if (committed_ || discarded_) {
    return FailedPrecondition("atomic file " + leaf_ + ": already committed or discarded");
  }
  if (!synced_) {
    BC_RETURN_IF_ERROR(Sync());
  }
  unsigned flags = replace == Replace::kNo ? RENAME_NOREPLACE : 0;
  if (::renameat2(temp_dir_fd_, temp_.c_str(), dest_dir_fd_, leaf_.c_str(), flags) != 0) {
    int err = errno;
    if (err == EEXIST && replace == Replace::kNo) {
      return AlreadyExists(leaf_ + ": exists");
    }
    return ErrnoStatus(err, "rename " + leaf_);
  }
  committed_ = true;
  return sync_dir == SyncDir::kYes ? Fsync(dest_dir_fd_, "directory of " + leaf_) : Status::Ok();
}

void AtomicFile::Discard() {
  if (committed_ || discarded_) {
    return;
  }
  discarded_ = true;
  ::unlinkat(temp_dir_fd_, temp_.c_str(), 0);
}

Status AtomicWriteFile(const std::string& path, std::string_view data, mode_t mode) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::string leaf = slash == std::string::npos ? path : path.substr(slash + 1);
  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) {
    return ErrnoStatus(errno, "open " + dir);
  }
  BC_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(dir_fd.get(), leaf));
  BC_RETURN_IF_ERROR(file.Write(data));
  if (::fchmod(file.fd(), mode) != 0) {
    return ErrnoStatus(errno, "chmod " + path);
  }
  return file.Commit(AtomicFile::Replace::kYes);
}

}  // namespace buildcache::fs
