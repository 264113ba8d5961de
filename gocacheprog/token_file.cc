#include "gocacheprog/token_file.h"

#include <errno.h>
#include <sys/stat.h>

#include <cstring>

#include "gocacheprog/agent_client.h"

namespace buildcache::gocacheprog {

Result<std::string> TokenFile::Current() {
  struct stat st {};
  if (stat(path_.c_str(), &st) != 0) {
    return Unavailable("cannot read the token file " + path_ + ": " + strerror(errno));
  }
  const Fingerprint now{
      static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
      static_cast<uint64_t>(st.st_size),
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
  MutexLock lock(mu_);
  if (!loaded_ || now != fingerprint_) {
    // Read under the lock: concurrent callers wait for this one read rather than each reading.
    token_ = ReadToken(path_);
    fingerprint_ = now;
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
