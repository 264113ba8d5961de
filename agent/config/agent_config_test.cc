#include "agent/config/agent_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "common/config/document.h"

namespace buildcache::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "agent_config_test_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

Result<AgentConfig> Parse(std::string_view yaml) { return ParseAgentConfig(yaml, "agent.yaml"); }

std::string ParseError(std::string_view yaml) {
  Result<AgentConfig> c = Parse(yaml);
  EXPECT_FALSE(c.ok()) << "accepted:\n" << yaml;
  if (c.ok()) {
    return "";
  }
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  return c.status().message();
}

// A configuration that passes validation, with its data directory under dir.
AgentConfig ValidConfig(const TempDir& dir) {
  AgentConfig c;
  c.store.data_dir = (dir.path() / "store").string();
  return c;
}

std::string ValidationError(AgentConfig c) {
  Status s = ValidateAgentConfig(c);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  return s.message();
}

TEST(AgentConfigTest, EmptyFileGivesDefaults) {
  Result<AgentConfig> c = Parse("");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(*c, AgentConfig{});
  EXPECT_EQ(c->listen, "127.0.0.1:8080");
  EXPECT_EQ(c->log_level, log::Level::kInfo);
  EXPECT_TRUE(c->httpcache.enabled);
  EXPECT_EQ(c->httpcache.max_object_size, 512u << 20);
  EXPECT_EQ(c->store.verify_reads, VerifyReads::kChanged);
}

TEST(AgentConfigTest, ReadsEveryKey) {
  Result<AgentConfig> c = Parse(
      "listen: 0.0.0.0:9090\n"
      "logLevel: debug\n"
      "store: {dataDir: /srv/cache, maxSize: 1.5Gi, verifyReads: always}\n"
      "httpcache: {enabled: false, maxObjectSize: 64Mi}\n"
      "server: {maxConnections: 50, idleTimeout: 250ms}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen, "0.0.0.0:9090");
  EXPECT_EQ(c->log_level, log::Level::kDebug);
  EXPECT_EQ(c->store.data_dir, "/srv/cache");
  EXPECT_EQ(c->store.max_size, 1536ULL << 20);
  EXPECT_EQ(c->store.verify_reads, VerifyReads::kAlways);
  EXPECT_FALSE(c->httpcache.enabled);
  EXPECT_EQ(c->httpcache.max_object_size, 64u << 20);
  EXPECT_EQ(c->server.max_connections, 50);
  EXPECT_EQ(c->server.idle_timeout, std::chrono::milliseconds(250));
}

TEST(AgentConfigTest, UnknownKeysAreNamedWithTheirPath) {
  EXPECT_THAT(
      ParseError("store:\n  maxSizee: 10Gi\n"),
      HasSubstr(
          "agent.yaml:2:3: store.maxSizee: unknown key (did you mean maxSize? "
          "known: dataDir, maxInFlightPerClient, maxInFlightPerWriter, maxSize, verifyReads)"));
  EXPECT_THAT(ParseError("listen: 127.0.0.1:1\nlistne: x\n"),
              HasSubstr("agent.yaml:2:1: listne: unknown key (did you mean listen?"));
  EXPECT_THAT(ParseError("server:\n  max_connections: 5\n"),
              HasSubstr("server.max_connections: unknown key"));
  EXPECT_THAT(ParseError("pypy: {upstream: https://example.invalid}\n"),
              HasSubstr("pypy: unknown key"));
}

TEST(AgentConfigTest, WrongTypesNameTheKeyAndValue) {
  EXPECT_THAT(ParseError("store: {maxSize: big}\n"),
              HasSubstr("store.maxSize: invalid byte size \"big\""));
  EXPECT_THAT(ParseError("httpcache: {enabled: yes}\n"),
              HasSubstr("httpcache.enabled: expected true or false, got \"yes\""));
  EXPECT_THAT(ParseError("server: {maxConnections: many}\n"),
              HasSubstr("server.maxConnections: expected an integer, got \"many\""));
  EXPECT_THAT(ParseError("server: {idleTimeout: 60}\n"),
              HasSubstr("server.idleTimeout: invalid duration \"60\": missing unit"));
  EXPECT_THAT(ParseError("store: [a]\n"), HasSubstr("store: expected a mapping of keys"));
  EXPECT_THAT(ParseError("listen: [a]\n"), HasSubstr("listen: expected a string, got a sequence"));
  EXPECT_THAT(ParseError("store: {verifyReads: never}\n"),
              HasSubstr("store.verifyReads: must be one of changed, always; got \"never\""));
}

TEST(AgentConfigTest, NegativeSizesAreRejectedAtLoad) {
  EXPECT_THAT(ParseError("store: {maxSize: -10Gi}\n"),
              HasSubstr("store.maxSize: invalid byte size \"-10Gi\": negative"));
  EXPECT_THAT(ParseError("httpcache: {maxObjectSize: -1}\n"),
              HasSubstr("httpcache.maxObjectSize: invalid byte size \"-1\": negative"));
}

TEST(AgentConfigTest, UnknownLogLevelIsRejected) {
  EXPECT_THAT(ParseError("logLevel: verbose\n"),
              HasSubstr("agent.yaml:1:11: logLevel: must be one of debug, info, warn, error; "
                        "got \"verbose\""));
  Result<AgentConfig> c = Parse("logLevel: WARNING\n");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->log_level, log::Level::kWarn);
}

TEST(AgentConfigTest, AllProblemsAreReportedTogether) {
  std::string m = ParseError("logLevel: loud\nstore: {maxSize: x, colour: red}\n");
  EXPECT_THAT(m, HasSubstr("logLevel: must be one of"));
  EXPECT_THAT(m, HasSubstr("store.maxSize: invalid byte size"));
  EXPECT_THAT(m, HasSubstr("store.colour: unknown key"));
}

TEST(AgentConfigTest, MalformedYamlNamesFileLineAndColumn) {
  EXPECT_THAT(ParseError("store:\n  maxSize: 1Gi\n dataDir: /x\n"),
              testing::MatchesRegex("agent\\.yaml:3:[0-9]+: malformed YAML: .*"));
}

TEST(AgentConfigTest, MissingFileIsReported) {
  Result<AgentConfig> c = LoadAgentConfig("/nonexistent/agent.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/agent.yaml"));
}

TEST(AgentConfigTest, ExampleFileLoadsAndValidates) {
  Result<AgentConfig> c = LoadAgentConfig(BC_SOURCE_DIR "/examples/agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->store.data_dir, "/var/lib/buildcache");
  EXPECT_EQ(c->store.max_size, 20ULL << 30);
  // Everything but the data directory is validated as written; the directory is moved to a
  // temporary one so the test does not create /var/lib/buildcache.
  TempDir dir;
  c->store.data_dir = (dir.path() / "store").string();
  Status s = ValidateAgentConfig(*c);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

// The example with its commented-out sections enabled: a line "# key:" (a top-level key,
// lowercase) starts a section, and the lines after it that begin with "#  " belong to it; the
// leading "# " of each is dropped.
std::string EnableCommentedSections(std::string_view text) {
  std::string out;
  bool in_section = false;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    const bool starts_section =
        line.size() > 3 && line.starts_with("# ") && line[2] >= 'a' && line[2] <= 'z' &&
        line.find(':') != std::string_view::npos &&
        line.substr(2, line.find(':') - 2).find(' ') == std::string_view::npos;
    if (starts_section) {
      in_section = true;
    } else if (in_section && !line.starts_with("#  ")) {
      in_section = false;
    }
    out += in_section ? line.substr(2) : line;
    out += '\n';
  }
  return out;
}

// Whether a declared key path ("pypi.builders[].python") is present below `node`; a list's key is
// present when any of its items has it (an example may show one kind of item per entry).
bool Present(config::Node node, std::string_view path) {
  if (path.empty()) return node.present();
  size_t dot = path.find('.');
  std::string_view key = path.substr(0, dot);
  std::string_view rest = dot == std::string_view::npos ? "" : path.substr(dot + 1);
  const bool list = key.ends_with("[]");
  if (list) key.remove_suffix(2);
  node = node.Get(key);
  if (!list) return Present(node, rest);
  for (size_t i = 0; i < node.size(); ++i) {
    if (Present(node.Item(i), rest)) return true;
  }
  return false;
}

TEST(AgentConfigTest, ExampleFileDocumentsEveryDeclaredKey) {
  // Every key the declarations know (agent_config_fields.cc) appears in examples/agent.yaml, as
  // a setting or in a commented-out section, and those sections hold only real keys.
  std::ifstream in(BC_SOURCE_DIR "/examples/agent.yaml");
  std::string example((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(example.empty());
  const std::string enabled = EnableCommentedSections(example);
  Result<AgentConfig> parsed = Parse(enabled);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString() << "\n" << enabled;
  auto doc = config::Document::Parse(enabled, "agent.yaml");
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  auto root = doc->Root();
  ASSERT_TRUE(root.ok());

  const std::vector<std::string> paths = AgentConfigKeyPaths();
  ASSERT_GT(paths.size(), 80u);
  EXPECT_THAT(paths, testing::Contains("pypi.builders[].readOnlyPaths"));
  EXPECT_THAT(paths, testing::Contains("pypi.builders[].platform.libcVersion"));
  EXPECT_THAT(paths, testing::Contains("pypi.buildPods.agentUrl"));
  EXPECT_THAT(paths, testing::Contains("identity.kubernetes.nodeName"));
  for (const std::string& path : paths) {
    EXPECT_TRUE(Present(*root, path)) << "examples/agent.yaml does not document " << path;
  }
}

// The section a front end's README documents: each of its keys is named there.
TEST(AgentConfigTest, FrontendReadmesNameEveryKeyOfTheirSection) {
  for (std::string section : {"pypi", "npm", "goproxy", "cargo", "maven", "httpcache"}) {
    std::ifstream in(BC_SOURCE_DIR "/agent/frontends/" + section + "/README.md");
    std::string readme((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(readme.empty()) << section;
    for (const std::string& path : AgentConfigKeyPaths()) {
      if (!path.starts_with(section + ".")) continue;
      std::string key = path.substr(path.rfind('.') + 1);
      const bool named = readme.find("`" + key) != std::string::npos ||
                         readme.find(key + ":") != std::string::npos ||
                         readme.find("." + key + "`") != std::string::npos;
      EXPECT_TRUE(named) << "agent/frontends/" << section << "/README.md does not name " << path;
    }
  }
}

TEST(AgentConfigTest, RenderedConfigLoadsBackEqual) {
  AgentConfig c;
  c.listen = "[::1]:0";
  c.log_level = log::Level::kError;
  c.store.data_dir = "/tmp/with \"quotes\" and \\ and \t tab";
  c.store.max_size = 12345;
  c.store.verify_reads = VerifyReads::kAlways;
  c.httpcache.enabled = false;
  c.httpcache.max_object_size = 3ULL << 30;
  c.server.max_connections = 7;
  c.server.idle_timeout = std::chrono::milliseconds(1500);
  c.server.max_connections_per_client = 3;
  c.server.body_timeout = std::chrono::milliseconds(2500);
  c.server.min_body_rate = 100;
  c.server.probe_listen = "127.0.0.1:9";
  c.store.max_in_flight_per_writer = 1000;
  c.store.max_in_flight_per_client = 2000;
  c.admin.token_file = "/etc/buildcache/admin/token";
  c.identity.tokens_file = "/etc/buildcache/tokens.yaml";
  c.identity.anonymous = identity::AnonymousAccess::kNone;
  c.identity.kube_node_name = "$NODE_NAME";
  c.identity.kubeconfig = "/etc/kube config";
  c.identity.audience = "";
  c.identity.trusted_writers = {
      {"release", "main"}, {"ci/publisher"}, {{"branch", "main"}, {"a.b/c", "d e"}}};
  Result<AgentConfig> back = Parse(RenderAgentConfig(c));
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << RenderAgentConfig(c);
  EXPECT_EQ(*back, c) << RenderAgentConfig(c);
  Result<AgentConfig> defaults = Parse(RenderAgentConfig(AgentConfig{}));
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(*defaults, AgentConfig{});
}

TEST(ValidateAgentConfigTest, CreatesMissingDataDirAndMakesItAbsolute) {
  TempDir dir;
  AgentConfig c = ValidConfig(dir);
  c.store.data_dir = (dir.path() / "a" / "b" / "").string();
  ASSERT_TRUE(ValidateAgentConfig(c).ok());
  EXPECT_EQ(c.store.data_dir, (dir.path() / "a" / "b").string());
  EXPECT_TRUE(fs::is_directory(c.store.data_dir));
  EXPECT_TRUE(fs::is_empty(c.store.data_dir)) << "probe file left behind";

  fs::path old_cwd = fs::current_path();
  fs::current_path(dir.path());
  AgentConfig rel = ValidConfig(dir);
  rel.store.data_dir = "rel/./store";
  Status s = ValidateAgentConfig(rel);
  fs::current_path(old_cwd);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(rel.store.data_dir, (dir.path() / "rel" / "store").string());
}

TEST(ValidateAgentConfigTest, DataDirUnderARegularFileIsRejected) {
  // Tests run as root, which ignores permission bits; a path under a regular file cannot be
  // created by anyone.
  TempDir dir;
  fs::path file = dir.path() / "file";
  std::ofstream(file) << "x";
  AgentConfig c = ValidConfig(dir);
  c.store.data_dir = (file / "store").string();
  EXPECT_THAT(ValidationError(c), HasSubstr("store.dataDir: cannot create directory \"" +
                                            (file / "store").string() + "\""));
  c.store.data_dir = file.string();
  EXPECT_THAT(ValidationError(c),
              HasSubstr("store.dataDir: \"" + file.string() + "\" is not a directory"));
}

TEST(ValidateAgentConfigTest, UnwritableDataDirIsRejected) {
  if (geteuid() == 0) {
    // /proc is not writable even for root.
    AgentConfig c;
    c.store.data_dir = "/proc/self";
    EXPECT_THAT(ValidationError(c), HasSubstr("store.dataDir: directory \"/proc/self\" is not "
                                              "writable"));
    return;
  }
  TempDir dir;
  fs::create_directory(dir.path() / "ro");
  chmod((dir.path() / "ro").c_str(), 0500);
  AgentConfig c = ValidConfig(dir);
  c.store.data_dir = (dir.path() / "ro").string();
  EXPECT_THAT(ValidationError(c), HasSubstr("is not writable"));
  chmod((dir.path() / "ro").c_str(), 0700);
}

TEST(ValidateAgentConfigTest, EmptyDataDirIsRejected) {
  AgentConfig c;
  c.store.data_dir = "";
  EXPECT_THAT(ValidationError(c), HasSubstr("store.dataDir: must not be empty"));
}

TEST(ValidateAgentConfigTest, ZeroSizesAreRejected) {
  TempDir dir;
  AgentConfig c = ValidConfig(dir);
  c.store.max_size = 0;
  EXPECT_THAT(ValidationError(c), HasSubstr("store.maxSize: must be greater than 0"));
  c = ValidConfig(dir);
  c.httpcache.max_object_size = 0;
  EXPECT_THAT(ValidationError(c), HasSubstr("httpcache.maxObjectSize: must be greater than 0"));
}

TEST(ValidateAgentConfigTest, MaxObjectSizeAboveMaxSizeIsRejectedOnlyWhenEnabled) {
  TempDir dir;
  AgentConfig c = ValidConfig(dir);
  c.store.max_size = 256u << 20;
  EXPECT_THAT(ValidationError(c),
              HasSubstr("httpcache.maxObjectSize: 512Mi is larger than store.maxSize 256Mi"));
  c.httpcache.enabled = false;
  EXPECT_TRUE(ValidateAgentConfig(c).ok());
}

TEST(ValidateAgentConfigTest, ServerLimitsMustBePositive) {
  TempDir dir;
  AgentConfig c = ValidConfig(dir);
  c.server.max_connections = -1;
  c.server.idle_timeout = std::chrono::seconds(0);
  std::string m = ValidationError(c);
  EXPECT_THAT(m, HasSubstr("server.maxConnections: must be between 1 and 1000000, got -1"));
  EXPECT_THAT(m, HasSubstr("server.idleTimeout: must be greater than 0"));
}

TEST(ValidateAgentConfigTest, ListenAddresses) {
  TempDir dir;
  for (std::string good : {"127.0.0.1:8080", "0.0.0.0:0", "[::]:8080", "[::1]:65535",
                           "localhost:80", "agent-0.buildcache.svc:9000"}) {
    AgentConfig c = ValidConfig(dir);
    c.listen = good;
    Status s = ValidateAgentConfig(c);
    EXPECT_TRUE(s.ok()) << good << ": " << s.ToString();
  }
  for (std::string bad :
       {"", "8080", ":8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:http", "::1:8080", "[::1]", "[::1]8080", "[nope]:80", "bad host:80", "-x:80",
        "a..b:80", "http://127.0.0.1:8080"}) {
    AgentConfig c = ValidConfig(dir);
    c.listen = bad;
    EXPECT_THAT(ValidationError(c), HasSubstr("listen: ")) << bad;
  }
}

TEST(ValidateAgentConfigTest, BadLogLevelValueIsRejected) {
  TempDir dir;
  AgentConfig c = ValidConfig(dir);
  c.log_level = static_cast<log::Level>(9);
  EXPECT_THAT(ValidationError(c), HasSubstr("logLevel: unknown level"));
}

}  // namespace
}  // namespace buildcache::agent

namespace buildcache::agent {
namespace {

TEST(AgentConfigPypiTest, PypiSectionLoadsAndValidates) {
  Result<AgentConfig> c = ParseAgentConfig(
      "pypi:\n  upstream: https://pypi.example.internal/simple/\n  metadataTtl: 5m\n"
      "  wheelDirectories: [/var/cache/pip/wheels]\n",
      "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->pypi.enabled());
  EXPECT_EQ(c->pypi.metadata_ttl, std::chrono::minutes(5));
  ASSERT_EQ(c->pypi.wheel_directories.size(), 1u);
  // The rendered configuration reads back equal.
  Result<AgentConfig> again = ParseAgentConfig(RenderAgentConfig(*c), "rendered");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->pypi, c->pypi);
  EXPECT_EQ(again->upstream_client, c->upstream_client);
}

TEST(AgentConfigPypiTest, BadUpstreamUrlIsNamed) {
  for (const char* url : {"ftp://x/simple", "pypi.example.internal", "https://", "https://a b/"}) {
    Result<AgentConfig> c =
        ParseAgentConfig(std::string("pypi: {upstream: \"") + url + "\"}\n", "agent.yaml");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    c->store.data_dir = ::testing::TempDir() + "/pypi_cfg";
    Status s = ValidateAgentConfig(*c);
    EXPECT_FALSE(s.ok()) << url;
    EXPECT_NE(s.message().find("pypi.upstream: must be an absolute"), std::string::npos)
        << s.message();
  }
}

TEST(AgentConfigPypiTest, ImageBuilderLoadsValidatesAndRendersBack) {
  Result<AgentConfig> c = ParseAgentConfig(
      "pypi:\n  upstream: https://pypi.example.internal/simple/\n"
      "  builders:\n"
      "  - {name: local, python: /usr/bin/python3}\n"
      "  - name: py311\n    image: example.org/ci/python:3.11\n"
      "    platform: {implementation: PyPy, python: \"3.11\", libc: musl, libcVersion: \"1.2\","
      " cpu: aarch64}\n"
      "  buildPods: {namespace: $POD_NAMESPACE, buildCache: bc, agentUrl: "
      "\"http://$(POD_IP):8080\"}\n",
      "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->pypi.builders.size(), 2u);
  const PypiBuilderConfig& b = c->pypi.builders[1];
  EXPECT_EQ(b.image, "example.org/ci/python:3.11");
  EXPECT_EQ(b.platform.implementation, "PyPy");
  EXPECT_EQ(b.platform.python, "3.11");
  EXPECT_EQ(b.platform.libc, "musl");
  EXPECT_EQ(b.platform.libc_version, "1.2");
  EXPECT_EQ(b.platform.cpu, "aarch64");
  EXPECT_EQ(c->pypi.builders[0].platform, PypiBuilderPlatformConfig{});
  EXPECT_EQ(c->pypi.build_pods.ns, "$POD_NAMESPACE");
  EXPECT_EQ(c->pypi.build_pods.agent_url, "http://$(POD_IP):8080");
  TempDir dir;
  c->store.data_dir = (dir.path() / "store").string();
  EXPECT_TRUE(ValidateAgentConfig(*c).ok()) << ValidateAgentConfig(*c).ToString();
  Result<AgentConfig> again = ParseAgentConfig(RenderAgentConfig(*c), "rendered");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->pypi, c->pypi);
}

TEST(AgentConfigPypiTest, BadBuildersAreNamed) {
  TempDir dir;
  auto problems = [&dir](const std::string& pypi) {
    Result<AgentConfig> c = ParseAgentConfig(
        "pypi:\n  upstream: https://pypi.example.internal/simple/\n" + pypi, "agent.yaml");
    if (!c.ok()) return c.status().message();
    c->store.data_dir = (dir.path() / "store").string();
    Status s = ValidateAgentConfig(*c);
    EXPECT_FALSE(s.ok()) << pypi;
    return s.message();
  };
  const std::string pods =
      "  buildPods: {namespace: ns, buildCache: bc, agentUrl: \"http://10.0.0.1:8080\"}\n";
  const std::string platform = "platform: {python: \"3.11\", libcVersion: \"2.36\"}";
  EXPECT_THAT(problems("  builders:\n  - {name: both, python: /usr/bin/python3, image: x, " +
                       platform + "}\n" + pods),
              HasSubstr("pypi.builders \"both\": set exactly one of python"));
  EXPECT_THAT(problems("  builders:\n  - {name: neither}\n"),
              HasSubstr("pypi.builders \"neither\": set exactly one of python"));
  EXPECT_THAT(problems("  builders:\n  - {name: pod, image: x, " + platform + "}\n"),
              HasSubstr("pypi.buildPods: required when a builder has an image"));
  EXPECT_THAT(problems("  builders:\n  - {image: x, " + platform + "}\n" + pods),
              HasSubstr("a builder with an image needs a name"));
  EXPECT_THAT(
      problems("  builders:\n  - {name: p, image: x, platform: {python: \"3\", libcVersion: "
               "\"2.36\"}}\n" +
               pods),
      HasSubstr("platform.python must be the interpreter's minor version"));
  EXPECT_THAT(
      problems("  builders:\n  - {name: p, image: x, platform: {python: \"3.11\"}}\n" + pods),
      HasSubstr("platform.libcVersion must be a version"));
  EXPECT_THAT(problems("  builders:\n  - {name: p, image: x, platform: {python: \"3.11\", "
                       "libcVersion: \"2.36\", cpu: sparc}}\n" +
                       pods),
              HasSubstr("cpu"));
  EXPECT_THAT(problems("  builders:\n  - {name: p, image: x, platform: {python: \"3.11\", "
                       "libcVersion: \"2.36\", libc: bionic}}\n" +
                       pods),
              HasSubstr("libc"));
  EXPECT_THAT(problems("  builders:\n  - {name: l, python: /usr/bin/python3, " + platform + "}\n"),
              HasSubstr("platform is declared for image builders only"));
  EXPECT_THAT(problems("  builders:\n  - {name: p, image: x, " + platform +
                       "}\n  buildPods: {namespace: ns, buildCache: bc, agentUrl: "
                       "\"https://10.0.0.1:8080\"}\n"),
              HasSubstr("pypi.buildPods.agentUrl: must be http://HOST:PORT"));
  EXPECT_THAT(problems("  builders:\n  - {name: p, image: x, " + platform +
                       "}\n  buildPods: {agentUrl: \"http://10.0.0.1:8080\"}\n"),
              HasSubstr("pypi.buildPods.namespace: required"));
}

TEST(AgentConfigPypiTest, UpstreamClientLimits) {
  Result<AgentConfig> c = ParseAgentConfig("upstreamClient: {attempts: 0}\n", "agent.yaml");
  ASSERT_TRUE(c.ok());
  c->store.data_dir = ::testing::TempDir() + "/pypi_cfg2";
  Status s = ValidateAgentConfig(*c);
  EXPECT_NE(s.message().find("upstreamClient.attempts"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace buildcache::agent

namespace buildcache::agent {
namespace {

TEST(AgentConfigNpmTest, NpmSectionLoadsValidatesAndRendersBack) {
  Result<AgentConfig> c = ParseAgentConfig(
      "npm:\n  upstream: https://npm.example.internal/\n  metadataTtl: 2m\n  negativeTtl: 30s\n"
      "  publicUrl: http://buildcache.ci.svc:8080/npm/\n  maxPackumentSize: 128Mi\n",
      "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->npm.enabled());
  EXPECT_EQ(c->npm.upstream, "https://npm.example.internal/");
  EXPECT_EQ(c->npm.public_url, "http://buildcache.ci.svc:8080/npm/");
  EXPECT_EQ(c->npm.metadata_ttl, std::chrono::minutes(2));
  EXPECT_EQ(c->npm.negative_ttl, std::chrono::seconds(30));
  EXPECT_EQ(c->npm.max_packument_size, uint64_t{128} << 20);
  c->store.data_dir = ::testing::TempDir() + "/npm_cfg";
  EXPECT_TRUE(ValidateAgentConfig(*c).ok());
  Result<AgentConfig> again = ParseAgentConfig(RenderAgentConfig(*c), "rendered");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->npm, c->npm);

  Result<AgentConfig> off = ParseAgentConfig("listen: 127.0.0.1:0\n", "agent.yaml");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->npm.enabled());
}

TEST(AgentConfigNpmTest, BadNpmValuesAreNamed) {
  Result<AgentConfig> c = ParseAgentConfig(
      "npm: {upstream: \"npm.example.internal\", publicUrl: \"ftp://x/\", maxPackumentSize: 0}\n",
      "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  c->store.data_dir = ::testing::TempDir() + "/npm_cfg2";
  Status s = ValidateAgentConfig(*c);
  for (const char* key : {"npm.upstream: must be an absolute", "npm.publicUrl: must be an absolute",
                          "npm.maxPackumentSize: must be greater than 0"}) {
    EXPECT_NE(s.message().find(key), std::string::npos) << key << "\n" << s.message();
  }
  Result<AgentConfig> typo = ParseAgentConfig("npm: {upstreem: https://x/}\n", "agent.yaml");
  EXPECT_FALSE(typo.ok());
}

}  // namespace
}  // namespace buildcache::agent

namespace buildcache::agent {
namespace {

TEST(AgentConfigGoproxyTest, GoproxySectionLoadsValidatesAndRendersBack) {
  Result<AgentConfig> c = ParseAgentConfig(
      "goproxy:\n  upstream: https://goproxy.example.internal\n  metadataTtl: 2m\n"
      "  sumdb:\n    name: sum.example.internal\n    latestTtl: 30s\n"
      "    noVerify: [corp.example.internal, \"*.private.example\"]\n",
      "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->goproxy.enabled());
  EXPECT_EQ(c->goproxy.metadata_ttl, std::chrono::minutes(2));
  EXPECT_EQ(c->goproxy.negative_ttl, std::chrono::minutes(1));
  EXPECT_EQ(c->goproxy.sumdb.name, "sum.example.internal");
  EXPECT_EQ(c->goproxy.sumdb.upstream, "");
  EXPECT_EQ(c->goproxy.sumdb.latest_ttl, std::chrono::seconds(30));
  EXPECT_TRUE(c->goproxy.sumdb.verify);
  ASSERT_EQ(c->goproxy.sumdb.no_verify.size(), 2u);
  c->store.data_dir = ::testing::TempDir() + "/goproxy_cfg";
  EXPECT_TRUE(ValidateAgentConfig(*c).ok());
  Result<AgentConfig> again = ParseAgentConfig(RenderAgentConfig(*c), "rendered");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->goproxy, c->goproxy);

  Result<AgentConfig> off = ParseAgentConfig("listen: 127.0.0.1:0\n", "agent.yaml");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->goproxy.enabled());
}

TEST(AgentConfigGoproxyTest, BadGoproxyValuesAreNamed) {
  Result<AgentConfig> c = ParseAgentConfig(
      "goproxy:\n  upstream: goproxy.example.internal\n"
      "  sumdb: {name: \"Sum/../x\", upstream: \"ftp://x/\", noVerify: [\"a b\"]}\n",
      "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  // Negative durations are refused by the parser already; validation also guards the structs.
  c->goproxy.metadata_ttl = std::chrono::seconds(-1);
  c->goproxy.sumdb.latest_ttl = std::chrono::seconds(-1);
  c->store.data_dir = ::testing::TempDir() + "/goproxy_cfg2";
  Status s = ValidateAgentConfig(*c);
  for (const char* key : {"goproxy.upstream: must be an absolute", "goproxy.metadataTtl",
                          "goproxy.sumdb.name", "goproxy.sumdb.upstream: must be an absolute",
                          "goproxy.sumdb.latestTtl", "goproxy.sumdb.noVerify"}) {
    EXPECT_NE(s.message().find(key), std::string::npos) << key << "\n" << s.message();
  }
  EXPECT_FALSE(ParseAgentConfig("goproxy: {sumdb: {nmae: x}}\n", "agent.yaml").ok());
}

}  // namespace
}  // namespace buildcache::agent

namespace buildcache::agent {
namespace {

TEST(AgentConfigCargoMavenTest, CargoAndMavenSectionsLoadValidateAndRenderBack) {
  Result<AgentConfig> c = ParseAgentConfig(
      "cargo:\n  upstream: sparse+https://index.example.internal/\n  metadataTtl: 2m\n"
      "  publicUrl: http://buildcache.ci.svc:8080/cargo/\n  negativeTtl: 30s\n"
      "maven:\n  upstream: https://maven.example.internal/maven2/\n  metadataTtl: 15m\n"
      "  negativeTtl: 10s\n  maxMutableSize: 256Mi\n",
      "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->cargo.enabled());
  EXPECT_EQ(c->cargo.upstream, "sparse+https://index.example.internal/");
  EXPECT_EQ(c->cargo.public_url, "http://buildcache.ci.svc:8080/cargo/");
  EXPECT_EQ(c->cargo.metadata_ttl, std::chrono::minutes(2));
  EXPECT_EQ(c->cargo.negative_ttl, std::chrono::seconds(30));
  EXPECT_TRUE(c->maven.enabled());
  EXPECT_EQ(c->maven.upstream, "https://maven.example.internal/maven2/");
  EXPECT_EQ(c->maven.metadata_ttl, std::chrono::minutes(15));
  EXPECT_EQ(c->maven.negative_ttl, std::chrono::seconds(10));
  EXPECT_EQ(c->maven.max_mutable_size, uint64_t{256} << 20);
  c->store.data_dir = ::testing::TempDir() + "/cargo_maven_cfg";
  Status valid = ValidateAgentConfig(*c);
  EXPECT_TRUE(valid.ok()) << valid.ToString();
  Result<AgentConfig> again = ParseAgentConfig(RenderAgentConfig(*c), "rendered");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->cargo, c->cargo);
  EXPECT_EQ(again->maven, c->maven);

  Result<AgentConfig> off = ParseAgentConfig("listen: 127.0.0.1:0\n", "agent.yaml");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->cargo.enabled());
  EXPECT_FALSE(off->maven.enabled());
  EXPECT_EQ(off->cargo.metadata_ttl, std::chrono::minutes(10));
  EXPECT_EQ(off->maven.max_mutable_size, uint64_t{64} << 20);
}

TEST(AgentConfigCargoMavenTest, BadCargoAndMavenValuesAreNamed) {
  Result<AgentConfig> c = ParseAgentConfig(
      "cargo: {upstream: \"sparse+index.example.internal\", publicUrl: \"ftp://x/\"}\n"
      "maven: {upstream: \"https://maven.example.internal/ x\", maxMutableSize: 0}\n",
      "agent.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  c->cargo.negative_ttl = std::chrono::seconds(-1);
  c->maven.metadata_ttl = std::chrono::seconds(-1);
  c->store.data_dir = ::testing::TempDir() + "/cargo_maven_cfg2";
  Status s = ValidateAgentConfig(*c);
  for (const char* key :
       {"cargo.upstream: must be an absolute", "cargo.publicUrl: must be an absolute",
        "cargo.negativeTtl: must not be negative", "maven.upstream: must be an absolute",
        "maven.metadataTtl: must not be negative",
        "maven.maxMutableSize: must be greater than 0"}) {
    EXPECT_NE(s.message().find(key), std::string::npos) << key << "\n" << s.message();
  }
  EXPECT_FALSE(ParseAgentConfig("cargo: {upstrem: https://x/}\n", "agent.yaml").ok());
  EXPECT_FALSE(ParseAgentConfig("maven: {upstream: [a]}\n", "agent.yaml").ok());
}

TEST(AgentConfigReplicationTest, IPv6PeerAddressesAreBracketedAndCanonical) {
  // What the kubelet makes of "--advertise $(POD_IP):8081" on an IPv6 pod network.
  Result<AgentConfig> c = Parse(
      "replication:\n"
      "  listen: \"[::]:8081\"\n  advertise: fd00:0:0:0::5:8081\n"
      "  peers: [\"[FD00::3]:8081\", 10.0.0.2:8081, agent-3:8081]\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Status valid = ValidateAgentConfig(*c);
  ASSERT_TRUE(valid.ok()) << valid.ToString();
  EXPECT_EQ(c->replication.advertise, "[fd00::5]:8081");  // as DNS membership lists peers
  EXPECT_EQ(c->replication.peers,
            (std::vector<std::string>{"[fd00::3]:8081", "10.0.0.2:8081", "agent-3:8081"}));
}

TEST(AgentConfigReplicationTest, ReplicationAndDirectoriesLoadValidateAndRenderBack) {
  TempDir dir;
  std::string peers_file = (dir.path() / "peers").string();
  std::ofstream(peers_file) << "10.0.0.2:8081\n";
  Result<AgentConfig> c = Parse(
      "replication:\n"
      "  listen: 0.0.0.0:8081\n  advertise: 10.0.0.1:8081\n  copies: 3\n"
      "  peers: [10.0.0.2:8081, \"[fd00::3]:8081\", agent-3.example.internal:8081]\n"
      "  peersFile: " +
      peers_file +
      "\n"
      "  peerTimeout: 750ms\n  pushQueue: 500\n"
      "  dns: {name: buildcache-peers.ci.svc.cluster.local, port: 9000, interval: 10s}\n"
      "  hydrate: {enabled: false, maxTime: 1m, maxSize: 2Gi}\n"
      "directories:\n"
      "  - {name: gobuild, path: /cache/go-build, maxSize: 50Gi}\n"
      "  - {name: pip, path: /cache/pip, maxSize: 20Gi, settle: 500ms}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const ReplicationConfig& r = c->replication;
  EXPECT_TRUE(r.enabled());
  EXPECT_EQ(r.listen, "0.0.0.0:8081");
  EXPECT_EQ(r.advertise, "10.0.0.1:8081");
  EXPECT_EQ(r.copies, 3);
  EXPECT_EQ(r.peers, (std::vector<std::string>{"10.0.0.2:8081", "[fd00::3]:8081",
                                               "agent-3.example.internal:8081"}));
  EXPECT_EQ(r.peers_file, peers_file);
  EXPECT_EQ(r.peer_timeout, std::chrono::milliseconds(750));
  EXPECT_EQ(r.push_queue, 500);
  EXPECT_EQ(r.dns.name, "buildcache-peers.ci.svc.cluster.local");
  EXPECT_EQ(r.dns.port, 9000);
  EXPECT_EQ(r.dns.interval, std::chrono::seconds(10));
  EXPECT_FALSE(r.hydrate.enabled);
  EXPECT_EQ(r.hydrate.max_time, std::chrono::minutes(1));
  EXPECT_EQ(r.hydrate.max_size, uint64_t{2} << 30);
  ASSERT_EQ(c->directories.size(), 2u);
  EXPECT_EQ(c->directories[0].name, "gobuild");
  EXPECT_EQ(c->directories[0].path, "/cache/go-build");
  EXPECT_EQ(c->directories[0].max_size, uint64_t{50} << 30);
  EXPECT_EQ(c->directories[0].settle, std::chrono::seconds(2));
  EXPECT_EQ(c->directories[1].settle, std::chrono::milliseconds(500));
  c->store.data_dir = (dir.path() / "store").string();
  Status valid = ValidateAgentConfig(*c);
  EXPECT_TRUE(valid.ok()) << valid.ToString();
  Result<AgentConfig> back = Parse(RenderAgentConfig(*c));
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << RenderAgentConfig(*c);
  EXPECT_EQ(*back, *c) << RenderAgentConfig(*c);
  EXPECT_FALSE(AgentConfig{}.replication.enabled());
}

TEST(AgentConfigReplicationTest, BadReplicationValuesAreNamed) {
  Result<AgentConfig> c = Parse(
      "replication:\n"
      "  listen: 0.0.0.0:8081\n  copies: 0\n  peers: [\"10.0.0.2\", \"host:0\", ok.internal:1]\n"
      "  peersFile: /nonexistent/peers\n  pushQueue: 0\n"
      "  dns: {name: \"bad name\", port: 70000}\n"
      "  tls: {certFile: /nonexistent/cert.pem}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  c->replication.peer_timeout = std::chrono::seconds(0);
  TempDir dir;
  c->store.data_dir = (dir.path() / "store").string();
  Status s = ValidateAgentConfig(*c);
  for (const char* key :
       {"replication.advertise: must be set when replication.listen is a wildcard",
        "replication.copies: must be between 1 and 16, got 0",
        "replication.peers[0]: expected HOST:PORT",
        "replication.peers[1]:", "replication.peersFile: cannot read \"/nonexistent/peers\"",
        "replication.pushQueue: must be between",
        "replication.dns.name:", "replication.dns.port: must be between 1 and 65535, got 70000",
        "replication.tls: certFile, keyFile and caFile must all be set",
        "replication.tls.certFile: cannot read",
        "replication.peerTimeout: must be greater than 0"}) {
    EXPECT_THAT(s.message(), HasSubstr(key)) << key;
  }
  EXPECT_THAT(s.message(), Not(HasSubstr("replication.peers[2]")));

  Result<AgentConfig> off = Parse("replication: {peers: [10.0.0.2:8081]}\n");
  ASSERT_TRUE(off.ok());
  off->store.data_dir = (dir.path() / "store").string();
  EXPECT_THAT(ValidateAgentConfig(*off).message(),
              HasSubstr("replication.listen: must be set when peers"));
  EXPECT_THAT(ParseError("replication: {listen: 127.0.0.1:1, peer: [x:1]}\n"),
              HasSubstr("replication.peer"));
  EXPECT_THAT(ParseError("replication: {dns: {nam: x}}\n"), HasSubstr("replication.dns.nam"));
  EXPECT_THAT(ParseError("replication: {copies: two}\n"), HasSubstr("replication.copies"));
}

TEST(AgentConfigTest, AdminTokenFileLoadsAndAnUnreadableOneIsNamed) {
  Result<AgentConfig> c = Parse("admin: {tokenFile: /nonexistent/admin-token}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->admin.token_file, "/nonexistent/admin-token");
  TempDir dir;
  c->store.data_dir = (dir.path() / "store").string();
  EXPECT_THAT(ValidateAgentConfig(*c).message(),
              HasSubstr("admin.tokenFile: cannot read \"/nonexistent/admin-token\""));
  EXPECT_THAT(ParseError("admin: {token: x}\n"), HasSubstr("admin.token"));
  EXPECT_TRUE(AgentConfig{}.admin.token_file.empty());
}

TEST(AgentConfigTest, IdentityLoadsAndBadValuesAreNamed) {
  Result<AgentConfig> c =
      Parse("identity: {tokensFile: /nonexistent/tokens.yaml, anonymous: none}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->identity.tokens_file, "/nonexistent/tokens.yaml");
  EXPECT_EQ(c->identity.anonymous, identity::AnonymousAccess::kNone);
  EXPECT_TRUE(c->identity.enabled());
  TempDir dir;
  c->store.data_dir = (dir.path() / "store").string();
  EXPECT_THAT(ValidateAgentConfig(*c).message(),
              HasSubstr("identity.tokensFile: cannot read \"/nonexistent/tokens.yaml\""));
  EXPECT_THAT(ParseError("identity: {anonymous: write}\n"), HasSubstr("identity.anonymous"));
  EXPECT_THAT(ParseError("identity: {tokens: x}\n"), HasSubstr("identity.tokens"));
  EXPECT_FALSE(AgentConfig{}.identity.enabled());
  EXPECT_EQ(AgentConfig{}.identity.anonymous, identity::AnonymousAccess::kRead);

  Result<AgentConfig> bad = Parse(
      "identity:\n  trustedWriters: {namespaces: [Bad_NS], serviceAccounts: [nosl, a/b/c]}\n");
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  bad->store.data_dir = (dir.path() / "store2").string();
  std::string m(ValidateAgentConfig(*bad).message());
  EXPECT_THAT(m, HasSubstr("identity.trustedWriters.namespaces: \"Bad_NS\" is not a namespace"));
  EXPECT_THAT(m, HasSubstr("identity.trustedWriters.serviceAccounts: \"nosl\" is not"));
  EXPECT_THAT(m, HasSubstr("\"a/b/c\" is not NAMESPACE/NAME"));
  EXPECT_THAT(m, HasSubstr("identity.trustedWriters: needs identity.kubernetes.nodeName"));
  EXPECT_THAT(ParseError("identity: {kubernetes: {node: x}}\n"),
              HasSubstr("identity.kubernetes.node"));
}

TEST(AgentConfigReplicationTest, BadDirectoriesAreNamed) {
  TempDir dir;
  const std::string store = (dir.path() / "store").string();
  Result<AgentConfig> c = Parse("store: {dataDir: " + store +
                                "}\n"
                                "directories:\n"
                                "  - {name: Go_Build, path: relative/dir, maxSize: 1Gi}\n"
                                "  - {name: pip, path: /cache/pip, maxSize: 0}\n"
                                "  - {name: pip, path: /cache/pip/, maxSize: 1Gi, settle: 1s}\n"
                                "  - {name: store, path: " +
                                store + ", maxSize: 1Gi}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  c->directories[1].settle = std::chrono::seconds(-1);
  Status s = ValidateAgentConfig(*c);
  for (const char* key : {"directories[0].name: must be 1-63 characters",
                          "directories[0].path: must be an absolute path",
                          "directories[1].maxSize: must be greater than 0",
                          "directories[1].settle: must not be negative",
                          "directories[2].name: \"pip\" is also directories[1].name",
                          "directories[2].path: \"/cache/pip/\" is also directories[1].path",
                          "directories[3].path: must not be store.dataDir"}) {
    EXPECT_THAT(s.message(), HasSubstr(key)) << key;
  }
  EXPECT_THAT(ParseError("directories: {name: x}\n"), HasSubstr("directories"));
  EXPECT_THAT(ParseError("directories: [pip]\n"), HasSubstr("directories[0]"));
  EXPECT_THAT(ParseError("directories: [{name: a, path: /a, maxSize: 1Gi, mountPath: /b}]\n"),
              HasSubstr("directories[0].mountPath"));
}

}  // namespace
}  // namespace buildcache::agent
