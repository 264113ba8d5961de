#include "agent/app/wait_ready.h"

#include <cstdio>
#include <string>
#include <thread>

#include "common/config/units.h"
#include "common/http/client.h"

namespace buildcache::agent {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string Seconds(Clock::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count()) + "s";
}

// One GET: "" when it answered 200, else what went wrong.
std::string Attempt(const WaitReadyOptions& options) {
  http::ClientOptions client;
  client.timeout = std::max(options.interval, milliseconds(1000));
  client.max_body_bytes = 64 * 1024;
  Result<http::ClientResponse> r = http::Fetch("GET", options.url, {}, {}, client);
  if (!r.ok()) return r.status().message();
  if (r->status == 200) return "";
  return "HTTP " + std::to_string(r->status);
}

Result<milliseconds> PositiveDuration(std::string_view flag, std::string_view value) {
  Result<std::chrono::nanoseconds> d = config::ParseDuration(value);
  if (!d.ok()) return InvalidArgument(std::string(flag) + ": " + d.status().message());
  auto ms = std::chrono::duration_cast<milliseconds>(*d);
  if (ms.count() <= 0) {
    return InvalidArgument(std::string(flag) + ": must be at least 1ms, got \"" +
                           std::string(value) + "\"");
  }
  return ms;
}

}  // namespace

Status WaitReady(const WaitReadyOptions& options,
                 const std::function<void(std::string_view)>& progress) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + options.timeout;
  Clock::time_point next_report = start;
  std::string last;
  for (;;) {
    last = Attempt(options);
    if (last.empty()) return Status::Ok();
    Clock::time_point now = Clock::now();
    if (now >= deadline) break;
    if (progress && now >= next_report) {
      progress("waiting for " + options.url + " (" + last + "), " + Seconds(now - start) + " of " +
               Seconds(options.timeout));
      next_report = now + std::chrono::seconds(30);
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(options.interval, deadline - now));
  }
  return DeadlineExceeded(options.url + " did not answer 200 within " +
                          Seconds(Clock::now() - start) + " (last: " + last + ")");
}

Result<WaitReadyOptions> ParseWaitReadyArgs(int argc, const char* const* argv) {
  WaitReadyOptions options;
  for (int i = 0; i < argc; ++i) {
    std::string_view arg = argv[i];
    size_t eq = arg.find('=');
    std::string_view name = arg.substr(0, eq);
    if (eq == std::string_view::npos) {
      return InvalidArgument("wait-ready: expected --name=value, got \"" + std::string(arg) + "\"");
    }
    std::string_view value = arg.substr(eq + 1);
    if (name == "--url") {
      if (value.rfind("http://", 0) != 0 || value.size() == 7) {
        return InvalidArgument("--url: want http://host[:port]/path, got \"" + std::string(value) +
                               "\"");
      }
      options.url = value;
    } else if (name == "--timeout" || name == "--interval") {
      Result<milliseconds> d = PositiveDuration(name, value);
      if (!d.ok()) return d.status();
      (name == "--timeout" ? options.timeout : options.interval) = *d;
    } else {
      return InvalidArgument("wait-ready: unknown flag " + std::string(name) +
                             " (known: --url, --timeout, --interval)");
    }
  }
  if (options.url.empty()) return InvalidArgument("wait-ready: --url is required");
  return options;
}

int WaitReadyMain(int argc, const char* const* argv) {
  Result<WaitReadyOptions> options = ParseWaitReadyArgs(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "buildcache-agent: %s\n", options.status().message().c_str());
    return 2;
  }
  Status s = WaitReady(*options, [](std::string_view line) {
    std::fprintf(stderr, "buildcache-agent wait-ready: %.*s\n", static_cast<int>(line.size()),
                 line.data());
  });
  if (!s.ok()) {
    std::fprintf(stderr,
                 "buildcache-agent wait-ready: no ready buildcache agent on this node: %s. Is the "
                 "node selected by the BuildCache's spec.nodeSelector, and is its agent pod "
                 "Ready (kubectl get pods -l app.kubernetes.io/instance=NAME -o wide)?\n",
                 s.message().c_str());
    return 1;
  }
  std::fprintf(stderr, "buildcache-agent wait-ready: %s answered 200\n", options->url.c_str());
  return 0;
}

}  // namespace buildcache::agent
