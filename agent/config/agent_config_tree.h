#pragma once

// The agent's configuration with only some keys written, as a JSON tree: how the operator renders
// a node agent's configuration from a BuildCache through the agent's own types, so a renamed or
// retyped key is a compile error in the operator rather than a configuration the agent rejects.

#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "agent/config/agent_config.h"

namespace buildcache::agent {

// An AgentConfig and the fields of it to write; the agent's defaults apply to the rest.
class PartialAgentConfig {
 public:
  AgentConfig& config() { return config_; }
  const AgentConfig& config() const { return config_; }

  // Assigns value to field, a member (at any depth) of config(), and marks it to be written.
  template <class T, class V>
  void Set(T& field, V&& value) {
    field = std::forward<V>(value);
    Mark(field);
  }
  // Marks a field of config() to be written. A marked list of sections (directories) is written
  // even when empty; its items hold only their own marked fields.
  template <class T>
  void Mark(const T& field) {
    marked_.insert(&field);
  }

  // The marked keys as nested objects, in the syntax the agent reads (sizes and durations as
  // strings, "512Mi", "10m"). A section appears when one of its keys is marked. CHECK-fails if a
  // marked address is not a key of config() (a field of a copy, a section itself).
  nlohmann::json ToJson() const;

 private:
  AgentConfig config_;
  std::set<const void*> marked_;
};

}  // namespace buildcache::agent
