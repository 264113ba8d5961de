#include "agent/config/agent_flags.h"

#include <vector>

#include "common/config/units.h"
#include "common/flags/flags.h"

#ifndef BC_AGENT_VERSION
#define BC_AGENT_VERSION "unknown"
#endif

namespace buildcache::agent {
namespace {

enum class Flag {
  kConfig,
  kListen,
  kDataDir,
  kMaxSize,
  kLogLevel,
  kAdvertise,
  kCheckConfig,
  kHelp,
  kVersion
};

using flags::Arity;

constexpr flags::Spec kFlags[] = {
    {"--config", Arity::kRequired, static_cast<int>(Flag::kConfig)},
    {"--listen", Arity::kRequired, static_cast<int>(Flag::kListen)},
    {"--data-dir", Arity::kRequired, static_cast<int>(Flag::kDataDir)},
    {"--max-size", Arity::kRequired, static_cast<int>(Flag::kMaxSize)},
    {"--log-level", Arity::kRequired, static_cast<int>(Flag::kLogLevel)},
    {"--advertise", Arity::kRequired, static_cast<int>(Flag::kAdvertise)},
    {"--check-config", Arity::kNone, static_cast<int>(Flag::kCheckConfig)},
    {"--help", Arity::kNone, static_cast<int>(Flag::kHelp)},
    {"-h", Arity::kNone, static_cast<int>(Flag::kHelp)},
    {"--version", Arity::kNone, static_cast<int>(Flag::kVersion)},
};

Flag FlagOf(const flags::Arg& arg) { return static_cast<Flag>(arg.spec->id); }

using flags::FlagError;

}  // namespace

Result<AgentFlags> ParseAgentFlags(int argc, const char* const* argv) {
  // A following flag is a forgotten value, not the value; use --flag=-x for such values.
  BC_ASSIGN_OR_RETURN(std::vector<flags::Arg> args,
                      flags::Tokenize(argc, argv, kFlags, {.hint = " (see --help)"}));
  AgentFlags result;
  for (const flags::Arg& f : args) {
    if (FlagOf(f) == Flag::kHelp) {
      result.action = AgentFlags::Action::kHelp;
      return result;
    }
  }
  for (const flags::Arg& f : args) {
    if (FlagOf(f) == Flag::kVersion) {
      result.action = AgentFlags::Action::kVersion;
      return result;
    }
  }
  for (const flags::Arg& f : args) {
    if (FlagOf(f) != Flag::kConfig) {
      continue;
    }
    if (!result.config_path.empty()) {
      return FlagError("--config", "given more than once");
    }
    result.config_path = f.value;
  }
  if (!result.config_path.empty()) {
    BC_ASSIGN_OR_RETURN(result.config, LoadAgentConfig(result.config_path));
  }
  for (const flags::Arg& f : args) {
    switch (FlagOf(f)) {
      case Flag::kListen:
        result.config.listen = f.value;
        break;
      case Flag::kDataDir:
        result.config.store.data_dir = f.value;
        break;
      case Flag::kMaxSize: {
        Result<uint64_t> size = config::ParseByteSize(f.value);
        if (!size.ok()) {
          return FlagError(f.spec->name, size.status().message());
        }
        result.config.store.max_size = *size;
        break;
      }
      case Flag::kLogLevel:
        if (!log::ParseLevel(f.value, &result.config.log_level)) {
          return FlagError(f.spec->name,
                           "must be one of debug, info, warn, error; got \"" + f.value + "\"");
        }
        break;
      case Flag::kAdvertise:
        // The operator passes $(POD_IP):PORT here: Kubernetes expands it in args, not in files.
        result.config.replication.advertise = f.value;
        break;
      case Flag::kCheckConfig:
        result.action = AgentFlags::Action::kCheckConfig;
        break;
      case Flag::kConfig:
      case Flag::kHelp:
      case Flag::kVersion:
        break;
    }
  }
  return result;
}

std::string AgentUsage(std::string_view program) {
  std::string p(program);
  return "Usage: " + p + " [--config FILE] [flags]\n" +
         "\n"
         "A node-local package and build cache (see examples/agent.yaml for the file format).\n"
         "\n"
         "Flags (a flag overrides the same setting in the --config file):\n"
         "  --config FILE        YAML configuration file\n"
         "  --listen HOST:PORT   address to serve on (listen; default 127.0.0.1:8080)\n"
         "  --data-dir DIR       store directory, created if missing (store.dataDir)\n"
         "  --max-size SIZE      store quota, e.g. 50Gi (store.maxSize)\n"
         "  --log-level LEVEL    debug, info, warn or error (logLevel; default info)\n"
         "  --advertise HOST:PORT  address peers reach this agent at (replication.advertise)\n"
         "  --check-config       validate the configuration, print problems and exit (0: valid)\n"
         "  --help, -h           print this help and exit\n"
         "  --version            print the version and exit\n"
         "\n"
         "Flags take their value as --flag VALUE or --flag=VALUE.\n";
}

std::string AgentVersion() { return std::string("buildcache-agent ") + BC_AGENT_VERSION; }

}  // namespace buildcache::agent
