#include "common/fs/dir_reader.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>

namespace buildcache::fs {

Result<DirReader> DirReader::FromFd(UniqueFd dir) {
  DIR* d = ::fdopendir(dir.get());
  if (d == nullptr) {
    return ErrnoStatus(errno, "fdopendir");
  }
  dir.release();  // closedir closes it now
  return DirReader(d);
}

Result<DirReader> DirReader::Open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    return ErrnoStatus(errno, "open " + path);
  }
  return FromFd(std::move(fd));
}

DirReader& DirReader::operator=(DirReader&& other) noexcept {
  if (this != &other) {
    if (dir_ != nullptr) {
      ::closedir(dir_);
    }
    dir_ = other.dir_;
    error_ = other.error_;
    other.dir_ = nullptr;
  }
  return *this;
}

DirReader::~DirReader() {
  if (dir_ != nullptr) {
    ::closedir(dir_);
  }
}

bool DirReader::Next(DirEntry* entry) {
  while (true) {
    errno = 0;
    struct dirent* de = ::readdir(dir_);
    if (de == nullptr) {
      error_ = errno;
      return false;
    }
    std::string_view name = de->d_name;
    if (name == "." || name == "..") {
      continue;
    }
    entry->name = name;
    entry->type = de->d_type;
    return true;
  }
}

bool DirReader::IsDir(const DirEntry& entry) const {
  if (entry.type != DT_UNKNOWN) {
    return entry.type == DT_DIR;
  }
  std::string name(entry.name);
  struct stat st;
  return ::fstatat(fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace buildcache::fs
