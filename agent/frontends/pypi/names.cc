#include "agent/frontends/pypi/names.h"

#include <cctype>
#include <utility>
#include <vector>

namespace buildcache::pypi {
namespace {

constexpr size_t kMaxProjectName = 200;
constexpr size_t kMaxFilename = 255;

bool IsAsciiAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool IsUnreserved(char c) {
  return IsAsciiAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

// RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), followed by ':'. Returns the
// scheme's length, or 0 when s does not start with one.
size_t SchemeLength(std::string_view s) {
  if (s.empty() || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return 0;
  for (size_t i = 1; i < s.size(); ++i) {
    char c = s[i];
    if (c == ':') return i;
    if (!IsAsciiAlnum(c) && c != '+' && c != '-' && c != '.') return 0;
  }
  return 0;
}

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = AsciiLower(c);
  return out;
}

// RFC 3986 section 5.2.4 for an absolute path; the query (from '?') is kept as it is.
std::string RemoveDotSegments(std::string_view path_and_query) {
  size_t q = path_and_query.find('?');
  std::string_view path = path_and_query.substr(0, q);
  std::string_view query = q == std::string_view::npos ? "" : path_and_query.substr(q);
  std::vector<std::string_view> out;
  bool trailing_slash = false;
  size_t start = path.starts_with('/') ? 1 : 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view seg = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    bool last = slash == std::string_view::npos;
    if (seg == ".") {
      trailing_slash = last;
    } else if (seg == "..") {
      if (!out.empty()) out.pop_back();
      trailing_slash = last;
    } else {
      out.push_back(seg);
      trailing_slash = false;
    }
    if (last) break;
    start = slash + 1;
  }
  std::string result;
  for (std::string_view seg : out) {
    result += '/';
    result += seg;
  }
  if (trailing_slash || result.empty()) result += '/';
  result += query;
  return result;
}

struct SplitUrl {
  std::string scheme;     // lowercase, without ':'
  std::string authority;  // without "//"
  std::string path_and_query;
};

Result<SplitUrl> SplitAbsolute(std::string_view url) {
  size_t n = SchemeLength(url);
  if (n == 0) return InvalidArgument("not an absolute URL");
  SplitUrl out;
  out.scheme = LowerAscii(url.substr(0, n));
  if (out.scheme != "http" && out.scheme != "https") {
    return InvalidArgument("URL scheme is not http or https");
  }
  std::string_view rest = url.substr(n + 1);
  if (!rest.starts_with("//")) return InvalidArgument("URL has no host");
  rest.remove_prefix(2);
  size_t end = rest.find_first_of("/?#");
  out.authority = std::string(rest.substr(0, end));
  if (out.authority.empty()) return InvalidArgument("URL has no host");
  std::string_view tail = end == std::string_view::npos ? "" : rest.substr(end);
  tail = tail.substr(0, tail.find('#'));
  out.path_and_query = tail.starts_with('?') ? "/" + std::string(tail) : std::string(tail);
  if (out.path_and_query.empty()) out.path_and_query = "/";
  return out;
}

}  // namespace

std::string NormalizeName(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  bool in_run = false;
  for (char c : name) {
    if (c == '-' || c == '_' || c == '.') {
      if (!in_run) out.push_back('-');
      in_run = true;
    } else {
      out.push_back(AsciiLower(c));
      in_run = false;
    }
  }
  return out;
}

bool IsValidProjectName(std::string_view name) {
  if (name.empty() || name.size() > kMaxProjectName) return false;
  if (!IsAsciiAlnum(name.front()) || !IsAsciiAlnum(name.back())) return false;
  for (char c : name) {
    if (!IsAsciiAlnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

bool IsValidFilename(std::string_view filename) {
  if (filename.empty() || filename.size() > kMaxFilename || filename.front() == '.') return false;
  for (char c : filename) {
    if (!IsAsciiAlnum(c) && c != '.' && c != '_' && c != '-' && c != '+' && c != '!') return false;
  }
  return true;
}

std::string WheelName::project() const { return NormalizeName(distribution); }

Result<WheelName> ParseWheelFilename(std::string_view filename) {
  if (!IsValidFilename(filename)) return InvalidArgument("invalid file name");
  constexpr std::string_view kExt = ".whl";
  if (filename.size() <= kExt.size() ||
      LowerAscii(filename.substr(filename.size() - kExt.size())) != kExt) {
    return InvalidArgument("not a wheel (.whl) file name");
  }
  std::string_view stem = filename.substr(0, filename.size() - kExt.size());
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t dash = stem.find('-', start);
    parts.push_back(stem.substr(start, dash == std::string_view::npos ? dash : dash - start));
    if (dash == std::string_view::npos) break;
    start = dash + 1;
  }
  if (parts.size() != 5 && parts.size() != 6) {
    return InvalidArgument("wheel file name must have 5 or 6 dash-separated parts");
  }
  for (std::string_view p : parts) {
    if (p.empty()) return InvalidArgument("wheel file name has an empty part");
  }
  if (!IsValidProjectName(parts[0])) return InvalidArgument("wheel file name has a bad project");
  WheelName w;
  w.distribution = std::string(parts[0]);
  w.version = std::string(parts[1]);
  size_t i = 2;
  if (parts.size() == 6) {
    // PEP 427: the build tag starts with a digit.
    if (parts[2][0] < '0' || parts[2][0] > '9') {
      return InvalidArgument("wheel build tag must start with a digit");
    }
    w.build = std::string(parts[i++]);
  }
  w.python = std::string(parts[i++]);
  w.abi = std::string(parts[i++]);
  w.platform = std::string(parts[i]);
  return w;
}

std::string PercentEncodeSegment(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (IsUnreserved(c)) {
      out.push_back(c);
    } else {
      auto b = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 15]);
    }
  }
  return out;
}

Result<std::string> ResolveUrl(std::string_view base, std::string_view reference) {
  BC_ASSIGN_OR_RETURN(SplitUrl b, SplitAbsolute(base));
  std::string_view ref = reference.substr(0, reference.find('#'));
  // Surrounding whitespace is common in hand-written HTML and never part of the URL.
  while (!ref.empty() && (ref.front() == ' ' || ref.front() == '\t' || ref.front() == '\n' ||
                          ref.front() == '\r')) {
    ref.remove_prefix(1);
  }
  while (!ref.empty() &&
         (ref.back() == ' ' || ref.back() == '\t' || ref.back() == '\n' || ref.back() == '\r')) {
    ref.remove_suffix(1);
  }
  SplitUrl r;
  if (SchemeLength(ref) > 0) {
    BC_ASSIGN_OR_RETURN(r, SplitAbsolute(ref));
  } else if (ref.starts_with("//")) {
    BC_ASSIGN_OR_RETURN(r, SplitAbsolute(b.scheme + ":" + std::string(ref)));
  } else {
    r.scheme = b.scheme;
    r.authority = b.authority;
    if (ref.empty()) {
      r.path_and_query = b.path_and_query;
    } else if (ref.starts_with('/')) {
      r.path_and_query = std::string(ref);
    } else if (ref.starts_with('?')) {
      r.path_and_query = b.path_and_query.substr(0, b.path_and_query.find('?')) + std::string(ref);
    } else {
      std::string_view base_path =
          std::string_view(b.path_and_query).substr(0, b.path_and_query.find('?'));
      r.path_and_query =
          std::string(base_path.substr(0, base_path.rfind('/') + 1)) + std::string(ref);
    }
  }
  return r.scheme + "://" + r.authority + RemoveDotSegments(r.path_and_query);
}

std::string VersionKey(std::string_view version) {
  std::string v;
  for (char c : version) v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!v.empty() && (v.front() == ' ' || v.front() == '=')) v.erase(0, 1);
  if (!v.empty() && v.front() == 'v') v.erase(0, 1);
  if (auto plus = v.find('+'); plus != std::string::npos) v.resize(plus);
  // An epoch "N!" stays as written (normalized below like a release number).
  std::string epoch;
  if (auto bang = v.find('!'); bang != std::string::npos) {
    epoch = v.substr(0, bang);
    v.erase(0, bang + 1);
    while (epoch.size() > 1 && epoch.front() == '0') epoch.erase(0, 1);
    if (epoch == "0") epoch.clear();
  }
  size_t i = 0;
  std::vector<std::string> release;
  while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i]))) {
    size_t start = i;
    while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i]))) ++i;
    std::string n = v.substr(start, i - start);
    while (n.size() > 1 && n.front() == '0') n.erase(0, 1);
    release.push_back(n);
    if (i + 1 < v.size() && v[i] == '.' && std::isdigit(static_cast<unsigned char>(v[i + 1]))) {
      ++i;
    } else {
      break;
    }
  }
  if (release.empty()) return std::string(v);
  while (release.size() > 1 && release.back() == "0") release.pop_back();
  std::string key = epoch.empty() ? "" : epoch + "!";
  for (size_t k = 0; k < release.size(); ++k) key += (k ? "." : "") + release[k];
  // The rest: separators dropped, spellings folded, numbers without leading zeros; an implicit
  // number after a pre/post/dev label is 0.
  std::string rest;
  for (; i < v.size(); ++i) {
    if (v[i] != '.' && v[i] != '-' && v[i] != '_') rest += v[i];
  }
  static const std::pair<const char*, const char*> kSpellings[] = {
      {"alpha", "a"}, {"beta", "b"},   {"preview", "rc"}, {"pre", "rc"},
      {"c", "rc"},    {"rev", "post"}, {"r", "post"}};
  std::string out;
  size_t j = 0;
  while (j < rest.size()) {
    if (std::isdigit(static_cast<unsigned char>(rest[j]))) {
      size_t start = j;
      while (j < rest.size() && std::isdigit(static_cast<unsigned char>(rest[j]))) ++j;
      std::string n = rest.substr(start, j - start);
      while (n.size() > 1 && n.front() == '0') n.erase(0, 1);
      out += n;
      continue;
    }
    size_t start = j;
    while (j < rest.size() && !std::isdigit(static_cast<unsigned char>(rest[j]))) ++j;
    std::string word = rest.substr(start, j - start);
    for (const auto& [from, to] : kSpellings) {
      if (word == from) {
        word = to;
        break;
      }
    }
    out += word;
    if (j == rest.size() || !std::isdigit(static_cast<unsigned char>(rest[j]))) out += "0";
  }
  return key + out;
}

std::optional<std::string> DistributionVersion(std::string_view project,
                                               std::string_view filename) {
  if (filename.ends_with(".whl")) {
    auto wheel = ParseWheelFilename(filename);
    if (!wheel.ok() || wheel->project() != project) return std::nullopt;
    return wheel->version;
  }
  std::string_view stem;
  for (std::string_view ext : {".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar"}) {
    if (filename.ends_with(ext)) {
      stem = filename.substr(0, filename.size() - ext.size());
      break;
    }
  }
  if (stem.empty()) return std::nullopt;
  // Names may contain '-' (legacy sdists): the version follows the prefix that normalizes to the
  // project.
  for (size_t dash = stem.find('-'); dash != std::string_view::npos;
       dash = stem.find('-', dash + 1)) {
    if (NormalizeName(stem.substr(0, dash)) == project && dash + 1 < stem.size()) {
      return std::string(stem.substr(dash + 1));
    }
  }
  return std::nullopt;
}

std::vector<std::string_view> SplitOn(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

}  // namespace buildcache::pypi
