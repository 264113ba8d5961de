#pragma once

// Wheel builds in builder pods (pypi.builders[] with an image, pypi.buildPods): the pieces of the
// agent's wiring that are plain functions, beside Agent::StartPodBuilds (pod_builds.cc).

#include <string>
#include <string_view>

#include "agent/config/agent_config.h"
#include "agent/frontends/pypi/build_runner.h"
#include "agent/frontends/pypi/pod_runner.h"
#include "common/status/status.h"

namespace buildcache::agent {

// An image builder as the wheel builder sees it: its declared platform (Linux), never probed;
// tools name the image.
pypi::BuilderSpec ImageBuilderSpec(const PypiBuilderConfig& builder);

// `value` with the environment's values for "$NAME" (when it is the whole value) and for every
// "$(NAME)" inside it. kInvalidArgument naming `key` when a variable is not set or is empty.
Result<std::string> ExpandEnv(std::string_view value, std::string_view key);

// pypi.buildPods with its variables expanded; agentUrl must then be http://HOST:PORT with no
// user-info or path. `node` labels the WheelBuilds.
Result<pypi::PodRunnerOptions> PodRunnerOptionsFrom(const PypiBuildPodsConfig& pods,
                                                    std::string node);

}  // namespace buildcache::agent
