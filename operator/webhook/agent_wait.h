#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "operator/api/buildcache.h"
#include "operator/controllers/owned_objects.h"

namespace buildcache::webhook {

using Json = nlohmann::json;

// A pod wired to a BuildCache reaches its node's agent through a Service with
// internalTrafficPolicy: Local, which has no endpoint on a node whose agent pod is not Ready yet
// (a new node, a rollout, an agent still hydrating): the pod's clients would fail at once. So the
// webhook adds an init container, first in the pod, that runs `buildcache-agent wait-ready`
// (agent/app/wait_ready.h) against <agent>/readyz through that Service: the pod's containers start
// once the node's agent serves, or the init container fails after a bounded wait with a message
// naming the agent URL (docs/operator.md).

// Pod annotation: how long the init container waits, as a Go duration ("90s", "10m"); "0" adds
// no init container. Default: WiringOptions::agent_wait; at most WiringOptions::max_agent_wait.
// The annotation is the pod's own input: it only ever sets the bound. The URL waited for is the
// BuildCache's Service (AgentBaseUrl), never anything from the pod, and a value that is not a
// duration (say "5m --url=http://elsewhere") gets the default.
inline constexpr char kAgentWaitAnnotation[] = "buildcache.io/agent-wait";
inline constexpr char kAgentWaitContainer[] = "buildcache-wait-agent";

struct WiringOptions {
  // The init container's image when the BuildCache names none (spec.agent.image): the operator's
  // --agent-image, the image its agent DaemonSets run.
  std::string agent_image = controllers::BuildOptions{}.agent_image;
  std::chrono::seconds agent_wait{std::chrono::minutes(5)};
  // A longer annotation is cut to this, with a warning: a pod cannot make its init container (and
  // so the pod, holding its node's resources) wait for an agent for days.
  std::chrono::seconds max_agent_wait{std::chrono::hours(1)};
};

// The init container that waits `wait` for the node's agent of `cache`.
Json AgentWaitContainer(const api::BuildCache& cache, const WiringOptions& options,
                        std::chrono::seconds wait);

// Appends to `patch` the op that puts AgentWaitContainer first in `pod`'s initContainers, unless
// the pod has one by that name already or its kAgentWaitAnnotation says "0". A malformed
// annotation gets the default wait, one over max_agent_wait gets the maximum, each with a warning
// in `warnings`. Ops already in `patch` that address
// /spec/initContainers/N stay right: they are applied before this one moves the others.
void AddAgentWait(Json& patch, const Json& pod, const api::BuildCache& cache,
                  const WiringOptions& options, std::vector<std::string>& warnings);

}  // namespace buildcache::webhook
