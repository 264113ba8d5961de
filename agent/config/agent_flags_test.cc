#include "agent/config/agent_flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <vector>

namespace buildcache::agent {
namespace {

using ::testing::HasSubstr;

Result<AgentFlags> Parse(std::initializer_list<const char*> args) {
  std::vector<const char*> argv = {"buildcache-agent"};
  argv.insert(argv.end(), args.begin(), args.end());
  return ParseAgentFlags(static_cast<int>(argv.size()), argv.data());
}

std::string ParseError(std::initializer_list<const char*> args) {
  Result<AgentFlags> f = Parse(args);
  EXPECT_FALSE(f.ok());
  if (f.ok()) {
    return "";
  }
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  return f.status().message();
}

// A config file with a non-default value for every flag-settable key.
class ConfigFile {
 public:
  explicit ConfigFile(const std::string& text) {
    char tmpl[] = "/tmp/agent_flags_test_XXXXXX";
    int fd = mkstemp(tmpl);
    close(fd);
    path_ = tmpl;
    std::ofstream(path_) << text;
  }
  ~ConfigFile() { unlink(path_.c_str()); }
  const char* path() const { return path_.c_str(); }

 private:
  std::string path_;
};

const char kFile[] =
    "listen: 0.0.0.0:9000\n"
    "logLevel: warn\n"
    "store: {dataDir: /from/file, maxSize: 5Gi, verifyReads: always}\n"
    "server: {maxConnections: 7}\n";

TEST(AgentFlagsTest, NoFlagsGiveDefaults) {
  Result<AgentFlags> f = Parse({});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->action, AgentFlags::Action::kRun);
  EXPECT_EQ(f->config, AgentConfig{});
  EXPECT_EQ(f->config_path, "");
}

TEST(AgentFlagsTest, ConfigFileIsLoaded) {
  ConfigFile file(kFile);
  Result<AgentFlags> f = Parse({"--config", file.path()});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->config_path, file.path());
  EXPECT_EQ(f->config.listen, "0.0.0.0:9000");
  EXPECT_EQ(f->config.store.max_size, 5ULL << 30);
  EXPECT_EQ(f->config.server.max_connections, 7);
}

TEST(AgentFlagsTest, FlagsOverrideFileValuesWhereverConfigAppears) {
  ConfigFile file(kFile);
  // --config last: the file is still loaded first and the flags win.
  Result<AgentFlags> f = Parse({"--listen", "127.0.0.1:1234", "--data-dir=/from/flag", "--max-size",
                                "1Gi", "--log-level=debug", "--config", file.path()});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->config.listen, "127.0.0.1:1234");
  EXPECT_EQ(f->config.store.data_dir, "/from/flag");
  EXPECT_EQ(f->config.store.max_size, 1ULL << 30);
  EXPECT_EQ(f->config.log_level, log::Level::kDebug);
  // Keys without a flag keep the file's values.
  EXPECT_EQ(f->config.store.verify_reads, VerifyReads::kAlways);
  EXPECT_EQ(f->config.server.max_connections, 7);
}

TEST(AgentFlagsTest, LaterFlagWins) {
  Result<AgentFlags> f = Parse({"--listen=127.0.0.1:1", "--listen", "127.0.0.1:2"});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->config.listen, "127.0.0.1:2");
}

TEST(AgentFlagsTest, HelpAndVersionAreDistinguishableAndWin) {
  Result<AgentFlags> f = Parse({"--listen", "x", "--help"});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->action, AgentFlags::Action::kHelp);
  f = Parse({"-h"});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->action, AgentFlags::Action::kHelp);
  f = Parse({"--version", "--config", "/nonexistent.yaml"});
  ASSERT_TRUE(f.ok()) << "--version must not load the config file";
  EXPECT_EQ(f->action, AgentFlags::Action::kVersion);
  EXPECT_THAT(AgentVersion(), testing::MatchesRegex("buildcache-agent [0-9]+\\.[0-9]+\\.[0-9]+"));
  std::string usage = AgentUsage("buildcache-agent");
  for (const char* flag :
       {"--config", "--listen", "--data-dir", "--max-size", "--log-level", "--help", "--version"}) {
    EXPECT_THAT(usage, HasSubstr(flag));
  }
}

TEST(AgentFlagsTest, AdvertiseAndCheckConfig) {
  Result<AgentFlags> f = Parse({"--advertise", "10.1.2.3:8081", "--check-config"});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->action, AgentFlags::Action::kCheckConfig);
  EXPECT_EQ(f->config.replication.advertise, "10.1.2.3:8081");
  EXPECT_EQ(Parse({"--listen", "127.0.0.1:0"})->action, AgentFlags::Action::kRun);
  EXPECT_THAT(ParseError({"--check-config=yes"}), HasSubstr("--check-config: takes no value"));
  EXPECT_THAT(ParseError({"--advertise"}), HasSubstr("--advertise: needs a value"));
}

TEST(AgentFlagsTest, BadFlagsAreNamed) {
  EXPECT_THAT(ParseError({"--listn", "x"}), HasSubstr("unknown flag --listn"));
  EXPECT_THAT(ParseError({"--max-size"}), HasSubstr("--max-size: needs a value"));
  EXPECT_THAT(ParseError({"--max-size="}), HasSubstr("--max-size: needs a value"));
  EXPECT_THAT(ParseError({"--data-dir", "--listen", "x"}), HasSubstr("--data-dir: needs a value"));
  EXPECT_THAT(ParseError({"--max-size", "-1Gi"}),
              HasSubstr("--max-size: invalid byte size \"-1Gi\": negative"));
  EXPECT_THAT(ParseError({"--max-size=lots"}), HasSubstr("--max-size: invalid byte size"));
  EXPECT_THAT(ParseError({"--log-level", "loud"}),
              HasSubstr("--log-level: must be one of debug, info, warn, error; got \"loud\""));
  EXPECT_THAT(ParseError({"--help=yes"}), HasSubstr("--help: takes no value"));
  EXPECT_THAT(ParseError({"serve"}), HasSubstr("unexpected argument \"serve\""));
  EXPECT_THAT(ParseError({"--config", "a.yaml", "--config=b.yaml"}),
              HasSubstr("--config: given more than once"));
}

TEST(AgentFlagsTest, ConfigFileErrorsPassThrough) {
  Result<AgentFlags> missing = Parse({"--config", "/nonexistent/agent.yaml"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/agent.yaml"));
  ConfigFile file("store:\n  maxSizee: 1Gi\n");
  EXPECT_THAT(ParseError({"--config", file.path()}),
              HasSubstr(std::string(file.path()) + ":2:3: store.maxSizee: unknown key"));
}

}  // namespace
}  // namespace buildcache::agent
