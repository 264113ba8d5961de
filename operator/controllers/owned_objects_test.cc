#include "operator/controllers/owned_objects.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "agent/config/agent_config.h"
#include "operator/controllers/admin_token.h"
#include "operator/controllers/agent_identity.h"
#include "operator/controllers/peer_tls.h"
#include "operator/controllers/wheel_build_pod.h"

namespace buildcache::controllers {
namespace {

const char kTestdata[] = BC_SOURCE_DIR "/operator/testdata";

api::BuildCache Parse(const char* json) {
  Json object = Json::parse(json);
  Result<api::BuildCache> cache = api::FromJson(object);
  EXPECT_TRUE(cache.ok()) << cache.status().ToString();
  return cache.ok() ? *cache : api::BuildCache{};
}

// Everything the DESIGN sketch shows, plus agent settings.
constexpr char kFull[] = R"({
  "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
  "metadata": {"name": "ci", "namespace": "ci-system", "uid": "0b7c2a52-1111-4c3e-9d1e-2f6f0f6a1a01",
               "generation": 3},
  "spec": {
    "nodeSelector": {"buildcache.io/ci": "true"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"},
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
    "storage": {"hostPath": "/var/lib/buildcache/ci", "maxSize": "200Gi", "reclaimPolicy": "Delete"},
    "ecosystems": {
      "pypi": {"upstream": "https://pypi.example.internal/simple/", "wheelHouse": true,
               "builders": [{"name": "py311", "image": "registry.example.internal/ci/python:3.11",
                             "python": "3.11", "libcVersion": "2.36"},
                            {"name": "py312-arm", "image": "registry.example.internal/ci/python:3.12",
                             "python": "3.12", "libc": "musl", "libcVersion": "1.2",
                             "cpu": "aarch64", "resources": {"limits": {"memory": "2Gi"}}}],
               "buildDeadline": "20m", "buildFailureTTL": "30m", "buildWorkers": 2},
      "goproxy": {"upstream": "https://goproxy.example.internal", "sumdb": true,
                  "sumdbName": "sum.example.internal", "metadataTTL": "1m"},
      "npm": {"upstream": "https://npm.example.internal/",
              "upstreamSecretRef": {"name": "npm-token", "type": "bearer"}},
      "cargo": {"upstream": "https://index.example.internal/"},
      "maven": {"upstream": "https://maven.example.internal/maven2/",
                "upstreamSecretRef": {"name": "maven-credentials", "type": "basic"}},
      "httpcache": {"maxObjectSize": "512Mi"}
    },
    "directories": [{"name": "gobuild", "mountPath": "/root/.cache/go-build", "maxSize": "50Gi"},
                    {"name": "pip", "mountPath": "/root/.cache/pip", "maxSize": "20Gi"}],
    "replication": {"copies": 2, "hydrate": true},
    "access": {"namespaceSelector": {"matchLabels": {"buildcache.io/allowed": "true"}},
               "networkPolicy": true},
    "agent": {"image": "registry.example.internal/buildcache-agent:1.2.3",
              "imagePullPolicy": "IfNotPresent", "logLevel": "debug",
              "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                            "limits": {"memory": "1Gi"}}}
  }
})";

// The least a valid BuildCache says: defaults everywhere else.
constexpr char kMinimal[] = R"({
  "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
  "metadata": {"name": "small", "namespace": "team-a", "uid": "5d1e0c9a-2222-4f7b-8a55-b1c2d3e4f5a6",
               "generation": 1},
  "spec": {"storage": {"maxSize": "512Mi"}, "ecosystems": {"httpcache": {}}}
})";

// Caller identity on: trusted writers by namespace (resolved), ServiceAccount and pod labels.
constexpr char kIdentity[] = R"({
  "apiVersion": "buildcache.io/v1alpha1", "kind": "BuildCache",
  "metadata": {"name": "shared", "namespace": "ci-system",
               "uid": "7f3e1d2c-3333-4a5b-9c8d-0e1f2a3b4c5d", "generation": 2},
  "spec": {
    "storage": {"maxSize": "10Gi"}, "ecosystems": {"httpcache": {}},
    "replication": {"scopeMissTTL": "90s"},
    "access": {"namespaceSelector": {},
               "anonymous": "none", "attributionLimit": 200,
               "trustedWriters": {"namespaceSelector": {"matchLabels": {"trust": "release"}},
                                  "serviceAccounts": ["ci/publisher"],
                                  "podSelector": {"matchLabels": {"branch": "main"}}}}
  }
})";

api::BuildCache IdentityCache() {
  api::BuildCache cache = Parse(kIdentity);
  cache.spec.access.trusted_writers->namespaces = {"release", "release-2"};  // the reconciler's
  return cache;
}

std::string AllObjectsYaml(const api::BuildCache& cache) {
  BuildOptions options;
  options.agent_image = "buildcache-agent:test";
  options.operator_namespace = "buildcache-system";
  std::string out;
  for (const Json& object : {BuildConfigMap(cache), BuildPeerService(cache), BuildService(cache),
                             BuildDaemonSet(cache, options, "0123456789abcdef")}) {
    out += "---\n" + ToYaml(object);
  }
  if (cache.spec.access.network_policy) out += "---\n" + ToYaml(BuildNetworkPolicy(cache, options));
  if (cache.spec.access.IdentityEnabled() || HasPodBuilders(cache)) {
    out += "---\n" + ToYaml(BuildAgentServiceAccount(cache));
  }
  if (cache.spec.access.IdentityEnabled()) {
    out += "---\n" + ToYaml(BuildAgentRoleBinding(cache, "buildcache-agent"));
  }
  if (HasPodBuilders(cache)) {
    out += "---\n" + ToYaml(BuildWheelBuildersNetworkPolicy(cache));
    out +=
        "---\n" + ToYaml(BuildAgentWheelBuildRoleBinding(cache, options.WheelBuildClusterRole()));
  }
  return out;
}

// Compares with operator/testdata/NAME; BUILDCACHE_UPDATE_GOLDEN=1 rewrites the file instead.
void ExpectGolden(const std::string& name, const std::string& actual) {
  const std::filesystem::path path = std::filesystem::path(kTestdata) / name;
  const char* update = std::getenv("BUILDCACHE_UPDATE_GOLDEN");
  if (update != nullptr && std::string(update) == "1") {
    std::ofstream(path, std::ios::binary) << actual;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path << " is missing; run with BUILDCACHE_UPDATE_GOLDEN=1 to create it";
  std::stringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(expected.str(), actual)
      << path << " differs; if the change is intended, rerun with BUILDCACHE_UPDATE_GOLDEN=1";
}

TEST(OwnedObjects, FullBuildCacheMatchesGolden) {
  ExpectGolden("full.golden.yaml", AllObjectsYaml(Parse(kFull)));
}

TEST(OwnedObjects, MinimalBuildCacheMatchesGolden) {
  ExpectGolden("minimal.golden.yaml", AllObjectsYaml(Parse(kMinimal)));
}

TEST(OwnedObjects, IdentityBuildCacheMatchesGolden) {
  ExpectGolden("identity.golden.yaml", AllObjectsYaml(IdentityCache()));
}

// The ConfigMap must hold a configuration the agent starts with.
void ExpectAgentAccepts(const api::BuildCache& cache) {
  Result<agent::AgentConfig> config = agent::ParseAgentConfig(RenderAgentConfig(cache), "rendered");
  ASSERT_TRUE(config.ok()) << config.status().ToString() << "\n" << RenderAgentConfig(cache);
  const auto dir = std::filesystem::temp_directory_path() /
                   ("controllers_test_" + std::to_string(::getpid()) + cache.name);
  config->store.data_dir = dir.string();  // the container paths are not writable here
  for (agent::DirectoryConfig& d : config->directories) d.path = (dir / d.name).string();
  config->replication.advertise = "10.1.2.3:8081";  // what --advertise=$(POD_IP):8081 sets
  std::filesystem::create_directories(dir);
  if (config->replication.tls.enabled()) {  // the mounted Secret's files
    for (std::string* file : {&config->replication.tls.cert_file, &config->replication.tls.key_file,
                              &config->replication.tls.ca_file}) {
      *file = (dir / std::filesystem::path(*file).filename()).string();
      std::ofstream(*file) << "pem";
    }
  }
  if (!config->admin.token_file.empty()) {  // the mounted admin Secret's file
    config->admin.token_file = (dir / "token").string();
    std::ofstream(config->admin.token_file) << "token";
  }
  Status valid = agent::ValidateAgentConfig(*config);
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(valid.ok()) << valid.ToString();
  EXPECT_EQ(config->store.max_size, cache.spec.storage.max_size.bytes);
}

// The operator renders through the agent's types: a size or duration is written the way the
// agent writes it, whatever spelling the spec used (same value, so the agent reads the same).
TEST(OwnedObjects, SizesAndDurationsAreWrittenInTheAgentsCanonicalForm) {
  api::BuildCache cache = Parse(kFull);
  cache.spec.storage.max_size = {.text = "1.5Gi", .bytes = uint64_t{1536} << 20};
  cache.spec.ecosystems.npm->metadata_ttl = {.text = "0.5h", .value = std::chrono::minutes(30)};
  const std::string rendered = RenderAgentConfig(cache);
  EXPECT_NE(rendered.find("maxSize: 1536Mi\n"), std::string::npos) << rendered;
  EXPECT_NE(rendered.find("metadataTtl: 30m\n"), std::string::npos) << rendered;
  EXPECT_EQ(rendered.find("1.5Gi"), std::string::npos) << rendered;
  ExpectAgentAccepts(cache);
}

TEST(OwnedObjects, RenderedConfigIsAcceptedByTheAgent) {
  ExpectAgentAccepts(Parse(kFull));
  ExpectAgentAccepts(Parse(kMinimal));
  ExpectAgentAccepts(IdentityCache());
  Result<agent::AgentConfig> full = agent::ParseAgentConfig(RenderAgentConfig(Parse(kFull)), "x");
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->pypi.upstream, "https://pypi.example.internal/simple/");
  EXPECT_EQ(full->goproxy.metadata_ttl, std::chrono::minutes(1));
  EXPECT_EQ(full->log_level, log::Level::kDebug);
  EXPECT_TRUE(full->httpcache.enabled);
}

// Each upstreamSecretRef: the agent's auth files lie in the directory its Secret is mounted at,
// with the keys its type reads.
TEST(OwnedObjects, AgentsReadUpstreamCredentialsFromTheMountedSecrets) {
  api::BuildCache cache = Parse(kFull);
  Result<agent::AgentConfig> config = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->npm.auth.token_file, "/var/run/buildcache/upstream/npm/token");
  EXPECT_EQ(config->maven.auth.username_file, "/var/run/buildcache/upstream/maven/username");
  EXPECT_EQ(config->maven.auth.password_file, "/var/run/buildcache/upstream/maven/password");
  EXPECT_FALSE(config->pypi.auth.enabled());
  Json ds = BuildDaemonSet(cache, {});
  std::map<std::string, Json> volumes, mounts;
  for (const Json& v : ds["spec"]["template"]["spec"]["volumes"]) volumes[v["name"]] = v;
  for (const Json& m : ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]) {
    mounts[m["name"]] = m;
  }
  ASSERT_TRUE(volumes.contains("upstream-maven"));
  EXPECT_EQ(volumes["upstream-maven"]["secret"]["secretName"], "maven-credentials");
  EXPECT_EQ(volumes["upstream-maven"]["secret"]["items"],
            Json::parse(R"([{"key":"username","path":"username"},
                            {"key":"password","path":"password"}])"));
  EXPECT_EQ(mounts["upstream-maven"]["mountPath"], "/var/run/buildcache/upstream/maven");
  EXPECT_EQ(mounts["upstream-maven"]["readOnly"], true);
  EXPECT_FALSE(mounts["upstream-maven"].contains("subPath"));  // updates reach whole mounts only
  EXPECT_EQ(volumes["upstream-npm"]["secret"]["secretName"], "npm-token");
  EXPECT_FALSE(volumes.contains("upstream-pypi"));
}

TEST(OwnedObjects, AgentsReadTheAdminTokenFromTheMountedSecret) {
  api::BuildCache cache = Parse(kMinimal);
  Result<agent::AgentConfig> config = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->admin.token_file, "/etc/buildcache-admin/token");
  Json ds = BuildDaemonSet(cache, {});
  bool volume = false, mount = false;
  for (const Json& v : ds["spec"]["template"]["spec"]["volumes"]) {
    if (v["name"] == "admin") {
      volume =
          v["secret"]["secretName"] == AdminSecretName(cache) && v["secret"]["defaultMode"] == 0400;
    }
  }
  for (const Json& m : ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]) {
    if (m["name"] == "admin") mount = m["mountPath"] == "/etc/buildcache-admin" && m["readOnly"];
  }
  EXPECT_TRUE(volume);
  EXPECT_TRUE(mount);
}

TEST(OwnedObjects, RenderedConfigCarriesReplicationDirectoriesAndSumdb) {
  api::BuildCache cache = Parse(kFull);
  cache.spec.replication.copies = 3;
  cache.spec.replication.hydrate = false;
  Result<agent::AgentConfig> config = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->replication.listen, "0.0.0.0:8081");
  EXPECT_EQ(config->replication.advertise, "");  // per pod: --advertise in the DaemonSet
  EXPECT_EQ(config->replication.copies, 3);
  EXPECT_EQ(config->replication.dns.name, "buildcache-ci-peers.ci-system.svc");
  EXPECT_EQ(config->replication.dns.port, kPeerPort);
  EXPECT_FALSE(config->replication.hydrate.enabled);
  ASSERT_EQ(config->directories.size(), 2u);
  EXPECT_EQ(config->directories[0].name, "gobuild");
  EXPECT_EQ(config->directories[0].path, "/var/lib/buildcache/directories/gobuild");
  EXPECT_EQ(config->directories[0].max_size, uint64_t{50} << 30);
  EXPECT_EQ(config->directories[1].path, "/var/lib/buildcache/directories/pip");
  EXPECT_EQ(config->goproxy.sumdb.name, "sum.example.internal");

  Result<agent::AgentConfig> minimal =
      agent::ParseAgentConfig(RenderAgentConfig(Parse(kMinimal)), "x");
  ASSERT_TRUE(minimal.ok()) << minimal.status().ToString();
  EXPECT_TRUE(minimal->directories.empty());
  EXPECT_EQ(minimal->goproxy.sumdb.name, "");
  EXPECT_EQ(minimal->replication.copies, 2);
  EXPECT_TRUE(minimal->replication.hydrate.enabled);
}

// The agent alone defaults the wheel house on (a laptop); under the operator it is off unless
// the BuildCache enables it, so the rendered config always says which.
TEST(OwnedObjects, RenderedConfigHasTheWheelHouseOffUnlessEnabled) {
  api::BuildCache cache = Parse(kFull);
  cache.spec.ecosystems.pypi->builds.builders.clear();  // builders need the wheel house
  cache.spec.ecosystems.pypi->wheel_house = false;
  const std::string off_text = RenderAgentConfig(cache);
  Result<agent::AgentConfig> off = agent::ParseAgentConfig(off_text, "x");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->pypi.wheel_house);
  cache.spec.ecosystems.pypi->wheel_house = true;
  Result<agent::AgentConfig> on = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(on.ok());
  EXPECT_TRUE(on->pypi.wheel_house);
  EXPECT_NE(ConfigHash(RenderAgentConfig(cache)), ConfigHash(off_text));
}

TEST(OwnedObjects, DirectoriesAreMountedWhereTheConfigSaysAndPeersHaveAPort) {
  const api::BuildCache cache = Parse(kFull);
  const Json ds = BuildDaemonSet(cache, BuildOptions{});
  const Json& container = ds["spec"]["template"]["spec"]["containers"][0];
  bool mounted = false;
  for (const Json& m : container["volumeMounts"]) {
    if (m["mountPath"] == "/var/lib/buildcache/directories/gobuild") mounted = true;
  }
  EXPECT_TRUE(mounted) << container.dump();
  EXPECT_EQ(container["args"], Json::array({"--config", "/etc/buildcache/agent.yaml", "--advertise",
                                            "$(POD_IP):8081"}));
  EXPECT_EQ(container["ports"][1]["containerPort"], kPeerPort);
  EXPECT_EQ(container["ports"][1]["name"], "peer");
  const Json peers = BuildPeerService(cache);
  EXPECT_EQ(peers["spec"]["ports"][1]["name"], "peer");
  EXPECT_EQ(peers["spec"]["ports"][1]["port"], kPeerPort);
}

// Issue 11 item 6: the kubelet probes a listener of its own, which clients cannot fill.
TEST(OwnedObjects, ProbesUseTheAgentsProbeListener) {
  const api::BuildCache cache = Parse(kMinimal);
  const Json ds = BuildDaemonSet(cache, BuildOptions{});
  const Json& container = ds["spec"]["template"]["spec"]["containers"][0];
  EXPECT_EQ(container["livenessProbe"]["httpGet"]["port"], "probe");
  EXPECT_EQ(container["readinessProbe"]["httpGet"]["port"], "probe");
  bool declared = false;
  for (const Json& p : container["ports"]) {
    if (p["name"] == "probe" && p["containerPort"] == kProbePort) declared = true;
  }
  EXPECT_TRUE(declared) << container["ports"].dump();
  EXPECT_NE(RenderAgentConfig(cache).find("probeListen: 0.0.0.0:" + std::to_string(kProbePort)),
            std::string::npos);
}

// The agent image runs as a non-root user by default; hostPath directories are root-owned.
TEST(OwnedObjects, AgentRunsAsRootWithoutCapabilities) {
  const Json ds = BuildDaemonSet(Parse(kFull), BuildOptions{});
  const Json& sc = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
  EXPECT_EQ(sc["runAsUser"], 0);
  EXPECT_EQ(sc["allowPrivilegeEscalation"], false);
  EXPECT_EQ(sc["readOnlyRootFilesystem"], true);
  EXPECT_EQ(sc["capabilities"]["drop"], Json::array({"ALL"}));
}

TEST(OwnedObjects, HttpCacheObjectLimitNeverExceedsTheStore) {
  // httpcache.maxObjectSize defaults to 1Gi; the store is 512Mi.
  Result<agent::AgentConfig> config =
      agent::ParseAgentConfig(RenderAgentConfig(Parse(kMinimal)), "x");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->httpcache.max_object_size, uint64_t{512} << 20);
}

TEST(OwnedObjects, SpecChangeChangesTheConfigHash) {
  api::BuildCache cache = Parse(kFull);
  BuildOptions options;
  const Json before = BuildDaemonSet(cache, options);
  cache.spec.ecosystems.pypi->upstream = "https://other.example.internal/simple/";
  const Json after = BuildDaemonSet(cache, options);
  const auto hash = [](const Json& ds) {
    return ds["spec"]["template"]["metadata"]["annotations"][kConfigHashAnnotation];
  };
  EXPECT_NE(hash(before), hash(after));
  EXPECT_EQ(hash(after), hash(BuildDaemonSet(cache, options)));
}

TEST(OwnedObjects, EveryObjectIsControlledByTheBuildCache) {
  const api::BuildCache cache = Parse(kFull);
  for (const Json& object : {BuildConfigMap(cache), BuildPeerService(cache), BuildService(cache),
                             BuildDaemonSet(cache, BuildOptions{})}) {
    const Json& refs = object["metadata"]["ownerReferences"];
    ASSERT_EQ(refs.size(), 1u) << object.dump();
    EXPECT_EQ(refs[0]["uid"], cache.uid);
    EXPECT_EQ(refs[0]["controller"], true);
    EXPECT_EQ(object["metadata"]["namespace"], "ci-system");
    EXPECT_EQ(object["metadata"]["labels"]["app.kubernetes.io/managed-by"], kManagedBy);
  }
}

TEST(OwnedObjects, AgentImageDefaultsToTheOperatorOption) {
  BuildOptions options;
  options.agent_image = "agent:from-flag";
  const Json ds = BuildDaemonSet(Parse(kMinimal), options);
  EXPECT_EQ(ds["spec"]["template"]["spec"]["containers"][0]["image"], "agent:from-flag");
  EXPECT_EQ(
      BuildDaemonSet(Parse(kFull), options)["spec"]["template"]["spec"]["containers"][0]["image"],
      "registry.example.internal/buildcache-agent:1.2.3");
}

TEST(OwnedObjects, DefaultHostPathSeparatesTenants) {
  const Json ds = BuildDaemonSet(Parse(kMinimal), BuildOptions{});
  EXPECT_EQ(ds["spec"]["template"]["spec"]["volumes"][1]["hostPath"]["path"],
            "/var/lib/buildcache/team-a/small");
}

TEST(OwnedObjects, PeerTlsIsRenderedAndMountedByDefault) {
  const api::BuildCache cache = Parse(kMinimal);
  Result<agent::AgentConfig> config = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(config.ok());
  const agent::PeerTlsConfig& tls = config->replication.tls;
  EXPECT_EQ(tls.cert_file, std::string(kPeerTlsDir) + "/tls.crt");
  EXPECT_EQ(tls.key_file, std::string(kPeerTlsDir) + "/tls.key");
  EXPECT_EQ(tls.ca_file, std::string(kPeerTlsDir) + "/ca.crt");
  EXPECT_EQ(tls.server_name, "buildcache-small-peers.team-a.svc");
  const Json ds = BuildDaemonSet(cache, BuildOptions{}, "abc");
  const Json& pod = ds["spec"]["template"];
  EXPECT_EQ(pod["metadata"]["annotations"][kPeerTlsHashAnnotation], "abc");
  Json secret_volume;
  for (const Json& v : pod["spec"]["volumes"]) {
    if (v["name"] == "peer-tls") secret_volume = v;
  }
  EXPECT_EQ(secret_volume["secret"]["secretName"], "buildcache-small-peer-tls");
  EXPECT_EQ(secret_volume["secret"]["defaultMode"], 0400);
  bool mounted = false;
  for (const Json& m : pod["spec"]["containers"][0]["volumeMounts"]) {
    mounted |= m["name"] == "peer-tls" && m["mountPath"] == kPeerTlsDir && m["readOnly"] == true;
  }
  EXPECT_TRUE(mounted);
}

TEST(OwnedObjects, MutualTlsOffRendersNoTlsAndNoMount) {
  api::BuildCache cache = Parse(kMinimal);
  cache.spec.replication.mutual_tls = false;
  EXPECT_EQ(RenderAgentConfig(cache).find("tls"), std::string::npos);
  const Json ds = BuildDaemonSet(cache, BuildOptions{}, "abc");
  EXPECT_EQ(ds.dump().find("peer-tls"), std::string::npos);
}

TEST(OwnedObjects, NetworkPolicyAdmitsThePeerPortOnlyFromTheAgents) {
  const api::BuildCache cache = Parse(kMinimal);  // no access: only its own namespace
  const Json np = BuildNetworkPolicy(cache, {.operator_namespace = "ops"});
  EXPECT_EQ(np["spec"]["podSelector"]["matchLabels"], SelectorLabels(cache));
  EXPECT_EQ(np["spec"]["policyTypes"], Json::array({"Ingress"}));
  const Json& rules = np["spec"]["ingress"];
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0]["ports"][0]["port"], kAgentPort);
  EXPECT_EQ(rules[0]["from"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "team-a");
  EXPECT_EQ(rules[0]["from"][2]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "ops");
  EXPECT_EQ(rules[1]["ports"][0]["port"], kPeerPort);
  ASSERT_EQ(rules[1]["from"].size(), 1u);
  // Only a podSelector: pods of the policy's own namespace with the agents' labels.
  EXPECT_EQ(rules[1]["from"][0], (Json{{"podSelector", {{"matchLabels", SelectorLabels(cache)}}}}));
}

TEST(ToYaml, QuotesStringsYamlWouldReadAsOtherTypes) {
  EXPECT_EQ(ToYaml(Json{{"a", "true"}, {"b", "8080"}, {"c", ""}, {"d", "plain"}, {"e", 1}}),
            "a: \"true\"\nb: \"8080\"\nc: \"\"\nd: plain\ne: 1\n");
}

TEST(OwnedObjects, IdentityIsRenderedFromSpecAccess) {
  api::BuildCache cache = IdentityCache();
  Result<agent::AgentConfig> config = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const agent::IdentityConfig& id = config->identity;
  EXPECT_TRUE(id.enabled());
  EXPECT_EQ(id.kube_node_name, "$NODE_NAME");  // the DaemonSet's downward-API variable
  EXPECT_EQ(id.kubeconfig, "");                // in-cluster: the agent's own ServiceAccount
  EXPECT_EQ(id.audience, "buildcache.io");
  EXPECT_EQ(id.anonymous, identity::AnonymousAccess::kNone);
  EXPECT_EQ(id.tokens_file, "");
  EXPECT_EQ(id.trusted_writers.namespaces, (std::vector<std::string>{"release", "release-2"}));
  EXPECT_EQ(id.trusted_writers.service_accounts, std::vector<std::string>{"ci/publisher"});
  EXPECT_EQ(id.trusted_writers.pod_labels,
            (std::map<std::string, std::string>{{"branch", "main"}}));
  EXPECT_EQ(IdentityMode(cache), "podAddress+token;anonymous=none");
  EXPECT_EQ(id.attribution_limit, 200);
  EXPECT_EQ(config->replication.scope_miss_ttl, std::chrono::seconds(90));

  Json pod = BuildDaemonSet(cache, {})["spec"]["template"]["spec"];
  EXPECT_EQ(pod["serviceAccountName"], "buildcache-shared-agent");
  EXPECT_EQ(pod["automountServiceAccountToken"], true);
  bool node_name = false;
  for (const Json& e : pod["containers"][0]["env"]) {
    if (e["name"] == "NODE_NAME") {
      node_name = e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName";
    }
  }
  EXPECT_TRUE(node_name);
  Json binding = BuildAgentRoleBinding(cache, "bc-agent");
  EXPECT_EQ(binding["metadata"]["name"], "buildcache-agent-ci-system-shared");
  EXPECT_EQ(binding["roleRef"]["name"], "bc-agent");
  EXPECT_EQ(binding["subjects"][0]["name"], "buildcache-shared-agent");
  EXPECT_EQ(binding["subjects"][0]["namespace"], "ci-system");
  EXPECT_FALSE(binding["metadata"].contains("ownerReferences"));  // cluster-scoped
}

TEST(OwnedObjects, IdentityStaysOffWithoutTrustedWritersOrAnonymous) {
  api::BuildCache cache = Parse(kFull);  // access.namespaceSelector and networkPolicy only
  cache.spec.ecosystems.pypi->builds.builders.clear();  // builders need the agents' account too
  Result<agent::AgentConfig> config = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_FALSE(config->identity.enabled());
  EXPECT_EQ(IdentityMode(cache), "off");
  Json pod = BuildDaemonSet(cache, {})["spec"]["template"]["spec"];
  EXPECT_FALSE(pod.contains("serviceAccountName"));
  EXPECT_EQ(pod["automountServiceAccountToken"], false);
  // anonymous alone turns it on, with nobody trusted.
  cache.spec.access.anonymous = "read";
  config = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_TRUE(config->identity.enabled());
  EXPECT_EQ(config->identity.anonymous, identity::AnonymousAccess::kRead);
  EXPECT_TRUE(config->identity.trusted_writers.namespaces.empty());
}

// attributionLimit and scopeMissTTL are written only when the spec gives them, so the agents'
// defaults apply (and a BuildCache that does not name them keeps its configuration hash).
TEST(OwnedObjects, AttributionLimitAndScopeMissTtlAreWrittenOnlyWhenGiven) {
  api::BuildCache cache = IdentityCache();
  cache.spec.access.attribution_limit.reset();
  cache.spec.replication.scope_miss_ttl.reset();
  const std::string rendered = RenderAgentConfig(cache);
  EXPECT_EQ(rendered.find("attributionLimit"), std::string::npos) << rendered;
  EXPECT_EQ(rendered.find("scopeMissTtl"), std::string::npos) << rendered;
  Result<agent::AgentConfig> config = agent::ParseAgentConfig(rendered, "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->identity.attribution_limit, agent::IdentityConfig{}.attribution_limit);
  EXPECT_EQ(config->replication.scope_miss_ttl, agent::ReplicationConfig{}.scope_miss_ttl);
  // 0 is a value, not "absent": every namespace counts as (other); the owners asked every time.
  cache.spec.access.attribution_limit = 0;
  cache.spec.replication.scope_miss_ttl = api::Ttl{.text = "0s", .value = {}};
  config = agent::ParseAgentConfig(RenderAgentConfig(cache), "x");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->identity.attribution_limit, 0);
  EXPECT_EQ(config->replication.scope_miss_ttl, std::chrono::nanoseconds(0));
}

}  // namespace
}  // namespace buildcache::controllers
