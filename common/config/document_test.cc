#include "common/config/document.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <random>

namespace buildcache::config {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

Document MustParse(std::string_view text) {
  Result<Document> doc = Document::Parse(text, "test.yaml");
  EXPECT_TRUE(doc.ok()) << doc.status().ToString();
  return std::move(doc).value();
}

// A small loader shaped like the agent's: a store section with three keys.
struct StoreConfig {
  std::string data_dir = "/var/lib/x";
  uint64_t max_size = 1;
  std::string verify = "changed";
  bool enabled = true;
  int64_t connections = 10;
  std::chrono::nanoseconds timeout{0};
};

Status LoadStore(const Document& doc, StoreConfig* c) {
  BC_ASSIGN_OR_RETURN(Node root, doc.Root());
  BC_RETURN_IF_ERROR(root.Read("enabled", &c->enabled));
  BC_RETURN_IF_ERROR(root.Read("connections", &c->connections));
  BC_RETURN_IF_ERROR(root.ReadDuration("timeout", &c->timeout));
  BC_ASSIGN_OR_RETURN(Node store, root.Section("store"));
  BC_RETURN_IF_ERROR(store.Read("dataDir", &c->data_dir));
  BC_RETURN_IF_ERROR(store.ReadByteSize("maxSize", &c->max_size));
  BC_RETURN_IF_ERROR(store.ReadOneOf("verifyReads", {"changed", "always"}, &c->verify));
  return doc.CheckUnknownKeys();
}

Status LoadText(std::string_view text, StoreConfig* c) {
  Result<Document> doc = Document::Parse(text, "test.yaml");
  if (!doc.ok()) {
    return doc.status();
  }
  return LoadStore(*doc, c);
}

std::string LoadError(std::string_view text) {
  StoreConfig c;
  Status s = LoadText(text, &c);
  EXPECT_FALSE(s.ok()) << "accepted:\n" << text;
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  return s.message();
}

TEST(DocumentTest, ReadsTypedValuesAndKeepsDefaultsForAbsentKeys) {
  StoreConfig c;
  ASSERT_TRUE(LoadText("enabled: false\ntimeout: 1m30s\nstore:\n  maxSize: 10Gi\n", &c).ok());
  EXPECT_FALSE(c.enabled);
  EXPECT_EQ(c.timeout, std::chrono::seconds(90));
  EXPECT_EQ(c.max_size, 10ULL << 30);
  EXPECT_EQ(c.data_dir, "/var/lib/x");
  EXPECT_EQ(c.verify, "changed");
  EXPECT_EQ(c.connections, 10);
}

TEST(DocumentTest, EmptyFileAndEmptySectionMeanDefaults) {
  StoreConfig c;
  EXPECT_TRUE(LoadText("", &c).ok());
  EXPECT_TRUE(LoadText("# only a comment\n", &c).ok());
  EXPECT_TRUE(LoadText("store:\n", &c).ok());
  EXPECT_TRUE(LoadText("store: {}\n", &c).ok());
  EXPECT_EQ(c.max_size, 1u);
}

TEST(DocumentTest, UnknownKeyIsReportedWithPathLocationAndKnownKeys) {
  std::string m = LoadError("store:\n  dataDir: /d\n  maxSizee: 10Gi\n");
  EXPECT_THAT(m, HasSubstr("test.yaml:3:3: store.maxSizee: unknown key"));
  EXPECT_THAT(m, HasSubstr("known: dataDir, maxSize, verifyReads"));
  EXPECT_THAT(m, HasSubstr("did you mean maxSize?"));
}

TEST(DocumentTest, EveryUnknownKeyIsReportedAtOnce) {
  std::string m = LoadError("storage: {}\nstore:\n  bogus: 1\n");
  EXPECT_THAT(m, HasSubstr("test.yaml:1:1: storage: unknown key"));
  EXPECT_THAT(m, HasSubstr("did you mean store?"));
  EXPECT_THAT(m, HasSubstr("test.yaml:3:3: store.bogus: unknown key (known: dataDir, maxSize"));
}

TEST(DocumentTest, WrongTypesNameThePathAndTheValue) {
  EXPECT_THAT(LoadError("enabled: yes\n"),
              HasSubstr("test.yaml:1:10: enabled: expected true or false, got \"yes\""));
  EXPECT_THAT(LoadError("enabled: \"true\"\n"), HasSubstr("enabled: expected true or false"));
  EXPECT_THAT(LoadError("connections: ten\n"),
              HasSubstr("connections: expected an integer, got \"ten\""));
  EXPECT_THAT(LoadError("connections: 1.5\n"), HasSubstr("connections: expected an integer"));
  EXPECT_THAT(LoadError("connections: 99999999999999999999\n"),
              HasSubstr("connections: expected an integer in the 64-bit range"));
  EXPECT_THAT(LoadError("connections: [1]\n"),
              HasSubstr("connections: expected an integer, got a sequence"));
  EXPECT_THAT(LoadError("store: /data\n"),
              HasSubstr("store: expected a mapping of keys, got \"/data\""));
  EXPECT_THAT(LoadError("store:\n  dataDir: {a: b}\n"),
              HasSubstr("store.dataDir: expected a string, got a mapping"));
  EXPECT_THAT(LoadError("store:\n  dataDir:\n"),
              HasSubstr("test.yaml:2:3: store.dataDir: expected a string, got null"));
  EXPECT_THAT(LoadError("store:\n  maxSize: lots\n"),
              HasSubstr("test.yaml:2:12: store.maxSize: invalid byte size \"lots\""));
  EXPECT_THAT(LoadError("store:\n  maxSize: -1Gi\n"),
              HasSubstr("store.maxSize: invalid byte size \"-1Gi\": negative"));
  EXPECT_THAT(LoadError("timeout: 30\n"), HasSubstr("timeout: invalid duration \"30\""));
  EXPECT_THAT(LoadError("store:\n  verifyReads: sometimes\n"),
              HasSubstr("store.verifyReads: must be one of changed, always; got \"sometimes\""));
}

TEST(DocumentTest, QuotedSizesAreAcceptedButQuotedIntegersAreStrings) {
  StoreConfig c;
  ASSERT_TRUE(LoadText("store: {maxSize: \"512Mi\"}\nconnections: +7\n", &c).ok());
  EXPECT_EQ(c.max_size, 512u << 20);
  EXPECT_EQ(c.connections, 7);
  EXPECT_THAT(LoadError("connections: '7'\n"), HasSubstr("expected an integer, got \"7\""));
}

TEST(DocumentTest, MalformedYamlNamesFileLineAndColumn) {
  Result<Document> d = Document::Parse("store:\n  maxSize: [1, 2\n  dataDir: x\n", "agent.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), testing::MatchesRegex("agent\\.yaml:[0-9]+:[0-9]+: "
                                                          "malformed YAML: .*"));
  d = Document::Parse("a: b\n  c: d\n", "agent.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("agent.yaml:2:4: malformed YAML: illegal map value"));
  d = Document::Parse("a: *undefined\n", "agent.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("agent.yaml:1:4: malformed YAML"));
  d = Document::Parse("\t- x: [\n", "agent.yaml");
  EXPECT_FALSE(d.ok());
}

TEST(DocumentTest, StrayTokensAreMalformedNotEmpty) {
  // yaml-cpp 0.7 alone reads these as an empty document (Load) or loops forever (LoadAll).
  for (std::string_view text : {",", "&b,", "a: 1\n...\n,\n"}) {
    Result<Document> d = Document::Parse(text, "s.yaml");
    ASSERT_FALSE(d.ok()) << text;
    EXPECT_THAT(d.status().message(), HasSubstr("malformed YAML: unexpected \",\"")) << text;
  }
  EXPECT_THAT(Document::Parse("a: 1\n...\n,\n", "s.yaml").status().message(),
              HasSubstr("s.yaml:3:1: "));
}

TEST(DocumentTest, DuplicateAndComplexKeysAreRejected) {
  Result<Document> d = Document::Parse("store:\n  maxSize: 1\n  maxSize: 2\n", "a.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("a.yaml:3:3: duplicate key \"maxSize\""));
  d = Document::Parse("? [a, b]\n: c\n", "a.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("keys must be plain strings"));
  d = Document::Parse("a: 1\n---\nb: 2\n", "a.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("a.yaml:2:1: more than one YAML document"));
}

TEST(DocumentTest, TopLevelMustBeAMapping) {
  for (std::string_view text : {"- a\n- b\n", "just a string\n", "42\n"}) {
    Document doc = MustParse(text);
    Result<Node> root = doc.Root();
    ASSERT_FALSE(root.ok()) << text;
    EXPECT_THAT(root.status().message(), HasSubstr("expected a mapping of keys at the top level"));
  }
}

TEST(DocumentTest, AliasBombIsRejected) {
  std::string text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'j'; ++c) {
    text += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) {
      text += std::string(i ? ", *" : "*") + prev;
    }
    text += "]\n";
    prev = c;
  }
  Result<Document> d = Document::Parse(text, "bomb.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("document too large"));
}

TEST(DocumentTest, MissingFileIsNotFound) {
  Result<Document> d = Document::LoadFile("/nonexistent/agent.yaml");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(d.status().message(), HasSubstr("/nonexistent/agent.yaml"));
}

TEST(DocumentTest, LoadsFile) {
  char path[] = "/tmp/document_test_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string text = "store:\n  dataDir: /srv/cache\n";
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  Result<Document> d = Document::LoadFile(path);
  unlink(path);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name(), path);
  StoreConfig c;
  ASSERT_TRUE(LoadStore(*d, &c).ok());
  EXPECT_EQ(c.data_dir, "/srv/cache");
}

TEST(DocumentTest, SequencesStringMapsAndItems) {
  Document doc = MustParse(
      "labels: {team: ci, tier: \"1\"}\n"
      "hosts: [a, b]\n"
      "peers:\n"
      "  - {url: http://p1, weight: 2}\n"
      "  - {url: http://p2, wieght: 3}\n");
  Node root = *doc.Root();
  std::map<std::string, std::string> labels;
  ASSERT_TRUE(root.ReadStringMap("labels", &labels).ok());
  EXPECT_EQ(labels, (std::map<std::string, std::string>{{"team", "ci"}, {"tier", "1"}}));
  std::vector<std::string> hosts;
  ASSERT_TRUE(root.ReadStringList("hosts", &hosts).ok());
  EXPECT_EQ(hosts, (std::vector<std::string>{"a", "b"}));
  Node peers = root.Get("peers");
  ASSERT_EQ(peers.size(), 2u);
  for (size_t i = 0; i < peers.size(); ++i) {
    Node p = peers.Item(i);
    EXPECT_EQ(p.path(), "peers[" + std::to_string(i) + "]");
    std::string url;
    int64_t weight = 0;
    ASSERT_TRUE(p.Read("url", &url).ok());
    ASSERT_TRUE(p.Read("weight", &weight).ok());
  }
  Status s = doc.CheckUnknownKeys();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("test.yaml:5:22: peers[1].wieght: unknown key "
                                     "(did you mean weight? known: url, weight)"));
  EXPECT_THAT(s.message(), Not(HasSubstr("labels")));
}

TEST(DocumentTest, ListAndMapElementsMustBeStrings) {
  Document doc = MustParse("hosts: [a, [b]]\nlabels: {a: {b: c}}\n");
  Node root = *doc.Root();
  std::vector<std::string> hosts;
  EXPECT_THAT(root.ReadStringList("hosts", &hosts).message(),
              HasSubstr("hosts[1]: expected a string, got a sequence"));
  std::map<std::string, std::string> labels;
  EXPECT_THAT(root.ReadStringMap("labels", &labels).message(),
              HasSubstr("labels.a: expected a string, got a mapping"));
}

TEST(DocumentTest, ErrorHelperNamesLocationAndPath) {
  Document doc = MustParse("server:\n  maxConnections: 0\n");
  Node server = *(*doc.Root()).Section("server");
  Node n = server.Get("maxConnections");
  EXPECT_EQ(n.Error("must be greater than 0").message(),
            "test.yaml:2:19: server.maxConnections: must be greater than 0");
  Node absent = server.Get("idleTimeout");
  EXPECT_FALSE(absent.present());
  EXPECT_EQ(absent.path(), "server.idleTimeout");
}

TEST(DocumentTest, HostileValuesInMessagesAreEscaped) {
  std::string m = LoadError("connections: \"a\\nb\\u0007\\\"\"\n");
  EXPECT_THAT(m, HasSubstr("got \"a\\nb\\x07\\\"\""));
}

TEST(DocumentTest, GarbageNeverEscapesAsAnException) {
  // Random YAML-ish text: every outcome must be a Status, never a yaml-cpp exception.
  const std::string alphabet = std::string("ab:-?[]{},&*!|>'\"#%@` \n\t\\\x01") + "\xff" + "0.~";
  std::mt19937 rng(42);
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    size_t len = rng() % 40;
    for (size_t j = 0; j < len; ++j) text.push_back(alphabet[rng() % alphabet.size()]);
    Result<Document> doc = Document::Parse(text, "fuzz.yaml");
    if (!doc.ok()) {
      continue;
    }
    StoreConfig c;
    (void)LoadStore(*doc, &c);
  }
}

}  // namespace
}  // namespace buildcache::config
