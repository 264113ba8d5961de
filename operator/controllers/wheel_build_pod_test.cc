#include "operator/controllers/wheel_build_pod.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "operator/controllers/owned_objects.h"

namespace buildcache::controllers {
namespace {

api::BuildCache Cache() {
  Json object = Json::parse(R"({
    "metadata": {"name": "ci", "namespace": "builds", "uid": "cache-uid"},
    "spec": {"storage": {"maxSize": "10Gi"},
             "ecosystems": {"pypi": {"upstream": "https://pypi.example.internal/simple",
                                     "buildDeadline": "10m", "wheelHouse": true,
                                     "builders": [
               {"name": "py311", "image": "example.org/ci/python:3.11", "python": "3.11",
                "libcVersion": "2.36"},
               {"name": "py312-arm", "image": "example.org/ci/python:3.12", "python": "3.12",
                "libcVersion": "2.36", "cpu": "aarch64",
                "resources": {"requests": {"cpu": "500m"},
                              "limits": {"memory": "1Gi", "ephemeral-storage": "2Gi"}}}]}}}})");
  Result<api::BuildCache> cache = api::FromJson(object);
  EXPECT_TRUE(cache.ok()) << cache.status().ToString();
  return *cache;
}

api::WheelBuild Build() {
  api::WheelBuild b;
  b.name = "ci-0123456789abcdef";
  b.ns = "builds";
  b.uid = "build-uid";
  b.spec = {"ci",
            "py311",
            "0123456789abcdef",
            {"bitarray", "2.9.2", "bitarray-2.9.2.tar.gz", std::string(64, 'a')},
            "http://10.244.1.7:8080",
            std::string(43, 'A'),
            900};
  return b;
}

Json AgentPod(const std::string& ip, const std::string& phase = "Running",
              const std::string& instance = "ci", const std::string& ns = "builds") {
  return {{"metadata",
           {{"name", "buildcache-ci-x"},
            {"namespace", ns},
            {"labels",
             {{"app.kubernetes.io/name", "buildcache-agent"},
              {"app.kubernetes.io/instance", instance}}}}},
          {"status", {{"phase", phase}, {"podIP", ip}, {"podIPs", {{{"ip", ip}}}}}}};
}

Json EnvOf(const Json& container) {
  Json env = Json::object();
  for (const Json& e : container["env"]) env[e["name"].get<std::string>()] = e["value"];
  return env;
}

// Every property the contract (and the restricted Pod Security Standard) asks of a builder pod.
TEST(WheelBuildPod, IsLockedDown) {
  api::BuildCache cache = Cache();
  Json pod = BuildWheelBuildPod(Build(), cache, cache.spec.ecosystems.pypi->builds.builders[0]);
  const Json& spec = pod["spec"];
  EXPECT_EQ(pod["metadata"]["name"], "ci-0123456789abcdef");
  EXPECT_EQ(pod["metadata"]["namespace"], "builds");
  EXPECT_EQ(pod["metadata"]["ownerReferences"],
            Json::parse(R"([{"apiVersion":"buildcache.io/v1alpha1","kind":"WheelBuild",
              "name":"ci-0123456789abcdef","uid":"build-uid","controller":true,
              "blockOwnerDeletion":true}])"));
  EXPECT_EQ(pod["metadata"]["labels"], Json::parse(R"({"app.kubernetes.io/name":"buildcache",
              "app.kubernetes.io/component":"wheel-builder","buildcache.io/buildcache":"ci",
              "buildcache.io/wheelbuild":"0123456789abcdef"})"));
  EXPECT_EQ(spec["restartPolicy"], "Never");
  EXPECT_EQ(spec["activeDeadlineSeconds"], 600);  // capped at the BuildCache's buildDeadline
  EXPECT_EQ(spec["automountServiceAccountToken"], false);
  EXPECT_EQ(spec["enableServiceLinks"], false);
  EXPECT_EQ(spec["hostNetwork"], false);
  EXPECT_EQ(spec["hostPID"], false);
  EXPECT_EQ(spec["hostIPC"], false);
  EXPECT_FALSE(spec.contains("serviceAccountName"));
  EXPECT_EQ(spec["nodeSelector"], (Json{{"kubernetes.io/arch", "amd64"}}));
  EXPECT_EQ(spec["securityContext"]["runAsNonRoot"], true);
  EXPECT_EQ(spec["securityContext"]["runAsUser"], 65534);
  EXPECT_EQ(spec["securityContext"]["runAsGroup"], 65534);
  EXPECT_EQ(spec["securityContext"]["seccompProfile"], (Json{{"type", "RuntimeDefault"}}));
  // One volume: the emptyDir /tmp, sized like the ephemeral-storage limit. No hostPath, no
  // Secret, no projected token.
  EXPECT_EQ(spec["volumes"], Json::parse(R"([{"name":"tmp","emptyDir":{"sizeLimit":"4Gi"}}])"));
  ASSERT_EQ(spec["containers"].size(), 1u);
  EXPECT_FALSE(spec.contains("initContainers"));
  const Json& c = spec["containers"][0];
  EXPECT_EQ(c["image"], "example.org/ci/python:3.11");
  EXPECT_EQ(c["command"], Json::array({"python3", "-c", kWheelBuildBootstrap}));
  EXPECT_FALSE(c.contains("args"));
  EXPECT_EQ(std::string(kWheelBuildBootstrap),
            "import os,urllib.request as u;e=os.environ;exec(u.urlopen(u.Request("
            "e['BUILDCACHE_AGENT_URL']+'/pypi/builds/'+e['BUILDCACHE_BUILD_ID']+'/script',"
            "headers={'Authorization':'Bearer '+e['BUILDCACHE_BUILD_TOKEN']}),timeout=60).read())");
  EXPECT_EQ(c["securityContext"]["allowPrivilegeEscalation"], false);
  EXPECT_EQ(c["securityContext"]["readOnlyRootFilesystem"], true);
  EXPECT_EQ(c["securityContext"]["capabilities"], (Json{{"drop", {"ALL"}}}));
  EXPECT_FALSE(c["securityContext"].contains("privileged"));
  EXPECT_EQ(c["volumeMounts"], Json::parse(R"([{"name":"tmp","mountPath":"/tmp"}])"));
  EXPECT_EQ(EnvOf(c), Json::parse(R"({"BUILDCACHE_AGENT_URL":"http://10.244.1.7:8080",
      "BUILDCACHE_BUILD_ID":"0123456789abcdef",
      "BUILDCACHE_BUILD_TOKEN":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
      "PIP_DISABLE_PIP_VERSION_CHECK":"1","HOME":"/tmp","TMPDIR":"/tmp"})"));
  for (const Json& e : c["env"]) EXPECT_FALSE(e.contains("valueFrom")) << e;  // no Secret refs
  EXPECT_FALSE(c.contains("envFrom"));
  EXPECT_EQ(c["resources"], Json::parse(R"({"limits":{"cpu":"2","memory":"4Gi",
      "ephemeral-storage":"4Gi"}})"));
}

TEST(WheelBuildPod, TakesTheBuildersResourcesArchitectureAndAShorterDeadline) {
  api::BuildCache cache = Cache();
  api::WheelBuild build = Build();
  build.spec.deadline_seconds = 120;
  Json pod = BuildWheelBuildPod(build, cache, cache.spec.ecosystems.pypi->builds.builders[1]);
  EXPECT_EQ(pod["spec"]["activeDeadlineSeconds"], 120);
  EXPECT_EQ(pod["spec"]["nodeSelector"], (Json{{"kubernetes.io/arch", "arm64"}}));
  EXPECT_EQ(pod["spec"]["containers"][0]["resources"],
            Json::parse(R"({"requests":{"cpu":"500m"},"limits":{"cpu":"2","memory":"1Gi",
              "ephemeral-storage":"2Gi"}})"));
  EXPECT_EQ(pod["spec"]["volumes"][0]["emptyDir"]["sizeLimit"], "2Gi");
}

TEST(WheelBuildPod, NetworkPolicyAllowsOnlyTheAgentPort) {
  Json np = BuildWheelBuildersNetworkPolicy(Cache());
  EXPECT_EQ(np["metadata"]["name"], "ci-wheel-builders");
  EXPECT_EQ(np["metadata"]["namespace"], "builds");
  EXPECT_EQ(np["metadata"]["ownerReferences"][0]["uid"], "cache-uid");
  EXPECT_EQ(np["spec"]["podSelector"]["matchLabels"],
            Json::parse(R"({"app.kubernetes.io/name":"buildcache",
              "app.kubernetes.io/component":"wheel-builder","buildcache.io/buildcache":"ci"})"));
  EXPECT_EQ(np["spec"]["policyTypes"], Json::array({"Ingress", "Egress"}));
  EXPECT_EQ(np["spec"]["ingress"], Json::array());
  EXPECT_EQ(np["spec"]["egress"], Json::parse(R"([{"to":[{"podSelector":{"matchLabels":
      {"app.kubernetes.io/name":"buildcache-agent","app.kubernetes.io/instance":"ci"}}}],
      "ports":[{"protocol":"TCP","port":8080}]}])"));
}

TEST(WheelBuildPod, AgentRoleBindingNamesOnlyTheWheelBuildRole) {
  Json rb = BuildAgentWheelBuildRoleBinding(Cache(), "buildcache-agent-wheelbuilds");
  EXPECT_EQ(rb["kind"], "RoleBinding");
  EXPECT_EQ(rb["metadata"]["namespace"], "builds");
  EXPECT_EQ(rb["roleRef"]["name"], "buildcache-agent-wheelbuilds");
  EXPECT_EQ(rb["subjects"], Json::parse(R"([{"kind":"ServiceAccount","name":"buildcache-ci-agent",
      "namespace":"builds"}])"));
}

TEST(WheelBuildValidation, AcceptsTheAgentsOwnAddress) {
  api::BuildCache cache = Cache();
  Result<const api::PypiBuilder*> builder =
      ValidateAgainstCache(Build(), &cache, {AgentPod("10.244.2.9"), AgentPod("10.244.1.7")});
  ASSERT_TRUE(builder.ok()) << builder.status().ToString();
  EXPECT_EQ((*builder)->name, "py311");
}

TEST(WheelBuildValidation, RefusesWhatAHostileCreatorCouldAskFor) {
  api::BuildCache cache = Cache();
  const std::vector<Json> agents = {AgentPod("10.244.1.7")};
  auto refused = [&](const api::WheelBuild& b, const api::BuildCache* c,
                     const std::vector<Json>& pods, const std::string& why) {
    Result<const api::PypiBuilder*> r = ValidateAgainstCache(b, c, pods);
    EXPECT_FALSE(r.ok()) << why;
    if (r.ok()) return std::string();
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
    return r.status().message();
  };
  // Another namespace's BuildCache: looked up in the WheelBuild's own namespace, so not found.
  EXPECT_EQ(refused(Build(), nullptr, agents, "no cache"),
            "BuildCache \"ci\" not found in namespace builds");
  api::WheelBuild unknown = Build();
  unknown.spec.builder = "py399";
  EXPECT_EQ(refused(unknown, &cache, agents, "unknown builder"),
            "BuildCache \"ci\" has no pypi builder \"py399\"");
  // An address that is not one of its agents: another host, another port, an agent that is not
  // running, an agent of another BuildCache, an agent pod in another namespace.
  for (const auto& [url, pods] : std::vector<std::pair<std::string, std::vector<Json>>>{
           {"http://10.0.0.99:8080", agents},
           {"http://10.244.1.7:9090", agents},
           {"http://attacker.example:8080", agents},
           {"http://10.244.1.7:8080", {AgentPod("10.244.1.7", "Succeeded")}},
           {"http://10.244.1.7:8080", {AgentPod("10.244.1.7", "Running", "other")}},
           {"http://10.244.1.7:8080", {AgentPod("10.244.1.7", "Running", "ci", "elsewhere")}},
           {"http://10.244.1.7:8080", {}},
       }) {
    api::WheelBuild b = Build();
    b.spec.agent_url = url;
    EXPECT_NE(refused(b, &cache, pods, url)
                  .find("is not http://<pod IP>:8080 of a running agent "
                        "pod of BuildCache \"ci\""),
              std::string::npos);
  }
  api::BuildCache no_pypi = cache;
  no_pypi.spec.ecosystems.pypi.reset();
  EXPECT_NE(refused(Build(), &no_pypi, agents, "no pypi").find("has no pypi builder"),
            std::string::npos);
}

TEST(WheelBuildStatus, MirrorsThePod) {
  const std::string now = "2026-12-07T03:00:00Z";
  Json pod = {{"metadata", {{"name", "ci-0123456789abcdef"}}},
              {"spec", {{"activeDeadlineSeconds", 600}}},
              {"status", {{"phase", "Pending"}}}};
  api::WheelBuildStatus s = StatusFromPod(pod, {}, now);
  EXPECT_EQ(s.phase, "Pending");
  EXPECT_EQ(s.pod_name, "ci-0123456789abcdef");

  pod["status"] = {{"phase", "Running"}, {"startTime", "2026-12-07T02:59:00Z"}};
  s = StatusFromPod(pod, s, now);
  EXPECT_EQ(s.phase, "Running");
  EXPECT_EQ(s.start_time, "2026-12-07T02:59:00Z");
  EXPECT_EQ(s.completion_time, "");

  Json ok = pod;
  ok["status"]["phase"] = "Succeeded";
  api::WheelBuildStatus done = StatusFromPod(ok, s, now);
  EXPECT_EQ(done.phase, "Succeeded");
  EXPECT_EQ(done.completion_time, now);

  Json oom = pod;
  oom["status"] = Json::parse(R"({"phase":"Failed","containerStatuses":[{"name":"build",
      "state":{"terminated":{"reason":"OOMKilled","exitCode":137}}}]})");
  EXPECT_EQ(StatusFromPod(oom, s, now).message, "builder container OOMKilled (exit code 137)");
  EXPECT_EQ(StatusFromPod(oom, s, now).phase, "Failed");

  Json exit1 = pod;
  exit1["status"] = Json::parse(R"({"phase":"Failed","containerStatuses":[{"name":"build",
      "state":{"terminated":{"reason":"Error","exitCode":1,"message":"no wheel"}}}]})");
  EXPECT_EQ(StatusFromPod(exit1, s, now).message,
            "builder container Error (exit code 1): no wheel");

  Json deadline = pod;
  deadline["status"] = Json::parse(R"({"phase":"Failed","reason":"DeadlineExceeded",
      "message":"Pod was active on the node longer than the specified deadline"})");
  EXPECT_EQ(StatusFromPod(deadline, s, now).message,
            "build deadline exceeded (activeDeadlineSeconds 600)");

  Json pull = pod;
  pull["status"] = Json::parse(R"({"phase":"Pending","containerStatuses":[{"name":"build",
      "state":{"waiting":{"reason":"ImagePullBackOff","message":"Back-off pulling image"}}}]})");
  api::WheelBuildStatus pulled = StatusFromPod(pull, {}, now);
  EXPECT_EQ(pulled.phase, "Failed");
  EXPECT_EQ(pulled.message, "builder image: ImagePullBackOff: Back-off pulling image");
  EXPECT_EQ(pulled.completion_time, now);
}

}  // namespace
}  // namespace buildcache::controllers
