#include "agent/frontends/cargo/sparse_index.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>

#include "agent/frontends/cargo/crate_names.h"

namespace buildcache::cargo {
namespace {

using Json = nlohmann::json;

bool IsHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
         });
}

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  for (size_t at = s->find(from); at != std::string::npos; at = s->find(from, at + to.size())) {
    s->replace(at, from.size(), to);
  }
}

constexpr std::array<std::string_view, 5> kMarkers = {"{crate}", "{version}", "{prefix}",
                                                      "{lowerprefix}", "{sha256-checksum}"};

}  // namespace

Result<IndexEntry> FindVersion(std::string_view index_file, std::string_view name,
                               std::string_view version) {
  const std::string quoted = "\"" + std::string(version) + "\"";
  const std::string lower_name = Lower(name);
  size_t start = 0;
  while (start < index_file.size()) {
    size_t eol = index_file.find('\n', start);
    if (eol == std::string_view::npos) eol = index_file.size();
    std::string_view line = index_file.substr(start, eol - start);
    start = eol + 1;
    // Most lines are other versions: only parse the ones that mention this one.
    if (line.find(quoted) == std::string_view::npos) continue;
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;
    auto vers = j.find("vers");
    auto n = j.find("name");
    if (vers == j.end() || !vers->is_string() || *vers != version) continue;
    if (n == j.end() || !n->is_string() || Lower(n->get<std::string>()) != lower_name) continue;
    IndexEntry entry;
    entry.name = n->get<std::string>();
    entry.vers = vers->get<std::string>();
    if (auto y = j.find("yanked"); y != j.end() && y->is_boolean()) entry.yanked = y->get<bool>();
    auto cksum = j.find("cksum");
    if (cksum == j.end() || !cksum->is_string() || !IsHex64(cksum->get<std::string>())) {
      return Unavailable("the index entry of " + entry.name + " " + entry.vers +
                         " has no usable cksum, so the crate cannot be verified");
    }
    entry.cksum = Lower(cksum->get<std::string>());
    return entry;
  }
  return NotFound("the index has no version " + std::string(version) + " of " + std::string(name));
}

Result<std::string> ParseDownloadTemplate(std::string_view config_json) {
  Json j = Json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Unavailable("the registry's config.json is not a JSON object");
  auto dl = j.find("dl");
  if (dl == j.end() || !dl->is_string() || dl->get<std::string>().empty()) {
    return Unavailable("the registry's config.json has no \"dl\"");
  }
  return dl->get<std::string>();
}

std::string ExpandDownloadUrl(std::string_view dl, std::string_view name, std::string_view version,
                              std::string_view cksum) {
  std::string url(dl);
  bool templated = std::any_of(kMarkers.begin(), kMarkers.end(), [&](std::string_view m) {
    return url.find(m) != std::string::npos;
  });
  if (!templated) {
    return url + "/" + std::string(name) + "/" + std::string(version) + "/download";
  }
  ReplaceAll(&url, "{crate}", name);
  ReplaceAll(&url, "{version}", version);
  ReplaceAll(&url, "{prefix}", IndexPrefix(name));
  ReplaceAll(&url, "{lowerprefix}", IndexPrefix(Lower(name)));
  ReplaceAll(&url, "{sha256-checksum}", cksum);
  return url;
}

std::string RenderRegistryConfig(std::string_view dl) {
  return Json{{"dl", std::string(dl)}}.dump() + "\n";
}

}  // namespace buildcache::cargo
