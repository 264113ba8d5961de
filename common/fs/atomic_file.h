// Writing a file so readers see the old content or the whole new content, never a part: the bytes
// go to a temporary file beside the destination (same directory, so the rename is atomic), which
// is fsynced and renamed into place, and the directory is fsynced so the rename survives a crash.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::fs {

// One file being written under a temporary name in a directory. Until Commit the destination is
// untouched; destroying (or Discard-ing) an uncommitted AtomicFile removes the temporary file, so
// a failed write (ENOSPC included) leaves the directory as it was. Not thread-safe.
class AtomicFile {
 public:
  enum class Replace {
    kYes,  // rename(2): an existing destination is replaced atomically
    kNo,   // renameat2(RENAME_NOREPLACE): an existing destination fails with kAlreadyExists
  };

  enum class SyncDir {
    kYes,  // Commit fsyncs the destination directory (the rename survives a crash)
    kNo,   // the caller fsyncs it, e.g. once for a batch of commits into the same directory
  };

  // Creates the temporary file `<temp_prefix><pid>-<n>` in the directory `dir_fd` (O_EXCL,
  // O_NOFOLLOW, mode 0600), to become `leaf` (one name, no '/') in the same directory. dir_fd is
  // borrowed: it must stay open until the AtomicFile is destroyed. Pick a temp_prefix the readers
  // of the directory ignore.
  static Result<AtomicFile> Create(int dir_fd, std::string leaf,
                                   std::string_view temp_prefix = ".tmp.bc-") {
    return CreateIn(dir_fd, dir_fd, std::move(leaf), temp_prefix);
  }
  // The same with the temporary file in its own directory (temp_dir_fd, on the same file system
  // as dest_dir_fd), for stores that keep unfinished files out of the directories readers list.
  static Result<AtomicFile> CreateIn(int temp_dir_fd, int dest_dir_fd, std::string leaf,
                                     std::string_view temp_prefix = ".tmp.bc-");

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() { Discard(); }

  // The temporary file's descriptor (stays open after Commit, for fstat / fchmod).
  int fd() const { return fd_.get(); }
  const std::string& temp_name() const { return temp_; }
  bool committed() const { return committed_; }

  Status Write(std::string_view data);
  // fsyncs the file now (Commit skips the fsync when nothing was written since).
  Status Sync();
  // Syncs the file if needed, renames it to the leaf and (with SyncDir::kYes) fsyncs the
  // destination directory. On a rename error the temporary file is still there (Discard or the
  // destructor removes it). A directory fsync error is returned after the rename happened:
  // committed() tells the two apart.
  Status Commit(Replace replace, SyncDir sync_dir = SyncDir::kYes);
  // Removes the temporary file unless committed. Idempotent.
  void Discard();

 private:
  AtomicFile(int temp_dir_fd, int dest_dir_fd, std::string leaf, std::string temp, UniqueFd fd)
      : temp_dir_fd_(temp_dir_fd),
        dest_dir_fd_(dest_dir_fd),
        leaf_(std::move(leaf)),
        temp_(std::move(temp)),
        fd_(std::move(fd)) {}

  int temp_dir_fd_;
  int dest_dir_fd_;
  std::string leaf_;
  std::string temp_;
  UniqueFd fd_;
  bool synced_ = false;
  bool committed_ = false;
  bool discarded_ = false;
};

// Replaces (or creates) the file at `path` with `data` through an AtomicFile in its directory,
// with permissions `mode`. On any error the previous content, if any, is left in place and no
// temporary file remains.
Status AtomicWriteFile(const std::string& path, std::string_view data, mode_t mode = 0644);

}  // namespace buildcache::fs
