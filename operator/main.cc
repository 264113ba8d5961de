// buildcache-operator: runs the BuildCache controller (leader-elected) and serves /metrics,
// /healthz and /readyz. Parses flags, runs an op::Operator, and stops it cleanly on SIGTERM or
// SIGINT (giving up the leader lease so a standby takes over at once).
#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "common/http/rest_client.h"
#include "common/log/log.h"
#include "operator/app/operator.h"
#include "operator/app/operator_flags.h"

using namespace buildcache;

int main(int argc, char** argv) {
  Result<op::OperatorFlags> flags = op::ParseOperatorFlags(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "buildcache-operator: %s\n\n%s", flags.status().message().c_str(),
                 op::OperatorUsage().c_str());
    return 2;
  }
  if (flags->action == op::OperatorFlags::Action::kHelp) {
    std::fputs(op::OperatorUsage().c_str(), stdout);
    return 0;
  }
  if (flags->action == op::OperatorFlags::Action::kVersion) {
    std::printf("%s\n", op::OperatorVersion().c_str());
    return 0;
  }
  log::SetLevel(flags->config.log_level);

  // Block the stop signals in every thread; this one waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // Watches hold a connection each; a few threads serve them all.
  http::SetRestClientIoThreads(4);
  op::OperatorHooks hooks;
  // Leadership lost: exit so the pod restarts and campaigns again (exit code 1).
  hooks.on_leadership_lost = [] { kill(getpid(), SIGTERM); };
  hooks.cancelled = [&stop_signals] {
    sigset_t pending;
    if (sigpending(&pending) != 0) return false;
    return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
  };
  Result<std::unique_ptr<op::Operator>> running = op::Operator::Start(flags->config, hooks);
  if (!running.ok()) {
    if (running.status().code() == StatusCode::kCancelled) return 0;  // stopped while starting
    // Already logged. Leader-election settings the elector refuses are a usage error.
    return running.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  log::Info("stopping", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  (*running)->Stop();
  const int exit_code = (*running)->exit_code();
  log::Info("stopped", {{"exit_code", exit_code}});
  return exit_code;
}
