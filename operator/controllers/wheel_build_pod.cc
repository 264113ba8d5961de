#include "operator/controllers/wheel_build_pod.h"

#include <algorithm>
#include <chrono>

#include "common/kube/resource.h"
#include "operator/controllers/agent_identity.h"
#include "operator/controllers/owned_objects.h"

namespace buildcache::controllers {
namespace {

Json EnvVar(const char* name, const std::string& value) {
  return {{"name", name}, {"value", value}};
}

// The builder's resources with the default limits filled in.
Json BuilderResources(const api::PypiBuilder& builder) {
  Json limits = {{"cpu", kDefaultBuilderCpu},
                 {"memory", kDefaultBuilderMemory},
                 {"ephemeral-storage", kDefaultBuilderEphemeralStorage}};
  for (const auto& [k, v] : builder.limits) limits[k] = v;
  Json resources = {{"limits", limits}};
  if (!builder.requests.empty()) {
    Json requests = Json::object();
    for (const auto& [k, v] : builder.requests) requests[k] = v;
    resources["requests"] = requests;
  }
  return resources;
}

std::string TerminatedMessage(const Json& terminated) {
  std::string reason = terminated.value("reason", "");
  std::string text = "builder container " + (reason.empty() ? std::string("exited") : reason);
  if (terminated.contains("exitCode") && terminated["exitCode"].is_number_integer()) {
    text += " (exit code " + std::to_string(terminated["exitCode"].get<int64_t>()) + ")";
  }
  std::string message = terminated.value("message", "");
  if (!message.empty()) text += ": " + message.substr(0, 1024);
  return text;
}

}  // namespace

bool HasPodBuilders(const api::BuildCache& cache) {
  return cache.spec.ecosystems.pypi && !cache.spec.ecosystems.pypi->builds.builders.empty();
}

void RenderPodBuilders(const api::BuildCache& cache, agent::PartialAgentConfig* out) {
  if (!HasPodBuilders(cache)) return;
  const api::PypiBuilds& builds = cache.spec.ecosystems.pypi->builds;
  agent::PypiConfig& pypi = out->config().pypi;
  for (const api::PypiBuilder& b : builds.builders) {
    agent::PypiBuilderConfig builder;
    builder.name = b.name;
    builder.image = b.image;
    builder.platform = {.implementation = b.implementation,
                        .python = b.python,
                        .libc = b.libc,
                        .libc_version = b.libc_version,
                        .cpu = b.cpu};
    pypi.builders.push_back(std::move(builder));
  }
  out->Mark(pypi.builders);
  for (const agent::PypiBuilderConfig& b : pypi.builders) {
    out->Mark(b.name);
    out->Mark(b.image);
    out->Mark(b.platform.implementation);
    out->Mark(b.platform.python);
    out->Mark(b.platform.libc);
    out->Mark(b.platform.libc_version);
    out->Mark(b.platform.cpu);
  }
  out->Set(pypi.build_deadline, builds.deadline.value);
  out->Set(pypi.build_failure_ttl, builds.failure_ttl.value);
  out->Set(pypi.build_workers, int64_t{builds.workers});
  out->Set(pypi.build_pods.ns, std::string("$POD_NAMESPACE"));
  out->Set(pypi.build_pods.build_cache, cache.name);
  out->Set(pypi.build_pods.agent_url, "http://$(POD_IP):" + std::to_string(kAgentPort));
}

Json WheelBuilderSelectorLabels(const api::BuildCache& cache) {
  return {{"app.kubernetes.io/name", "buildcache"},
          {"app.kubernetes.io/component", kWheelBuilderComponent},
          {api::kBuildCacheLabel, cache.name}};
}

Json BuildWheelBuildPod(const api::WheelBuild& build, const api::BuildCache& cache,
                        const api::PypiBuilder& builder) {
  int64_t deadline = build.spec.deadline_seconds;
  if (cache.spec.ecosystems.pypi) {
    const int64_t cap = std::chrono::duration_cast<std::chrono::seconds>(
                            cache.spec.ecosystems.pypi->builds.deadline.value)
                            .count();
    if (cap > 0) deadline = std::min(deadline, cap);
  }
  Json resources = BuilderResources(builder);
  Json labels = WheelBuilderSelectorLabels(cache);
  labels[api::kWheelBuildLabel] = build.spec.build_id;
  Json container = {
      {"name", "build"},
      {"image", builder.image},
      {"command", Json::array({"python3", "-c", kWheelBuildBootstrap})},
      {"env", Json::array({EnvVar("BUILDCACHE_AGENT_URL", build.spec.agent_url),
                           EnvVar("BUILDCACHE_BUILD_ID", build.spec.build_id),
                           EnvVar("BUILDCACHE_BUILD_TOKEN", build.spec.upload_token),
                           EnvVar("PIP_DISABLE_PIP_VERSION_CHECK", "1"), EnvVar("HOME", "/tmp"),
                           EnvVar("TMPDIR", "/tmp")})},
      {"resources", resources},
      {"volumeMounts", Json::array({{{"name", "tmp"}, {"mountPath", "/tmp"}}})},
      {"securityContext",
       {{"allowPrivilegeEscalation", false},
        {"readOnlyRootFilesystem", true},
        {"runAsNonRoot", true},
        {"capabilities", {{"drop", Json::array({"ALL"})}}}}},
  };
  Json pod_spec = {
      {"restartPolicy", "Never"},
      {"activeDeadlineSeconds", deadline},
      {"automountServiceAccountToken", false},
      {"enableServiceLinks", false},
      {"hostNetwork", false},
      {"hostPID", false},
      {"hostIPC", false},
      {"terminationGracePeriodSeconds", 5},
      {"nodeSelector", {{"kubernetes.io/arch", builder.cpu == "aarch64" ? "arm64" : "amd64"}}},
      {"securityContext",
       {{"runAsNonRoot", true},
        {"runAsUser", kBuilderUid},
        {"runAsGroup", kBuilderUid},
        {"fsGroup", kBuilderUid},
        {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
      {"containers", Json::array({container})},
      {"volumes",
       Json::array({{{"name", "tmp"},
                     {"emptyDir", {{"sizeLimit", resources["limits"]["ephemeral-storage"]}}}}})},
  };
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata",
           {{"name", build.name},
            {"namespace", build.ns},
            {"labels", labels},
            {"ownerReferences", Json::array({{{"apiVersion", api::kApiVersion},
                                              {"kind", api::kWheelBuildKind},
                                              {"name", build.name},
                                              {"uid", build.uid},
                                              {"controller", true},
                                              {"blockOwnerDeletion", true}}})}}},
          {"spec", pod_spec}};
}

std::string WheelBuildersNetworkPolicyName(const api::BuildCache& cache) {
  return cache.name + "-wheel-builders";
}

Json BuildWheelBuildersNetworkPolicy(const api::BuildCache& cache) {
  return {
      {"apiVersion", "networking.k8s.io/v1"},
      {"kind", "NetworkPolicy"},
      {"metadata", OwnedMetadata(cache, WheelBuildersNetworkPolicyName(cache))},
      {"spec",
       {{"podSelector", {{"matchLabels", WheelBuilderSelectorLabels(cache)}}},
        {"policyTypes", Json::array({"Ingress", "Egress"})},
        {"ingress", Json::array()},
        {"egress",
         Json::array(
             {{{"to", Json::array({{{"podSelector", {{"matchLabels", SelectorLabels(cache)}}}}})},
               {"ports", Json::array({{{"protocol", "TCP"}, {"port", kAgentPort}}})}}})}}}};
}

std::string AgentWheelBuildRoleBindingName(const api::BuildCache& cache) {
  return "buildcache-" + cache.name + "-agent-wheelbuilds";
}

Json BuildAgentWheelBuildRoleBinding(const api::BuildCache& cache,
                                     const std::string& cluster_role) {
  return {{"apiVersion", "rbac.authorization.k8s.io/v1"},
          {"kind", "RoleBinding"},
          {"metadata", OwnedMetadata(cache, AgentWheelBuildRoleBindingName(cache))},
          {"roleRef",
           {{"apiGroup", "rbac.authorization.k8s.io"},
            {"kind", "ClusterRole"},
            {"name", cluster_role}}},
          {"subjects", Json::array({{{"kind", "ServiceAccount"},
                                     {"name", AgentServiceAccountName(cache)},
                                     {"namespace", cache.ns}}})}};
}

Result<const api::PypiBuilder*> ValidateAgainstCache(const api::WheelBuild& build,
                                                     const api::BuildCache* cache,
                                                     const std::vector<Json>& agent_pods) {
  if (cache == nullptr) {
    return FailedPrecondition("BuildCache \"" + build.spec.build_cache +
                              "\" not found in namespace " + build.ns);
  }
  const api::PypiBuilder* builder =
      cache->spec.ecosystems.pypi ? cache->spec.ecosystems.pypi->builds.Find(build.spec.builder)
                                  : nullptr;
  if (builder == nullptr) {
    return FailedPrecondition("BuildCache \"" + cache->name + "\" has no pypi builder \"" +
                              build.spec.builder + "\"");
  }
  const Json agent_labels = SelectorLabels(*cache);
  for (const Json& pod : agent_pods) {
    if (kube::StringAt(pod, {"status", "phase"}) != "Running") continue;
    if (kube::NamespaceOf(pod) != cache->ns) continue;
    // The pod must be one of this BuildCache's agents (the list was by label; check again).
    const Json& labels = pod["metadata"].value("labels", Json::object());
    bool selected = true;
    for (const auto& [k, v] : agent_labels.items()) {
      if (!labels.is_object() || labels.value(k, "") != v.get<std::string>()) selected = false;
    }
    if (!selected) continue;
    std::vector<std::string> ips;
    if (std::string ip = kube::StringAt(pod, {"status", "podIP"}); !ip.empty()) ips.push_back(ip);
    const Json& status = pod.value("status", Json::object());
    if (status.is_object() && status.contains("podIPs") && status["podIPs"].is_array()) {
      for (const Json& entry : status["podIPs"]) {
        if (entry.is_object() && entry.value("ip", Json()).is_string()) {
          ips.push_back(entry["ip"].get<std::string>());
        }
      }
    }
    for (const std::string& ip : ips) {
      const std::string host = ip.find(':') != std::string::npos ? "[" + ip + "]" : ip;
      if (build.spec.agent_url == "http://" + host + ":" + std::to_string(kAgentPort)) {
        return builder;
      }
    }
  }
  return FailedPrecondition("agentURL " + build.spec.agent_url +
                            " is not http://<pod IP>:" + std::to_string(kAgentPort) +
                            " of a running agent pod of BuildCache \"" + cache->name + "\"");
}

api::WheelBuildStatus StatusFromPod(const Json& pod, const api::WheelBuildStatus& previous,
                                    const std::string& now) {
  api::WheelBuildStatus out = previous;
  out.pod_name = kube::NameOf(pod);
  const Json& status = pod.value("status", Json::object());
  const std::string phase = kube::StringAt(pod, {"status", "phase"});
  const std::string started = kube::StringAt(pod, {"status", "startTime"});
  if (out.start_time.empty() && !started.empty()) out.start_time = started;
  const Json statuses =
      status.is_object() ? status.value("containerStatuses", Json::array()) : Json::array();
  const Json* container = nullptr;
  if (statuses.is_array()) {
    for (const Json& c : statuses) {
      if (c.is_object() && c.value("name", "") == "build") container = &c;
    }
  }
  auto finish = [&](const char* phase_name, std::string message) {
    out.phase = phase_name;
    out.message = std::move(message);
    if (out.completion_time.empty()) out.completion_time = now;
  };
  if (phase == "Succeeded") {
    finish(api::kPhaseSucceeded, "");
  } else if (phase == "Failed") {
    std::string reason = kube::StringAt(pod, {"status", "reason"});
    std::string message = kube::StringAt(pod, {"status", "message"});
    if (container != nullptr && container->contains("state") &&
        (*container)["state"].contains("terminated")) {
      finish(api::kPhaseFailed, TerminatedMessage((*container)["state"]["terminated"]));
    } else if (!reason.empty() || !message.empty()) {
      finish(api::kPhaseFailed, "builder pod " + (reason.empty() ? "failed" : reason) +
                                    (message.empty() ? "" : ": " + message));
    } else {
      finish(api::kPhaseFailed, "builder pod failed");
    }
    if (reason == "DeadlineExceeded") {
      out.message = "build deadline exceeded (activeDeadlineSeconds " +
                    std::to_string(pod["spec"].value("activeDeadlineSeconds", int64_t{0})) + ")";
    }
  } else if (phase == "Running") {
    out.phase = api::kPhaseRunning;
  } else {
    out.phase = api::kPhasePending;
    if (container != nullptr && container->contains("state") &&
        (*container)["state"].contains("waiting")) {
      const Json& waiting = (*container)["state"]["waiting"];
      const std::string reason = waiting.value("reason", "");
      if (reason == "ErrImagePull" || reason == "ImagePullBackOff" ||
          reason == "InvalidImageName" || reason == "ErrImageNeverPull" ||
          reason == "CreateContainerConfigError" || reason == "CreateContainerError") {
        finish(api::kPhaseFailed,
               "builder image: " + reason + ": " + waiting.value("message", "").substr(0, 1024));
      }
    }
  }
  return out;
}

}  // namespace buildcache::controllers
