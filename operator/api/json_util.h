#pragma once

// Small JSON helpers shared by the BuildCache conversion and validation files (internal to
// buildcache::api).

#include <string>

#include "operator/api/buildcache.h"

namespace buildcache::api::internal {

// The string as a JSON literal ("a\"b"), as the API server quotes values in its messages.
inline std::string Quoted(const std::string& s) { return Json(s).dump(); }

// The JSON type of a value as the API server names it in its messages ("object", "integer", ...).
inline std::string TypeName(const Json& v) {
  if (v.is_object()) return "object";
  if (v.is_array()) return "array";
  if (v.is_string()) return "string";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  return "null";
}

// j[key] when it is a string, else fallback.
inline std::string Str(const Json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

}  // namespace buildcache::api::internal
