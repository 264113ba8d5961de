#include "operator/api/buildcache.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>

#include "common/config/units.h"

namespace buildcache::api {

namespace {

// ---- the patterns the CRD's rules use ------------------------------------------------------

const std::regex& DnsLabel() {
  static const std::regex re("^[a-z]([-a-z0-9]*[a-z0-9])?$");
  return re;
}
const std::regex& SumdbName() {
  static const std::regex re("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$");
  return re;
}
const std::regex& ByteSizeSyntax() {
  static const std::regex re("^[0-9]+([.][0-9]+)?(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$");
  return re;
}
const std::regex& DurationSyntax() {
  static const std::regex re("^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$");
  return re;
}
const std::regex& DotSegment() {
  static const std::regex re("(^|/)[.][.]?(/|$)");
  return re;
}
// What Go's url.ParseRequestURI accepts with an http(s) scheme and a non-empty host name.
const std::regex& HttpUrl() {
  static const std::regex re(R"(^[hH][tT][tT][pP][sS]?://([^/?#@\s]*@)?)"  // scheme, user info
                             R"((\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]\s]+))"     // host: [IPv6] or a name
                             R"((:[0-9]*)?([/?#]\S*)?$)");                 // port, the rest
  return re;
}

constexpr char kMetadataTtlDefault[] = "10m";
constexpr char kMaxObjectSizeDefault[] = "1Gi";

std::string TypeName(const Json& v) {
  if (v.is_object()) return "object";
  if (v.is_array()) return "array";
  if (v.is_string()) return "string";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  return "null";
}

std::string Quoted(const std::string& s) { return Json(s).dump(); }

// Walks the object like the API server's structural schema validation, collecting errors.
class Checker {
 public:
  std::vector<FieldError> errors;

  void Add(const std::string& path, std::string message) {
    errors.push_back({path, std::move(message)});
  }
  // A failed CEL rule: the API server names the value's type, not the value.
  void Rule(const std::string& path, const Json& value, const std::string& message) {
    Add(path, "Invalid value: " + Quoted(TypeName(value)) + ": " + message);
  }
  void Required(const std::string& path) { Add(path, "Required value"); }

  // Returns the field when present and of the wanted type; records a type error otherwise.
  const Json* Field(const Json& parent, const char* key, const std::string& path,
                    const char* type) {
    auto it = parent.find(key);
    if (it == parent.end() || it->is_null()) return nullptr;
    bool ok = (std::string(type) == "object" && it->is_object()) ||
              (std::string(type) == "array" && it->is_array()) ||
              (std::string(type) == "string" && it->is_string()) ||
              (std::string(type) == "boolean" && it->is_boolean()) ||
              (std::string(type) == "integer" && it->is_number_integer());
    if (!ok) {
      Add(path, "Invalid value: " + Quoted(TypeName(*it)) + ": " + path +
                    " in body must be of type " + type + ": " + Quoted(TypeName(*it)));
      return nullptr;
    }
    return &*it;
  }

  const Json* Required(const Json& parent, const char* key, const std::string& path,
                       const char* type) {
    if (!parent.contains(key) || parent[key].is_null()) {
      Required(path);
      return nullptr;
    }
    return Field(parent, key, path, type);
  }

  const std::string* String(const Json& parent, const char* key, const std::string& path,
                            size_t max_length, bool required = false) {
    const Json* v =
        required ? Required(parent, key, path, "string") : Field(parent, key, path, "string");
    if (v == nullptr) return nullptr;
    const std::string& s = v->get_ref<const std::string&>();
    if (s.size() > max_length) {
      Add(path, "Too long: may not be more than " + std::to_string(max_length) + " bytes");
      return nullptr;
    }
    return &s;
  }

  void Enum(const Json& parent, const char* key, const std::string& path,
            std::initializer_list<const char*> allowed) {
    const std::string* s = String(parent, key, path, 1024);
    if (s == nullptr) return;
    for (const char* a : allowed) {
      if (*s == a) return;
    }
    std::string list;
    for (const char* a : allowed) {
      if (!list.empty()) list += ", ";
      list += Quoted(a);
    }
    Add(path, "Unsupported value: " + Quoted(*s) + ": supported values: " + list);
  }

  void IntRange(const Json& parent, const char* key, const std::string& path, int64_t min,
                int64_t max) {
    const Json* v = Field(parent, key, path, "integer");
    if (v == nullptr) return;
    int64_t n = v->get<int64_t>();
    if (n < min) {
      Add(path, "Invalid value: " + std::to_string(n) + ": " + path +
                    " in body should be greater than or equal to " + std::to_string(min));
    } else if (n > max) {
      Add(path, "Invalid value: " + std::to_string(n) + ": " + path +
                    " in body should be less than or equal to " + std::to_string(max));
    }
  }

  bool MaxItems(const Json& array, const std::string& path, size_t max) {
    if (array.size() > max) {
      Add(path, "Too many: " + std::to_string(array.size()) + ": must have at most " +
                    std::to_string(max) + " items");
      return false;
    }
    return true;
  }

  // A map of strings to strings (nodeSelector, matchLabels, resource lists).
  void StringMap(const Json& parent, const char* key, const std::string& path, size_t max_props,
                 size_t max_value_length) {
    const Json* m = Field(parent, key, path, "object");
    if (m == nullptr) return;
    if (m->size() > max_props) {
      Add(path, "Too many: " + std::to_string(m->size()) + ": must have at most " +
                    std::to_string(max_props) + " items");
    }
    for (const auto& [k, v] : m->items()) {
      std::string p = path + "." + k;
      if (!v.is_string()) {
        Add(p, "Invalid value: " + Quoted(TypeName(v)) + ": " + p +
                   " in body must be of type string: " + Quoted(TypeName(v)));
      } else if (v.get_ref<const std::string&>().size() > max_value_length) {
        Add(p, "Too long: may not be more than " + std::to_string(max_value_length) + " bytes");
      }
    }
  }

  // A byte size field with the CRD's three rules. Returns the bytes when valid.
  std::optional<uint64_t> ByteSizeField(const Json& parent, const char* key,
                                        const std::string& path, bool required) {
    const std::string* s = String(parent, key, path, 32, required);
    if (s == nullptr) return std::nullopt;
    const Json& v = parent[key];
    if (!std::regex_match(*s, ByteSizeSyntax())) {
      Rule(path, v, "must be a byte size such as 200Gi, 500G or 1073741824");
      return std::nullopt;
    }
    auto bytes = config::ParseByteSize(*s);
    if (!bytes.ok()) {
      Rule(path, v, "must be a whole number of bytes");
      return std::nullopt;
    }
    if (*bytes == 0) {
      Rule(path, v, "must be greater than zero");
      return std::nullopt;
    }
    return *bytes;
  }

  void DurationField(const Json& parent, const char* key, const std::string& path) {
    const std::string* s = String(parent, key, path, 32);
    if (s == nullptr) return;
    if (!std::regex_match(*s, DurationSyntax()) || !config::ParseDuration(*s).ok()) {
      Rule(path, parent[key], "must be a duration such as 30s, 10m or 1h30m");
    }
  }

  void UpstreamField(const Json& parent, const std::string& path) {
    const std::string* s = String(parent, "upstream", path + ".upstream", 2048, true);
    if (s == nullptr) return;
    if (!std::regex_match(*s, HttpUrl())) {
      Rule(path + ".upstream", parent["upstream"],
           "upstream must be an absolute http:// or https:// URL");
    }
  }
};

void CheckTolerations(Checker& c, const Json& spec) {
  const Json* list = c.Field(spec, "tolerations", "spec.tolerations", "array");
  if (list == nullptr || !c.MaxItems(*list, "spec.tolerations", 32)) return;
  for (size_t i = 0; i < list->size(); ++i) {
    std::string p = "spec.tolerations[" + std::to_string(i) + "]";
    const Json& t = (*list)[i];
    if (!t.is_object()) {
      c.Add(p, "Invalid value: " + Quoted(TypeName(t)) + ": " + p +
                   " in body must be of type object: " + Quoted(TypeName(t)));
      continue;
    }
    size_t before = c.errors.size();
    c.String(t, "key", p + ".key", 317);
    c.Enum(t, "operator", p + ".operator", {"Exists", "Equal"});
    c.String(t, "value", p + ".value", 63);
    c.Enum(t, "effect", p + ".effect", {"", "NoSchedule", "PreferNoSchedule", "NoExecute"});
    c.Field(t, "tolerationSeconds", p + ".tolerationSeconds", "integer");
    if (c.errors.size() != before) continue;
    std::string key = t.value("key", ""), op = t.value("operator", ""),
                value = t.value("value", "");
    std::string effect = t.value("effect", "");
    if (op == "Exists" && !value.empty()) {
      c.Rule(p, t, "a toleration with operator Exists must not have a value");
    }
    if (key.empty() && op != "Exists") {
      c.Rule(p, t, "a toleration without a key must use operator Exists");
    }
    if (t.contains("tolerationSeconds") && effect != "NoExecute") {
      c.Rule(p, t, "tolerationSeconds only applies to effect NoExecute");
    }
  }
}

std::optional<uint64_t> CheckStorage(Checker& c, const Json& spec) {
  const Json* storage = c.Required(spec, "storage", "spec.storage", "object");
  if (storage == nullptr) return std::nullopt;
  if (const std::string* host = c.String(*storage, "hostPath", "spec.storage.hostPath", 256)) {
    const Json& v = (*storage)["hostPath"];
    if (host->empty() || host->front() != '/') {
      c.Rule("spec.storage.hostPath", v, "storage.hostPath must be an absolute path");
    }
    if (*host == "/")
      c.Rule("spec.storage.hostPath", v, "storage.hostPath must not be the root directory");
    if (std::regex_search(*host, DotSegment())) {
      c.Rule("spec.storage.hostPath", v, "storage.hostPath must not contain '.' or '..' segments");
    }
  }
  auto max = c.ByteSizeField(*storage, "maxSize", "spec.storage.maxSize", true);
  c.Enum(*storage, "reclaimPolicy", "spec.storage.reclaimPolicy", {"Retain", "Delete"});
  return max;
}

void CheckSumdb(Checker& c, const Json& goproxy, const std::string& p) {
  const Json* sumdb = c.Field(goproxy, "sumdb", p + ".sumdb", "boolean");
  const std::string* name = c.String(goproxy, "sumdbName", p + ".sumdbName", 253);
  if (name != nullptr && !std::regex_match(*name, SumdbName())) {
    c.Rule(p + ".sumdbName", goproxy["sumdbName"],
           "sumdbName must be a host name (lower-case letters, digits, '.' and '-')");
  }
  (void)sumdb;  // sumdb without a name takes the operator's default (operator/controllers/policy)
}

void CheckEcosystems(Checker& c, const Json& spec) {
  const Json* eco = c.Field(spec, "ecosystems", "spec.ecosystems", "object");
  if (eco == nullptr) return;
  for (const char* name : {"pypi", "goproxy", "npm", "cargo", "maven"}) {
    std::string p = std::string("spec.ecosystems.") + name;
    const Json* mirror = c.Field(*eco, name, p, "object");
    if (mirror == nullptr) continue;
    c.UpstreamField(*mirror, p);
    c.DurationField(*mirror, "metadataTTL", p + ".metadataTTL");
    if (std::string(name) == "goproxy") CheckSumdb(c, *mirror, p);
    if (std::string(name) == "pypi") c.Field(*mirror, "wheelHouse", p + ".wheelHouse", "boolean");
  }
  if (const Json* http = c.Field(*eco, "httpcache", "spec.ecosystems.httpcache", "object")) {
    c.ByteSizeField(*http, "maxObjectSize", "spec.ecosystems.httpcache.maxObjectSize", false);
  }
}

void CheckDirectories(Checker& c, const Json& spec, std::optional<uint64_t> storage_max) {
  const Json* dirs = c.Field(spec, "directories", "spec.directories", "array");
  if (dirs == nullptr || !c.MaxItems(*dirs, "spec.directories", 16)) return;
  std::map<std::string, int> names, mounts;
  bool all_fit = true;
  for (size_t i = 0; i < dirs->size(); ++i) {
    std::string p = "spec.directories[" + std::to_string(i) + "]";
    const Json& d = (*dirs)[i];
    if (!d.is_object()) {
      c.Add(p, "Invalid value: " + Quoted(TypeName(d)) + ": " + p +
                   " in body must be of type object: " + Quoted(TypeName(d)));
      continue;
    }
    if (const std::string* name = c.String(d, "name", p + ".name", 40, true)) {
      if (++names[*name] == 2) c.Add(p, "Duplicate value: {\"name\":" + Quoted(*name) + "}");
      if (!std::regex_match(*name, DnsLabel())) {
        c.Rule(p + ".name", d["name"],
               "directory name must be a DNS label (lower-case letters, digits and '-', starting "
               "with a letter)");
      }
      if (std::find(std::begin(kEcosystemNames), std::end(kEcosystemNames), *name) !=
          std::end(kEcosystemNames)) {
        c.Rule(p + ".name", d["name"],
               "directory name must differ from the ecosystem names (pypi, goproxy, npm, cargo, "
               "maven, httpcache): pods select both by name");
      }
    }
    if (const std::string* mount = c.String(d, "mountPath", p + ".mountPath", 256, true)) {
      ++mounts[*mount];
      if (mount->empty() || mount->front() != '/' || *mount == "/") {
        c.Rule(p + ".mountPath", d["mountPath"], "mountPath must be an absolute path other than /");
      }
      if (std::regex_search(*mount, DotSegment())) {
        c.Rule(p + ".mountPath", d["mountPath"], "mountPath must not contain '.' or '..' segments");
      }
    }
    auto size = c.ByteSizeField(d, "maxSize", p + ".maxSize", true);
    if (size && storage_max && *size > *storage_max) all_fit = false;
  }
  if (std::any_of(names.begin(), names.end(), [](const auto& e) { return e.second > 1; })) {
    c.Rule("spec.directories", *dirs, "directory names must be unique");
  }
  if (std::any_of(mounts.begin(), mounts.end(), [](const auto& e) { return e.second > 1; })) {
    c.Rule("spec.directories", *dirs, "directory mountPaths must be unique");
  }
  if (!all_fit) {
    c.Rule("spec.directories", spec, "every directory's maxSize must fit within storage.maxSize");
  }
}

void CheckAccess(Checker& c, const Json& spec) {
  const Json* access = c.Field(spec, "access", "spec.access", "object");
  if (access == nullptr) return;
  c.Field(*access, "networkPolicy", "spec.access.networkPolicy", "boolean");
  std::string p = "spec.access.namespaceSelector";
  const Json* sel = c.Field(*access, "namespaceSelector", p, "object");
  if (sel == nullptr) return;
  c.StringMap(*sel, "matchLabels", p + ".matchLabels", 32, 63);
  const Json* exprs = c.Field(*sel, "matchExpressions", p + ".matchExpressions", "array");
  if (exprs == nullptr || !c.MaxItems(*exprs, p + ".matchExpressions", 16)) return;
  for (size_t i = 0; i < exprs->size(); ++i) {
    std::string ep = p + ".matchExpressions[" + std::to_string(i) + "]";
    const Json& e = (*exprs)[i];
    if (!e.is_object()) {
      c.Add(ep, "Invalid value: " + Quoted(TypeName(e)) + ": " + ep +
                    " in body must be of type object: " + Quoted(TypeName(e)));
      continue;
    }
    size_t before = c.errors.size();
    c.String(e, "key", ep + ".key", 317, true);
    if (!e.contains("operator")) {
      c.Required(ep + ".operator");
    } else {
      c.Enum(e, "operator", ep + ".operator", {"In", "NotIn", "Exists", "DoesNotExist"});
    }
    const Json* values = c.Field(e, "values", ep + ".values", "array");
    if (values != nullptr && c.MaxItems(*values, ep + ".values", 64)) {
      for (size_t j = 0; j < values->size(); ++j) {
        if (!(*values)[j].is_string()) {
          std::string vp = ep + ".values[" + std::to_string(j) + "]";
          c.Add(vp, "Invalid value: " + Quoted(TypeName((*values)[j])) + ": " + vp +
                        " in body must be of type string: " + Quoted(TypeName((*values)[j])));
        }
      }
    }
    if (c.errors.size() != before) continue;
    std::string op = e.value("operator", "");
    bool has_values = values != nullptr && !values->empty();
    bool wants_values = op == "In" || op == "NotIn";
    if (has_values != wants_values) {
      c.Rule(ep, e,
             "operators In and NotIn need values; Exists and DoesNotExist must not have any");
    }
  }
}

void CheckAgent(Checker& c, const Json& spec) {
  const Json* agent = c.Field(spec, "agent", "spec.agent", "object");
  if (agent == nullptr) return;
  c.String(*agent, "image", "spec.agent.image", 512);
  c.Enum(*agent, "imagePullPolicy", "spec.agent.imagePullPolicy",
         {"Always", "IfNotPresent", "Never"});
  c.Enum(*agent, "logLevel", "spec.agent.logLevel", {"debug", "info", "warn", "error"});
  const Json* res = c.Field(*agent, "resources", "spec.agent.resources", "object");
  if (res == nullptr) return;
  bool quantities_ok = true;
  for (const char* list : {"requests", "limits"}) {
    std::string p = std::string("spec.agent.resources.") + list;
    size_t before = c.errors.size();
    c.StringMap(*res, list, p, 16, 32);
    if (c.errors.size() != before) {
      quantities_ok = false;
      continue;
    }
    if (!res->contains(list)) continue;
    for (const auto& [name, value] : (*res)[list].items()) {
      if (!ParseQuantity(value.get_ref<const std::string&>())) {
        c.Rule(p + "[" + name + "]", value, "must be a quantity such as 500m, 2 or 1Gi");
      }
    }
  }
  if (!quantities_ok || !res->contains("requests") || !res->contains("limits")) return;
  for (const auto& [name, request] : (*res)["requests"].items()) {
    if (!(*res)["limits"].contains(name)) continue;
    auto r = ParseQuantity(request.get_ref<const std::string&>());
    auto l = ParseQuantity((*res)["limits"][name].get_ref<const std::string&>());
    if (r && l && *r > *l) {
      c.Rule("spec.agent.resources", *res, "agent.resources requests must not exceed their limits");
      return;
    }
  }
}

void CheckSpec(Checker& c, const Json& spec) {
  c.StringMap(spec, "nodeSelector", "spec.nodeSelector", 32, 63);
  CheckTolerations(c, spec);
  std::optional<uint64_t> storage_max = CheckStorage(c, spec);
  CheckEcosystems(c, spec);
  CheckDirectories(c, spec, storage_max);
  if (const Json* rep = c.Field(spec, "replication", "spec.replication", "object")) {
    c.IntRange(*rep, "copies", "spec.replication.copies", 1, 5);
    c.Field(*rep, "hydrate", "spec.replication.hydrate", "boolean");
    c.Field(*rep, "mutualTLS", "spec.replication.mutualTLS", "boolean");
  }
  CheckAccess(c, spec);
  CheckAgent(c, spec);

  bool any_ecosystem = false;
  if (spec.contains("ecosystems") && spec["ecosystems"].is_object()) {
    for (std::string_view name : kEcosystemNames) {
      auto it = spec["ecosystems"].find(name);
      if (it != spec["ecosystems"].end() && !it->is_null()) any_ecosystem = true;
    }
  }
  bool any_directory = spec.contains("directories") && spec["directories"].is_array() &&
                       !spec["directories"].empty();
  if (!any_ecosystem && !any_directory) {
    c.Rule("spec", spec,
           "spec must enable at least one ecosystem or directory: this BuildCache would cache "
           "nothing");
  }
}

// Conversion helpers for valid (checked) JSON.
std::string Str(const Json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

ByteSize ToByteSize(const std::string& text) {
  auto bytes = config::ParseByteSize(text);
  return {text, bytes.ok() ? *bytes : 0};
}

Ttl ToTtl(const std::string& text) {
  auto d = config::ParseDuration(text);
  return {text, d.ok() ? *d : std::chrono::nanoseconds(0)};
}

std::map<std::string, std::string> ToStringMap(const Json& j, const char* key) {
  std::map<std::string, std::string> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return out;
  for (const auto& [k, v] : it->items()) out[k] = v.get<std::string>();
  return out;
}

Mirror ToMirror(const Json& j) { return {Str(j, "upstream"), ToTtl(Str(j, "metadataTTL"))}; }

Json MirrorToJson(const Mirror& m) {
  return {{"upstream", m.upstream}, {"metadataTTL", m.metadata_ttl.text}};
}

}  // namespace

std::vector<std::string> Ecosystems::Enabled() const {
  std::vector<std::string> out;
  if (pypi) out.emplace_back("pypi");
  if (goproxy) out.emplace_back("goproxy");
  if (npm) out.emplace_back("npm");
  if (cargo) out.emplace_back("cargo");
  if (maven) out.emplace_back("maven");
  if (httpcache) out.emplace_back("httpcache");
  return out;
}

bool LabelSelector::Matches(const std::map<std::string, std::string>& labels) const {
  for (const auto& [k, v] : match_labels) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  for (const LabelSelectorRequirement& r : match_expressions) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    bool in = has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    if (r.op == "In" && !in) return false;
    if (r.op == "NotIn" && in) return false;
    if (r.op == "Exists" && !has) return false;
    if (r.op == "DoesNotExist" && has) return false;
  }
  return true;
}

std::string DefaultHostPath(const std::string& ns, const std::string& name) {
  return "/var/lib/buildcache/" + ns + "/" + name;
}

std::string BuildCache::HostPath() const {
  return spec.storage.host_path.empty() ? DefaultHostPath(ns, name) : spec.storage.host_path;
}

bool BuildCache::AllowsNamespace(const std::string& pod_ns,
                                 const std::map<std::string, std::string>& ns_labels) const {
  if (pod_ns == ns) return true;
  return spec.access.namespace_selector && spec.access.namespace_selector->Matches(ns_labels);
}

Json ApplyDefaults(const Json& object) {
  Json out = object;
  if (!out.is_object()) return out;
  auto spec = out.find("spec");
  if (spec == out.end() || !spec->is_object()) return out;
  auto set_default = [](Json& parent, const char* key, Json value) {
    if (parent.is_object() && (!parent.contains(key) || parent[key].is_null())) {
      parent[key] = std::move(value);
    }
  };
  if (spec->contains("storage")) set_default((*spec)["storage"], "reclaimPolicy", "Retain");
  if (spec->contains("ecosystems") && (*spec)["ecosystems"].is_object()) {
    Json& eco = (*spec)["ecosystems"];
    for (const char* name : {"pypi", "goproxy", "npm", "cargo", "maven"}) {
      if (eco.contains(name)) set_default(eco[name], "metadataTTL", kMetadataTtlDefault);
    }
    if (eco.contains("goproxy")) set_default(eco["goproxy"], "sumdb", true);
    if (eco.contains("pypi")) set_default(eco["pypi"], "wheelHouse", false);
    if (eco.contains("httpcache")) {
      set_default(eco["httpcache"], "maxObjectSize", kMaxObjectSizeDefault);
    }
  }
  set_default(*spec, "replication", Json::object());
  set_default((*spec)["replication"], "copies", 2);
  set_default((*spec)["replication"], "hydrate", true);
  set_default((*spec)["replication"], "mutualTLS", true);
  set_default(*spec, "agent", Json::object());
  set_default((*spec)["agent"], "logLevel", "info");
  return out;
}

std::vector<FieldError> Validate(const Json& object) {
  Checker c;
  if (!object.is_object()) {
    c.Add("<nil>", "Invalid value: " + Quoted(TypeName(object)) + ": must be an object");
    return c.errors;
  }
  std::string name = object.contains("metadata") ? Str(object["metadata"], "name") : "";
  if (name.size() > 40 || !std::regex_match(name, DnsLabel())) {
    c.Rule("<nil>", object,
           "metadata.name must be a DNS label (lower-case letters, digits and '-', starting with "
           "a letter) of at most 40 characters: it names the agent DaemonSet and Service");
  }
  if (const Json* spec = c.Required(object, "spec", "spec", "object")) CheckSpec(c, *spec);
  return c.errors;
}

std::vector<FieldError> ValidateUpdate(const Json& old_object, const Json& new_object) {
  std::vector<FieldError> errors = Validate(new_object);
  auto host = [](const Json& o) -> std::optional<std::string> {
    if (!o.is_object() || !o.contains("spec") || !o["spec"].is_object() ||
        !o["spec"].contains("storage") || !o["spec"]["storage"].is_object()) {
      return std::nullopt;
    }
    const Json& storage = o["spec"]["storage"];
    if (!storage.contains("hostPath") || !storage["hostPath"].is_string()) return std::nullopt;
    return storage["hostPath"].get<std::string>();
  };
  bool both_have_storage = old_object.is_object() && new_object.is_object() &&
                           old_object.contains("spec") && new_object.contains("spec") &&
                           old_object["spec"].contains("storage") &&
                           new_object["spec"].contains("storage");
  if (both_have_storage && host(old_object) != host(new_object)) {
    errors.push_back({"spec.storage",
                      "Invalid value: \"object\": storage.hostPath cannot be changed (the cached "
                      "data lives there); create a new BuildCache instead"});
  }
  return errors;
}

// Converts an object that passed validation.
static Result<BuildCache> FromJsonUnchecked(const Json& object);

Result<BuildCache> FromJson(const Json& input) {
  Json object = ApplyDefaults(input);
  std::vector<FieldError> errors = Validate(object);
  if (!errors.empty()) {
    std::string name =
        object.is_object() && object.contains("metadata") ? Str(object["metadata"], "name") : "";
    std::string text = "BuildCache " + Quoted(name) + " is invalid:";
    for (const FieldError& e : errors) text += "\n" + e.ToString();
    return InvalidArgument(text);
  }
  try {
    return FromJsonUnchecked(object);
  } catch (const Json::exception& e) {
    // Validation covers the spec; a malformed status (or a gap in validation) ends up here.
    return InvalidArgument(std::string("BuildCache: unexpected JSON: ") + e.what());
  }
}

static Result<BuildCache> FromJsonUnchecked(const Json& object) {
  BuildCache out;
  const Json& meta = object.contains("metadata") ? object["metadata"] : Json::object();
  out.name = Str(meta, "name");
  out.ns = Str(meta, "namespace");
  out.uid = Str(meta, "uid");
  out.resource_version = Str(meta, "resourceVersion");
  if (meta.contains("generation") && meta["generation"].is_number_integer()) {
    out.generation = meta["generation"].get<int64_t>();
  }

  const Json& spec = object["spec"];
  BuildCacheSpec& s = out.spec;
  s.node_selector = ToStringMap(spec, "nodeSelector");
  if (spec.contains("tolerations")) {
    for (const Json& t : spec["tolerations"]) {
      Toleration tol{Str(t, "key"), Str(t, "operator"), Str(t, "value"), Str(t, "effect"), {}};
      if (t.contains("tolerationSeconds")) {
        tol.toleration_seconds = t["tolerationSeconds"].get<int64_t>();
      }
      s.tolerations.push_back(std::move(tol));
    }
  }
  const Json& storage = spec["storage"];
  s.storage.host_path = Str(storage, "hostPath");
  s.storage.max_size = ToByteSize(Str(storage, "maxSize"));
  s.storage.reclaim_policy =
      Str(storage, "reclaimPolicy") == "Delete" ? ReclaimPolicy::kDelete : ReclaimPolicy::kRetain;

  if (spec.contains("ecosystems")) {
    const Json& eco = spec["ecosystems"];
    auto mirror = [&](const char* name) -> std::optional<Mirror> {
      if (!eco.contains(name) || eco[name].is_null()) return std::nullopt;
      return ToMirror(eco[name]);
    };
    s.ecosystems.pypi = mirror("pypi");
    if (s.ecosystems.pypi) s.ecosystems.pypi->wheel_house = eco["pypi"].value("wheelHouse", false);
    s.ecosystems.npm = mirror("npm");
    s.ecosystems.cargo = mirror("cargo");
    s.ecosystems.maven = mirror("maven");
    if (eco.contains("goproxy") && !eco["goproxy"].is_null()) {
      s.ecosystems.goproxy = GoProxy{ToMirror(eco["goproxy"]), eco["goproxy"].value("sumdb", true),
                                     Str(eco["goproxy"], "sumdbName")};
    }
    if (eco.contains("httpcache") && !eco["httpcache"].is_null()) {
      s.ecosystems.httpcache = HttpCache{ToByteSize(Str(eco["httpcache"], "maxObjectSize"))};
    }
  }
  if (spec.contains("directories")) {
    for (const Json& d : spec["directories"]) {
      s.directories.push_back({Str(d, "name"), Str(d, "mountPath"), ToByteSize(Str(d, "maxSize"))});
    }
  }
  s.replication.copies = spec["replication"]["copies"].get<int32_t>();
  s.replication.hydrate = spec["replication"]["hydrate"].get<bool>();
  s.replication.mutual_tls = spec["replication"]["mutualTLS"].get<bool>();
  if (spec.contains("access") && spec["access"].contains("networkPolicy")) {
    s.access.network_policy = spec["access"]["networkPolicy"].get<bool>();
  }
  if (spec.contains("access") && spec["access"].contains("namespaceSelector")) {
    const Json& sel = spec["access"]["namespaceSelector"];
    LabelSelector selector;
    selector.match_labels = ToStringMap(sel, "matchLabels");
    if (sel.contains("matchExpressions")) {
      for (const Json& e : sel["matchExpressions"]) {
        LabelSelectorRequirement r{Str(e, "key"), Str(e, "operator"), {}};
        if (e.contains("values")) r.values = e["values"].get<std::vector<std::string>>();
        selector.match_expressions.push_back(std::move(r));
      }
    }
    s.access.namespace_selector = std::move(selector);
  }
  const Json& agent = spec["agent"];
  s.agent.image = Str(agent, "image");
  s.agent.image_pull_policy = Str(agent, "imagePullPolicy");
  s.agent.log_level = Str(agent, "logLevel", "info");
  if (agent.contains("resources")) {
    s.agent.requests = ToStringMap(agent["resources"], "requests");
    s.agent.limits = ToStringMap(agent["resources"], "limits");
  }

  if (object.contains("status") && object["status"].is_object()) {
    const Json& st = object["status"];
    out.status.observed_generation = st.value("observedGeneration", int64_t{0});
    if (st.contains("conditions") && st["conditions"].is_array()) {
      for (const Json& cj : st["conditions"]) {
        if (!cj.is_object()) continue;
        out.status.conditions.push_back({Str(cj, "type"), Str(cj, "status"), Str(cj, "reason"),
                                         Str(cj, "message"), Str(cj, "lastTransitionTime"),
                                         cj.value("observedGeneration", int64_t{0})});
      }
    }
    if (st.contains("nodes") && st["nodes"].is_object()) {
      out.status.desired_nodes = st["nodes"].value("desired", 0);
      out.status.ready_nodes = st["nodes"].value("ready", 0);
    }
    out.status.hit_ratio = Str(st, "hitRatio");
    if (st.contains("ecosystems") && st["ecosystems"].is_array()) {
      for (const Json& e : st["ecosystems"]) {
        if (!e.is_object()) continue;
        const Json& lookups = e.value("lookups", Json());
        out.status.ecosystems.push_back(
            {Str(e, "name"), Str(e, "hitRatio"),
             lookups.is_number_integer() ? lookups.get<int64_t>() : int64_t{0}});
      }
    }
  }
  return out;
}

Json StatusToJson(const BuildCacheStatus& status) {
  Json conditions = Json::array();
  for (const Condition& c : status.conditions) {
    Json cj = {{"type", c.type},
               {"status", c.status},
               {"reason", c.reason},
               {"message", c.message},
               {"lastTransitionTime", c.last_transition_time}};
    if (c.observed_generation != 0) cj["observedGeneration"] = c.observed_generation;
    conditions.push_back(std::move(cj));
  }
  Json out = {{"observedGeneration", status.observed_generation},
              {"conditions", std::move(conditions)},
              {"nodes", {{"desired", status.desired_nodes}, {"ready", status.ready_nodes}}}};
  if (!status.hit_ratio.empty()) out["hitRatio"] = status.hit_ratio;
  if (!status.ecosystems.empty()) {
    Json list = Json::array();
    for (const EcosystemStatus& e : status.ecosystems) {
      list.push_back({{"name", e.name}, {"hitRatio", e.hit_ratio}, {"lookups", e.lookups}});
    }
    out["ecosystems"] = std::move(list);
  }
  return out;
}

Json ToJson(const BuildCache& cache) {
  const BuildCacheSpec& s = cache.spec;
  Json spec = Json::object();
  if (!s.node_selector.empty()) spec["nodeSelector"] = s.node_selector;
  if (!s.tolerations.empty()) {
    Json list = Json::array();
    for (const Toleration& t : s.tolerations) {
      Json tj = Json::object();
      if (!t.key.empty()) tj["key"] = t.key;
      if (!t.op.empty()) tj["operator"] = t.op;
      if (!t.value.empty()) tj["value"] = t.value;
      if (!t.effect.empty()) tj["effect"] = t.effect;
      if (t.toleration_seconds) tj["tolerationSeconds"] = *t.toleration_seconds;
      list.push_back(std::move(tj));
    }
    spec["tolerations"] = std::move(list);
  }
  Json storage = {
      {"maxSize", s.storage.max_size.text},
      {"reclaimPolicy", s.storage.reclaim_policy == ReclaimPolicy::kDelete ? "Delete" : "Retain"}};
  if (!s.storage.host_path.empty()) storage["hostPath"] = s.storage.host_path;
  spec["storage"] = std::move(storage);
  Json eco = Json::object();
  if (s.ecosystems.pypi) {
    eco["pypi"] = MirrorToJson(*s.ecosystems.pypi);
    eco["pypi"]["wheelHouse"] = s.ecosystems.pypi->wheel_house;
  }
  if (s.ecosystems.goproxy) {
    eco["goproxy"] = MirrorToJson(s.ecosystems.goproxy->mirror);
    eco["goproxy"]["sumdb"] = s.ecosystems.goproxy->sumdb;
    if (!s.ecosystems.goproxy->sumdb_name.empty()) {
      eco["goproxy"]["sumdbName"] = s.ecosystems.goproxy->sumdb_name;
    }
  }
  if (s.ecosystems.npm) eco["npm"] = MirrorToJson(*s.ecosystems.npm);
  if (s.ecosystems.cargo) eco["cargo"] = MirrorToJson(*s.ecosystems.cargo);
  if (s.ecosystems.maven) eco["maven"] = MirrorToJson(*s.ecosystems.maven);
  if (s.ecosystems.httpcache) {
    eco["httpcache"] = {{"maxObjectSize", s.ecosystems.httpcache->max_object_size.text}};
  }
  if (!eco.empty()) spec["ecosystems"] = std::move(eco);
  if (!s.directories.empty()) {
    Json list = Json::array();
    for (const Directory& d : s.directories) {
      list.push_back({{"name", d.name}, {"mountPath", d.mount_path}, {"maxSize", d.max_size.text}});
    }
    spec["directories"] = std::move(list);
  }
  spec["replication"] = {{"copies", s.replication.copies},
                         {"hydrate", s.replication.hydrate},
                         {"mutualTLS", s.replication.mutual_tls}};
  if (s.access.namespace_selector) {
    Json sel = Json::object();
    if (!s.access.namespace_selector->match_labels.empty()) {
      sel["matchLabels"] = s.access.namespace_selector->match_labels;
    }
    if (!s.access.namespace_selector->match_expressions.empty()) {
      Json exprs = Json::array();
      for (const LabelSelectorRequirement& r : s.access.namespace_selector->match_expressions) {
        Json rj = {{"key", r.key}, {"operator", r.op}};
        if (!r.values.empty()) rj["values"] = r.values;
        exprs.push_back(std::move(rj));
      }
      sel["matchExpressions"] = std::move(exprs);
    }
    spec["access"] = {{"namespaceSelector", std::move(sel)}};
  }
  if (s.access.network_policy) spec["access"]["networkPolicy"] = true;
  Json agent = {{"logLevel", s.agent.log_level}};
  if (!s.agent.image.empty()) agent["image"] = s.agent.image;
  if (!s.agent.image_pull_policy.empty()) agent["imagePullPolicy"] = s.agent.image_pull_policy;
  if (!s.agent.requests.empty()) agent["resources"]["requests"] = s.agent.requests;
  if (!s.agent.limits.empty()) agent["resources"]["limits"] = s.agent.limits;
  spec["agent"] = std::move(agent);

  Json meta = {{"name", cache.name}};
  if (!cache.ns.empty()) meta["namespace"] = cache.ns;
  if (!cache.uid.empty()) meta["uid"] = cache.uid;
  if (!cache.resource_version.empty()) meta["resourceVersion"] = cache.resource_version;
  if (cache.generation != 0) meta["generation"] = cache.generation;
  return {{"apiVersion", kApiVersion},
          {"kind", kKind},
          {"metadata", std::move(meta)},
          {"spec", std::move(spec)},
          {"status", StatusToJson(cache.status)}};
}

std::optional<long double> ParseQuantity(std::string_view text) {
  // <sign?><digits>[.<digits>] followed by a suffix: binary (Ki..Ei), decimal (n u m "" k M G T
  // P E) or an exponent (e3, E-2). Kubernetes' grammar, as resource.ParseQuantity reads it.
  static const std::regex re(R"(^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                             R"((Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$)");
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_match(text.begin(), text.end(), m, re)) return std::nullopt;
  long double value;
  long double exponent = 0;
  std::string suffix = m[3].str();
  try {
    value = std::stold(m[2].str());
    if (!suffix.empty() && (suffix[0] == 'e' || suffix[0] == 'E')) {
      exponent = std::stold(suffix.substr(1));
    }
  } catch (const std::exception&) {
    return std::nullopt;  // out of range
  }
  static const std::map<std::string, long double> kScale = {{"", 1.0L},
                                                            {"n", 1e-9L},
                                                            {"u", 1e-6L},
                                                            {"m", 1e-3L},
                                                            {"k", 1e3L},
                                                            {"M", 1e6L},
                                                            {"G", 1e9L},
                                                            {"T", 1e12L},
                                                            {"P", 1e15L},
                                                            {"E", 1e18L},
                                                            {"Ki", 1024.0L},
                                                            {"Mi", 1048576.0L},
                                                            {"Gi", 1073741824.0L},
                                                            {"Ti", 1099511627776.0L},
                                                            {"Pi", 1125899906842624.0L},
                                                            {"Ei", 1152921504606846976.0L}};
  auto it = kScale.find(suffix);
  if (it != kScale.end()) {
    value *= it->second;
  } else {
    value *= std::pow(10.0L, exponent);
  }
  if (!std::isfinite(value)) return std::nullopt;
  if (m[1].str() == "-") value = -value;
  return value;
}

}  // namespace buildcache::api
