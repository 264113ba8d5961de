#include "agent/frontends/pypi/build_sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/fs/file.h"

namespace buildcache::pypi {
namespace {

constexpr std::string_view kInside = "/build";
constexpr auto kCancelPoll = std::chrono::milliseconds(100);

std::vector<std::string> BubblewrapArgv(const SandboxRun& run) {
  std::vector<std::string> a = {run.bwrap, "--unshare-all", "--die-with-parent", "--new-session"};
  auto add = [&a](std::initializer_list<std::string> args) { a.insert(a.end(), args); };
  if (run.network) add({"--share-net"});
  add({"--uid", "65534", "--gid", "65534"});
  add({"--ro-bind", "/usr", "/usr"});
  add({"--symlink", "usr/bin", "/bin"});
  add({"--symlink", "usr/sbin", "/sbin"});
  add({"--symlink", "usr/lib", "/lib"});
  add({"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"});
  add({"--bind", run.scratch.string(), std::string(kInside), "--chdir", std::string(kInside)});
  std::error_code ec;
  if (std::filesystem::exists("/usr/lib64", ec)) add({"--symlink", "usr/lib64", "/lib64"});
  // The loader cache, and the compiler names Debian resolves through alternatives (cc, c++).
  for (const char* p : {"/etc/ld.so.cache", "/etc/alternatives"}) {
    if (std::filesystem::exists(p, ec)) add({"--ro-bind", p, p});
  }
  for (const std::string& p : run.read_only_paths) {
    if (std::filesystem::exists(p, ec)) add({"--ro-bind", p, p});
  }
  add({"--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"});
  add({"--setenv", "HOME", std::string(kInside), "--setenv", "TMPDIR", "/tmp"});
  add({"--setenv", "LANG", "C.UTF-8", "--"});
  a.insert(a.end(), run.argv.begin(), run.argv.end());
  return a;
}

// In the child, between fork and exec: only async-signal-safe calls (the agent has threads, so
// nothing may allocate here). Never returns.
[[noreturn]] void Exec(char* const* argv, char* const* env, int log_fd, uint64_t max_file_bytes) {
  setpgid(0, 0);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) {
    _exit(126);
  }
  struct rlimit fsize = {max_file_bytes, max_file_bytes};
  setrlimit(RLIMIT_FSIZE, &fsize);
  execve(argv[0], argv, env);
  _exit(127);
}

// Pointers into strings for execve (the strings must outlive the result).
std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string SandboxResult::Describe() const {
  if (cancelled) return "cancelled";
  if (timed_out) return "killed at its deadline";
  if (signal != 0) return std::string("killed by signal ") + strsignal(signal);
  return "exit code " + std::to_string(exit_code);
}

std::string ScratchPath(const SandboxRun& run, const std::filesystem::path& host) {
  if (run.sandbox == Sandbox::kNone) return host.string();
  return std::string(kInside) + "/" + host.lexically_relative(run.scratch).string();
}

Result<SandboxResult> RunSandboxed(const SandboxRun& run) {
  if (run.argv.empty()) return InvalidArgument("no command to run");
  std::vector<std::string> argv = run.argv;
  if (run.sandbox == Sandbox::kBubblewrap) {
    if (access(run.bwrap.c_str(), X_OK) != 0) {
      return FailedPrecondition("bubblewrap is not installed (" + run.bwrap +
                                "): apt-get install bubblewrap");
    }
    argv = BubblewrapArgv(run);
  }
  const int mode = run.append_log ? O_APPEND : O_TRUNC;
  fs::UniqueFd log(open(run.log.c_str(), O_WRONLY | O_CREAT | mode | O_CLOEXEC, 0600));
  if (!log.valid()) return ErrnoStatus(errno, "creating " + run.log.string());
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
                                  "HOME=" + run.scratch.string(), "TMPDIR=" + run.scratch.string()};
  std::vector<char*> c_argv = CStrings(argv), c_env = CStrings(env);
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) Exec(c_argv.data(), c_env.data(), log.get(), run.max_file_bytes);
  setpgid(pid, pid);  // also in the child: whichever runs first
  fs::UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));

  SandboxResult result;
  const auto deadline = std::chrono::steady_clock::now() + run.deadline;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    if (run.cancel != nullptr && run.cancel->load()) {
      result.cancelled = true;
      break;
    }
    struct pollfd p = {pidfd.get(), POLLIN, 0};
    int wait_ms = static_cast<int>(std::min(left, kCancelPoll).count());
    if (pidfd.valid()) {
      (void)poll(&p, 1, wait_ms);
    } else {
      usleep(static_cast<useconds_t>(wait_ms) * 1000);  // no pidfd (old kernel): poll by time
    }
    int status = 0;
    pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) {
      if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
      return result;
    }
  }
  // Over the deadline (or cancelled): the whole process group goes, then the child is reaped.
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.signal = SIGKILL;
  return result;
}

}  // namespace buildcache::pypi
