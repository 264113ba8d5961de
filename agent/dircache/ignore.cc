#include "agent/dircache/ignore.h"

#include <array>

namespace buildcache::dircache {
namespace {

bool IgnoredElement(std::string_view e) {
  if (e.starts_with("tmp") || e.starts_with(".tmp")) {
    return true;
  }
  static constexpr std::array<std::string_view, 10> kSuffixes = {
      ".tmp", ".temp", ".partial", ".part", ".lock", ".swp", ".crdownload", "~", ".alive", ".bak"};
  for (std::string_view s : kSuffixes) {
    if (e.ends_with(s)) {
      return true;
    }
  }
  if (e.find(".tmp.") != std::string_view::npos) {
    return true;
  }
  return e == "lock" || e == ".package-cache" || e == ".package-cache-mutate";
}

}  // namespace

bool IsIgnoredPath(std::string_view path) {
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view element = path.substr(0, slash);
    if (IgnoredElement(element)) {
      return true;
    }
    if (slash == std::string_view::npos) {
      break;
    }
    path.remove_prefix(slash + 1);
  }
  return false;
}

bool IsSafeRelativePath(std::string_view path) {
  if (path.empty() || path.front() == '/' || path.find('\0') != std::string_view::npos) {
    return false;
  }
  while (true) {
    size_t slash = path.find('/');
    std::string_view element = path.substr(0, slash);
    if (element.empty() || element == "." || element == "..") {
      return false;
    }
    if (slash == std::string_view::npos) {
      return true;
    }
    path.remove_prefix(slash + 1);
  }
}

}  // namespace buildcache::dircache
