#include "agent/config/agent_config_tree.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/config/agent_config.h"

namespace buildcache::agent {
namespace {

using Json = nlohmann::json;

TEST(PartialAgentConfigTest, WritesOnlyTheMarkedKeysInTheAgentsSyntax) {
  PartialAgentConfig p;
  AgentConfig& c = p.config();
  p.Set(c.listen, "0.0.0.0:8080");
  p.Set(c.log_level, log::Level::kWarn);
  p.Set(c.store.max_size, uint64_t{200} << 30);
  p.Set(c.npm.metadata_ttl, std::chrono::minutes(10));
  p.Set(c.replication.copies, int64_t{3});
  p.Set(c.replication.hydrate.enabled, false);
  c.server.max_connections = 5;  // set, not marked: not written
  EXPECT_EQ(p.ToJson(), Json::parse(R"({
      "listen": "0.0.0.0:8080", "logLevel": "warn", "store": {"maxSize": "200Gi"},
      "npm": {"metadataTtl": "10m"}, "replication": {"copies": 3, "hydrate": {"enabled": false}}
  })"));
}

TEST(PartialAgentConfigTest, EmptyWhenNothingIsMarked) {
  EXPECT_EQ(PartialAgentConfig().ToJson(), Json::object());
}

TEST(PartialAgentConfigTest, ListItemsHoldOnlyTheirMarkedFields) {
  PartialAgentConfig p;
  AgentConfig& c = p.config();
  c.directories.push_back({.name = "pip", .path = "/d/pip", .max_size = 1 << 20});
  c.directories.push_back({.name = "go", .path = "/d/go", .max_size = 2 << 20});
  for (const DirectoryConfig& d : c.directories) {
    p.Mark(d.name);
    p.Mark(d.max_size);
  }
  p.Mark(c.identity.trusted_writers.namespaces);
  c.identity.trusted_writers.namespaces = {"main"};
  EXPECT_EQ(p.ToJson(), Json::parse(R"({
      "directories": [{"name": "pip", "maxSize": "1Mi"}, {"name": "go", "maxSize": "2Mi"}],
      "identity": {"trustedWriters": {"namespaces": ["main"]}}
  })"));
}

TEST(PartialAgentConfigTest, AMarkedEmptyListIsWritten) {
  PartialAgentConfig p;
  p.Mark(p.config().directories);
  EXPECT_EQ(p.ToJson(), Json::parse(R"({"directories": []})"));
}

TEST(PartialAgentConfigTest, TheTreeLoadsBackAsTheSameValues) {
  PartialAgentConfig p;
  AgentConfig& c = p.config();
  p.Set(c.store.max_size, uint64_t{1536} << 20);
  p.Set(c.goproxy.upstream, "https://proxy.example.invalid");
  p.Set(c.goproxy.sumdb.name, "sum.example.invalid");
  p.Set(c.identity.anonymous, identity::AnonymousAccess::kNone);
  p.Set(c.identity.kube_node_name, "$NODE_NAME");
  // JSON is YAML: the agent's own loader reads the tree.
  Result<AgentConfig> back = ParseAgentConfig(p.ToJson().dump(), "tree");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, c);
}

TEST(PartialAgentConfigDeathTest, AMarkOutsideTheConfigurationIsABug) {
  PartialAgentConfig p;
  AgentConfig copy = p.config();
  p.Set(copy.listen, "0.0.0.0:1");  // a field of a copy: would be silently lost
  EXPECT_DEATH(p.ToJson(), "not a key of the agent configuration");
}

}  // namespace
}  // namespace buildcache::agent
