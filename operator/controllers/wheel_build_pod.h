#pragma once

#include <string>
#include <vector>

#include "agent/config/agent_config_tree.h"
#include "common/status/status.h"
#include "operator/api/buildcache.h"
#include "operator/api/wheelbuild.h"

namespace buildcache::controllers {

using Json = api::Json;

// The objects behind wheel builds in builder pods (docs/clients/pip.md, "Builder pods"), built by
// pure functions like owned_objects.h.
//
// A WheelBuild becomes one Pod named like it, in its namespace, owned by it (controller: true),
// from a fixed template: the BuildCache's builder image runs
//   python3 -c <kWheelBuildBootstrap>
// which fetches the agent's build script with the build's token and runs it. The pod has no
// service-account token, no Secrets, no host namespaces or paths, runs as 65534:65534 with every
// capability dropped, no privilege escalation, the RuntimeDefault seccomp profile and a read-only
// root file system (an emptyDir at /tmp is HOME and TMPDIR), restartPolicy Never, the build's
// deadline as activeDeadlineSeconds, the builder's resources (default limits below) and a
// kubernetes.io/arch node selector from the builder's cpu: it passes the `restricted` Pod
// Security Standard. Nothing the WheelBuild says reaches the command: only the agent URL, build
// id and token, as environment values whose syntax the CRD (and api::ValidateWheelBuild) fixes.

// The one line the pod runs (the agent serves the build script; the operator only runs it).
inline constexpr char kWheelBuildBootstrap[] =
    "import os,urllib.request as u;e=os.environ;exec(u.urlopen(u.Request("
    "e['BUILDCACHE_AGENT_URL']+'/pypi/builds/'+e['BUILDCACHE_BUILD_ID']+'/script',"
    "headers={'Authorization':'Bearer '+e['BUILDCACHE_BUILD_TOKEN']}),timeout=60).read())";

// The user and group builder pods run as ("nobody").
inline constexpr int kBuilderUid = 65534;

// Limits a builder gets when its spec does not name them.
inline constexpr char kDefaultBuilderCpu[] = "2";
inline constexpr char kDefaultBuilderMemory[] = "4Gi";
inline constexpr char kDefaultBuilderEphemeralStorage[] = "4Gi";

// app.kubernetes.io/component of builder pods.
inline constexpr char kWheelBuilderComponent[] = "wheel-builder";

// The labels of a BuildCache's builder pods (what its builders' NetworkPolicy selects).
Json WheelBuilderSelectorLabels(const api::BuildCache& cache);

// The builder pod for a WheelBuild that ValidateAgainstCache accepted. The deadline is the
// WheelBuild's, capped at the BuildCache's buildDeadline.
Json BuildWheelBuildPod(const api::WheelBuild& build, const api::BuildCache& cache,
                        const api::PypiBuilder& builder);

// NAME-wheel-builders: selects the BuildCache's builder pods; no ingress; egress only to the
// BuildCache's agent pods on kAgentPort (TCP). Owned by the BuildCache, applied by its reconciler
// while it has builders. Enforced only by a CNI that implements NetworkPolicy.
Json BuildWheelBuildersNetworkPolicy(const api::BuildCache& cache);
std::string WheelBuildersNetworkPolicyName(const api::BuildCache& cache);

// The agent's rights on WheelBuilds in its own namespace: a RoleBinding
// buildcache-NAME-agent-wheelbuilds of the ClusterRole `cluster_role` (the chart's
// <release>-agent-wheelbuilds: create, get, list, watch, delete wheelbuilds) to the agents'
// ServiceAccount, owned by the BuildCache.
Json BuildAgentWheelBuildRoleBinding(const api::BuildCache& cache, const std::string& cluster_role);
std::string AgentWheelBuildRoleBindingName(const api::BuildCache& cache);

// Whether the BuildCache runs builds in pods (spec.ecosystems.pypi.builders is not empty).
bool HasPodBuilders(const api::BuildCache& cache);

// Sets (and marks) the agent's pypi build keys when the BuildCache has builders: one
// builders[] item per builder (name, image, platform), buildDeadline, buildFailureTtl,
// buildWorkers and buildPods {namespace: $POD_NAMESPACE, buildCache: NAME, agentUrl:
// http://$(POD_IP):kAgentPort} (the agent expands the variables from the DaemonSet's env).
// Nothing without builders: the agent's build defaults stay.
void RenderPodBuilders(const api::BuildCache& cache, agent::PartialAgentConfig* out);

// The checks that need the cluster's state, given the WheelBuild's BuildCache (nullptr: none of
// that name in the WheelBuild's namespace) and the agent pods of that BuildCache (as the API
// server lists them). Returns the builder, or kFailedPrecondition with the message the
// WheelBuild's status gets: no such BuildCache, no such builder, or an agentURL that is not
// http://<podIP>:kAgentPort of a Running agent pod of that BuildCache.
Result<const api::PypiBuilder*> ValidateAgainstCache(const api::WheelBuild& build,
                                                     const api::BuildCache* cache,
                                                     const std::vector<Json>& agent_pods);

// The WheelBuild status a builder pod's state means (phase, message, start and completion time),
// given the status so far. An image that cannot be pulled is Failed at once (the operator then
// deletes the pod), not Pending until the deadline.
api::WheelBuildStatus StatusFromPod(const Json& pod, const api::WheelBuildStatus& previous,
                                    const std::string& now);

}  // namespace buildcache::controllers
