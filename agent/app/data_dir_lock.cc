#include "agent/app/data_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

namespace buildcache::agent {
namespace {

constexpr char kLockFile[] = "agent.lock";

std::string Holder(int fd) {
  char buf[1024];
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  if (n <= 0) return "another process (it has not recorded itself yet)";
  auto doc = nlohmann::json::parse(std::string(buf, static_cast<size_t>(n)), nullptr, false);
  if (!doc.is_object()) return "another process";
  return "pid " + std::to_string(doc.value("pid", 0)) + " on host " + doc.value("host", "?") +
         ", since " + doc.value("since", "?");
}

std::string Now() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

Result<std::unique_ptr<DataDirLock>> DataDirLock::Acquire(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "creating data directory " + data_dir);
  std::string path = data_dir + "/" + kLockFile;
  fs::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoStatus(errno, "opening " + path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    std::string holder = err == EWOULDBLOCK ? Holder(fd.get()) : "";
    if (err != EWOULDBLOCK) return ErrnoStatus(err, "locking " + path);
    return FailedPrecondition("data directory " + data_dir + " is in use by another agent (" +
                              holder + "; lock " + path +
                              "): two agents on one directory lose each other's writes; give "
                              "each agent its own store.dataDir");
  }
  char host[256] = {};
  (void)::gethostname(host, sizeof host - 1);
  std::string me =
      nlohmann::json{{"pid", static_cast<int>(::getpid())}, {"host", host}, {"since", Now()}}
          .dump() +
      "\n";
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    return ErrnoStatus(errno, "writing " + path);
  }
  return std::unique_ptr<DataDirLock>(new DataDirLock(std::move(path), std::move(fd)));
}

DataDirLock::~DataDirLock() = default;

}  // namespace buildcache::agent
