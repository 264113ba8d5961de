#include "agent/frontends/goproxy/module_path.h"

#include <strings.h>

#include <algorithm>
#include <array>

namespace buildcache::goproxy {
namespace {

constexpr size_t kMaxModulePath = 512;
constexpr size_t kMaxQuery = 128;

bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) { return IsLower(c) || IsUpper(c) || IsDigit(c); }

bool ModulePathChar(char c) { return IsAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~'; }

// Device names Windows reserves; the go command refuses them as path elements (before any dot).
constexpr std::array<std::string_view, 22> kWindowsNames = {
    "CON",  "PRN",  "AUX",  "NUL",  "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9"};

Status CheckElement(std::string_view elem, bool first) {
  if (elem.empty()) return InvalidArgument("empty path element");
  if (std::all_of(elem.begin(), elem.end(), [](char c) { return c == '.'; })) {
    return InvalidArgument("path element made of dots only");
  }
  if (elem.front() == '.') return InvalidArgument("leading dot in a path element");
  if (elem.back() == '.') return InvalidArgument("trailing dot in a path element");
  for (char c : elem) {
    if (!ModulePathChar(c)) return InvalidArgument("invalid character in module path");
    if (first && !(IsLower(c) || IsDigit(c) || c == '-' || c == '.')) {
      return InvalidArgument("the first path element must be lowercase letters, digits, . and -");
    }
  }
  if (first && elem.front() == '-') return InvalidArgument("leading dash in the first element");
  if (first && elem.find('.') == std::string_view::npos) {
    return InvalidArgument("missing dot in the first path element");
  }
  std::string_view stem = elem.substr(0, elem.find('.'));
  for (std::string_view bad : kWindowsNames) {
    if (stem.size() == bad.size() && strncasecmp(stem.data(), bad.data(), bad.size()) == 0) {
      return InvalidArgument("reserved name as a path element");
    }
  }
  return Status::Ok();
}

// A numeric semver identifier: digits, no leading zero unless it is "0".
bool IsNumber(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsDigit) && (s.size() == 1 || s[0] != '0');
}

}  // namespace

Result<std::string> Escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 4);
  for (char c : s) {
    if (c == '!') return InvalidArgument("'!' cannot be case-encoded");
    if (IsUpper(c)) {
      out.push_back('!');
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Result<std::string> Unescape(std::string_view escaped) {
  std::string out;
  out.reserve(escaped.size());
  for (size_t i = 0; i < escaped.size(); ++i) {
    char c = escaped[i];
    if (IsUpper(c)) return InvalidArgument("uppercase letter in a case-encoded name");
    if (c != '!') {
      out.push_back(c);
      continue;
    }
    if (i + 1 >= escaped.size() || !IsLower(escaped[i + 1])) {
      return InvalidArgument("'!' not followed by a lowercase letter");
    }
    out.push_back(static_cast<char>(escaped[++i] - 'a' + 'A'));
  }
  return out;
}

Status CheckModulePath(std::string_view path) {
  if (path.empty()) return InvalidArgument("empty module path");
  if (path.size() > kMaxModulePath) return InvalidArgument("module path too long");
  size_t start = 0;
  for (bool first = true;; first = false) {
    size_t slash = path.find('/', start);
    std::string_view elem =
        path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (Status s = CheckElement(elem, first); !s.ok()) {
      return InvalidArgument("malformed module path: " + s.message());
    }
    if (slash == std::string_view::npos) return Status::Ok();
    start = slash + 1;
  }
}

bool IsCanonicalVersion(std::string_view v) {
  if (v.size() < 6 || v.size() > 256 || v[0] != 'v') return false;
  v.remove_prefix(1);
  if (v.ends_with("+incompatible")) v.remove_suffix(13);
  if (v.find('+') != std::string_view::npos) return false;  // other build metadata is dropped
  size_t dash = v.find('-');
  std::string_view core = v.substr(0, dash);
  for (int i = 0; i < 3; ++i) {
    size_t dot = core.find('.');
    if ((i < 2) == (dot == std::string_view::npos)) return false;
    if (!IsNumber(core.substr(0, dot))) return false;
    core = i < 2 ? core.substr(dot + 1) : std::string_view();
  }
  if (dash == std::string_view::npos) return true;
  std::string_view pre = v.substr(dash + 1);
  if (pre.empty()) return false;
  for (;;) {
    size_t dot = pre.find('.');
    std::string_view id = pre.substr(0, dot);
    if (id.empty()) return false;
    if (!std::all_of(id.begin(), id.end(), [](char c) { return IsAlnum(c) || c == '-'; })) {
      return false;
    }
    if (std::all_of(id.begin(), id.end(), IsDigit) && !IsNumber(id)) return false;
    if (dot == std::string_view::npos) return true;
    pre.remove_prefix(dot + 1);
  }
}

bool IsPseudoVersion(std::string_view v) {
  if (!IsCanonicalVersion(v)) return false;
  if (v.ends_with("+incompatible")) v.remove_suffix(13);
  size_t dash = v.find('-');
  if (dash == std::string_view::npos) return false;
  // <base>[-|.]<14-digit timestamp>-<12 hex digits>
  constexpr size_t kTail = 14 + 1 + 12;
  std::string_view pre = v.substr(dash + 1);
  if (pre.size() < kTail) return false;
  std::string_view tail = pre.substr(pre.size() - kTail);
  if (!std::all_of(tail.begin(), tail.begin() + 14, IsDigit) || tail[14] != '-') return false;
  if (!std::all_of(tail.begin() + 15, tail.end(),
                   [](char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); })) {
    return false;
  }
  std::string_view base = pre.substr(0, pre.size() - kTail);
  // vX.0.0-TIMESTAMP-REV, or vX.Y.Z-pre.0.TIMESTAMP-REV / vX.Y.Z-0.TIMESTAMP-REV.
  return base.empty() || base == "0." || base.ends_with(".0.");
}

Status CheckVersionQuery(std::string_view v) {
  if (IsCanonicalVersion(v)) return Status::Ok();
  if (v.empty() || v.size() > kMaxQuery) return InvalidArgument("invalid version length");
  if (v.front() == '.' || v.front() == '-') return InvalidArgument("invalid version");
  if (v.find("..") != std::string_view::npos) return InvalidArgument("invalid version");
  if (!std::all_of(v.begin(), v.end(), [](char c) {
        return IsAlnum(c) || c == '.' || c == '_' || c == '+' || c == '~' || c == '-';
      })) {
    return InvalidArgument("invalid character in version");
  }
  return Status::Ok();
}

}  // namespace buildcache::goproxy
