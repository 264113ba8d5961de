// Rendering an AgentConfig: the whole of it as YAML that LoadAgentConfig reads back to an equal
// configuration, or some of its keys as a JSON tree (PartialAgentConfig). Both walk the field
// tables of agent_config_fields.cc.
#include <string>

#include "agent/config/agent_config.h"
#include "agent/config/agent_config_tree.h"
#include "agent/config/config_fields.h"
#include "agent/config/quoting.h"
#include "common/base/check.h"
#include "common/config/units.h"
#include "common/text/quote.h"

namespace buildcache::agent {

namespace internal {

std::string Quoted(std::string_view s) { return text::Quote(s); }

}  // namespace internal

std::string RenderAgentConfig(const AgentConfig& c) {
  std::string out;
  fields::RenderText(fields::AgentConfigFields(), &c, 0, &out);
  return out;
}

std::vector<std::string> AgentConfigKeyPaths() {
  std::vector<std::string> paths;
  fields::KeyPaths(fields::AgentConfigFields(), "", &paths);
  return paths;
}

namespace {

using fields::FieldDef;
using fields::Kind;
using fields::SectionDef;
using Json = nlohmann::json;

template <class T>
const T& As(const void* p) {
  return *static_cast<const T*>(p);
}

Json Value(const FieldDef& f, const void* v) {
  switch (f.kind) {
    case Kind::kString:
      return As<std::string>(v);
    case Kind::kBool:
      return As<bool>(v);
    case Kind::kInt:
      return As<int64_t>(v);
    case Kind::kDuration:
      return config::FormatDuration(As<std::chrono::nanoseconds>(v));
    case Kind::kByteSize:
      return config::FormatByteSize(As<uint64_t>(v));
    case Kind::kEnum:
      return f.enum_name(v);
    case Kind::kStringList:
      return As<std::vector<std::string>>(v);
    case Kind::kStringMap:
      return As<std::map<std::string, std::string>>(v);
    case Kind::kSection:
    case Kind::kSectionList:
      break;
  }
  return nullptr;
}

// The marked fields of obj (a section of type def) into out; counts the marks used.
void Marked(const SectionDef& def, const void* obj, const std::set<const void*>& marked,
            size_t* used, Json* out) {
  void* self = const_cast<void*>(obj);  // the accessors are shared with loading; nothing is written
  for (const FieldDef& f : def.fields) {
    const void* v = f.at(self);
    const std::string key(f.key);
    if (f.kind == Kind::kSection) {
      Json sub = Json::object();
      Marked(*f.section, v, marked, used, &sub);
      if (!sub.empty()) (*out)[key] = std::move(sub);
    } else if (f.kind == Kind::kSectionList) {
      Json items = Json::array();
      for (size_t i = 0; i < f.list_size(obj); ++i) {
        Json item = Json::object();
        Marked(*f.section, f.list_item(self, i), marked, used, &item);
        items.push_back(std::move(item));
      }
      const bool listed = marked.contains(v);
      if (listed) ++*used;
      if (listed ||
          std::any_of(items.begin(), items.end(), [](const Json& i) { return !i.empty(); })) {
        (*out)[key] = std::move(items);
      }
    } else if (marked.contains(v)) {
      ++*used;
      (*out)[key] = Value(f, v);
    }
  }
}

}  // namespace

nlohmann::json PartialAgentConfig::ToJson() const {
  Json out = Json::object();
  size_t used = 0;
  Marked(fields::AgentConfigFields(), &config_, marked_, &used, &out);
  CHECK(used == marked_.size()) << "a marked address is not a key of the agent configuration ("
                                << marked_.size() - used << " of " << marked_.size() << ")";
  return out;
}

}  // namespace buildcache::agent
