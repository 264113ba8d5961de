#include "operator/webhook/agent_wait.h"

#include <algorithm>

#include "common/config/units.h"
#include "operator/webhook/pod_mutator.h"

namespace buildcache::webhook {

namespace {

const Json* Find(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string WaitAnnotation(const Json& pod) {
  const Json* meta = Find(pod, "metadata");
  const Json* annotations = meta != nullptr ? Find(*meta, "annotations") : nullptr;
  const Json* v = annotations != nullptr ? Find(*annotations, kAgentWaitAnnotation) : nullptr;
  return v != nullptr && v->is_string() ? v->get<std::string>() : "";
}

}  // namespace

Json AgentWaitContainer(const api::BuildCache& cache, const WiringOptions& options,
                        std::chrono::seconds wait) {
  const api::Agent& agent = cache.spec.agent;
  Json c = {
      {"name", kAgentWaitContainer},
      {"image", agent.image.empty() ? options.agent_image : agent.image},
      // The image's entrypoint is buildcache-agent.
      {"args", Json::array({"wait-ready", "--url=" + AgentBaseUrl(cache) + "/readyz",
                            "--timeout=" + std::to_string(wait.count()) + "s"})},
      {"resources",
       {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}}, {"limits", {{"memory", "64Mi"}}}}},
      // Fits the "restricted" Pod Security Standard: the image's non-root user, nothing more.
      {"securityContext",
       {{"runAsNonRoot", true},
        {"allowPrivilegeEscalation", false},
        {"readOnlyRootFilesystem", true},
        {"capabilities", {{"drop", Json::array({"ALL"})}}},
        {"seccompProfile", {{"type", "RuntimeDefault"}}}}},
  };
  if (!agent.image_pull_policy.empty()) c["imagePullPolicy"] = agent.image_pull_policy;
  return c;
}

void AddAgentWait(Json& patch, const Json& pod, const api::BuildCache& cache,
                  const WiringOptions& options, std::vector<std::string>& warnings) {
  const Json* spec = Find(pod, "spec");
  if (spec == nullptr || !spec->is_object()) return;
  std::chrono::seconds wait = options.agent_wait;
  if (std::string value = WaitAnnotation(pod); !value.empty()) {
    Result<std::chrono::nanoseconds> d = config::ParseDuration(value);
    if (d.ok() && *d > options.max_agent_wait) {
      wait = options.max_agent_wait;
      warnings.push_back(std::string("buildcache: annotation ") + kAgentWaitAnnotation + "=\"" +
                         value + "\" is longer than the maximum; waiting " +
                         std::to_string(wait.count()) + "s");
    } else if (d.ok()) {
      wait = std::chrono::ceil<std::chrono::seconds>(*d);
    } else {
      warnings.push_back(std::string("buildcache: annotation ") + kAgentWaitAnnotation + "=\"" +
                         value + "\" is not a duration (" + d.status().message() +
                         "); waiting the default " + std::to_string(wait.count()) + "s");
    }
  }
  if (wait.count() == 0) return;
  const Json* inits = Find(*spec, "initContainers");
  // An earlier op of the patch may have created the list (the gocacheprog init container).
  bool created = std::any_of(patch.begin(), patch.end(), [](const Json& op) {
    return op.value("path", "") == "/spec/initContainers";
  });
  if (!created && (inits == nullptr || inits->is_null())) {
    patch.push_back({{"op", "add"},
                     {"path", "/spec/initContainers"},
                     {"value", Json::array({AgentWaitContainer(cache, options, wait)})}});
    return;
  }
  if (!created && !inits->is_array()) return;  // malformed: leave it to the API server to reject
  for (const Json& c : created ? Json::array() : *inits) {
    const Json* name = Find(c, "name");
    if (name != nullptr && name->is_string() && *name == kAgentWaitContainer) return;
  }
  patch.push_back({{"op", "add"},
                   {"path", "/spec/initContainers/0"},
                   {"value", AgentWaitContainer(cache, options, wait)}});
}

}  // namespace buildcache::webhook
