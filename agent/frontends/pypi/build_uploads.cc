#include "agent/frontends/pypi/build_uploads.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

#include "agent/frontends/pypi/build_log.h"
#include "agent/frontends/pypi/build_script.h"
#include "agent/frontends/pypi/names.h"
#include "agent/store/digest.h"
#include "common/fs/file.h"
#include "common/http/router.h"
#include "common/http/status_http.h"
#include "common/log/log.h"
#include "common/text/base64.h"

namespace buildcache::pypi {
namespace {

constexpr size_t kChunk = size_t{256} * 1024;

std::array<unsigned char, 32> TokenDigest(std::string_view token) {
  std::array<unsigned char, 32> out{};
  const store::Digest digest = store::Digest::Of(token);
  std::copy(digest.bytes().begin(), digest.bytes().end(), out.begin());
  return out;
}

bool SameDigest(const std::array<unsigned char, 32>& a, const std::array<unsigned char, 32>& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Result<std::string> NewToken() {
  std::array<unsigned char, 32> raw{};
  size_t got = 0;
  while (got < raw.size()) {
    ssize_t n = getrandom(raw.data() + got, raw.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "getrandom");
    }
    got += static_cast<size_t>(n);
  }
  std::string token = text::Base64Encode({reinterpret_cast<const char*>(raw.data()), raw.size()});
  while (token.ends_with('=')) token.pop_back();
  std::replace(token.begin(), token.end(), '+', '-');
  std::replace(token.begin(), token.end(), '/', '_');
  return token;
}

bool IsBuildId(std::string_view id) {
  return id.size() == 16 && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// "/builds/<id>/<what>" split into id and what ("script", "wheel/<file>", ...).
bool SplitEndpoint(std::string_view rest, std::string_view* id, std::string_view* what) {
  constexpr std::string_view kBuilds = "/builds/";
  if (!rest.starts_with(kBuilds)) return false;
  rest.remove_prefix(kBuilds.size());
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return false;
  *id = rest.substr(0, slash);
  *what = rest.substr(slash + 1);
  return true;
}

void Reply(http::Response& response, int code, std::string_view body) {
  response.SetStatus(code);
  response.SetHeader("Content-Type", "text/plain; charset=utf-8");
  response.SetHeader("Cache-Control", "no-store");
  (void)response.Send(std::string(body) + "\n");
}

bool IsRead(std::string_view method) { return method == "GET" || method == "HEAD"; }

// The password of "Basic base64(wheelbuild:<token>)"; nullopt for any other header.
std::optional<std::string> BuildIndexToken(std::string_view authorization) {
  constexpr std::string_view kBasic = "Basic ";
  if (authorization.size() <= kBasic.size() ||
      !std::equal(kBasic.begin(), kBasic.end(), authorization.begin(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
    return std::nullopt;
  }
  auto decoded = text::Base64Decode(authorization.substr(kBasic.size()));
  if (!decoded.ok()) return std::nullopt;
  const std::string prefix = std::string(kBuildIndexUser) + ":";
  if (!decoded->starts_with(prefix)) return std::nullopt;
  return decoded->substr(prefix.size());
}

}  // namespace

BuildUploads::BuildUploads(BuildUploadsOptions options) : options_(std::move(options)) {}

Result<std::string> BuildUploads::Begin(const BuildTask& task) {
  BC_ASSIGN_OR_RETURN(std::string token, NewToken());
  Running r;
  r.token_sha256 = TokenDigest(token);
  r.task = task;
  r.script = BuildScript(task);
  MutexLock lock(mu_);
  if (running_.contains(task.id)) return AlreadyExists("build " + task.id + " is running");
  ended_.erase(task.id);
  running_.emplace(task.id, std::move(r));
  return token;
}

void BuildUploads::End(std::string_view id) {
  MutexLock lock(mu_);
  auto it = running_.find(id);
  if (it == running_.end()) return;
  running_.erase(it);
  if (ended_.emplace(id).second) ended_order_.emplace_back(id);
  while (ended_order_.size() > options_.max_ended) {
    ended_.erase(ended_order_.front());
    ended_order_.pop_front();
  }
  changed_.NotifyAll();
}

BuildProgress BuildUploads::Wait(std::string_view id, std::chrono::steady_clock::time_point until) {
  MutexLock lock(mu_);
  for (;;) {
    auto it = running_.find(id);
    if (it == running_.end()) return {};
    if (it->second.log_done || stopped_ || std::chrono::steady_clock::now() >= until) {
      return {.wheel = it->second.wheel_done, .log = it->second.log_done, .known = true};
    }
    changed_.WaitUntil(mu_, until);
  }
}

void BuildUploads::Stop() {
  MutexLock lock(mu_);
  stopped_ = true;
  changed_.NotifyAll();
}

bool BuildUploads::IsRunningBuildToken(std::string_view token) const {
  const auto presented = TokenDigest(token);
  bool match = false;
  MutexLock lock(mu_);
  // Every running build is compared, so timing says nothing about which one matched.
  for (const auto& [id, r] : running_) match |= SameDigest(presented, r.token_sha256);
  return match;
}

bool BuildUploads::IsEndpoint(std::string_view method, std::string_view rest) {
  std::string_view id;
  std::string_view what;
  if (!SplitEndpoint(rest, &id, &what)) return false;
  if (what == "script" || what == "sdist" || what.starts_with("wheel/")) return true;
  return what == "log" && method == "PUT";
}

bool BuildUploads::Authorize(http::Request& request, http::Response& response, std::string_view id,
                             BuildTask* task, std::string* script) {
  std::string_view auth = request.header("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  std::optional<std::array<unsigned char, 32>> presented;
  if (auth.starts_with(kBearer) && auth.size() > kBearer.size()) {
    presented = TokenDigest(auth.substr(kBearer.size()));
  }
  const char* refusal = nullptr;
  {
    MutexLock lock(mu_);
    auto it = IsBuildId(id) ? running_.find(id) : running_.end();
    if (it == running_.end()) {
      if (IsBuildId(id) && ended_.contains(id)) {
        refusal = "ended";
      } else {
        refusal = "unknown";
      }
    } else if (!presented || !SameDigest(*presented, it->second.token_sha256)) {
      refusal = presented ? "wrong_token" : "no_token";
    } else {
      if (task != nullptr) *task = it->second.task;
      if (script != nullptr) *script = it->second.script;
      return true;
    }
  }
  const std::string shown_id = IsBuildId(id) ? std::string(id) : "";
  log::Warn("pypi build request refused", {{"id", shown_id},
                                           {"reason", refusal},
                                           {"client", request.client_ip()},
                                           {"method", request.method()}});
  std::string_view why = refusal;
  if (why == "ended") {
    Reply(response, 410, "build " + shown_id + " has ended");
  } else if (why == "unknown") {
    Reply(response, 404, "no running build " + shown_id);
  } else {
    response.SetHeader("WWW-Authenticate", "Bearer realm=\"buildcache-build\"");
    Reply(response, 401,
          why == "no_token" ? "unauthenticated: this build's token is required (Bearer)"
                            : "unauthenticated: not this build's token");
  }
  return false;
}

std::optional<BuildTask> BuildUploads::TaskOf(http::Response& response, std::string_view id) {
  MutexLock lock(mu_);
  auto it = running_.find(id);
  if (it == running_.end()) {
    Reply(response, 410, "build " + std::string(id) + " has ended");
    return std::nullopt;
  }
  return it->second.task;
}

bool BuildUploads::Claim(http::Response& response, std::string_view id, Upload what) {
  MutexLock lock(mu_);
  auto it = running_.find(id);
  if (it == running_.end()) {
    Reply(response, 410, "build " + std::string(id) + " has ended");
    return false;
  }
  bool& claimed = what == Upload::kWheel ? it->second.wheel_claimed : it->second.log_claimed;
  if (claimed) {
    Reply(response, 409,
          what == Upload::kWheel ? "this build's wheel was uploaded already"
                                 : "this build's log was uploaded already");
    return false;
  }
  claimed = true;
  return true;
}

void BuildUploads::Done(std::string_view id, Upload what) {
  MutexLock lock(mu_);
  auto it = running_.find(id);
  if (it == running_.end()) return;
  (what == Upload::kWheel ? it->second.wheel_done : it->second.log_done) = true;
  changed_.NotifyAll();
}

void BuildUploads::Handle(http::Request& request, http::Response& response) {
  std::optional<std::string_view> rest = http::PathUnder(request.path(), options_.prefix);
  std::string_view id;
  std::string_view what;
  if (!rest || !SplitEndpoint(*rest, &id, &what)) {
    Reply(response, 404, "no such build path");
    return;
  }
  const bool put = what.starts_with("wheel/") || what == "log";
  const std::string_view method = request.method();
  if (put ? method != "PUT" : !IsRead(method)) {
    response.SetHeader("Allow", put ? "PUT" : "GET, HEAD");
    Reply(response, 405, "method not allowed");
    return;
  }
  BuildTask task;
  std::string script;
  if (!Authorize(request, response, id, &task, &script)) return;
  if (what == "script") {
    response.SetStatus(200);
    response.SetHeader("Content-Type", "text/x-python; charset=utf-8");
    response.SetHeader("Cache-Control", "no-store");
    (void)response.Send(script);
  } else if (what == "sdist") {
    fs::UniqueFd fd(open(task.sdist_path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    off_t size = fd.valid() ? lseek(fd.get(), 0, SEEK_END) : -1;
    if (size < 0) {
      http::SendError(response, Internal("the build's sdist cannot be read"));
      return;
    }
    response.SetStatus(200);
    response.SetHeader("Content-Type", "application/octet-stream");
    response.SetHeader("X-Buildcache-Sha256", task.sdist.sha256);
    (void)response.SendFile(fd.get(), 0, static_cast<uint64_t>(size));
  } else if (what.starts_with("wheel/")) {
    PutWheel(request, response, id, what.substr(6));
  } else if (what == "log") {
    PutLog(request, response, id);
  } else {
    Reply(response, 404, "no such build path");
  }
}

void BuildUploads::PutWheel(http::Request& request, http::Response& response, std::string_view id,
                            std::string_view filename) {
  if (filename.find('/') != std::string_view::npos || !IsValidFilename(filename) ||
      !ParseWheelFilename(filename).ok()) {
    Reply(response, 400, "not a wheel file name (name-version-python-abi-platform.whl)");
    return;
  }
  if (auto length = request.content_length(); length && *length > options_.max_wheel_bytes) {
    Reply(response, 413,
          "the wheel is larger than " + std::to_string(options_.max_wheel_bytes) + " bytes");
    return;
  }
  if (!Claim(response, id, Upload::kWheel)) return;
  std::optional<BuildTask> running = TaskOf(response, id);
  if (!running) return;
  const BuildTask& task = *running;
  const std::filesystem::path path = task.out_dir / std::string(filename);
  fs::UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    http::SendError(response, ErrnoStatus(errno, "storing the uploaded wheel"));
    return;
  }
  std::string buf(kChunk, '\0');
  uint64_t total = 0;
  auto fail = [&](int code, std::string_view why) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    log::Warn("pypi build upload refused", {{"id", task.id}, {"what", "wheel"}, {"why", why}});
    Reply(response, code, why);
  };
  for (;;) {
    Result<size_t> n = request.ReadBody(buf);
    if (!n.ok()) {
      fail(n.status().code() == StatusCode::kTooLarge ? 413 : 400,
           "reading the wheel: " + n.status().message());
      return;
    }
    if (*n == 0) break;
    total += *n;
    if (total > options_.max_wheel_bytes) {
      fail(413, "the wheel is larger than " + std::to_string(options_.max_wheel_bytes) + " bytes");
      return;
    }
    if (Status s = fs::WriteAll(fd.get(), {buf.data(), *n}); !s.ok()) {
      fail(500, "storing the wheel: " + s.message());
      return;
    }
  }
  Done(id, Upload::kWheel);
  log::Info("pypi build wheel uploaded", {{"id", task.id}, {"wheel", filename}, {"bytes", total}});
  Reply(response, 201,
        "received " + std::string(filename) + "; the agent checks it when the build ends");
}

void BuildUploads::PutLog(http::Request& request, http::Response& response, std::string_view id) {
  if (!Claim(response, id, Upload::kLog)) return;
  std::string body;
  std::string buf(kChunk, '\0');
  int refused = 0;
  std::string why;
  if (auto length = request.content_length(); length && *length > options_.max_log_bytes) {
    refused = 413;
    why = "the log is larger than " + std::to_string(options_.max_log_bytes) + " bytes";
  }
  while (refused == 0) {
    Result<size_t> n = request.ReadBody(buf);
    if (!n.ok()) {
      refused = 400;
      why = "reading the log: " + n.status().message();
      break;
    }
    if (*n == 0) break;
    if (body.size() + *n > options_.max_log_bytes) {
      refused = 413;
      why = "the log is larger than " + std::to_string(options_.max_log_bytes) + " bytes";
      break;
    }
    body.append(buf.data(), *n);
  }
  std::optional<BuildTask> running = TaskOf(response, id);
  if (!running) return;
  const BuildTask& task = *running;
  // The log ends the script's part either way: a refused one is noted in the build's log.
  AppendLogText(task.log, body);
  if (refused != 0) AppendLogLine(task.log, "the build's log was refused: " + why);
  Done(id, Upload::kLog);
  if (refused != 0) {
    Reply(response, refused, why);
    return;
  }
  Reply(response, 201, "received the log");
}

http::Handler BuildUploads::Wrap(http::Handler gated, http::Handler frontend) {
  return [this, gated = std::move(gated), frontend = std::move(frontend)](
             http::Request& request, http::Response& response) {
    std::optional<std::string_view> rest = http::PathUnder(request.path(), options_.prefix);
    if (rest && IsEndpoint(request.method(), *rest)) {
      Handle(request, response);
      return;
    }
    if (std::optional<std::string> token = BuildIndexToken(request.header("Authorization"))) {
      if (!IsRunningBuildToken(*token)) {
        log::Warn("pypi build request refused", {{"reason", "bad_build_token"},
                                                 {"client", request.client_ip()},
                                                 {"method", request.method()}});
        response.SetHeader("WWW-Authenticate", "Basic realm=\"buildcache\"");
        Reply(response, 401, "unauthenticated: not the token of a running build");
        return;
      }
      if (!IsRead(request.method())) {
        log::Warn("pypi build request refused", {{"reason", "build_token_write"},
                                                 {"client", request.client_ip()},
                                                 {"method", request.method()}});
        Reply(response, 403, "forbidden: a build's token only reads the index");
        return;
      }
      frontend(request, response);
      return;
    }
    gated(request, response);
  };
}

}  // namespace buildcache::pypi
