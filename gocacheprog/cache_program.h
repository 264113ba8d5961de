#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <istream>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/base/thread_annotations.h"
#include "gocacheprog/agent_client.h"
#include "gocacheprog/protocol.h"

namespace buildcache::gocacheprog {

struct Options {
  // The local directory holding outputs (named in DiskPath) and action entries: o/<hex>, a/<hex>.
  std::string dir;
  // The node's agent; nullopt: local only.
  std::optional<AgentAddress> agent;
  // Bound on each agent request (connect, send, receive together).
  std::chrono::milliseconds timeout{5000};
  // Largest output fetched or uploaded; larger outputs stay local.
  uint64_t max_object_size = uint64_t{512} << 20;
  // Write a one-line summary (hits, misses, bytes) to the log stream at close.
  bool stats = false;
  // Requests served at once: the go command sends gets concurrently, and uploads run beside them.
  int workers = 8;
  // A file holding the bearer token the agent identifies this caller by (read again whenever it
  // changes: TokenFile); "" sends none.
  std::string token_file;
  // --install=DIR: copy this binary to DIR/buildcache-gocacheprog and exit (what the webhook's
  // init container runs); "" serves the go command.
  std::string install_dir;
};

// Counters for one run, for the --stats summary and tests.
struct Stats {
  uint64_t gets = 0;
  uint64_t local_hits = 0;
  uint64_t remote_hits = 0;
  uint64_t misses = 0;
  uint64_t puts = 0;
  uint64_t uploads = 0;  // outputs the agent accepted
  uint64_t bytes_downloaded = 0;
  uint64_t bytes_uploaded = 0;
  uint64_t connections = 0;  // connections opened to the agent (kept alive and reused)
  uint64_t retries = 0;      // requests sent again after a reused connection failed
};

// Where an action entry and an output live on the agent. Action entries are unverifiable
// (anyone who can reach the agent can write one), so they sit in their own generic-key
// namespace, gocache/v1/a/<action hex>, where a caller scope can later be prefixed; outputs are
// content-addressed in the agent's verified CAS (/cas/<output hex>), which rejects a body that
// does not hash to its name.
std::string AgentActionPath(std::string_view action_id);
std::string AgentOutputPath(std::string_view output_id);

// An action entry as stored (locally and on the agent): "v1 <output hex> <size> <unix nanos>\n".
struct ActionEntry {
  std::string output_id;  // raw 32 bytes
  int64_t size = 0;
  int64_t time_unix_nanos = 0;
};
std::string EncodeEntry(const ActionEntry& entry);
std::optional<ActionEntry> ParseEntry(std::string_view text);

// The GOCACHEPROG program: answers the go command's requests from a local directory and the node's
// agent. A miss or an agent failure is always answered as a miss (or, for put, as stored
// locally): the build never fails because of the agent. Gets and uploads run on a pool of
// Options::workers threads (gets first), responses are written as they complete (the protocol
// matches them by ID); a put is answered once its output is on local disk, and close is answered
// after every pending get and upload has finished (the go command kills the program after it).
//
// Run() owns the calling thread until close or end of input; log receives at most one line per
// kind of problem.
class CacheProgram {
 public:
  CacheProgram(Options options, std::ostream& log);
  ~CacheProgram();

  // Serves requests from `in` and writes responses to `out` (flushed after each). Returns 0 after
  // close or EOF, 2 on a protocol error (malformed input from the go command) or an unusable
  // local directory.
  int Run(std::istream& in, std::ostream& out);

  Stats stats() const;

 private:
  Response Get(const Request& req);
  Response Put(const Request& req, const std::string& body);
  void Upload(const std::string& action_id, const std::string& output_id, int64_t size,
              int64_t time_unix_nanos);
  void Reply(std::ostream& out, const Response& resp);
  // Runs `task` on the pool; urgent tasks (gets) go before queued uploads.
  void Enqueue(std::function<void()> task, bool urgent);
  void WorkerLoop();
  // Lets the workers finish every queued task, then joins them.
  void Drain();
  // Records a transport failure: the agent is not asked again in this run.
  void AgentDown(const Status& status);
  // Writes one stderr line the first time `problem` is seen.
  void LogOnce(const std::string& problem, const std::string& detail);

  std::string OutputPath(std::string_view output_id) const;
  std::string EntryPath(std::string_view action_id) const;

  const Options options_;
  std::ostream& log_;
  std::optional<AgentClient> agent_;
  std::atomic<bool> agent_up_{false};

  mutable Mutex mu_;
  CondVar cv_;
  std::deque<std::function<void()>> tasks_ GUARDED_BY(mu_);
  bool closing_ GUARDED_BY(mu_) = false;
  std::set<std::string> logged_ GUARDED_BY(mu_);
  Stats stats_ GUARDED_BY(mu_);
  std::vector<std::thread> workers_;
  Mutex out_mu_;  // one response line at a time on the output stream
};

// Parses the program's flags (--agent=URL, --dir=DIR, --timeout=SECONDS, --token-file=PATH,
// --stats, --install=DIR) with environment fallbacks BUILDCACHE_GOCACHEPROG_AGENT,
// BUILDCACHE_GOCACHEPROG_DIR and BUILDCACHE_GOCACHEPROG_TOKEN_FILE, then BUILDCACHE_TOKEN_FILE
// (what the webhook sets beside a projected token); `--token-file=` (empty) sends no token. An
// unparsable value is an InvalidArgument naming it.
Result<Options> ParseOptions(int argc, char** argv);

// Copies the running binary (/proc/self/exe) to DIR/buildcache-gocacheprog, mode 0755, replacing
// it atomically. The binary is static, so the copy runs in any Linux image that mounts DIR.
Status InstallSelf(const std::string& dir);

}  // namespace buildcache::gocacheprog
