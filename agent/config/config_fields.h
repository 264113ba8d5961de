#pragma once

// The declaration of the agent configuration's keys: one table per section (key, member, kind,
// simple validation rule). Loading, validation, both renderings and the documentation tests walk
// these tables, so a key is declared once (agent_config_fields.cc). Internal to
// buildcache::agent_config.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/config/document.h"
#include "common/status/status.h"

namespace buildcache::agent::fields {

// Collects problems so one run reports all of them, one per line.
class Problems {
 public:
  void Add(const Status& s);
  void Add(std::string message) { Add(InvalidArgument(std::move(message))); }
  Status ToStatus() const { return message_.empty() ? Status::Ok() : InvalidArgument(message_); }

 private:
  std::string message_;
};

enum class Kind {
  kString,
  kBool,
  kInt,       // int64_t
  kDuration,  // std::chrono::nanoseconds, Go syntax
  kByteSize,  // uint64_t, Kubernetes quantity syntax
  kStringList,
  kStringMap,
  kEnum,         // an enum class written as one of a few names
  kSection,      // a nested mapping (a struct member, or a YAML-only grouping of the same struct)
  kSectionList,  // a list of mappings (std::vector of a struct)
};

// What ValidateAgentConfig checks for one field by itself; cross-field rules stay code
// (agent_config.cc). Every message starts with the key path.
struct Rule {
  enum What {
    kNone,
    kPositive,     // durations, byte sizes: "must be greater than 0"
    kNonNegative,  // durations: "must not be negative"
    kRange,        // ints: "must be between LO and HI, got N"
    kUrl,          // strings: "" or an absolute http(s) URL
    kSparseUrl,    // kUrl after an optional "sparse+" prefix (cargo)
    kReadable,     // strings: "" or a file this process can read
  };
  What what = kNone;
  int64_t lo = 0;
  int64_t hi = 0;
  std::string_view lo_text = {};  // how lo is written in the message ("0 (no limit)")
};

struct SectionDef;

// One key of a section. `at` maps the section object to the member (type-erased so one table
// type serves every section).
struct FieldDef {
  std::string_view key;
  Kind kind = Kind::kString;
  std::function<void*(void*)> at;
  Rule rule = {};
  // kEnum: the names a value is written as, and the conversions. kString: the values allowed
  // (empty = any).
  std::vector<std::string_view> names = {};
  std::function<std::string(const void*)> enum_name = {};
  std::function<bool(std::string_view, void*)> enum_parse = {};
  // kSection, kSectionList: the nested section's table.
  const SectionDef* section = nullptr;
  // kSectionList: the vector's size, item i, and resize.
  std::function<size_t(const void*)> list_size = {};
  std::function<void*(void*, size_t)> list_item = {};
  std::function<void(void*, size_t)> list_resize = {};
};

struct SectionDef {
  std::vector<FieldDef> fields;
  // Whether the section's rules (and its subsections') are checked; e.g. pypi only when its
  // upstream is set. Empty = always.
  std::function<bool(const void*)> active = {};
};

// The root table (AgentConfig itself).
const SectionDef& AgentConfigFields();

// Reads the keys of def from node (a mapping) into obj, an object of def's type. Absent keys keep
// their values; every problem is added to p.
void Load(const SectionDef& def, const config::Node& node, void* obj, Problems* p);

// Checks each field's Rule, skipping inactive sections; messages start with path (prefix.key).
void CheckRules(const SectionDef& def, const void* obj, const std::string& prefix, Problems* p);

// Writes obj's keys as block-style YAML at indent (strings quoted, lists and maps in flow style).
void RenderText(const SectionDef& def, const void* obj, int indent, std::string* out);

// Every key path under def: "store.maxSize", "directories[].name", sections included.
void KeyPaths(const SectionDef& def, const std::string& prefix, std::vector<std::string>* out);

// An upstream URL must be absolute http(s) with a host and no whitespace or control characters.
void CheckUpstreamUrl(std::string_view key, const std::string& url, Problems* p);
// file, if set, must be readable by this process.
void CheckReadable(std::string_view key, const std::string& file, Problems* p);

// --- Helpers that build a FieldDef from a member pointer (S the section, B a base of S) ---

template <class T>
constexpr Kind KindOf() {
  if constexpr (std::is_same_v<T, std::string>) return Kind::kString;
  if constexpr (std::is_same_v<T, bool>) return Kind::kBool;
  if constexpr (std::is_same_v<T, int64_t>) return Kind::kInt;
  if constexpr (std::is_same_v<T, std::chrono::nanoseconds>) return Kind::kDuration;
  if constexpr (std::is_same_v<T, uint64_t>) return Kind::kByteSize;
  if constexpr (std::is_same_v<T, std::vector<std::string>>) return Kind::kStringList;
  if constexpr (std::is_same_v<T, std::map<std::string, std::string>>) return Kind::kStringMap;
}

template <class S, class B, class T>
FieldDef F(std::string_view key, T B::*member, Rule rule = {}) {
  static_assert(std::is_base_of_v<B, S>);
  return {.key = key,
          .kind = KindOf<T>(),
          .at = [member](void* s) -> void* { return &(static_cast<S*>(s)->*member); },
          .rule = rule};
}

// A string that must be one of names.
template <class S>
FieldDef OneOf(std::string_view key, std::string S::*member, std::vector<std::string_view> names) {
  FieldDef f = F<S>(key, member);
  f.names = std::move(names);
  return f;
}

// An enum written as names[i] for values[i]; parse (optional) accepts more spellings.
template <class S, class E>
FieldDef Enum(std::string_view key, E S::*member, std::vector<std::string_view> names,
              std::vector<E> values,
              std::type_identity_t<std::function<bool(std::string_view, E*)>> parse = {}) {
  FieldDef f{.key = key, .kind = Kind::kEnum};
  f.at = [member](void* s) -> void* { return &(static_cast<S*>(s)->*member); };
  f.names = names;
  f.enum_name = [names, values](const void* v) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i] == *static_cast<const E*>(v)) return std::string(names[i]);
    }
    return std::string(names.front());
  };
  f.enum_parse = [names, values, parse](std::string_view text, void* v) {
    if (parse) return parse(text, static_cast<E*>(v));
    for (size_t i = 0; i < values.size(); ++i) {
      if (names[i] == text) {
        *static_cast<E*>(v) = values[i];
        return true;
      }
    }
    return false;
  };
  return f;
}

// A nested mapping held in member (of type T, with table def); the member may be S's or one of
// its bases' (B), as for F.
template <class S, class B, class T>
FieldDef Section(std::string_view key, T B::*member, const SectionDef& def) {
  return {.key = key,
          .kind = Kind::kSection,
          .at = [member](void* s) -> void* { return &(static_cast<S*>(s)->*member); },
          .section = &def};
}

// A YAML mapping whose keys are members of the enclosing struct itself (identity.kubernetes).
inline FieldDef Grouping(std::string_view key, const SectionDef& def) {
  return {.key = key, .kind = Kind::kSection, .at = [](void* s) { return s; }, .section = &def};
}

// A list of mappings held in a std::vector<T> member.
template <class S, class T>
FieldDef SectionList(std::string_view key, std::vector<T> S::*member, const SectionDef& def) {
  auto vec = [member](const void* s) -> std::vector<T>& {
    return const_cast<S*>(static_cast<const S*>(s))->*member;
  };
  return {.key = key,
          .kind = Kind::kSectionList,
          .at = [member](void* s) -> void* { return &(static_cast<S*>(s)->*member); },
          .section = &def,
          .list_size = [vec](const void* s) { return vec(s).size(); },
          .list_item = [vec](void* s, size_t i) -> void* { return &vec(s)[i]; },
          .list_resize = [vec](void* s, size_t n) { vec(s).resize(n); }};
}

}  // namespace buildcache::agent::fields
