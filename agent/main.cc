// buildcache-agent: the node-local cache agent. Parses flags and the config file, runs an Agent,
// and stops it cleanly on SIGTERM or SIGINT.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstring>

#include "agent/app/agent.h"
#include "agent/app/wait_ready.h"
#include "agent/config/agent_flags.h"
#include "common/log/log.h"

using namespace buildcache;

int main(int argc, char** argv) {
  // A subcommand, not a flag: the init container that wired pods wait for their node's agent with.
  if (argc >= 2 && std::strcmp(argv[1], "wait-ready") == 0) {
    return agent::WaitReadyMain(argc - 2, argv + 2);
  }
  Result<agent::AgentFlags> flags = agent::ParseAgentFlags(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "buildcache-agent: %s\nRun with --help for usage.\n",
                 flags.status().message().c_str());
    return 2;
  }
  if (flags->action == agent::AgentFlags::Action::kHelp) {
    std::fputs(agent::AgentUsage(argv[0]).c_str(), stdout);
    return 0;
  }
  if (flags->action == agent::AgentFlags::Action::kVersion) {
    std::printf("%s\n", agent::AgentVersion().c_str());
    return 0;
  }
  agent::AgentConfig config = std::move(flags->config);
  const bool check_only = flags->action == agent::AgentFlags::Action::kCheckConfig;
  if (Status s = agent::ValidateAgentConfig(config); !s.ok()) {
    std::fprintf(stderr, "buildcache-agent: invalid configuration%s%s:\n%s\n",
                 flags->config_path.empty() ? "" : " in ", flags->config_path.c_str(),
                 s.message().c_str());
    return check_only ? 1 : 2;
  }
  if (check_only) {
    std::printf("configuration ok\n");
    return 0;
  }
  log::SetLevel(config.log_level);

  // Block the stop signals in every thread; this one waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Result<std::unique_ptr<agent::Agent>> running = agent::Agent::Start(config);
  if (!running.ok()) {
    log::Error("agent failed to start", {{"error", running.status().ToString()}});
    return 1;
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  log::Info("stopping", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  (*running)->Stop();
  log::Info("stopped");
  return 0;
}
