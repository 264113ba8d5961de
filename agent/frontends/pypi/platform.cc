#include "agent/frontends/pypi/platform.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <vector>

namespace buildcache::pypi {
namespace {

bool SafeToken(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

std::string Lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

// "3.11.7" -> {3, 11}; nullopt unless it starts with two small dot-separated numbers.
std::optional<std::pair<int, int>> MajorMinor(std::string_view v) {
  int major = 0, minor = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), major);
  if (ec != std::errc() || p == v.data() + v.size() || *p != '.') return std::nullopt;
  auto [q, ec2] = std::from_chars(p + 1, v.data() + v.size(), minor);
  if (ec2 != std::errc() || q == p + 1) return std::nullopt;
  if (major < 0 || major > 99 || minor < 0 || minor > 999) return std::nullopt;
  return std::pair{major, minor};
}

// The string at a JSON path, or "" when any step is missing or not of the right type.
std::string StringAt(const nlohmann::json& j, std::initializer_list<const char*> path) {
  const nlohmann::json* node = &j;
  for (const char* key : path) {
    if (!node->is_object()) return "";
    auto it = node->find(key);
    if (it == node->end()) return "";
    node = &*it;
  }
  return node->is_string() ? node->get<std::string>() : "";
}

// "<prefix><major>_<minor>_<cpu>" with (major, minor) <= the client's libc version.
bool VersionedPlatformFits(std::string_view tag, std::string_view prefix, const ClientPlatform& p) {
  if (!tag.starts_with(prefix)) return false;
  tag.remove_prefix(prefix.size());
  int major = 0, minor = 0;
  auto [a, ec] = std::from_chars(tag.data(), tag.data() + tag.size(), major);
  if (ec != std::errc() || a == tag.data() + tag.size() || *a != '_') return false;
  auto [b, ec2] = std::from_chars(a + 1, tag.data() + tag.size(), minor);
  if (ec2 != std::errc() || b == tag.data() + tag.size() || *b != '_') return false;
  if (std::string_view(b + 1, tag.data() + tag.size() - (b + 1)) != p.cpu) return false;
  return std::pair{major, minor} <= std::pair{p.libc_major, p.libc_minor};
}

bool PlatformFits(std::string_view tag, const ClientPlatform& p) {
  if (tag == "any") return true;
  if (p.system != "linux") return false;
  if (tag == "linux_" + p.cpu) return true;
  if (p.libc == "glibc") {
    // The legacy names: manylinux1 = 2.5, manylinux2010 = 2.12, manylinux2014 = 2.17.
    for (auto [legacy, minor] : {std::pair{"manylinux1_", 5}, std::pair{"manylinux2010_", 12},
                                 std::pair{"manylinux2014_", 17}}) {
      if (tag == legacy + p.cpu) {
        return std::pair{2, minor} <= std::pair{p.libc_major, p.libc_minor};
      }
    }
    return VersionedPlatformFits(tag, "manylinux_", p);
  }
  if (p.libc == "musl") return VersionedPlatformFits(tag, "musllinux_", p);
  return false;
}

// "cp311" -> the minor (11) when it names `impl` and the major; else nullopt.
std::optional<int> TagMinor(std::string_view tag, std::string_view impl, int major) {
  std::string head = std::string(impl) + std::to_string(major);
  if (!tag.starts_with(head)) return std::nullopt;
  tag.remove_prefix(head.size());
  if (tag.empty()) return -1;  // "py3": any minor
  int minor = 0;
  auto [p, ec] = std::from_chars(tag.data(), tag.data() + tag.size(), minor);
  if (ec != std::errc() || p != tag.data() + tag.size()) return std::nullopt;
  return minor;
}

}  // namespace

std::string ClientPlatform::Key() const {
  std::string key = implementation + std::to_string(python_major) + std::to_string(python_minor) +
                    "-" + system + "-" + Lower(cpu);
  if (!libc.empty()) {
    key += "-" + libc + std::to_string(libc_major) + "." + std::to_string(libc_minor);
  }
  return key;
}

std::optional<ClientPlatform> ParseClientPlatform(std::string_view ua) {
  if (ua.size() > kMaxUserAgentBytes) return std::nullopt;
  if (!ua.starts_with("pip/") && !ua.starts_with("uv/")) return std::nullopt;
  size_t space = ua.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  nlohmann::json j =
      nlohmann::json::parse(ua.substr(space + 1), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;

  ClientPlatform p;
  std::string impl = StringAt(j, {"implementation", "name"});
  if (impl == "CPython") {
    p.implementation = "cp";
  } else if (impl == "PyPy") {
    p.implementation = "pp";
  } else {
    return std::nullopt;
  }
  // pip and uv send the language version as "python" (the implementation's own version differs
  // for PyPy).
  auto version = MajorMinor(StringAt(j, {"python"}));
  if (!version) return std::nullopt;
  std::tie(p.python_major, p.python_minor) = *version;
  p.system = Lower(StringAt(j, {"system", "name"}));
  p.cpu = StringAt(j, {"cpu"});
  if (!SafeToken(p.system) || !SafeToken(p.cpu)) return std::nullopt;
  std::string lib = StringAt(j, {"distro", "libc", "lib"});
  if (lib == "glibc" || lib == "musl") {
    if (auto v = MajorMinor(StringAt(j, {"distro", "libc", "version"}))) {
      p.libc = lib;
      std::tie(p.libc_major, p.libc_minor) = *v;
    }
  }
  return p;
}

bool WheelFits(const WheelName& wheel, const ClientPlatform& p) {
  const int major = p.python_major, minor = p.python_minor;
  const std::string exact_abi = p.implementation + std::to_string(major) + std::to_string(minor);
  bool abi_ok = false, abi3 = false;
  for (std::string_view abi : SplitOn(wheel.abi, '.')) {
    if (abi == "none" || abi == exact_abi) abi_ok = true;
    if (abi == "abi3" && p.implementation == "cp") abi_ok = abi3 = true;
  }
  bool python_ok = false;
  for (std::string_view py : SplitOn(wheel.python, '.')) {
    if (auto m = TagMinor(py, "py", major); m && *m <= minor) python_ok = true;
    if (auto m = TagMinor(py, p.implementation, major);
        m && (*m == minor || (abi3 && *m >= 0 && *m <= minor))) {
      python_ok = true;
    }
  }
  bool platform_ok = false;
  for (std::string_view plat : SplitOn(wheel.platform, '.')) {
    if (PlatformFits(plat, p)) platform_ok = true;
  }
  return python_ok && abi_ok && platform_ok;
}

}  // namespace buildcache::pypi
