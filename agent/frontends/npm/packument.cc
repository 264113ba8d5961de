#include "agent/frontends/npm/packument.h"

#include <charconv>
#include <nlohmann/json.hpp>
#include <utility>

#include "agent/upstream/url.h"

namespace buildcache::npm {
namespace {

using Json = nlohmann::json;

// Packuments nest about six levels deep; anything far deeper is refused before parsing.
constexpr int kMaxDepth = 64;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] - 'A' + 'a') : b[i];
    if (x != y) return false;
  }
  return true;
}

// The q-value of one media range's parameters ("; q=0.8"); 1 when absent, 0 when malformed.
double QValue(std::string_view params) {
  while (!params.empty()) {
    size_t semi = params.find(';');
    std::string_view param = Trim(params.substr(0, semi));
    params = semi == std::string_view::npos ? "" : params.substr(semi + 1);
    if (param.size() < 2 || (param[0] != 'q' && param[0] != 'Q') || param[1] != '=') continue;
    std::string_view value = param.substr(2);
    double q = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), q);
    if (ec != std::errc() || end != value.data() + value.size() || q < 0 || q > 1) return 0;
    return q;
  }
  return 1;
}

// True when the JSON text nests no deeper than kMaxDepth (strings are skipped).
bool DepthWithinLimit(std::string_view body) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

std::string StringField(const Json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Form NegotiateForm(std::string_view accept) {
  double abbreviated = 0;
  double json = 0;
  while (!accept.empty()) {
    size_t comma = accept.find(',');
    std::string_view range = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? "" : accept.substr(comma + 1);
    size_t semi = range.find(';');
    std::string_view type = Trim(range.substr(0, semi));
    double q = semi == std::string_view::npos ? 1 : QValue(range.substr(semi + 1));
    if (EqualsIgnoreCase(type, kAbbreviatedType)) {
      abbreviated = std::max(abbreviated, q);
    } else if (EqualsIgnoreCase(type, kJsonType)) {
      json = std::max(json, q);
    }
  }
  return abbreviated > 0 && abbreviated >= json ? Form::kAbbreviated : Form::kFull;
}

std::string_view UpstreamAccept(Form form) {
  return form == Form::kAbbreviated
             ? "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
             : "application/json";
}

Result<Packument> ReadPackument(std::string_view body, std::string_view packument_url,
                                const PackageName& name,
                                const std::optional<std::string>& tarball_base) {
  BC_ASSIGN_OR_RETURN(upstream::Url base, upstream::ParseUrl(packument_url));
  if (!DepthWithinLimit(body)) return InvalidArgument("packument nests too deeply");
  Json doc = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument("packument is not a JSON object");
  }
  Packument out;
  auto versions = doc.find("versions");
  if (versions != doc.end() && versions->is_object()) {
    const std::string prefix = tarball_base ? *tarball_base + name.full() + "/-/" : "";
    for (auto it = versions->begin(); it != versions->end();) {
      Json& version = it.value();
      Json* tarball = nullptr;
      if (version.is_object()) {
        auto dist = version.find("dist");
        if (dist != version.end() && dist->is_object()) {
          auto t = dist->find("tarball");
          if (t != dist->end() && t->is_string()) tarball = &*t;
        }
      }
      if (tarball == nullptr) {
        ++it;
        continue;
      }
      const Json& dist = version["dist"];
      std::optional<std::string> filename;
      TarballDist entry;
      if (auto url = upstream::ResolveReference(base, tarball->get_ref<const std::string&>());
          url.ok()) {
        filename = TarballFilename(*url);
        entry.url = url->ToString();
      }
      entry.integrity = StringField(dist, "integrity");
      entry.shasum = StringField(dist, "shasum");
      bool servable = filename.has_value();
      if (servable) {
        auto [existing, inserted] = out.tarballs.try_emplace(*filename, entry);
        servable = inserted || (existing->second.url == entry.url &&
                                existing->second.integrity == entry.integrity &&
                                existing->second.shasum == entry.shasum);
      }
      if (!servable) {
        ++out.dropped;
        if (tarball_base) {
          it = versions->erase(it);
        } else {
          ++it;
        }
        continue;
      }
      if (tarball_base) *tarball = prefix + *filename;
      ++it;
    }
    out.versions = versions->size();
  }
  if (tarball_base) {
    out.body = doc.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
  }
  return out;
}

}  // namespace buildcache::npm
