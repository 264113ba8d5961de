#include "agent/config/agent_flags.h"

#include <optional>
#include <vector>

#include "common/config/units.h"

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

struct FlagSpec {
  std::string_view name;
  Flag flag;
  bool takes_value;
};

constexpr FlagSpec kFlags[] = {
    {"--config", Flag::kConfig, true},
    {"--listen", Flag::kListen, true},
    {"--data-dir", Flag::kDataDir, true},
    {"--max-size", Flag::kMaxSize, true},
    {"--log-level", Flag::kLogLevel, true},
    {"--advertise", Flag::kAdvertise, true},
    {"--check-config", Flag::kCheckConfig, false},
    {"--help", Flag::kHelp, false},
    {"-h", Flag::kHelp, false},
    {"--version", Flag::kVersion, false},
};

struct ParsedFlag {
  const FlagSpec* spec;
  std::string value;
};

Status FlagError(std::string_view flag, std::string_view message) {
  return InvalidArgument(std::string(flag) + ": " + std::string(message));
}

// Splits argv into flags and values; knows nothing about what the values mean.
Result<std::vector<ParsedFlag>> Tokenize(int argc, const char* const* argv) {
  std::vector<ParsedFlag> out;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (!arg.starts_with('-') || arg == "-" || arg == "--") {
      return InvalidArgument("unexpected argument \"" + std::string(arg) +
                             "\" (the agent takes only flags; see --help)");
    }
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    const FlagSpec* spec = nullptr;
    for (const FlagSpec& f : kFlags) {
      if (f.name == name) {
        spec = &f;
      }
    }
    if (spec == nullptr) {
      return InvalidArgument("unknown flag " + std::string(name) + " (see --help)");
    }
    ParsedFlag parsed{spec, ""};
    if (!spec->takes_value) {
      if (inline_value) {
        return FlagError(name, "takes no value");
      }
    } else if (inline_value) {
      parsed.value = *inline_value;
    } else {
      // A following flag is a forgotten value, not the value; use --flag=-x for such values.
      if (i + 1 >= argc || std::string_view(argv[i + 1]).starts_with("--")) {
        return FlagError(name, "needs a value");
      }
      parsed.value = argv[++i];
    }
    if (spec->takes_value && parsed.value.empty()) {
      return FlagError(name, "needs a value");
    }
    out.push_back(std::move(parsed));
  }
  return out;
}

}  // namespace

Result<AgentFlags> ParseAgentFlags(int argc, const char* const* argv) {
  BC_ASSIGN_OR_RETURN(std::vector<ParsedFlag> flags, Tokenize(argc, argv));
  AgentFlags result;
  for (const ParsedFlag& f : flags) {
    if (f.spec->flag == Flag::kHelp) {
      result.action = AgentFlags::Action::kHelp;
      return result;
    }
  }
  for (const ParsedFlag& f : flags) {
    if (f.spec->flag == Flag::kVersion) {
      result.action = AgentFlags::Action::kVersion;
      return result;
    }
  }
  for (const ParsedFlag& f : flags) {
    if (f.spec->flag != Flag::kConfig) {
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
  for (const ParsedFlag& f : flags) {
    switch (f.spec->flag) {
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
