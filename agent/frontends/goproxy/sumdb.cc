#include "agent/frontends/goproxy/sumdb.h"

#include <algorithm>
#include <charconv>
#include <vector>

namespace buildcache::goproxy {
namespace {

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A small decimal without leading zeros (the sumdb writes H, L and W that way).
bool ParseSmall(std::string_view s, int max, int* out) {
  if (!AllDigits(s) || s.size() > 9 || (s.size() > 1 && s[0] == '0')) return false;
  int v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  if (v > max) return false;
  *out = v;
  return true;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t i = s.find(sep);
    out.push_back(s.substr(0, i));
    if (i == std::string_view::npos) return out;
    s.remove_prefix(i + 1);
  }
}

std::string Pad3(uint64_t v) {
  std::string s = std::to_string(v);
  return std::string(3 - s.size(), '0') + s;
}

}  // namespace

bool IsValidSumdbName(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.front() == '.' || name.back() == '.' ||
      name.front() == '-' || name.find("..") != std::string_view::npos) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
  });
}

std::string TilePath::ToString() const {
  std::string out = std::to_string(height) + "/" + (data ? "data" : std::to_string(level)) + "/";
  std::vector<std::string> parts;
  uint64_t n = index;
  do {
    parts.push_back(Pad3(n % 1000));
    n /= 1000;
  } while (n > 0);
  for (size_t i = parts.size(); i-- > 0;) {
    out += (i > 0 ? "x" : "") + parts[i] + (i > 0 ? "/" : "");
  }
  if (partial()) out += ".p/" + std::to_string(width);
  return out;
}

Result<TilePath> ParseTilePath(std::string_view path) {
  const Status bad = InvalidArgument("invalid tile path");
  std::vector<std::string_view> parts = Split(path, '/');
  if (parts.size() < 3) return bad;
  TilePath t;
  if (!ParseSmall(parts[0], 30, &t.height) || t.height < 1) return bad;
  if (parts[1] == "data") {
    t.data = true;
  } else if (!ParseSmall(parts[1], 63, &t.level)) {
    return bad;
  }
  size_t end = parts.size();
  if (parts[end - 2].ends_with(".p")) {
    // ".../NNN.p/W"
    if (!ParseSmall(parts[end - 1], (1 << t.height) - 1, &t.width) || t.width < 1) return bad;
    parts[end - 2].remove_suffix(2);
    --end;
  }
  if (end - 2 > 7) return bad;  // more index elements than a 64-bit index needs
  for (size_t i = 2; i < end; ++i) {
    std::string_view e = parts[i];
    bool last = i + 1 == end;
    if (!last) {
      if (!e.starts_with('x')) return bad;
      e.remove_prefix(1);
    }
    if (e.size() != 3 || !AllDigits(e)) return bad;
    const int value = (e[0] - '0') * 100 + (e[1] - '0') * 10 + (e[2] - '0');  // 0..999
    const uint64_t digits = static_cast<uint64_t>(value);
    if (t.index > (UINT64_MAX - digits) / 1000) return bad;
    t.index = t.index * 1000 + digits;
  }
  // One canonical spelling per tile: no leading "x000/" elements.
  if (t.ToString() != path) return bad;
  return t;
}

Result<LookupHashes> ParseLookup(std::string_view body, std::string_view module,
                                 std::string_view version) {
  LookupHashes out;
  std::vector<std::string_view> lines = Split(body, '\n');
  // Line 0 is the record id; records run to the first blank line.
  for (size_t i = 1; i < lines.size() && !lines[i].empty(); ++i) {
    std::vector<std::string_view> f = Split(lines[i], ' ');
    if (f.size() != 3 || f[0] != module || !f[2].starts_with("h1:")) continue;
    if (f[1] == version) {
      out.zip = std::string(f[2]);
    } else if (f[1].size() == version.size() + 7 && f[1].starts_with(version) &&
               f[1].ends_with("/go.mod")) {
      out.mod = std::string(f[2]);
    }
  }
  if (out.mod.empty()) {
    return DataLoss("the checksum database record has no go.mod hash for " + std::string(module) +
                    "@" + std::string(version));
  }
  return out;
}

}  // namespace buildcache::goproxy
