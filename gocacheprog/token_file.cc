#include "gocacheprog/token_file.h"

#include "gocacheprog/agent_client.h"

namespace buildcache::gocacheprog {

Result<std::string> TokenFile::Current() {
  Result<fs::FileStamp> now = fs::StampOf(path_);
  if (!now.ok()) {
    return Unavailable("cannot read the token file " + now.status().message());
  }
  MutexLock lock(mu_);
  if (!loaded_ || *now != stamp_) {
    // Read under the lock: concurrent callers wait for this one read rather than each reading.
    token_ = ReadToken(path_);
    stamp_ = *now;
    loaded_ = true;
    ++reads_;
  }
  return token_;
}

uint64_t TokenFile::reads() const {
  MutexLock lock(mu_);
  return reads_;
}

}  // namespace buildcache::gocacheprog
