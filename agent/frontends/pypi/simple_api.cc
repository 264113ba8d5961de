#include "agent/frontends/pypi/simple_api.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "agent/frontends/pypi/names.h"
#include "common/text/markup.h"

namespace buildcache::pypi {
namespace {

using Json = nlohmann::json;

char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = AsciiLower(c);
  return out;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool IsHashName(std::string_view name) {
  if (name.empty() || name.size() > 32) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// A hex digest, lowercased; nullopt when s is not hex.
std::optional<std::string> HexDigest(std::string_view s) {
  if (s.empty() || s.size() > 256) return std::nullopt;
  std::string out = LowerAscii(s);
  for (char c : out) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  }
  return out;
}

// Adds "name=hex" to hashes when it is well formed; returns whether it was.
bool AddHashPair(std::string_view pair, std::map<std::string, std::string>& hashes) {
  size_t eq = pair.find('=');
  if (eq == std::string_view::npos) return false;
  std::string name = LowerAscii(pair.substr(0, eq));
  auto hex = HexDigest(pair.substr(eq + 1));
  if (!IsHashName(name) || !hex) return false;
  hashes[name] = *hex;
  return true;
}

// The preferred hash for a URL fragment or a data-*-metadata attribute: sha256, else the first.
const std::pair<const std::string, std::string>* PreferredHash(
    const std::map<std::string, std::string>& hashes) {
  if (hashes.empty()) return nullptr;
  auto it = hashes.find("sha256");
  return it != hashes.end() ? &*it : &*hashes.begin();
}

// The last path segment of an absolute URL, percent-decoded ("" when it cannot be decoded).
std::string LastSegment(std::string_view url) {
  std::string_view path = url.substr(0, url.find('?'));
  std::string_view seg = path.substr(path.rfind('/') + 1);
  auto decoded = PercentDecode(seg);
  return decoded.ok() ? *decoded : std::string();
}

// ---------------------------------------------------------------------------------------------
// HTML

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes character references: the five XML ones and numeric ones. Others stay as written.
std::string DecodeEntities(std::string_view s) {
  static constexpr std::array<std::pair<std::string_view, char>, 5> kNamed = {
      {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}}};
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out.push_back(s[i]);
      continue;
    }
    std::string_view rest = s.substr(i + 1);
    bool done = false;
    for (const auto& [name, c] : kNamed) {
      if (rest.starts_with(name)) {
        out.push_back(c);
        i += name.size();
        done = true;
        break;
      }
    }
    if (done) continue;
    if (rest.starts_with('#')) {
      bool hex = rest.size() > 1 && (rest[1] == 'x' || rest[1] == 'X');
      size_t start = hex ? 2 : 1;
      size_t semi = rest.find(';');
      if (semi != std::string_view::npos && semi > start && semi - start <= 8) {
        std::string digits(rest.substr(start, semi - start));
        char* end = nullptr;
        unsigned long cp = std::strtoul(digits.c_str(), &end, hex ? 16 : 10);
        if (end != nullptr && *end == '\0') {
          AppendUtf8(out, static_cast<uint32_t>(std::min<unsigned long>(cp, 0x110000)));
          i += semi + 1;
          continue;
        }
      }
    }
    out.push_back('&');
  }
  return out;
}

struct Tag {
  std::string name;  // lowercase; "" for anything that is not an opening tag
  std::map<std::string, std::string> attrs;  // lowercase names, decoded values
  size_t end = 0;                            // index just past '>'
};

// Parses the tag starting at body[pos] == '<'.
Tag ParseTag(std::string_view body, size_t pos) {
  Tag tag;
  size_t i = pos + 1;
  if (body.substr(pos).starts_with("<!--")) {
    size_t close = body.find("-->", pos + 4);
    tag.end = close == std::string_view::npos ? body.size() : close + 3;
    return tag;
  }
  size_t name_start = i;
  while (i < body.size() && !IsSpace(body[i]) && body[i] != '>' && body[i] != '/') ++i;
  std::string name = LowerAscii(body.substr(name_start, i - name_start));
  bool opening = !name.empty() && name[0] >= 'a' && name[0] <= 'z';
  while (i < body.size() && body[i] != '>') {
    if (IsSpace(body[i]) || body[i] == '/') {
      ++i;
      continue;
    }
    size_t an = i;
    while (i < body.size() && !IsSpace(body[i]) && body[i] != '=' && body[i] != '>' &&
           body[i] != '/') {
      ++i;
    }
    std::string attr = LowerAscii(body.substr(an, i - an));
    while (i < body.size() && IsSpace(body[i])) ++i;
    std::string value;
    if (i < body.size() && body[i] == '=') {
      ++i;
      while (i < body.size() && IsSpace(body[i])) ++i;
      if (i < body.size() && (body[i] == '"' || body[i] == '\'')) {
        char quote = body[i++];
        size_t close = body.find(quote, i);
        if (close == std::string_view::npos) close = body.size();
        value = DecodeEntities(body.substr(i, close - i));
        i = std::min(body.size(), close + 1);
      } else {
        size_t vs = i;
        while (i < body.size() && !IsSpace(body[i]) && body[i] != '>') ++i;
        value = DecodeEntities(body.substr(vs, i - vs));
      }
    }
    if (opening && !attr.empty()) tag.attrs.emplace(std::move(attr), std::move(value));
  }
  tag.end = std::min(body.size(), i + 1);
  if (opening) tag.name = std::move(name);
  return tag;
}

// Fills the core-metadata fields from a data-core-metadata / data-dist-info-metadata value.
void SetCoreMetadata(std::string_view value, DistFile& f) {
  value = Trim(value);
  if (LowerAscii(value) == "false") return;
  f.core_metadata = true;
  AddHashPair(value, f.core_metadata_hashes);
}

// ---------------------------------------------------------------------------------------------
// JSON

std::optional<std::string> JsonString(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

void JsonHashes(const Json& value, std::map<std::string, std::string>& out) {
  if (!value.is_object()) return;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (!it.value().is_string()) continue;
    std::string name = LowerAscii(it.key());
    auto hex = HexDigest(it.value().get<std::string>());
    if (IsHashName(name) && hex) out[name] = *hex;
  }
}

Result<ProjectPage> ParseJsonPageImpl(const Json& doc, std::string_view base_url) {
  if (!doc.is_object()) return InvalidArgument("JSON page is not an object");
  ProjectPage page;
  if (auto meta = doc.find("meta"); meta != doc.end() && meta->is_object()) {
    if (auto v = JsonString(*meta, "api-version")) page.api_version = *v;
  }
  if (!page.api_version.starts_with("1.") && page.api_version != "1") {
    return InvalidArgument("unsupported simple API version " + page.api_version);
  }
  page.name = JsonString(doc, "name").value_or("");
  auto files = doc.find("files");
  if (files == doc.end() || !files->is_array()) return InvalidArgument("JSON page has no files");
  if (auto versions = doc.find("versions"); versions != doc.end() && versions->is_array()) {
    for (const Json& v : *versions) {
      if (v.is_string()) page.versions.push_back(v.get<std::string>());
    }
  }
  for (const Json& jf : *files) {
    if (!jf.is_object()) continue;
    auto filename = JsonString(jf, "filename");
    auto url = JsonString(jf, "url");
    if (!filename || !url) continue;
    auto resolved = ResolveUrl(base_url, *url);
    if (!resolved.ok()) continue;
    DistFile f;
    f.filename = *filename;
    f.url = *resolved;
    if (auto h = jf.find("hashes"); h != jf.end()) JsonHashes(*h, f.hashes);
    f.requires_python = JsonString(jf, "requires-python").value_or("");
    if (auto y = jf.find("yanked"); y != jf.end()) {
      if (y->is_string()) {
        f.yanked = y->get<std::string>();
      } else if (y->is_boolean() && y->get<bool>()) {
        f.yanked = "";
      }
    }
    // PEP 714: "core-metadata" replaces "dist-info-metadata"; read the old name as a fallback.
    auto cm = jf.find("core-metadata");
    if (cm == jf.end()) cm = jf.find("dist-info-metadata");
    if (cm != jf.end()) {
      if (cm->is_object()) {
        f.core_metadata = true;
        JsonHashes(*cm, f.core_metadata_hashes);
      } else if (cm->is_boolean()) {
        f.core_metadata = cm->get<bool>();
      }
    }
    if (auto s = jf.find("size"); s != jf.end() && s->is_number_unsigned()) {
      f.size = s->get<uint64_t>();
    }
    f.upload_time = JsonString(jf, "upload-time").value_or("");
    page.files.push_back(std::move(f));
  }
  return page;
}

Json HashesJson(const std::map<std::string, std::string>& hashes) {
  Json out = Json::object();
  for (const auto& [name, hex] : hashes) out[name] = hex;
  return out;
}

bool IsV11(const ProjectPage& page) {
  return !page.versions.empty() &&
         std::all_of(page.files.begin(), page.files.end(),
                     [](const DistFile& f) { return f.size.has_value(); });
}

// ---------------------------------------------------------------------------------------------
// Negotiation

struct MediaRange {
  std::string type;
  std::string subtype;
  double q = 1.0;
  size_t index = 0;
};

std::vector<MediaRange> ParseAccept(std::string_view accept) {
  std::vector<MediaRange> out;
  size_t start = 0;
  while (start <= accept.size()) {
    size_t comma = accept.find(',', start);
    std::string_view item =
        accept.substr(start, comma == std::string_view::npos ? comma : comma - start);
    start = comma == std::string_view::npos ? accept.size() + 1 : comma + 1;
    size_t semi = item.find(';');
    std::string media = LowerAscii(Trim(item.substr(0, semi)));
    size_t slash = media.find('/');
    if (media.empty() || slash == std::string::npos) continue;
    MediaRange r;
    r.type = Trim(std::string_view(media).substr(0, slash));
    r.subtype = Trim(std::string_view(media).substr(slash + 1));
    r.index = out.size();
    while (semi != std::string_view::npos) {
      size_t next = item.find(';', semi + 1);
      std::string_view param = Trim(item.substr(
          semi + 1, next == std::string_view::npos ? std::string_view::npos : next - semi - 1));
      if (param.size() >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        std::string v(Trim(param.substr(2)));
        char* end = nullptr;
        double q = std::strtod(v.c_str(), &end);
        if (end != nullptr && *end == '\0' && !v.empty()) r.q = std::clamp(q, 0.0, 1.0);
      }
      semi = next;
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

const DistFile* ProjectPage::Find(std::string_view filename) const {
  for (const DistFile& f : files) {
    if (f.filename == filename) return &f;
  }
  return nullptr;
}

Result<ProjectPage> ParseJsonPage(std::string_view body, std::string_view base_url) {
  Json doc = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgument("project page is not valid JSON");
  try {
    return ParseJsonPageImpl(doc, base_url);
  } catch (const Json::exception& e) {
    return InvalidArgument(std::string("malformed JSON project page: ") + e.what());
  }
}

Result<ProjectPage> ParseHtmlPage(std::string_view body, std::string_view base_url) {
  ProjectPage page;
  std::string base(base_url);
  if (!ResolveUrl(base, "").ok()) return InvalidArgument("page URL is not an http(s) URL");
  size_t pos = 0;
  while ((pos = body.find('<', pos)) != std::string_view::npos) {
    Tag tag = ParseTag(body, pos);
    pos = tag.end;
    if (tag.name == "base") {
      if (auto it = tag.attrs.find("href"); it != tag.attrs.end()) {
        if (auto b = ResolveUrl(base, it->second); b.ok()) base = *b;
      }
    } else if (tag.name == "meta") {
      auto name = tag.attrs.find("name");
      auto content = tag.attrs.find("content");
      if (name != tag.attrs.end() && content != tag.attrs.end() &&
          name->second == "pypi:repository-version") {
        page.api_version = std::string(Trim(content->second));
      }
    } else if (tag.name == "title" || tag.name == "h1") {
      // "Links for <name>" (informational only).
    } else if (tag.name == "a") {
      size_t text_end = pos;
      while (text_end < body.size()) {
        text_end = body.find('<', text_end);
        if (text_end == std::string_view::npos) {
          text_end = body.size();
          break;
        }
        if (LowerAscii(body.substr(text_end, 3)) == "</a") break;
        ++text_end;
      }
      std::string text = DecodeEntities(Trim(body.substr(pos, text_end - pos)));
      auto href = tag.attrs.find("href");
      if (href == tag.attrs.end()) continue;
      auto resolved = ResolveUrl(base, href->second);
      if (!resolved.ok()) continue;
      DistFile f;
      f.url = *resolved;
      size_t hash = href->second.find('#');
      if (hash != std::string::npos) {
        AddHashPair(std::string_view(href->second).substr(hash + 1), f.hashes);
      }
      f.filename = LastSegment(f.url);
      if (f.filename.empty()) f.filename = text;
      if (auto it = tag.attrs.find("data-requires-python"); it != tag.attrs.end()) {
        f.requires_python = it->second;
      }
      if (auto it = tag.attrs.find("data-yanked"); it != tag.attrs.end()) f.yanked = it->second;
      auto cm = tag.attrs.find("data-core-metadata");
      if (cm == tag.attrs.end()) cm = tag.attrs.find("data-dist-info-metadata");
      if (cm != tag.attrs.end()) SetCoreMetadata(cm->second, f);
      page.files.push_back(std::move(f));
    }
  }
  if (!page.api_version.starts_with("1.") && page.api_version != "1") {
    return InvalidArgument("unsupported simple API version " + page.api_version);
  }
  return page;
}

Result<ProjectPage> ParseProjectPage(std::string_view body, std::string_view content_type,
                                     std::string_view base_url) {
  std::string type = LowerAscii(Trim(content_type.substr(0, content_type.find(';'))));
  if (type == "application/json" ||
      (type.starts_with("application/vnd.pypi.simple.") && type.ends_with("+json"))) {
    return ParseJsonPage(body, base_url);
  }
  return ParseHtmlPage(body, base_url);
}

std::string_view ContentTypeFor(Format format) {
  switch (format) {
    case Format::kHtml:
      return "text/html; charset=utf-8";
    case Format::kHtmlV1:
      return "application/vnd.pypi.simple.v1+html";
    case Format::kJsonV1:
      return "application/vnd.pypi.simple.v1+json";
  }
  return "text/html; charset=utf-8";
}

Format NegotiateFormat(std::string_view accept) {
  std::vector<MediaRange> ranges = ParseAccept(accept);
  if (ranges.empty()) return Format::kHtml;
  struct Candidate {
    Format format;
    std::string_view type;
    std::string_view subtype;
    std::string_view latest;
  };
  // In server preference order (the last tie-breaker).
  static constexpr std::array<Candidate, 3> kCandidates = {{
      {Format::kHtml, "text", "html", "html"},
      {Format::kHtmlV1, "application", "vnd.pypi.simple.v1+html", "vnd.pypi.simple.latest+html"},
      {Format::kJsonV1, "application", "vnd.pypi.simple.v1+json", "vnd.pypi.simple.latest+json"},
  }};
  struct Score {
    double q = 0;
    int specificity = -1;
    size_t index = 0;
  };
  std::optional<Format> best;
  Score best_score;
  for (const Candidate& c : kCandidates) {
    // The most specific range that matches decides the candidate's q (RFC 9110 12.5.1).
    Score s;
    for (const MediaRange& r : ranges) {
      int spec = -1;
      if (r.type == c.type && (r.subtype == c.subtype || r.subtype == c.latest)) {
        spec = 2;
      } else if (r.type == c.type && r.subtype == "*") {
        spec = 1;
      } else if (r.type == "*" && r.subtype == "*") {
        spec = 0;
      }
      if (spec > s.specificity) s = {r.q, spec, r.index};
    }
    if (s.specificity < 0 || s.q <= 0) continue;
    bool better = !best || s.q > best_score.q ||
                  (s.q == best_score.q &&
                   (s.specificity > best_score.specificity ||
                    (s.specificity == best_score.specificity && s.index < best_score.index)));
    if (better) {
      best = c.format;
      best_score = s;
    }
  }
  return best.value_or(Format::kHtml);
}

std::string RenderHtml(const ProjectPage& page) {
  std::string out;
  out.reserve(256 + page.files.size() * 256);
  out += "<!DOCTYPE html>\n<html>\n  <head>\n";
  out += "    <meta name=\"pypi:repository-version\" content=\"";
  out += IsV11(page) ? "1.1" : "1.0";
  out += "\">\n    <title>Links for ";
  text::AppendMarkupEscaped(out, page.name);
  out += "</title>\n  </head>\n  <body>\n    <h1>Links for ";
  text::AppendMarkupEscaped(out, page.name);
  out += "</h1>\n";
  // Each attribute value is escaped as a whole ("name=hex" values have nothing to escape).
  auto attribute = [&out](std::string_view name, std::string_view value) {
    out += ' ';
    out += name;
    out += "=\"";
    text::AppendMarkupEscaped(out, value);
    out += '"';
  };
  for (const DistFile& f : page.files) {
    out += "    <a href=\"";
    text::AppendMarkupEscaped(out, f.url);
    if (const auto* h = PreferredHash(f.hashes)) {
      out += '#';
      out += h->first;
      out += '=';
      out += h->second;
    }
    out += '"';
    if (!f.requires_python.empty()) attribute("data-requires-python", f.requires_python);
    if (f.core_metadata) {
      std::string value = "true";
      if (const auto* h = PreferredHash(f.core_metadata_hashes)) value = h->first + "=" + h->second;
      attribute("data-dist-info-metadata", value);
      attribute("data-core-metadata", value);
    }
    if (f.yanked) attribute("data-yanked", *f.yanked);
    out += '>';
    text::AppendMarkupEscaped(out, f.filename);
    out += "</a><br />\n";
  }
  out += "  </body>\n</html>\n";
  return out;
}

std::string RenderJson(const ProjectPage& page) {
  bool v11 = IsV11(page);
  Json doc = Json::object();
  doc["meta"] = {{"api-version", v11 ? "1.1" : "1.0"}};
  doc["name"] = page.name;
  Json files = Json::array();
  for (const DistFile& f : page.files) {
    Json jf = Json::object();
    jf["filename"] = f.filename;
    jf["url"] = f.url;
    jf["hashes"] = HashesJson(f.hashes);
    if (!f.requires_python.empty()) jf["requires-python"] = f.requires_python;
    if (f.yanked) {
      jf["yanked"] = f.yanked->empty() ? Json(true) : Json(*f.yanked);
    } else {
      jf["yanked"] = false;
    }
    if (f.core_metadata) {
      Json cm = f.core_metadata_hashes.empty() ? Json(true) : HashesJson(f.core_metadata_hashes);
      jf["core-metadata"] = cm;
      jf["dist-info-metadata"] = cm;
    }
    if (f.size) jf["size"] = *f.size;
    if (!f.upload_time.empty()) jf["upload-time"] = f.upload_time;
    files.push_back(std::move(jf));
  }
  doc["files"] = std::move(files);
  if (v11) doc["versions"] = page.versions;
  // Invalid UTF-8 from an upstream is replaced rather than failing the whole page.
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string Render(const ProjectPage& page, Format format) {
  return format == Format::kJsonV1 ? RenderJson(page) : RenderHtml(page);
}

}  // namespace buildcache::pypi
