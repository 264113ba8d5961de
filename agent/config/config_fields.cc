// The walks over the field tables of config_fields.h: load, per-field rules, text rendering and
// the list of key paths.
#include "agent/config/config_fields.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/config/units.h"
#include "common/net/host_port.h"
#include "common/text/quote.h"

namespace buildcache::agent::fields {
namespace {

using text::Quote;

template <class T>
const T& As(const void* p) {
  return *static_cast<const T*>(p);
}

std::string KeyList(const SectionDef& def) {
  std::string keys;
  for (const FieldDef& f : def.fields) keys += (keys.empty() ? "" : ", ") + std::string(f.key);
  return "{" + keys + "}";
}

void LoadEnum(const FieldDef& f, const config::Node& node, void* field, Problems* p) {
  config::Node child = node.Get(f.key);
  if (!child.present()) return;
  Result<std::string> name = child.AsString();
  if (!name.ok()) {
    std::string unused;  // not a string: the message names the allowed values
    return p->Add(node.ReadOneOf(f.key, f.names, &unused));
  }
  if (!f.enum_parse(*name, field)) {
    std::string list;
    for (std::string_view n : f.names) list += (list.empty() ? "" : ", ") + std::string(n);
    p->Add(child.Error("must be one of " + list + "; got " + Quote(*name)));
  }
}

void LoadList(const FieldDef& f, const config::Node& node, void* obj, Problems* p) {
  config::Node list = node.Get(f.key);
  if (!list.present() || list.IsNull()) return;
  if (!list.IsSequence()) return p->Add(list.Error("expected a list of " + KeyList(*f.section)));
  f.list_resize(obj, 0);
  for (size_t i = 0; i < list.size(); ++i) {
    config::Node item = list.Item(i);
    if (!item.IsMap()) {
      p->Add(item.Error("expected a mapping " + KeyList(*f.section)));
      continue;
    }
    const size_t n = f.list_size(obj);
    f.list_resize(obj, n + 1);
    Load(*f.section, item, f.list_item(obj, n), p);
  }
}

void CheckRule(const FieldDef& f, const void* v, const std::string& path, Problems* p) {
  using std::chrono::nanoseconds;
  switch (f.rule.what) {
    case Rule::kNone:
      return;
    case Rule::kPositive:
      if ((f.kind == Kind::kDuration && As<nanoseconds>(v) <= nanoseconds(0)) ||
          (f.kind == Kind::kByteSize && As<uint64_t>(v) == 0)) {
        p->Add(path + ": must be greater than 0");
      }
      return;
    case Rule::kNonNegative:
      if (As<nanoseconds>(v) < nanoseconds(0)) p->Add(path + ": must not be negative");
      return;
    case Rule::kRange: {
      const int64_t n = As<int64_t>(v);
      if (n < f.rule.lo || n > f.rule.hi) {
        std::string lo =
            f.rule.lo_text.empty() ? std::to_string(f.rule.lo) : std::string(f.rule.lo_text);
        p->Add(path + ": must be between " + lo + " and " + std::to_string(f.rule.hi) + ", got " +
               std::to_string(n));
      }
      return;
    }
    case Rule::kUrl:
    case Rule::kSparseUrl: {
      std::string_view url = As<std::string>(v);
      if (f.rule.what == Rule::kSparseUrl && url.starts_with("sparse+")) url.remove_prefix(7);
      if (!url.empty()) CheckUpstreamUrl(path, std::string(url), p);
      return;
    }
    case Rule::kReadable:
      CheckReadable(path, As<std::string>(v), p);
      return;
  }
}

std::string Scalar(const FieldDef& f, const void* v) {
  switch (f.kind) {
    case Kind::kString:
      return Quote(As<std::string>(v));
    case Kind::kBool:
      return As<bool>(v) ? "true" : "false";
    case Kind::kInt:
      return std::to_string(As<int64_t>(v));
    case Kind::kDuration:
      return config::FormatDuration(As<std::chrono::nanoseconds>(v));
    case Kind::kByteSize:
      return config::FormatByteSize(As<uint64_t>(v));
    case Kind::kEnum:
      return f.enum_name(v);
    case Kind::kStringList: {
      std::string out;
      for (const std::string& s : As<std::vector<std::string>>(v)) {
        out += (out.empty() ? "" : ", ") + Quote(s);
      }
      return "[" + out + "]";
    }
    case Kind::kStringMap: {
      std::string out;
      for (const auto& [key, value] : As<std::map<std::string, std::string>>(v)) {
        out += (out.empty() ? "" : ", ") + Quote(key) + ": " + Quote(value);
      }
      return "{" + out + "}";
    }
    case Kind::kSection:
    case Kind::kSectionList:
      break;
  }
  return "";
}

}  // namespace

void Problems::Add(const Status& s) {
  if (s.ok()) return;
  if (!message_.empty()) message_ += "\n";
  message_ += s.message();
}

void Load(const SectionDef& def, const config::Node& node, void* obj, Problems* p) {
  for (const FieldDef& f : def.fields) {
    void* v = f.at(obj);
    switch (f.kind) {
      case Kind::kString:
        if (f.names.empty()) {
          p->Add(node.Read(f.key, static_cast<std::string*>(v)));
        } else {
          p->Add(node.ReadOneOf(f.key, f.names, static_cast<std::string*>(v)));
        }
        break;
      case Kind::kBool:
        p->Add(node.Read(f.key, static_cast<bool*>(v)));
        break;
      case Kind::kInt:
        p->Add(node.Read(f.key, static_cast<int64_t*>(v)));
        break;
      case Kind::kDuration:
        p->Add(node.ReadDuration(f.key, static_cast<std::chrono::nanoseconds*>(v)));
        break;
      case Kind::kByteSize:
        p->Add(node.ReadByteSize(f.key, static_cast<uint64_t*>(v)));
        break;
      case Kind::kStringList:
        p->Add(node.ReadStringList(f.key, static_cast<std::vector<std::string>*>(v)));
        break;
      case Kind::kStringMap:
        p->Add(node.ReadStringMap(f.key, static_cast<std::map<std::string, std::string>*>(v)));
        break;
      case Kind::kEnum:
        LoadEnum(f, node, v, p);
        break;
      case Kind::kSection: {
        Result<config::Node> sub = node.Section(f.key);
        if (!sub.ok()) {
          p->Add(sub.status());
        } else {
          Load(*f.section, *sub, v, p);
        }
        break;
      }
      case Kind::kSectionList:
        LoadList(f, node, obj, p);
        break;
    }
  }
}

void CheckRules(const SectionDef& def, const void* obj, const std::string& prefix, Problems* p) {
  if (def.active && !def.active(obj)) return;
  void* self = const_cast<void*>(obj);  // the accessors are shared with Load; nothing is written
  for (const FieldDef& f : def.fields) {
    const std::string path =
        prefix.empty() ? std::string(f.key) : prefix + "." + std::string(f.key);
    if (f.kind == Kind::kSection) {
      CheckRules(*f.section, f.at(self), path, p);
    } else if (f.kind == Kind::kSectionList) {
      for (size_t i = 0; i < f.list_size(obj); ++i) {
        CheckRules(*f.section, f.list_item(self, i), path + "[" + std::to_string(i) + "]", p);
      }
    } else {
      CheckRule(f, f.at(self), path, p);
    }
  }
}

void RenderText(const SectionDef& def, const void* obj, int indent, std::string* out) {
  void* self = const_cast<void*>(obj);
  const std::string pad(indent, ' ');
  for (const FieldDef& f : def.fields) {
    if (f.kind == Kind::kSection) {
      *out += pad + std::string(f.key) + ":\n";
      RenderText(*f.section, f.at(self), indent + 2, out);
    } else if (f.kind == Kind::kSectionList) {
      const size_t n = f.list_size(obj);
      *out += pad + std::string(f.key) + ":" + (n == 0 ? " []" : "") + "\n";
      for (size_t i = 0; i < n; ++i) {
        std::string item;
        RenderText(*f.section, f.list_item(self, i), indent + 4, &item);
        // "    key: ..." -> "  - key: ..." on the item's first line.
        item.replace(indent + 2, 2, "- ");
        *out += item;
      }
    } else {
      *out += pad + std::string(f.key) + ": " + Scalar(f, f.at(self)) + "\n";
    }
  }
}

void KeyPaths(const SectionDef& def, const std::string& prefix, std::vector<std::string>* out) {
  for (const FieldDef& f : def.fields) {
    const std::string path =
        prefix.empty() ? std::string(f.key) : prefix + "." + std::string(f.key);
    out->push_back(path);
    if (f.kind == Kind::kSection) KeyPaths(*f.section, path, out);
    if (f.kind == Kind::kSectionList) KeyPaths(*f.section, path + "[]", out);
  }
}

void CheckUpstreamUrl(std::string_view key, const std::string& url, Problems* p) {
  bool scheme = url.starts_with("https://") || url.starts_with("http://");
  size_t host_start = url.find("://") + 3;
  bool host = scheme && host_start < url.size() && url[host_start] != '/';
  bool clean = std::none_of(url.begin(), url.end(), [](char ch) {
    return static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f;
  });
  if (!scheme || !host || !clean) {
    p->Add(std::string(key) + ": must be an absolute http:// or https:// URL, got \"" +
           net::RedactUserinfo(url) + "\"");
  }
}

void CheckReadable(std::string_view key, const std::string& file, Problems* p) {
  if (!file.empty() && ::access(file.c_str(), R_OK) != 0) {
    p->Add(std::string(key) + ": cannot read " + Quote(file) + ": " + std::strerror(errno));
  }
}

}  // namespace buildcache::agent::fields
