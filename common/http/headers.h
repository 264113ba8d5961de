// Header names the agent's responses share, defined once.
#pragma once

#include <string_view>

namespace buildcache::http {

// Where the served bytes came from: "local" (this node's store), "peer" (another agent) or
// "upstream" (the registry). Set by the front ends; counted by the agent's metrics decorator.
inline constexpr std::string_view kSourceHeader = "X-Buildcache-Source";

}  // namespace buildcache::http
