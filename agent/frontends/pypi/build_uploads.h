#pragma once

// The agent's side of a build that runs elsewhere (a builder pod, pod_runner.h): its one-time
// token and the endpoints the build script calls, under <prefix>/builds/<id>/ on the client port:
//
//   GET  script          the build script (build_script.h), Python 3 stdlib only
//   GET  sdist           the verified sdist (X-Buildcache-Sha256: its digest)
//   PUT  wheel/<file>    the built wheel: once (409 after), at most max_wheel_bytes (413), a
//                        wheel file name (400 for anything else, a '/' or ".." included); the
//                        agent checks it after the build (wheel_check.h, WheelFits) and lists it
//                        or fails the build with the reason
//   PUT  log             the build's output, once (409 after), at most max_log_bytes (413)
//
// Every request needs "Authorization: Bearer <token>" of that build while it runs: no or a wrong
// token (another build's included) 401, an unknown id 404, a build that ended 410 Gone. They never
// go through caller identity. Tokens are 256 bits from the OS (base64url, 43 characters), kept as
// SHA-256 only and compared in constant time; they appear in no log, metric or error.
//
// While a build runs its token also reads the index: "Authorization: Basic" with user
// "wheelbuild" and the token as password admits GET and HEAD under the front end (the view
// anonymous readers get: the trusted scope), whatever identity.anonymous says; anything else
// with it is refused (403), and a Basic "wheelbuild" password that is no running build's token
// gets 401 (Wrap).
//
// Thread-safe.

#include <array>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "agent/frontends/pypi/build_runner.h"
#include "common/base/thread_annotations.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::pypi {

// The user name a build script sends its token under (Basic) to read the index.
inline constexpr std::string_view kBuildIndexUser = "wheelbuild";

struct BuildUploadsOptions {
  std::string prefix = "/pypi";  // the front end's path prefix
  uint64_t max_wheel_bytes = uint64_t{1} << 30;
  uint64_t max_log_bytes = uint64_t{1} << 20;
  // Ended builds remembered for 410 (older ones get 404).
  size_t max_ended = 4096;
};

// What a running build uploaded so far.
struct BuildProgress {
  bool wheel = false;  // a wheel was uploaded completely (task.out_dir holds it)
  bool log = false;    // the log was uploaded: the script is done
  bool known = false;  // the build is registered
};

class BuildUploads {
 public:
  explicit BuildUploads(BuildUploadsOptions options);

  // Registers a running build and returns its new token. `task` (its directories, sdist and log)
  // must stay valid until End(task.id). kAlreadyExists when the id is running.
  Result<std::string> Begin(const BuildTask& task) EXCLUDES(mu_);
  // Ends a build: its token stops working and its endpoints answer 410 (uploads in progress fail).
  void End(std::string_view id) EXCLUDES(mu_);

  // Waits until the build's log was uploaded, `until`, or Stop. Returns what was uploaded.
  BuildProgress Wait(std::string_view id, std::chrono::steady_clock::time_point until)
      EXCLUDES(mu_);
  // Ends every Wait now and later (agent shutdown).
  void Stop() EXCLUDES(mu_);

  // Whether `token` is the token of a running build.
  bool IsRunningBuildToken(std::string_view token) const EXCLUDES(mu_);

  // Whether the request (its method and its path below the prefix, "/builds/<id>/script") is one
  // of the endpoints above.
  static bool IsEndpoint(std::string_view method, std::string_view rest);
  // Answers one of the endpoints (IsEndpoint).
  void Handle(http::Request& request, http::Response& response) EXCLUDES(mu_);

  // The front end's handler with the build endpoints and build-token reads in front: requests
  // for the endpoints go to Handle, GET/HEAD with a running build's Basic "wheelbuild" token go
  // to `frontend` (bypassing caller identity), other requests with such credentials are refused,
  // and everything else goes to `gated` (the front end behind caller identity). This object must
  // outlive the handler.
  http::Handler Wrap(http::Handler gated, http::Handler frontend);

 private:
  struct Running {
    std::array<unsigned char, 32> token_sha256{};
    BuildTask task;
    std::string script;
    bool wheel_claimed = false;  // a PUT of the wheel started
    bool wheel_done = false;
    bool log_claimed = false;
    bool log_done = false;
  };
  enum class Upload { kWheel, kLog };
  // The running build `id` when `request` carries its token; otherwise answers (401, 404, 410)
  // and returns null. Copies what the caller needs under the lock.
  bool Authorize(http::Request& request, http::Response& response, std::string_view id,
                 BuildTask* task, std::string* script) EXCLUDES(mu_);
  void PutWheel(http::Request& request, http::Response& response, std::string_view id,
                std::string_view filename) EXCLUDES(mu_);
  void PutLog(http::Request& request, http::Response& response, std::string_view id) EXCLUDES(mu_);
  // The task of the running build `id`; nullopt (answered 410) when it has ended.
  std::optional<BuildTask> TaskOf(http::Response& response, std::string_view id) EXCLUDES(mu_);
  // Marks an upload of the running build `id` started; false (answered 409 or 410) when it was
  // already, or the build is not running.
  bool Claim(http::Response& response, std::string_view id, Upload what) EXCLUDES(mu_);
  void Done(std::string_view id, Upload what) EXCLUDES(mu_);

  const BuildUploadsOptions options_;
  mutable Mutex mu_;
  CondVar changed_;
  bool stopped_ GUARDED_BY(mu_) = false;
  std::map<std::string, Running, std::less<>> running_ GUARDED_BY(mu_);
  std::set<std::string, std::less<>> ended_ GUARDED_BY(mu_);
  std::deque<std::string> ended_order_ GUARDED_BY(mu_);
};

}  // namespace buildcache::pypi
