#include "agent/frontends/pypi/wheel_check.h"

#include <map>
#include <optional>
#include <vector>

namespace buildcache::pypi {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// The values of `field` in an RFC 822 style header block (METADATA, WHEEL), up to the first
// empty line (the METADATA body).
std::vector<std::string> HeaderValues(std::string_view text, std::string_view field) {
  std::vector<std::string> out;
  for (std::string_view line : SplitOn(text, '\n')) {
    if (Trim(line).empty()) break;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || line.substr(0, colon) != field) continue;
    out.emplace_back(Trim(line.substr(colon + 1)));
  }
  return out;
}

bool SafeEntryName(std::string_view name) {
  if (name.empty() || name.front() == '/' || name.find('\\') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return false;
  }
  for (std::string_view part : SplitOn(name, '/')) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

std::set<std::string> ExpandTags(const WheelName& wheel) {
  std::set<std::string> out;
  for (std::string_view py : SplitOn(wheel.python, '.')) {
    for (std::string_view abi : SplitOn(wheel.abi, '.')) {
      for (std::string_view plat : SplitOn(wheel.platform, '.')) {
        out.insert(std::string(py) + "-" + std::string(abi) + "-" + std::string(plat));
      }
    }
  }
  return out;
}

Status CheckBuiltWheel(const zip::ReadAtFn& read_at, uint64_t size, std::string_view filename,
                       std::string_view project, std::string_view version,
                       const WheelCheckLimits& limits) {
  BC_ASSIGN_OR_RETURN(WheelName wheel, ParseWheelFilename(filename));
  if (wheel.project() != project || VersionKey(wheel.version) != VersionKey(version)) {
    return InvalidArgument("the build produced " + std::string(filename) + ", not a wheel of " +
                           std::string(project) + " " + std::string(version));
  }
  BC_ASSIGN_OR_RETURN(std::vector<zip::Entry> entries,
                      zip::ReadDirectory(read_at, size, limits.max_entries));
  std::set<std::string_view> names;
  std::map<std::string, std::string> metadata;  // "<dir>/METADATA" or "<dir>/WHEEL" -> content
  uint64_t total = 0;
  for (const zip::Entry& e : entries) {
    if (!SafeEntryName(e.name)) return InvalidArgument("unsafe path in the wheel: " + e.name);
    if (!names.insert(e.name).second) return InvalidArgument("duplicate path: " + e.name);
    if (e.uncompressed > limits.max_uncompressed - std::min(total, limits.max_uncompressed)) {
      return InvalidArgument("the wheel is too large when unpacked");
    }
    total += e.uncompressed;
    std::vector<std::string_view> parts = SplitOn(e.name, '/');
    bool meta = parts.size() == 2 && parts[0].ends_with(".dist-info") &&
                (parts[1] == "METADATA" || parts[1] == "WHEEL");
    std::string content;
    BC_RETURN_IF_ERROR(zip::ReadEntry(read_at, size, e, [&](std::string_view data) -> Status {
      if (!meta) return Status::Ok();
      if (content.size() + data.size() > limits.max_metadata_bytes) {
        return InvalidArgument(e.name + " is too large");
      }
      content.append(data);
      return Status::Ok();
    }));
    if (meta) metadata[e.name] = std::move(content);
  }

  std::optional<std::string> dist_info;
  for (const auto& [name, content] : metadata) {
    std::string dir = name.substr(0, name.find('/'));
    if (dist_info && *dist_info != dir) return InvalidArgument("more than one .dist-info");
    dist_info = dir;
  }
  if (!dist_info) return InvalidArgument("the wheel has no .dist-info metadata");
  const std::string dir_name = dist_info->substr(0, dist_info->size() - 10);  // ".dist-info"
  size_t dash = dir_name.find('-');
  if (dash == std::string::npos || NormalizeName(dir_name.substr(0, dash)) != project ||
      VersionKey(dir_name.substr(dash + 1)) != VersionKey(version)) {
    return InvalidArgument(*dist_info + " does not name " + std::string(project) + " " +
                           std::string(version));
  }
  auto meta = metadata.find(*dist_info + "/METADATA");
  auto wheel_file = metadata.find(*dist_info + "/WHEEL");
  if (meta == metadata.end() || wheel_file == metadata.end()) {
    return InvalidArgument("the wheel lacks METADATA or WHEEL");
  }
  std::vector<std::string> names_field = HeaderValues(meta->second, "Name");
  std::vector<std::string> versions = HeaderValues(meta->second, "Version");
  if (names_field.size() != 1 || NormalizeName(names_field[0]) != project || versions.size() != 1 ||
      VersionKey(versions[0]) != VersionKey(version)) {
    return InvalidArgument("METADATA does not name " + std::string(project) + " " +
                           std::string(version));
  }
  std::vector<std::string> tags = HeaderValues(wheel_file->second, "Tag");
  if (std::set<std::string>(tags.begin(), tags.end()) != ExpandTags(wheel)) {
    return InvalidArgument("the WHEEL file's tags are not the file name's");
  }
  return Status::Ok();
}

}  // namespace buildcache::pypi
