// Iterating over the entries of one directory through an open descriptor (so the caller decides
// how the directory was reached, e.g. beneath a root without following links).
#pragma once

#include <dirent.h>

#include <string_view>

#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::fs {

// One entry of a directory. `name` stays valid until the next call to Next.
struct DirEntry {
  std::string_view name;
  unsigned char type = DT_UNKNOWN;  // d_type: DT_REG, DT_DIR, DT_LNK, ...; some file systems
                                    // leave it DT_UNKNOWN (see DirReader::IsDir)
};

// Reads the entries of a directory, "." and ".." left out, in the order the file system gives.
// Move-only; closes the directory when destroyed. Not thread-safe.
class DirReader {
 public:
  // Takes over `dir` (open with O_DIRECTORY | O_RDONLY). Fails with the errno of fdopendir.
  static Result<DirReader> FromFd(UniqueFd dir);
  // Opens `path` (following links, like open(2)) and reads it.
  static Result<DirReader> Open(const std::string& path);

  DirReader(DirReader&& other) noexcept : dir_(other.dir_) { other.dir_ = nullptr; }
  DirReader& operator=(DirReader&& other) noexcept;
  DirReader(const DirReader&) = delete;
  DirReader& operator=(const DirReader&) = delete;
  ~DirReader();

  // The next entry; false at the end or on a read error (then error() is set).
  bool Next(DirEntry* entry);
  // The errno of a failed read, 0 when Next returned false at the end.
  int error() const { return error_; }
  // The directory's descriptor, for *at calls on its entries (owned by the reader).
  int fd() const { return ::dirfd(dir_); }
  // Whether the entry is a directory; resolves DT_UNKNOWN with fstatat, never following a link
  // (a symlink to a directory is not one).
  bool IsDir(const DirEntry& entry) const;

 private:
  explicit DirReader(DIR* dir) : dir_(dir) {}
  DIR* dir_ = nullptr;
  int error_ = 0;
};

}  // namespace buildcache::fs
