#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::agent {

// `buildcache-agent wait-ready`: what the webhook's init container runs in a wired pod, so the
// pod's own containers start only once its node's agent answers (docs/operator.md, "A pod on a
// node whose agent is not Ready"). The pod reaches the agent through the BuildCache's Service
// (internalTrafficPolicy: Local), which has no endpoint on the node until the node's agent pod is
// Ready, so a 200 from <agent>/readyz through it means "this node's agent serves".

struct WaitReadyOptions {
  // "http://host[:port]/path" polled with GET until it answers 200.
  std::string url{};
  // How long to keep trying, in total.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // Pause between attempts; each attempt is also bounded by it (at least one second).
  std::chrono::milliseconds interval{std::chrono::seconds(1)};
};

// Polls options.url until it answers 200 (OK) or options.timeout has passed
// (kDeadlineExceeded, naming the URL, the time waited and the last answer or connection error).
// `progress`, when given, is called with one line at the first failed attempt and then about
// every 30 s, so the pod's log says what it waits for. Blocks the calling thread.
Status WaitReady(const WaitReadyOptions& options,
                 const std::function<void(std::string_view)>& progress = {});

// Parses `wait-ready`'s arguments (after the word itself): --url=URL (required),
// --timeout=SECONDS, --interval=SECONDS (whole or fractional seconds, > 0). kInvalidArgument
// naming the bad argument.
Result<WaitReadyOptions> ParseWaitReadyArgs(int argc, const char* const* argv);

// The subcommand: parses, waits, prints progress and the outcome to stderr; returns the exit
// code (0 ready, 1 timed out, 2 bad arguments).
int WaitReadyMain(int argc, const char* const* argv);

}  // namespace buildcache::agent
