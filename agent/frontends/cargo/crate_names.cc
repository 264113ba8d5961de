#include "agent/frontends/cargo/crate_names.h"

#include <algorithm>

namespace buildcache::cargo {
namespace {

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool IsDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Dot-separated, non-empty identifiers of [0-9A-Za-z-].
bool IsIdentifiers(std::string_view s) {
  if (s.empty()) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string_view part = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (part.empty() ||
        !std::all_of(part.begin(), part.end(), [](char c) { return IsAlnum(c) || c == '-'; })) {
      return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

}  // namespace

bool IsValidCrateName(std::string_view name) {
  if (name.empty() || name.size() > kMaxCrateNameLength || name.front() == '-') return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return IsAlnum(c) || c == '_' || c == '-'; });
}

bool IsValidVersion(std::string_view version) {
  if (version.empty() || version.size() > kMaxVersionLength) return false;
  std::string_view core = version;
  if (size_t plus = core.find('+'); plus != std::string_view::npos) {
    if (!IsIdentifiers(core.substr(plus + 1))) return false;
    core = core.substr(0, plus);
  }
  if (size_t dash = core.find('-'); dash != std::string_view::npos) {
    if (!IsIdentifiers(core.substr(dash + 1))) return false;
    core = core.substr(0, dash);
  }
  size_t first = core.find('.');
  if (first == std::string_view::npos) return false;
  size_t second = core.find('.', first + 1);
  if (second == std::string_view::npos) return false;
  return IsDigits(core.substr(0, first)) && IsDigits(core.substr(first + 1, second - first - 1)) &&
         IsDigits(core.substr(second + 1));
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string IndexPrefix(std::string_view name) {
  switch (name.size()) {
    case 0:
      return "";
    case 1:
      return "1";
    case 2:
      return "2";
    case 3:
      return "3/" + std::string(name.substr(0, 1));
    default:
      return std::string(name.substr(0, 2)) + "/" + std::string(name.substr(2, 2));
  }
}

std::string IndexPath(std::string_view name) {
  std::string lower = Lower(name);
  return IndexPrefix(lower) + "/" + lower;
}

Result<std::string> ParseIndexPath(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return InvalidArgument("not an index file path");
  std::string_view name = path.substr(slash + 1);
  if (!IsValidCrateName(name)) return InvalidArgument("invalid crate name in index path");
  if (Lower(name) != name) return InvalidArgument("index file names are lower case");
  if (IndexPath(name) != path) return InvalidArgument("index file is not under its prefix");
  return std::string(name);
}

}  // namespace buildcache::cargo
