#pragma once

#include <string>
#include <string_view>

#include "agent/config/agent_config.h"
#include "common/status/status.h"

namespace buildcache::agent {

// The outcome of parsing the agent's command line.
struct AgentFlags {
  enum class Action {
    kRun,          // run with config
    kHelp,         // --help or -h: print AgentUsage() to stdout and exit 0
    kVersion,      // --version: print AgentVersion() to stdout and exit 0
    kCheckConfig,  // --check-config: validate config, report, exit 0 (valid) or 1 (invalid)
  };
  Action action = Action::kRun;
  AgentConfig config;
  std::string config_path;  // the --config file, empty when none was given
};

// Parses
//   --config FILE       load FILE first (wherever it appears on the command line)
//   --listen HOST:PORT  --data-dir DIR  --max-size SIZE  --log-level LEVEL
//                       override the file's listen, store.dataDir, store.maxSize, logLevel
//   --advertise HOST:PORT  overrides replication.advertise
//   --check-config      validate and exit instead of running
//   --help, -h, --version
// Both "--flag value" and "--flag=value" work. Unknown flags, positional arguments, missing or
// malformed values and a repeated --config fail with kInvalidArgument naming the flag. --help and
// --version win over everything else and load no file. The result is not validated: call
// ValidateAgentConfig on config.
Result<AgentFlags> ParseAgentFlags(int argc, const char* const* argv);

// Usage text for --help, ending in a newline.
std::string AgentUsage(std::string_view program);

// "buildcache-agent 0.1.0", from the CMake project version.
std::string AgentVersion();

}  // namespace buildcache::agent
