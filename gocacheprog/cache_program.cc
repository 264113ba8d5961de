#include "gocacheprog/cache_program.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/fs/atomic_file.h"
#include "common/fs/file.h"
#include "gocacheprog/sha256.h"

namespace buildcache::gocacheprog {

namespace {

constexpr size_t kIdBytes = 32;  // Go's action and output IDs are SHA-256 sums

int64_t NowUnixNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Writes `data` to `path` through a temporary file and rename, so readers (and the go command,
// which opens DiskPath) never see a partial file.
Status WriteFileAtomic(const std::string& path, std::string_view data) {
  static std::atomic<uint64_t> counter{0};
  std::string tmp = path + ".tmp." + std::to_string(getpid()) + "." + std::to_string(++counter);
  // No fsync: the go command's cache is a cache (a file lost in a crash is rebuilt), and a put
  // is on the build's critical path. fs::AtomicWriteFile is the durable variant.
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open " + tmp);
  Status written = fs::WriteAll(fd, data, "write " + tmp);
  close(fd);
  if (!written.ok()) {
    unlink(tmp.c_str());
    return written;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return ErrnoStatus(err, "rename " + path);
  }
  return Status::Ok();
}

std::optional<std::string> ReadFile(const std::string& path, uint64_t max) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || out.size() + static_cast<size_t>(n) > max) {
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// The file's size, or -1 if it is not a regular file.
int64_t FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  return static_cast<int64_t>(st.st_size);
}

std::optional<int64_t> ParseInt(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

std::string AgentActionPath(std::string_view action_id) {
  return "/cache/gocache/v1/a/" + Hex(action_id);
}

std::string AgentOutputPath(std::string_view output_id) { return "/cas/" + Hex(output_id); }

std::string EncodeEntry(const ActionEntry& e) {
  return "v1 " + Hex(e.output_id) + " " + std::to_string(e.size) + " " +
         std::to_string(e.time_unix_nanos) + "\n";
}

std::optional<ActionEntry> ParseEntry(std::string_view text) {
  if (!text.starts_with("v1 ") || !text.ends_with("\n")) return std::nullopt;
  text.remove_prefix(3);
  text.remove_suffix(1);
  size_t a = text.find(' ');
  if (a == std::string_view::npos) return std::nullopt;
  size_t b = text.find(' ', a + 1);
  if (b == std::string_view::npos) return std::nullopt;
  std::string_view hex = text.substr(0, a);
  if (hex.size() != 2 * kIdBytes) return std::nullopt;
  auto out = Unhex(hex);
  auto size = ParseInt(text.substr(a + 1, b - a - 1));
  auto time = ParseInt(text.substr(b + 1));
  if (!out || !size || !time) return std::nullopt;
  return ActionEntry{*out, *size, *time};
}

CacheProgram::CacheProgram(Options options, std::ostream& log)
    : options_(std::move(options)), log_(log) {
  if (options_.agent) {
    // One kept-alive connection per worker: every worker can have a request in flight.
    agent_.emplace(*options_.agent, options_.timeout, options_.max_object_size, options_.token_file,
                   static_cast<size_t>(std::max(1, options_.workers)));
    agent_up_ = true;
  }
}

CacheProgram::~CacheProgram() { Drain(); }

void CacheProgram::Enqueue(std::function<void()> task, bool urgent) {
  {
    MutexLock lock(mu_);
    if (urgent) {
      tasks_.push_front(std::move(task));
    } else {
      tasks_.push_back(std::move(task));
    }
  }
  cv_.NotifyOne();
}

void CacheProgram::WorkerLoop() {
  for (;;) {
    std::function<void()> task;
    {
      MutexLock lock(mu_);
      while (!closing_ && tasks_.empty()) cv_.Wait(mu_);
      if (tasks_.empty()) return;  // closing and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

void CacheProgram::Drain() {
  {
    MutexLock lock(mu_);
    closing_ = true;
  }
  cv_.NotifyAll();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

void CacheProgram::Reply(std::ostream& out, const Response& resp) {
  std::string line = EncodeResponse(resp);
  MutexLock lock(out_mu_);
  out << line << std::flush;
}

Stats CacheProgram::stats() const {
  Stats s;
  {
    MutexLock lock(mu_);
    s = stats_;
  }
  if (agent_) {
    s.connections = agent_->connections_opened();
    s.retries = agent_->retries();
  }
  return s;
}

std::string CacheProgram::OutputPath(std::string_view output_id) const {
  return options_.dir + "/o/" + Hex(output_id);
}

std::string CacheProgram::EntryPath(std::string_view action_id) const {
  return options_.dir + "/a/" + Hex(action_id);
}

void CacheProgram::LogOnce(const std::string& problem, const std::string& detail) {
  MutexLock lock(mu_);
  if (!logged_.insert(problem).second) return;
  log_ << "buildcache-gocacheprog: " << problem << (detail.empty() ? "" : ": ") << detail
       << std::endl;
}

void CacheProgram::AgentDown(const Status& status) {
  if (agent_up_.exchange(false)) {
    LogOnce("agent unreachable, continuing with the local cache only", status.ToString());
  }
}

int CacheProgram::Run(std::istream& in, std::ostream& out) {
  if (Status s = fs::MakeDirs(options_.dir + "/o"); !s.ok()) {
    log_ << "buildcache-gocacheprog: cannot use the local directory: " << s.ToString() << std::endl;
    return 2;
  }
  if (Status s = fs::MakeDirs(options_.dir + "/a"); !s.ok()) {
    log_ << "buildcache-gocacheprog: cannot use the local directory: " << s.ToString() << std::endl;
    return 2;
  }
  // A tied stream flushes the output before every read or write of its own, outside out_mu_:
  // std::cin is tied to std::cout (the reads of this thread), and so is std::cerr (LogOnce, from
  // any worker). Either would race the workers' replies in std::cout's buffer and could send a
  // reply twice or torn. Replies flush themselves.
  in.tie(nullptr);
  log_.tie(nullptr);
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  Response hello;
  hello.known_commands = true;
  Reply(out, hello);

  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line == "\r") continue;
    auto req = ParseRequest(line);
    if (!req.ok()) {
      log_ << "buildcache-gocacheprog: bad request from the go command: " << req.status().ToString()
           << std::endl;
      Drain();
      return 2;
    }
    Response resp;
    if (req->command == "get") {
      Enqueue([this, r = std::move(*req), &out] { Reply(out, Get(r)); }, true);
      continue;
    } else if (req->command == "put") {
      std::string body;
      if (req->body_size > 0) {
        // The go command ends each request with two newlines (its JSON encoder's and its own),
        // so blank lines come before the body line.
        std::string body_line;
        while (std::getline(in, body_line) && (body_line.empty() || body_line == "\r")) {
        }
        if (!in) {
          log_ << "buildcache-gocacheprog: input ended before a put body" << std::endl;
          Drain();
          return 2;
        }
        auto decoded = ParseBodyLine(body_line);
        if (!decoded.ok() || static_cast<int64_t>(decoded->size()) != req->body_size) {
          log_ << "buildcache-gocacheprog: bad put body from the go command" << std::endl;
          Drain();
          return 2;
        }
        body = std::move(*decoded);
      }
      resp = Put(*req, body);
    } else if (req->command == "close") {
      Drain();
      resp.id = req->id;
      Reply(out, resp);
      break;
    } else {
      resp.id = req->id;
      resp.err = "unknown command \"" + req->command + "\"";
    }
    Reply(out, resp);
  }
  Drain();
  if (options_.stats) {
    Stats s = stats();
    log_ << "buildcache-gocacheprog: stats gets=" << s.gets << " local_hits=" << s.local_hits
         << " remote_hits=" << s.remote_hits << " misses=" << s.misses << " puts=" << s.puts
         << " uploads=" << s.uploads << " bytes_downloaded=" << s.bytes_downloaded
         << " bytes_uploaded=" << s.bytes_uploaded << " connections=" << s.connections
         << " retries=" << s.retries << std::endl;
  }
  return 0;
}

Response CacheProgram::Get(const Request& req) {
  Response resp;
  resp.id = req.id;
  resp.miss = true;
  {
    MutexLock lock(mu_);
    ++stats_.gets;
  }
  auto count_miss = [&] {
    MutexLock lock(mu_);
    ++stats_.misses;
    return resp;
  };
  if (req.action_id.size() != kIdBytes) return count_miss();

  auto answer = [&](const ActionEntry& e, bool remote, uint64_t downloaded) {
    resp.miss = false;
    resp.output_id = e.output_id;
    resp.size = e.size;
    resp.time_unix_nanos = e.time_unix_nanos;
    resp.disk_path = OutputPath(e.output_id);
    MutexLock lock(mu_);
    ++(remote ? stats_.remote_hits : stats_.local_hits);
    stats_.bytes_downloaded += downloaded;
    return resp;
  };

  const std::string entry_path = EntryPath(req.action_id);
  if (auto text = ReadFile(entry_path, 4096)) {
    if (auto e = ParseEntry(*text); e && FileSize(OutputPath(e->output_id)) == e->size) {
      return answer(*e, false, 0);
    }
  }
  if (!agent_up_) return count_miss();

  auto got = agent_->Get(AgentActionPath(req.action_id));
  if (!got.ok()) {
    AgentDown(got.status());
    return count_miss();
  }
  if (got->status == 404) return count_miss();
  if (got->status == 401 || got->status == 503) {
    // A refused or unverifiable token: a miss, and the agent's reason (it never quotes the token).
    std::string why = got->body.substr(0, 200);
    while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
    LogOnce("agent did not accept the token (HTTP " + std::to_string(got->status) + ")", why);
    return count_miss();
  }
  if (got->status != 200) {
    LogOnce("agent error on action lookup", "HTTP " + std::to_string(got->status));
    return count_miss();
  }
  auto entry = ParseEntry(got->body);
  if (!entry || entry->size < 0 || static_cast<uint64_t>(entry->size) > options_.max_object_size) {
    LogOnce("agent returned a malformed action entry", "treated as a miss");
    return count_miss();
  }
  uint64_t downloaded = 0;
  const std::string output_path = OutputPath(entry->output_id);
  if (FileSize(output_path) != entry->size) {
    auto blob = agent_->Get(AgentOutputPath(entry->output_id));
    if (!blob.ok()) {
      AgentDown(blob.status());
      return count_miss();
    }
    if (blob->status != 200) {
      if (blob->status != 404) {
        LogOnce("agent error on output fetch", "HTTP " + std::to_string(blob->status));
      }
      return count_miss();
    }
    // The agent verified the output when it was stored; check again here, so neither a damaged
    // store nor anything between us and the agent can hand the compiler the wrong bytes.
    if (static_cast<int64_t>(blob->body.size()) != entry->size ||
        Sha256::Of(blob->body) != entry->output_id) {
      LogOnce("agent returned an output that does not match its ID", "treated as a miss");
      return count_miss();
    }
    if (Status s = WriteFileAtomic(output_path, blob->body); !s.ok()) {
      LogOnce("cannot write to the local directory", s.ToString());
      return count_miss();
    }
    downloaded = blob->body.size();
  }
  (void)WriteFileAtomic(entry_path, EncodeEntry(*entry));
  return answer(*entry, true, downloaded);
}

Response CacheProgram::Put(const Request& req, const std::string& body) {
  Response resp;
  resp.id = req.id;
  if (req.action_id.size() != kIdBytes || req.output_id.size() != kIdBytes) {
    resp.err = "put needs 32-byte ActionID and OutputID";
    return resp;
  }
  const std::string output_path = OutputPath(req.output_id);
  if (FileSize(output_path) != static_cast<int64_t>(body.size())) {
    if (Status s = WriteFileAtomic(output_path, body); !s.ok()) {
      // Without the file the go command cannot use DiskPath; this is the one put failure that
      // must be reported (the go command then treats the cache write as failed, not the build).
      resp.err = s.ToString();
      return resp;
    }
  }
  ActionEntry entry{req.output_id, static_cast<int64_t>(body.size()), NowUnixNanos()};
  if (Status s = WriteFileAtomic(EntryPath(req.action_id), EncodeEntry(entry)); !s.ok()) {
    LogOnce("cannot write to the local directory", s.ToString());
  }
  resp.disk_path = output_path;
  {
    MutexLock lock(mu_);
    ++stats_.puts;
  }
  if (agent_up_ && body.size() <= options_.max_object_size) {
    Enqueue([this, a = req.action_id, o = req.output_id, n = entry.size,
             t = entry.time_unix_nanos] { Upload(a, o, n, t); },
            false);
  }
  return resp;
}

void CacheProgram::Upload(const std::string& action_id, const std::string& output_id, int64_t size,
                          int64_t time_unix_nanos) {
  if (!agent_up_) return;
  auto body = ReadFile(OutputPath(output_id), options_.max_object_size);
  if (!body || static_cast<int64_t>(body->size()) != size) return;
  // The output first: an action entry must never point at an output the agent does not hold.
  auto put = agent_->Put(AgentOutputPath(output_id), *body);
  if (!put.ok()) {
    AgentDown(put.status());
    return;
  }
  if (put->status / 100 != 2) {
    LogOnce("agent refused an output", "HTTP " + std::to_string(put->status));
    return;
  }
  ActionEntry entry{output_id, size, time_unix_nanos};
  auto put_entry = agent_->Put(AgentActionPath(action_id), EncodeEntry(entry));
  if (!put_entry.ok()) {
    AgentDown(put_entry.status());
    return;
  }
  if (put_entry->status / 100 != 2) {
    LogOnce("agent refused an action entry", "HTTP " + std::to_string(put_entry->status));
    return;
  }
  MutexLock lock(mu_);
  ++stats_.uploads;
  stats_.bytes_uploaded += body->size();
}

Result<Options> ParseOptions(int argc, char** argv) {
  Options o;
  std::string agent;
  if (const char* env = getenv("BUILDCACHE_GOCACHEPROG_AGENT"); env && *env) agent = env;
  if (const char* env = getenv("BUILDCACHE_GOCACHEPROG_DIR"); env && *env) o.dir = env;
  // The program's own variable first; then the one the webhook sets in every pod it gives a
  // projected token (BUILDCACHE_TOKEN_FILE), so a wired pod needs no configuration.
  if (const char* env = getenv("BUILDCACHE_GOCACHEPROG_TOKEN_FILE"); env && *env) {
    o.token_file = env;
  } else if (const char* shared = getenv("BUILDCACHE_TOKEN_FILE"); shared && *shared) {
    o.token_file = shared;
  }
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::string_view flag) -> std::optional<std::string> {
      if (!arg.starts_with(flag) || arg.size() <= flag.size() || arg[flag.size()] != '=') {
        return std::nullopt;
      }
      return std::string(arg.substr(flag.size() + 1));
    };
    if (auto v = value("--agent")) {
      agent = *v;
    } else if (auto v = value("--dir")) {
      o.dir = *v;
    } else if (auto v = value("--timeout")) {
      char* end = nullptr;
      double secs = strtod(v->c_str(), &end);
      if (v->empty() || *end != '\0' || !(secs > 0) || secs > 3600) {
        return InvalidArgument("--timeout: '" + *v + "' is not a number of seconds in (0, 3600]");
      }
      o.timeout = std::chrono::milliseconds(static_cast<int64_t>(secs * 1000));
    } else if (auto v = value("--token-file")) {
      o.token_file = *v;
    } else if (auto v = value("--install")) {
      o.install_dir = *v;
    } else if (arg == "--stats") {
      o.stats = true;
    } else {
      return InvalidArgument("unknown argument '" + std::string(arg) +
                             "' (flags: --agent=http://HOST:PORT --dir=DIR --timeout=SECONDS "
                             "--token-file=PATH --stats --install=DIR)");
    }
  }
  if (!o.install_dir.empty() && o.install_dir.front() != '/') {
    return InvalidArgument("--install must be an absolute path");
  }
  if (!agent.empty()) {
    auto addr = ParseAgentUrl(agent);
    if (!addr.ok()) return addr.status();
    o.agent = std::move(*addr);
  }
  if (o.dir.empty()) {
    if (const char* xdg = getenv("XDG_CACHE_HOME"); xdg && *xdg == '/') {
      o.dir = std::string(xdg) + "/buildcache-gocacheprog";
    } else if (const char* home = getenv("HOME"); home && *home == '/') {
      o.dir = std::string(home) + "/.cache/buildcache-gocacheprog";
    } else {
      o.dir = "/tmp/buildcache-gocacheprog-" + std::to_string(getuid());
    }
  }
  if (o.dir.front() != '/') return InvalidArgument("--dir must be an absolute path");
  return o;
}

Status InstallSelf(const std::string& dir) {
  fs::UniqueFd self(open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  if (self.get() < 0) return ErrnoStatus(errno, "open /proc/self/exe");
  std::string binary;
  BC_RETURN_IF_ERROR(fs::ReadChunks(self.get(), "read /proc/self/exe", [&](std::string_view chunk) {
    binary.append(chunk);
    return Status::Ok();
  }));
  BC_RETURN_IF_ERROR(fs::MakeDirs(dir));
  return fs::AtomicWriteFile(dir + "/buildcache-gocacheprog", binary, 0755);
}

}  // namespace buildcache::gocacheprog
