#pragma once

// Quoting of configuration values, shared by loading (error messages) and rendering (internal to
// buildcache::agent_config).

#include <string>
#include <string_view>

namespace buildcache::agent::internal {

// s as a double-quoted YAML scalar: '"' and '\\' escaped, control characters as \xNN.
std::string Quoted(std::string_view s);

}  // namespace buildcache::agent::internal
