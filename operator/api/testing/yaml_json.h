#pragma once

// Custom resources written in YAML (the CRD samples, test fixtures), read as the API server reads
// them, for the API types' tests. Header-only; for tests only.

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <string>

namespace buildcache::api::testing {

// The CRDs and their samples in the source tree.
inline const std::string kCrdDir = std::string(BC_SOURCE_DIR) + "/crds";

// YAML as the API server reads it (plain scalars typed, quoted ones strings), as JSON.
inline nlohmann::json ToJsonValue(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : node) out[kv.first.as<std::string>()] = ToJsonValue(kv.second);
      return out;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) out.push_back(ToJsonValue(item));
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = node.Scalar();
      if (node.Tag() == "!") return s;  // quoted
      if (s == "true" || s == "false") return s == "true";
      if (s == "null" || s == "~") return nullptr;
      if (std::regex_match(s, std::regex("^-?[0-9]+$"))) return std::stoll(s);
      return s;
    }
    default:
      return nullptr;
  }
}

inline nlohmann::json LoadYaml(const std::string& path) {
  return ToJsonValue(YAML::LoadFile(path));
}

}  // namespace buildcache::api::testing
