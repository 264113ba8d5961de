#pragma once

#include <memory>
#include <string>

#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::agent {

// An exclusive lock on an agent's data directory (flock on DATA_DIR/agent.lock), held for the
// agent's lifetime. Two agents on one directory would delete each other's temporary files and
// lose in-flight writes (each cleans tmp/ when it opens the store), so the second one must not
// start. The lock file records its holder (pid, host name, start time) for the error message;
// the kernel drops the lock when the holder exits, however it exits, so a stale file never
// blocks a restart.
class DataDirLock {
 public:
  // Creates the directory if needed and takes the lock. kFailedPrecondition naming the holder
  // when another process holds it; another error when the file cannot be created or locked.
  static Result<std::unique_ptr<DataDirLock>> Acquire(const std::string& data_dir);

  ~DataDirLock();  // releases the lock (the file stays)
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  DataDirLock(std::string path, fs::UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  fs::UniqueFd fd_;  // closing it releases the lock
};

}  // namespace buildcache::agent
