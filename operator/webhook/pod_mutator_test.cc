#include "operator/webhook/pod_mutator.h"

#include <gtest/gtest.h>

#include <map>
#include <tuple>

#include "common/kube/config.h"
#include "operator/webhook/agent_wait.h"

namespace buildcache::webhook {
namespace {

api::BuildCache MakeCache(const Json& spec_overrides = Json::object()) {
  Json object = {
      {"apiVersion", "buildcache.io/v1alpha1"},
      {"kind", "BuildCache"},
      {"metadata", {{"name", "ci"}, {"namespace", "ci-system"}, {"uid", "u-1"}}},
      {"spec",
       {{"storage", {{"hostPath", "/var/lib/buildcache/ci"}, {"maxSize", "200Gi"}}},
        {"ecosystems",
         {{"pypi", {{"upstream", "https://pypi.example.internal/simple"}}},
          {"goproxy",
           {{"upstream", "https://goproxy.example.internal"},
            {"sumdb", true},
            {"sumdbName", "sum.example.internal"}}},
          {"npm", {{"upstream", "https://npm.example.internal"}}},
          {"cargo", {{"upstream", "https://index.example.internal/"}}},
          {"maven", {{"upstream", "https://maven.example.internal/maven2/"}}},
          {"httpcache", {{"maxObjectSize", "512Mi"}}}}},
        {"directories",
         {{{"name", "gobuild"}, {"mountPath", "/root/.cache/go-build"}, {"maxSize", "50Gi"}},
          {{"name", "gomod"}, {"mountPath", "/go/pkg/mod"}, {"maxSize", "20Gi"}},
          {{"name", "pip"}, {"mountPath", "/root/.cache/pip"}, {"maxSize", "20Gi"}}}},
        {"access",
         {{"namespaceSelector", {{"matchLabels", {{"buildcache.io/allowed", "true"}}}}}}}}}};
  object["spec"].merge_patch(spec_overrides);
  Result<api::BuildCache> cache = api::FromJson(object);
  EXPECT_TRUE(cache.ok()) << cache.status().ToString();
  return *cache;
}

class MapLookup : public CacheLookup {
 public:
  std::map<std::string, api::BuildCache> caches;  // "ns/name"
  std::map<std::string, std::map<std::string, std::string>> namespaces;
  Status fail_caches;

  Result<api::BuildCache> GetBuildCache(const std::string& ns, const std::string& name) override {
    if (!fail_caches.ok()) return fail_caches;
    auto it = caches.find(ns + "/" + name);
    if (it == caches.end()) return NotFound("buildcaches " + name + " not found");
    return it->second;
  }
  Result<std::map<std::string, std::string>> NamespaceLabels(const std::string& ns) override {
    auto it = namespaces.find(ns);
    if (it == namespaces.end()) return NotFound("namespace " + ns);
    return it->second;
  }
};

Json MakePod(const std::string& ns, const Json& annotations) {
  Json pod = {
      {"apiVersion", "v1"},
      {"kind", "Pod"},
      {"metadata", {{"name", "build"}, {"namespace", ns}}},
      {"spec",
       {{"initContainers", {{{"name", "fetch"}, {"image", "busybox"}}}},
        {"containers",
         {{{"name", "main"}, {"image", "python"}}, {{"name", "side"}, {"image", "golang"}}}}}}};
  if (!annotations.empty()) pod["metadata"]["annotations"] = annotations;
  return pod;
}

Json MakeReview(const Json& pod, const std::string& ns) {
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request",
           {{"uid", "req-1"},
            {"kind", {{"group", ""}, {"version", "v1"}, {"kind", "Pod"}}},
            {"operation", "CREATE"},
            {"namespace", ns},
            {"object", pod}}}};
}

// The pod after applying the review's patch (which must apply cleanly), and the response.
struct Applied {
  Json pod;
  Json response;
};

Applied Apply(const Json& pod, const AdmissionResult& result) {
  Applied out{pod, result.review.at("response")};
  EXPECT_EQ(result.review.value("apiVersion", ""), "admission.k8s.io/v1");
  EXPECT_EQ(result.review.value("kind", ""), "AdmissionReview");
  EXPECT_TRUE(out.response.at("allowed").get<bool>());
  if (out.response.contains("patch")) {
    EXPECT_EQ(out.response.value("patchType", ""), "JSONPatch");
    Result<std::string> text = kube::Base64Decode(out.response["patch"].get<std::string>());
    EXPECT_TRUE(text.ok());
    Json patch = Json::parse(*text);
    EXPECT_FALSE(patch.empty()) << "an empty patch should be left out";
    out.pod = pod.patch(patch);  // throws (fails the test) unless the patch applies cleanly
  }
  return out;
}

std::map<std::string, std::string> EnvOf(const Json& container) {
  std::map<std::string, std::string> env;
  for (const Json& e : container.value("env", Json::array())) {
    EXPECT_FALSE(env.count(e["name"])) << "duplicate env var " << e["name"];
    env[e["name"]] = e.value("value", "");
  }
  return env;
}

std::map<std::string, std::string> MountsOf(const Json& container) {
  std::map<std::string, std::string> mounts;
  for (const Json& m : container.value("volumeMounts", Json::array())) {
    mounts[m["name"]] = m["mountPath"];
  }
  return mounts;
}

class PodMutatorTest : public ::testing::Test {
 protected:
  PodMutatorTest() {
    lookup.caches["ci-system/ci"] = MakeCache();
    lookup.namespaces["team-a"] = {{"buildcache.io/allowed", "true"}};
    lookup.namespaces["team-b"] = {{"kubernetes.io/metadata.name", "team-b"}};
  }
  Applied Run(const Json& pod, const std::string& ns, AdmissionResult* result_out = nullptr) {
    AdmissionResult result = Admit(MakeReview(pod, ns), lookup, options);
    EXPECT_EQ(result.review["response"].value("uid", ""), "req-1");
    if (result_out) *result_out = result;
    return Apply(pod, result);
  }
  MapLookup lookup;
  MutatorOptions options{.default_agent_image = "registry.example.internal/bc/agent:1"};
};

TEST_F(PodMutatorTest, EveryContainerGetsEachToolsEnvironment) {
  Applied a = Run(MakePod("ci-system", {{"buildcache.io/cache", "ci"}}), "ci-system");
  const std::string base = "http://buildcache-ci.ci-system.svc";
  std::map<std::string, std::string> want = {
      {"PIP_INDEX_URL", base + "/pypi/simple/"},
      {"PIP_TRUSTED_HOST", "buildcache-ci.ci-system.svc"},
      {"UV_INDEX_URL", base + "/pypi/simple/"},
      {"GOPROXY", base + "/gomod"},
      {"npm_config_registry", base + "/npm/"},
      {"npm_config_replace_registry_host", "always"},
      {"pnpm_config_registry", base + "/npm/"},
      {"YARN_REGISTRY", base + "/npm/"},
      {"CARGO_REGISTRIES_CRATES_IO_PROTOCOL", "sparse"},
      {"CARGO_REGISTRIES_BUILDCACHE_INDEX", "sparse+" + base + "/cargo/index/"},
      {"BUILDCACHE_MAVEN_URL", base + "/maven/"},
      {"CCACHE_REMOTE_STORAGE", base + "/cache/ccache"},
      {"SCCACHE_WEBDAV_ENDPOINT", base + "/cache/sccache"},
      {"BUILDCACHE_HTTP_CACHE_URL", base + "/cache/"},
      {"GOCACHE", "/root/.cache/go-build"},
      {"GOMODCACHE", "/go/pkg/mod"},
      {"PIP_CACHE_DIR", "/root/.cache/pip"}};
  for (const char* kind : {"initContainers", "containers"}) {
    for (const Json& c : a.pod["spec"][kind]) {
      if (c["name"] == kAgentWaitContainer) continue;
      EXPECT_EQ(EnvOf(c), want) << kind << " " << c["name"];
      EXPECT_EQ(MountsOf(c),
                (std::map<std::string, std::string>{{"buildcache-gobuild", "/root/.cache/go-build"},
                                                    {"buildcache-gomod", "/go/pkg/mod"},
                                                    {"buildcache-pip", "/root/.cache/pip"}}));
    }
  }
  EXPECT_FALSE(a.response.contains("warnings")) << a.response.dump();
}

TEST_F(PodMutatorTest, DirectoryCachesAreHostPathVolumesOfTheCachesStorage) {
  Applied a = Run(MakePod("ci-system", {{"buildcache.io/cache", "ci"}}), "ci-system");
  ASSERT_EQ(a.pod["spec"]["volumes"].size(), 3u);
  EXPECT_EQ(a.pod["spec"]["volumes"][0], Json::parse(R"({"name":"buildcache-gobuild","hostPath":{
                "path":"/var/lib/buildcache/ci/directories/gobuild","type":"DirectoryOrCreate"}})"));
}

TEST_F(PodMutatorTest, UseAnnotationSelectsASubset) {
  Applied a = Run(MakePod("ci-system", {{"buildcache.io/cache", "ci"},
                                        {"buildcache.io/use", " pypi, gobuild "}}),
                  "ci-system");
  const Json& c = a.pod["spec"]["containers"][0];
  std::map<std::string, std::string> env = EnvOf(c);
  EXPECT_EQ(env.size(), 4u);
  EXPECT_TRUE(env.count("PIP_INDEX_URL") && env.count("PIP_TRUSTED_HOST") &&
              env.count("UV_INDEX_URL") && env.count("GOCACHE"));
  EXPECT_EQ(MountsOf(c),
            (std::map<std::string, std::string>{{"buildcache-gobuild", "/root/.cache/go-build"}}));
  EXPECT_EQ(a.pod["spec"]["volumes"].size(), 1u);
}

TEST_F(PodMutatorTest, UnknownUseNamesAreIgnoredWithAWarning) {
  Applied a =
      Run(MakePod("ci-system", {{"buildcache.io/cache", "ci"}, {"buildcache.io/use", "npm,bazel"}}),
          "ci-system");
  // npm's four variables (npm, pnpm, yarn), nothing for the unknown name.
  EXPECT_EQ(EnvOf(a.pod["spec"]["containers"][0]).size(), 4u);
  ASSERT_EQ(a.response["warnings"].size(), 1u);
  EXPECT_NE(a.response["warnings"][0].get<std::string>().find("\"bazel\""), std::string::npos);
}

TEST_F(PodMutatorTest, DisabledEcosystemsAddNothing) {
  lookup.caches["ci-system/ci"] =
      MakeCache({{"ecosystems", {{"cargo", nullptr}, {"maven", nullptr}, {"httpcache", nullptr}}}});
  Applied a = Run(MakePod("ci-system", {{"buildcache.io/cache", "ci"}}), "ci-system");
  std::map<std::string, std::string> env = EnvOf(a.pod["spec"]["containers"][0]);
  EXPECT_FALSE(env.count("CCACHE_REMOTE_STORAGE") || env.count("BUILDCACHE_MAVEN_URL") ||
               env.count("CARGO_REGISTRIES_BUILDCACHE_INDEX"));
  EXPECT_TRUE(env.count("GOPROXY"));
}

TEST_F(PodMutatorTest, WhatThePodSetsIsNeverOverwritten) {
  Json pod = MakePod("ci-system", {{"buildcache.io/cache", "ci"}});
  pod["spec"]["containers"][0]["env"] = {
      {{"name", "GOPROXY"}, {"value", "direct"}},
      {{"name", "PIP_INDEX_URL"},
       {"valueFrom", {{"configMapKeyRef", {{"name", "x"}, {"key", "y"}}}}}}};
  pod["spec"]["containers"][0]["volumeMounts"] = {{{"name", "mine"}, {"mountPath", "/go/pkg/mod"}}};
  pod["spec"]["volumes"] = {{{"name", "mine"}, {"emptyDir", Json::object()}},
                            {{"name", "buildcache-pip"}, {"emptyDir", Json::object()}}};
  Applied a = Run(pod, "ci-system");
  const Json& c = a.pod["spec"]["containers"][0];
  EXPECT_EQ(c["env"][0], pod["spec"]["containers"][0]["env"][0]);
  EXPECT_EQ(c["env"][1], pod["spec"]["containers"][0]["env"][1]);
  EXPECT_EQ(EnvOf(c)["GOPROXY"], "direct");
  EXPECT_EQ(MountsOf(c)["mine"], "/go/pkg/mod");
  EXPECT_FALSE(MountsOf(c).count("buildcache-gomod"));
  // The pod's own "buildcache-pip" volume stays as it is (and is not added twice).
  std::map<std::string, Json> volumes;
  for (const Json& v : a.pod["spec"]["volumes"]) {
    EXPECT_FALSE(volumes.count(v["name"])) << v["name"];
    volumes[v["name"]] = v;
  }
  EXPECT_TRUE(volumes["buildcache-pip"].contains("emptyDir"));
  EXPECT_TRUE(volumes.count("buildcache-gobuild") && volumes.count("buildcache-gomod"));
}

TEST_F(PodMutatorTest, MutatingAMutatedPodAddsNothing) {
  Json pod = MakePod("ci-system", {{"buildcache.io/cache", "ci"}});
  AdmissionResult first;
  Applied once = Run(pod, "ci-system", &first);
  EXPECT_EQ(first.outcome, AdmissionOutcome::kMutated);
  AdmissionResult again;
  Applied twice = Run(once.pod, "ci-system", &again);
  EXPECT_FALSE(again.mutated);
  EXPECT_EQ(again.outcome, AdmissionOutcome::kUnchanged);
  EXPECT_FALSE(twice.response.contains("patch"));
  EXPECT_EQ(twice.pod, once.pod);
}

TEST_F(PodMutatorTest, WithIdentityEveryContainerGetsAProjectedServiceAccountToken) {
  lookup.caches["ci-system/ci"] =
      MakeCache({{"access", {{"trustedWriters", {{"serviceAccounts", {"ci-system/release"}}}}}}});
  Json pod = MakePod("ci-system", {{"buildcache.io/cache", "ci"}});
  AdmissionResult first;
  Applied a = Run(pod, "ci-system", &first);
  const Json* volume = nullptr;
  for (const Json& v : a.pod["spec"]["volumes"]) {
    if (v["name"] == "buildcache-token") volume = &v;
  }
  ASSERT_NE(volume, nullptr) << a.pod["spec"]["volumes"].dump();
  // Kubelet-rotated, short-lived, for the agents' audience only; never a hostPath or Secret.
  EXPECT_EQ(*volume, Json::parse(R"({"name":"buildcache-token","projected":{"defaultMode":292,
                "sources":[{"serviceAccountToken":{"audience":"buildcache.io",
                "expirationSeconds":3600,"path":"token"}}]}})"));
  for (const char* kind : {"initContainers", "containers"}) {
    for (const Json& c : a.pod["spec"][kind]) {
      if (c["name"] == kAgentWaitContainer) {
        // The wait for the node's agent runs before anything else and needs no identity.
        EXPECT_EQ(MountsOf(c).count("buildcache-token"), 0u) << c.dump();
        continue;
      }
      EXPECT_EQ(EnvOf(c)["BUILDCACHE_TOKEN_FILE"], "/var/run/secrets/buildcache.io/token");
      EXPECT_EQ(MountsOf(c)["buildcache-token"], "/var/run/secrets/buildcache.io");
      for (const Json& m : c["volumeMounts"]) {
        if (m["name"] == "buildcache-token") EXPECT_EQ(m["readOnly"], true);
      }
    }
  }
  // Tokens are projected for a named ServiceAccount only: "default", as the ServiceAccount
  // admission plugin names it, when the pod names none; a pod's own is kept.
  EXPECT_EQ(a.pod["spec"]["serviceAccountName"], "default");
  Json named = pod;
  named["spec"]["serviceAccountName"] = "builder";
  EXPECT_EQ(Run(named, "ci-system").pod["spec"]["serviceAccountName"], "builder");
  // Once is enough: a wired pod is left alone.
  AdmissionResult again;
  Applied twice = Run(a.pod, "ci-system", &again);
  EXPECT_EQ(again.outcome, AdmissionOutcome::kUnchanged);

  // Without identity, no token is projected.
  lookup.caches["ci-system/ci"] = MakeCache();
  Applied off = Run(pod, "ci-system");
  for (const Json& v : off.pod["spec"]["volumes"]) EXPECT_NE(v["name"], "buildcache-token");
  EXPECT_FALSE(EnvOf(off.pod["spec"]["containers"][0]).contains("BUILDCACHE_TOKEN_FILE"));
}

// The attack: a pull-request pod mounting the shared node directories read-write could plant
// build outputs every later pod on the node uses. With identity on it gets them read-only, or not
// at all where its tool cannot work read-only.
TEST_F(PodMutatorTest, OnlyTrustedWritersGetWritableDirectoryCaches) {
  lookup.caches["ci-system/ci"] = MakeCache(Json::parse(R"({
      "directories": [
        {"name": "gobuild", "mountPath": "/root/.cache/go-build", "maxSize": "5Gi"},
        {"name": "ccache", "mountPath": "/root/.ccache", "maxSize": "5Gi"},
        {"name": "tools", "mountPath": "/opt/tools", "maxSize": "5Gi"}],
      "access": {"trustedWriters": {"namespaceSelector": {"matchLabels": {"trust": "main"}},
                                    "serviceAccounts": ["team-a/release"],
                                    "podSelector": {"matchLabels": {"branch": "main"}}}}})"));
  lookup.namespaces["main-builds"] = {{"buildcache.io/allowed", "true"}, {"trust", "main"}};
  auto mounts = [](const Json& container) {
    std::map<std::string, bool> out;  // name -> readOnly
    for (const Json& m : container.value("volumeMounts", Json::array())) {
      out[m["name"]] = m.value("readOnly", false);
    }
    return out;
  };
  Json pod = MakePod("team-a", {{"buildcache.io/cache", "ci-system/ci"}});
  Applied untrusted = Run(pod, "team-a");
  for (const Json& c : untrusted.pod["spec"]["containers"]) {
    EXPECT_EQ(mounts(c), (std::map<std::string, bool>{{"buildcache-ccache", true},
                                                      {"buildcache-tools", true},
                                                      {"buildcache-token", true}}));
    std::map<std::string, std::string> env = EnvOf(c);
    EXPECT_FALSE(env.contains("GOCACHE"));  // go's own, pod-local cache
    EXPECT_EQ(env["CCACHE_READONLY"], "true");
    EXPECT_EQ(env["CCACHE_TEMPDIR"], "/tmp");
  }
  std::string warnings;
  for (const Json& w : untrusted.response.value("warnings", Json::array())) warnings += w;
  EXPECT_NE(warnings.find("\"gobuild\" is not mounted"), std::string::npos) << warnings;
  EXPECT_NE(warnings.find("\"tools\" is mounted read-only"), std::string::npos) << warnings;

  // Trusted by ServiceAccount, by pod label, by namespace label: read-write, no read-only env.
  Json by_sa = pod;
  by_sa["spec"]["serviceAccountName"] = "release";
  Json by_label = pod;
  by_label["metadata"]["labels"] = {{"branch", "main"}};
  for (const auto& [name, trusted_pod, ns] :
       {std::tuple{"service account", by_sa, "team-a"},
        {"pod label", by_label, "team-a"},
        {"namespace", MakePod("main-builds", {{"buildcache.io/cache", "ci-system/ci"}}),
         "main-builds"}}) {
    Applied a = Run(trusted_pod, ns);
    const Json& c = a.pod["spec"]["containers"][0];
    EXPECT_EQ(mounts(c), (std::map<std::string, bool>{{"buildcache-ccache", false},
                                                      {"buildcache-gobuild", false},
                                                      {"buildcache-tools", false},
                                                      {"buildcache-token", true}}))
        << name;
    EXPECT_FALSE(EnvOf(c).contains("CCACHE_READONLY")) << name;
  }
  // A label value that differs is no match.
  Json almost = pod;
  almost["metadata"]["labels"] = {{"branch", "main-x"}};
  EXPECT_FALSE(
      MountsOf(Run(almost, "team-a").pod["spec"]["containers"][0]).contains("buildcache-gobuild"));
}

TEST_F(PodMutatorTest, PodWithoutTheAnnotationIsUntouchedAndQuiet) {
  AdmissionResult result;
  Applied a = Run(MakePod("ci-system", Json::object()), "ci-system", &result);
  EXPECT_FALSE(result.mutated);
  EXPECT_EQ(result.outcome, AdmissionOutcome::kNotRequested);
  EXPECT_FALSE(a.response.contains("patch"));
  EXPECT_FALSE(a.response.contains("warnings"));
  EXPECT_FALSE(result.event);
}

TEST_F(PodMutatorTest, AllowedNamespaceUsesACacheElsewhere) {
  Applied a = Run(MakePod("team-a", {{"buildcache.io/cache", "ci-system/ci"}}), "team-a");
  EXPECT_TRUE(EnvOf(a.pod["spec"]["containers"][0]).count("GOPROXY"));
  EXPECT_FALSE(a.response.contains("warnings"));
}

TEST_F(PodMutatorTest, DisallowedNamespaceIsUnchangedWithAWarningAndAnEvent) {
  Json pod = MakePod("team-b", {{"buildcache.io/cache", "ci-system/ci"}});
  AdmissionResult result;
  Applied a = Run(pod, "team-b", &result);
  EXPECT_EQ(a.pod, pod);
  EXPECT_FALSE(result.mutated);
  EXPECT_EQ(result.outcome, AdmissionOutcome::kNotAllowed);
  ASSERT_EQ(a.response["warnings"].size(), 1u);
  EXPECT_NE(a.response["warnings"][0].get<std::string>().find("namespace team-b is not allowed"),
            std::string::npos);
  ASSERT_TRUE(result.event);
  EXPECT_EQ(result.event->reason, "NamespaceNotAllowed");
  EXPECT_EQ(result.event->object["kind"], "BuildCache");
  EXPECT_EQ(result.event->object["metadata"]["namespace"], "ci-system");
  EXPECT_EQ(result.event->object["metadata"]["uid"], "u-1");
}

TEST_F(PodMutatorTest, DryRunsGetTheWarningButNoEvent) {
  Json review = MakeReview(MakePod("team-b", {{"buildcache.io/cache", "ci-system/ci"}}), "team-b");
  review["request"]["dryRun"] = true;
  AdmissionResult result = Admit(review, lookup);
  EXPECT_EQ(result.review["response"]["warnings"].size(), 1u);
  EXPECT_FALSE(result.event);
}

TEST_F(PodMutatorTest, OnlyPodCreationIsMutated) {
  Json pod = MakePod("ci-system", {{"buildcache.io/cache", "ci"}});
  Json update = MakeReview(pod, "ci-system");
  update["request"]["operation"] = "UPDATE";
  EXPECT_FALSE(Admit(update, lookup).mutated);
  Json other_kind = MakeReview(pod, "ci-system");
  other_kind["request"]["kind"]["kind"] = "Deployment";
  EXPECT_FALSE(Admit(other_kind, lookup).mutated);
  EXPECT_TRUE(Admit(MakeReview(pod, "ci-system"), lookup).mutated);
}

TEST_F(PodMutatorTest, WithoutASelectorOnlyTheCachesOwnNamespaceIsAllowed) {
  api::BuildCache cache = MakeCache();
  cache.spec.access.namespace_selector.reset();
  lookup.caches["ci-system/ci"] = cache;
  Json pod = MakePod("team-a", {{"buildcache.io/cache", "ci-system/ci"}});
  AdmissionResult result;
  EXPECT_EQ(Run(pod, "team-a", &result).pod, pod);
  EXPECT_TRUE(result.event);
}

TEST_F(PodMutatorTest, UnknownCacheAdmitsUnchangedWithAWarning) {
  Json pod = MakePod("team-a", {{"buildcache.io/cache", "nope"}});
  Applied a = Run(pod, "team-a");
  EXPECT_EQ(a.pod, pod);
  ASSERT_EQ(a.response["warnings"].size(), 1u);
  EXPECT_NE(a.response["warnings"][0].get<std::string>().find("team-a/nope not found"),
            std::string::npos);
}

TEST_F(PodMutatorTest, LookupFailureFailsOpen) {
  lookup.fail_caches = Unavailable("connection refused");
  Json pod = MakePod("ci-system", {{"buildcache.io/cache", "ci"}});
  Applied a = Run(pod, "ci-system");
  EXPECT_EQ(a.pod, pod);
  EXPECT_EQ(a.response["warnings"].size(), 1u);
}

TEST_F(PodMutatorTest, MalformedReviewsAreAllowedUnchanged) {
  for (const Json& review :
       {Json(), Json::array(), Json::object(), Json{{"request", "x"}},
        Json{{"request", {{"uid", 7}}}}, Json{{"request", {{"uid", "u"}}}},
        Json{{"request", {{"uid", "u"}, {"object", {{"spec", "bad"}}}}}},
        Json{{"request",
              {{"uid", "u"},
               {"namespace", "ci-system"},
               {"object",
                {{"metadata", {{"annotations", {{"buildcache.io/cache", "ci"}}}}},
                 {"spec", {{"containers", {"x", 3, nullptr}}, {"volumes", 5}}}}}}}}}) {
    AdmissionResult result = Admit(review, lookup);
    const Json& response = result.review["response"];
    EXPECT_TRUE(response["allowed"].get<bool>()) << review.dump();
    EXPECT_NE(result.outcome, AdmissionOutcome::kMutated) << review.dump();
    EXPECT_FALSE(response.contains("patch")) << review.dump();
  }
}

TEST_F(PodMutatorTest, MalformedContainerFieldsAreSkippedNotFatal) {
  Json pod = MakePod("ci-system", {{"buildcache.io/cache", "ci"}});
  pod["spec"]["containers"][1]["env"] = "not a list";
  Applied a = Run(pod, "ci-system");
  EXPECT_EQ(a.pod["spec"]["containers"][1]["env"], "not a list");
  EXPECT_TRUE(EnvOf(a.pod["spec"]["containers"][0]).count("GOPROXY"));
}

TEST_F(PodMutatorTest, WiredPodWaitsForItsNodesAgentFirst) {
  Applied a = Run(MakePod("ci-system", {{"buildcache.io/cache", "ci"}}), "ci-system");
  const Json& inits = a.pod["spec"]["initContainers"];
  ASSERT_EQ(inits.size(), 2u);
  EXPECT_EQ(
      inits[0],
      Json::parse(R"({"name":"buildcache-wait-agent","image":"registry.example.internal/bc/agent:1",
      "args":["wait-ready","--url=http://buildcache-ci.ci-system.svc/readyz","--timeout=300s"],
      "resources":{"requests":{"cpu":"10m","memory":"16Mi"},"limits":{"memory":"64Mi"}},
      "securityContext":{"runAsNonRoot":true,"allowPrivilegeEscalation":false,
        "readOnlyRootFilesystem":true,"capabilities":{"drop":["ALL"]},
        "seccompProfile":{"type":"RuntimeDefault"}}})"));
  // The pod's own init container, moved to second place, got its caches (the env ops addressed
  // it by its old index before the wait container was put in front).
  EXPECT_EQ(inits[1]["name"], "fetch");
  EXPECT_TRUE(EnvOf(inits[1]).count("PIP_INDEX_URL"));
  EXPECT_FALSE(inits[0].contains("env") || inits[0].contains("volumeMounts"));
}

TEST_F(PodMutatorTest, WaitContainerRunsTheAgentsImage) {
  Json pod = MakePod("ci-system", {{"buildcache.io/cache", "ci"}});
  pod["spec"].erase("initContainers");
  AdmissionResult result = Admit(MakeReview(pod, "ci-system"), lookup,
                                 {.default_agent_image = "registry.internal/agent:2"});
  Applied a = Apply(pod, result);
  ASSERT_EQ(a.pod["spec"]["initContainers"].size(), 1u);
  EXPECT_EQ(a.pod["spec"]["initContainers"][0]["image"], "registry.internal/agent:2");
  EXPECT_FALSE(a.pod["spec"]["initContainers"][0].contains("imagePullPolicy"));

  lookup.caches["ci-system/ci"] =
      MakeCache({{"agent", {{"image", "mirror.internal/agent:3"}, {"imagePullPolicy", "Never"}}}});
  a = Run(pod, "ci-system");
  EXPECT_EQ(a.pod["spec"]["initContainers"][0]["image"], "mirror.internal/agent:3");
  EXPECT_EQ(a.pod["spec"]["initContainers"][0]["imagePullPolicy"], "Never");
}

TEST_F(PodMutatorTest, AgentWaitAnnotationBoundsOrTurnsOffTheWait) {
  auto wait_args = [&](const std::string& value) {
    Applied a = Run(
        MakePod("ci-system", {{"buildcache.io/cache", "ci"}, {"buildcache.io/agent-wait", value}}),
        "ci-system");
    const Json& first = a.pod["spec"]["initContainers"][0];
    return std::make_pair(first["name"] == kAgentWaitContainer ? first["args"][2] : Json(),
                          a.response.value("warnings", Json::array()));
  };
  EXPECT_EQ(wait_args("90s").first, "--timeout=90s");
  EXPECT_EQ(wait_args("1m30.5s").first, "--timeout=91s");
  EXPECT_EQ(wait_args("0").first, Json());  // no wait container
  auto [args, warnings] = wait_args("soon");
  EXPECT_EQ(args, "--timeout=300s");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].get<std::string>().find("buildcache.io/agent-wait=\"soon\""),
            std::string::npos)
      << warnings;
}

// The annotation is the pod's input: it sets the bound and nothing else, and the bound has a cap.
TEST_F(PodMutatorTest, AgentWaitAnnotationCannotRedirectOrUnboundTheWait) {
  auto wait_container = [&](const std::string& value) {
    Applied a = Run(
        MakePod("ci-system", {{"buildcache.io/cache", "ci"}, {"buildcache.io/agent-wait", value}}),
        "ci-system");
    return std::make_pair(a.pod["spec"]["initContainers"][0],
                          a.response.value("warnings", Json::array()));
  };
  const Json want_url = "--url=http://buildcache-ci.ci-system.svc/readyz";
  for (const char* attack : {"87600h", "2562047h", "1000000h0m1s"}) {
    auto [c, warnings] = wait_container(attack);
    EXPECT_EQ(c["args"], Json::array({"wait-ready", want_url, "--timeout=3600s"})) << attack;
    ASSERT_EQ(warnings.size(), 1u) << attack;
    EXPECT_NE(warnings[0].get<std::string>().find("longer than the maximum"), std::string::npos)
        << warnings;
  }
  EXPECT_EQ(wait_container("1h").first["args"][2], "--timeout=3600s");
  EXPECT_TRUE(wait_container("1h").second.empty());
  for (const char* attack :
       {"5m --url=http://attacker.example:9/", "5m\n--url=http://10.0.0.1:22/", "-5m",
        "http://attacker.example:9/readyz", "5m,--interval=1ns", "99999999999999999999h"}) {
    auto [c, warnings] = wait_container(attack);
    EXPECT_EQ(c["name"], kAgentWaitContainer) << attack;
    EXPECT_EQ(c["args"], Json::array({"wait-ready", want_url, "--timeout=300s"})) << attack;
    EXPECT_EQ(warnings.size(), 1u) << attack;
  }
}

TEST_F(PodMutatorTest, MalformedInitContainersGetNoWaitContainer) {
  Json pod = MakePod("ci-system", {{"buildcache.io/cache", "ci"}});
  pod["spec"]["initContainers"] = "not a list";
  Applied a = Run(pod, "ci-system");
  EXPECT_EQ(a.pod["spec"]["initContainers"], "not a list");
  pod["spec"]["initContainers"] = {{{"name", 5}}, {{"name", kAgentWaitContainer}}};
  a = Run(pod, "ci-system");
  EXPECT_EQ(a.pod["spec"]["initContainers"].size(), 2u);
}

TEST(AgentServiceTest, NamesFollowTheBuildCache) {
  api::BuildCache cache = MakeCache();
  EXPECT_EQ(AgentServiceHost(cache), "buildcache-ci.ci-system.svc");
  EXPECT_EQ(AgentBaseUrl(cache), "http://buildcache-ci.ci-system.svc");
  EXPECT_EQ(DirectoryHostPath(cache, "pip"), "/var/lib/buildcache/ci/directories/pip");
}

// Go's build cache: named in buildcache.io/use, every container gets GOCACHEPROG and the emptyDir
// mount; one init container (first, so the pod's own init containers can use it) copies the binary
// from the agent image; no hostPath is added.
TEST_F(PodMutatorTest, GoCacheProgIsWiredThroughAnInitContainerAndAnEmptyDir) {
  Applied a = Run(MakePod("ci-system", {{"buildcache.io/cache", "ci"},
                                        {"buildcache.io/use", "goproxy,gocacheprog"}}),
                  "ci-system");
  const Json& spec = a.pod["spec"];
  const std::string want =
      "/buildcache/gocacheprog/buildcache-gocacheprog "
      "--agent=http://buildcache-ci.ci-system.svc:80 --dir=/buildcache/gocacheprog/cache";
  // After the wait for the node's agent (WiredPodWaitsForItsNodesAgentFirst).
  ASSERT_EQ(spec["initContainers"].size(), 3u);
  EXPECT_EQ(spec["initContainers"][0]["name"], kAgentWaitContainer);
  const Json& init = spec["initContainers"][1];
  EXPECT_EQ(init["name"], "buildcache-gocacheprog");
  EXPECT_EQ(init["image"], "registry.example.internal/bc/agent:1");
  EXPECT_EQ(init["command"],
            Json({"/usr/local/bin/buildcache-gocacheprog", "--install=/buildcache/gocacheprog"}));
  EXPECT_EQ(
      MountsOf(init),
      (std::map<std::string, std::string>{{"buildcache-gocacheprog", "/buildcache/gocacheprog"}}));
  EXPECT_FALSE(init.contains("env"));
  const Json& sc = init["securityContext"];
  EXPECT_TRUE(sc["runAsNonRoot"].get<bool>());
  EXPECT_FALSE(sc["allowPrivilegeEscalation"].get<bool>());
  EXPECT_EQ(sc["capabilities"]["drop"], Json({"ALL"}));
  EXPECT_EQ(sc["seccompProfile"]["type"], "RuntimeDefault");
  EXPECT_EQ(spec["initContainers"][2]["name"], "fetch");
  for (const Json& c : {spec["initContainers"][2], spec["containers"][0], spec["containers"][1]}) {
    EXPECT_EQ(EnvOf(c),
              (std::map<std::string, std::string>{
                  {"GOPROXY", "http://buildcache-ci.ci-system.svc/gomod"}, {"GOCACHEPROG", want}}))
        << c["name"];
    EXPECT_EQ(MountsOf(c), (std::map<std::string, std::string>{
                               {"buildcache-gocacheprog", "/buildcache/gocacheprog"}}));
  }
  ASSERT_EQ(spec["volumes"].size(), 1u);
  EXPECT_EQ(spec["volumes"][0],
            Json({{"name", "buildcache-gocacheprog"}, {"emptyDir", Json::object()}}));
  // Patching the patched pod changes nothing.
  AdmissionResult again;
  Run(a.pod, "ci-system", &again);
  EXPECT_FALSE(again.mutated);
}

TEST_F(PodMutatorTest, GoCacheProgIsNotPartOfTheDefaultSelection) {
  Applied a = Run(MakePod("ci-system", {{"buildcache.io/cache", "ci"}}), "ci-system");
  EXPECT_EQ(a.pod["spec"]["initContainers"].size(), 2u);  // the wait and the pod's own
  EXPECT_EQ(EnvOf(a.pod["spec"]["containers"][0]).count("GOCACHEPROG"), 0u);
}

TEST_F(PodMutatorTest, GoCacheProgIsAddedToAPodWithoutInitContainersAndKeepsTheSpecImage) {
  lookup.caches["ci-system/ci"] = MakeCache(
      {{"agent", {{"image", "mirror.example.internal/agent:2"}, {"imagePullPolicy", "Always"}}}});
  Json pod =
      MakePod("ci-system", {{"buildcache.io/cache", "ci"}, {"buildcache.io/use", "gocacheprog"}});
  pod["spec"].erase("initContainers");
  Applied a = Run(pod, "ci-system");
  // The wait container, then gocacheprog's (the patch created the list: the wait is put first).
  ASSERT_EQ(a.pod["spec"]["initContainers"].size(), 2u);
  EXPECT_EQ(a.pod["spec"]["initContainers"][0]["name"], kAgentWaitContainer);
  for (const Json& init : a.pod["spec"]["initContainers"]) {
    EXPECT_EQ(init["image"], "mirror.example.internal/agent:2");
    EXPECT_EQ(init["imagePullPolicy"], "Always");
  }
}

TEST_F(PodMutatorTest, GoCacheProgWithoutHttpCacheOrImageIsAWarningNotAHalfWiredPod) {
  options.default_agent_image.clear();
  Json pod = MakePod("ci-system",
                     {{"buildcache.io/cache", "ci"}, {"buildcache.io/use", "gocacheprog,pypi"}});
  Applied a = Run(pod, "ci-system");
  EXPECT_EQ(a.pod["spec"]["initContainers"].size(), 1u);
  EXPECT_EQ(EnvOf(a.pod["spec"]["containers"][0]).count("GOCACHEPROG"), 0u);
  EXPECT_EQ(EnvOf(a.pod["spec"]["containers"][0]).count("PIP_INDEX_URL"), 1u);
  EXPECT_NE(a.response.dump().find("gocacheprog not wired"), std::string::npos);

  options.default_agent_image = "agent:1";
  lookup.caches["ci-system/ci"] = MakeCache({{"ecosystems", {{"httpcache", nullptr}}}});
  a = Run(pod, "ci-system");
  EXPECT_EQ(EnvOf(a.pod["spec"]["containers"][0]).count("GOCACHEPROG"), 0u);
  EXPECT_NE(a.response.dump().find("offers no cache named \\\"gocacheprog\\\""), std::string::npos)
      << a.response.dump();
}

}  // namespace
}  // namespace buildcache::webhook
