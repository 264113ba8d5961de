#pragma once

#include <cstdint>
#include <string>

#include "common/base/thread_annotations.h"
#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::gocacheprog {

// A bearer token kept in a file that may be replaced while the program runs: the kubelet rotates
// a projected ServiceAccount token by writing a new directory and swapping the `..data` symlink,
// so the path then names another inode. Current() looks at the file's stat (following symlinks)
// on every call and reads it again only when device, inode, size or mtime changed; a request
// costs a stat, not an open and a read.
//
// Thread-safe.
class TokenFile {
 public:
  explicit TokenFile(std::string path) : path_(std::move(path)) {}

  // The token (ReadToken's rules: trimmed, no spaces or control characters inside), or why it
  // cannot be had (Unavailable: unreadable; NotFound: empty; InvalidArgument: malformed).
  Result<std::string> Current() EXCLUDES(mu_);
  const std::string& path() const { return path_; }
  // How many times the file was read (for tests).
  uint64_t reads() const EXCLUDES(mu_);

 private:
  const std::string path_;
  mutable Mutex mu_;
  bool loaded_ GUARDED_BY(mu_) = false;
  fs::FileStamp stamp_ GUARDED_BY(mu_);
  Result<std::string> token_ GUARDED_BY(mu_) = Unavailable("not read yet");
  uint64_t reads_ GUARDED_BY(mu_) = 0;
};

}  // namespace buildcache::gocacheprog
