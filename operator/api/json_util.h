#pragma once

// Small JSON helpers shared by the BuildCache conversion and validation files (internal to
// buildcache::api).

#include <string>

#include "operator/api/buildcache.h"

namespace buildcache::api::internal {

// The string as a JSON literal ("a\"b"), as the API server quotes values in its messages.
inline std::string Quoted(const std::string& s) { return Json(s).dump(); }

// j[key] when it is a string, else fallback.
inline std::string Str(const Json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

}  // namespace buildcache::api::internal
