// Validation of BuildCache objects: the CRD's structural schema and CEL rules, mirrored so the
// reconciler never acts on what the API server would have rejected.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <regex>
#include <set>

#include "common/config/units.h"
#include "operator/api/buildcache.h"
#include "operator/api/json_util.h"

namespace buildcache::api {

using internal::Quoted;
using internal::Str;
using internal::TypeName;

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
// The CRD's rule: a scheme, "://", and an '@' before the path (user information).
const std::regex& UrlWithUserinfo() {
  static const std::regex re("^[a-zA-Z][-a-zA-Z0-9+.]*://[^/?#]*@");
  return re;
}
const std::regex& HttpUrl() {
  static const std::regex re(R"(^[hH][tT][tT][pP][sS]?://([^/?#@\s]*@)?)"  // scheme, user info
                             R"((\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]\s]+))"     // host: [IPv6] or a name
                             R"((:[0-9]*)?([/?#]\S*)?$)");                 // port, the rest
  return re;
}

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

  // An array of at most max_items objects keyed by a unique DNS-label `name` (a list-map, as
  // builders[] and directories[]): checks the items' types and names, calls
  // item(object, its path, its name or nullptr) for each object, and returns the list, or nullptr
  // when it is absent, not an array or too long. `what` names an item in the messages.
  template <typename ItemCheck>
  const Json* NamedList(const Json& parent, const char* key, const std::string& path,
                        size_t max_items, const std::string& what, ItemCheck&& item) {
    const Json* list = Field(parent, key, path, "array");
    if (list == nullptr || !MaxItems(*list, path, max_items)) return nullptr;
    std::map<std::string, int> names;
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string ip = path + "[" + std::to_string(i) + "]";
      const Json& v = (*list)[i];
      if (!v.is_object()) {
        Add(ip, "Invalid value: " + Quoted(TypeName(v)) + ": " + ip +
                    " in body must be of type object: " + Quoted(TypeName(v)));
        continue;
      }
      const std::string* name = String(v, "name", ip + ".name", 40, true);
      if (name != nullptr) {
        if (++names[*name] == 2) Add(ip, "Duplicate value: {\"name\":" + Quoted(*name) + "}");
        if (!std::regex_match(*name, DnsLabel())) {
          Rule(ip + ".name", v["name"],
               what +
                   " name must be a DNS label (lower-case letters, digits and '-', starting "
                   "with a letter)");
        }
      }
      item(v, ip, name);
    }
    if (std::any_of(names.begin(), names.end(), [](const auto& e) { return e.second > 1; })) {
      Rule(path, *list, what + " names must be unique");
    }
    return list;
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
    if (std::regex_search(*s, UrlWithUserinfo())) {
      Rule(path + ".upstream", parent["upstream"],
           "upstream must not carry credentials (user:password@host): they would be written "
           "into the agents' ConfigMap; use upstreamSecretRef");
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
    if (*host == "/") {
      c.Rule("spec.storage.hostPath", v, "storage.hostPath must not be the root directory");
    }
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

// spec.ecosystems.<name>.upstreamSecretRef.
void CheckUpstreamSecretRef(Checker& c, const Json& mirror, const std::string& p) {
  const Json* ref = c.Field(mirror, "upstreamSecretRef", p + ".upstreamSecretRef", "object");
  if (ref == nullptr) return;
  const std::string rp = p + ".upstreamSecretRef";
  const std::string* name = c.String(*ref, "name", rp + ".name", 253, true);
  if (name != nullptr && !std::regex_match(*name, SumdbName())) {
    c.Rule(rp + ".name", (*ref)["name"],
           "upstreamSecretRef.name must be a Secret name (lower-case letters, digits, '.' and "
           "'-')");
  }
  if (!ref->contains("type") || (*ref)["type"].is_null()) {
    c.Required(rp + ".type");
  } else {
    c.Enum(*ref, "type", rp + ".type", {"basic", "bearer"});
  }
}

// parent.resources at `p`: requests and limits, maps of at most max_names quantities; a request
// must not exceed its limit (`what` names the object in that message). Returns the object when
// both maps are well-formed (their values may still fail to parse), for checks of its own.
const Json* CheckResources(Checker& c, const Json& parent, const std::string& p, size_t max_names,
                           const std::string& what) {
  const Json* res = c.Field(parent, "resources", p, "object");
  if (res == nullptr) return nullptr;
  bool maps_ok = true, quantities_ok = true;
  for (const char* list : {"requests", "limits"}) {
    const std::string lp = p + "." + list;
    const size_t before = c.errors.size();
    c.StringMap(*res, list, lp, max_names, 32);
    if (c.errors.size() != before) {
      maps_ok = quantities_ok = false;
      continue;
    }
    if (!res->contains(list)) continue;
    for (const auto& [name, value] : (*res)[list].items()) {
      if (!ParseQuantity(value.get_ref<const std::string&>())) {
        c.Rule(lp + "[" + name + "]", value, "must be a quantity such as 500m, 2 or 1Gi");
        quantities_ok = false;
      }
    }
  }
  if (quantities_ok && res->contains("requests") && res->contains("limits")) {
    for (const auto& [name, request] : (*res)["requests"].items()) {
      if (!(*res)["limits"].contains(name)) continue;
      auto r = ParseQuantity(request.get_ref<const std::string&>());
      auto l = ParseQuantity((*res)["limits"][name].get_ref<const std::string&>());
      if (r && l && *r > *l) {
        c.Rule(p, *res, what + " requests must not exceed their limits");
        break;
      }
    }
  }
  return maps_ok ? res : nullptr;
}

// A builder's resources: as CheckResources, naming only cpu, memory and ephemeral-storage.
void CheckBuilderResources(Checker& c, const Json& builder, const std::string& p) {
  const Json* res = CheckResources(c, builder, p, 3, "builder resources");
  if (res == nullptr) return;
  for (const char* list : {"requests", "limits"}) {
    if (!res->contains(list)) continue;
    for (const auto& item : (*res)[list].items()) {
      const std::string& name = item.key();
      if (name != "cpu" && name != "memory" && name != "ephemeral-storage") {
        c.Rule(p, *res, "builder resources may name only cpu, memory and ephemeral-storage");
        return;
      }
    }
  }
}

// One item of spec.ecosystems.pypi.builders[] (its name is checked with the list).
void CheckBuilder(Checker& c, const Json& b, const std::string& bp) {
  if (const std::string* image = c.String(b, "image", bp + ".image", 512, true)) {
    static const std::regex kNoSpaces("^[^\\s]+$");
    if (!std::regex_match(*image, kNoSpaces)) {
      c.Rule(bp + ".image", b["image"], "builder image must be an image reference without spaces");
    }
  }
  if (const std::string* python = c.String(b, "python", bp + ".python", 8, true)) {
    static const std::regex kMinor("^[0-9][.][0-9]{1,2}$");
    if (!std::regex_match(*python, kMinor)) {
      c.Rule(bp + ".python", b["python"], "python must be a minor version such as 3.11");
    }
  }
  if (const std::string* libc = c.String(b, "libcVersion", bp + ".libcVersion", 8, true)) {
    static const std::regex kVersion("^[0-9]{1,2}[.][0-9]{1,3}$");
    if (!std::regex_match(*libc, kVersion)) {
      c.Rule(bp + ".libcVersion", b["libcVersion"], "libcVersion must be a version such as 2.36");
    }
  }
  c.Enum(b, "implementation", bp + ".implementation", {"CPython", "PyPy"});
  c.Enum(b, "libc", bp + ".libc", {"glibc", "musl"});
  c.Enum(b, "cpu", bp + ".cpu", {"x86_64", "aarch64"});
  CheckBuilderResources(c, b, bp + ".resources");
}

// spec.ecosystems.pypi's build settings: builders[], buildDeadline, buildFailureTTL, buildWorkers.
void CheckPypiBuilds(Checker& c, const Json& pypi, const std::string& p) {
  c.DurationField(pypi, "buildFailureTTL", p + ".buildFailureTTL");
  const size_t before = c.errors.size();
  c.DurationField(pypi, "buildDeadline", p + ".buildDeadline");
  if (c.errors.size() == before && pypi.contains("buildDeadline") &&
      pypi["buildDeadline"].is_string()) {
    auto d = config::ParseDuration(pypi["buildDeadline"].get<std::string>());
    if (d.ok() && (*d < std::chrono::minutes(1) || *d > std::chrono::hours(2))) {
      c.Rule(p + ".buildDeadline", pypi["buildDeadline"],
             "buildDeadline must be between 1m and 2h");
    }
  }
  c.IntRange(pypi, "buildWorkers", p + ".buildWorkers", 1, 8);
  c.NamedList(
      pypi, "builders", p + ".builders", 16, "builder",
      [&c](const Json& b, const std::string& bp, const std::string*) { CheckBuilder(c, b, bp); });
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
    CheckUpstreamSecretRef(c, *mirror, p);
    if (std::string(name) == "goproxy") CheckSumdb(c, *mirror, p);
    if (std::string(name) == "pypi") {
      c.Field(*mirror, "wheelHouse", p + ".wheelHouse", "boolean");
      CheckPypiBuilds(c, *mirror, p);
    }
  }
  if (const Json* http = c.Field(*eco, "httpcache", "spec.ecosystems.httpcache", "object")) {
    c.ByteSizeField(*http, "maxObjectSize", "spec.ecosystems.httpcache.maxObjectSize", false);
  }
}

void CheckDirectories(Checker& c, const Json& spec, std::optional<uint64_t> storage_max) {
  std::map<std::string, int> mounts;
  bool all_fit = true;
  const Json* dirs = c.NamedList(
      spec, "directories", "spec.directories", 16, "directory",
      [&](const Json& d, const std::string& p, const std::string* name) {
        if (name != nullptr && std::find(std::begin(kEcosystemNames), std::end(kEcosystemNames),
                                         *name) != std::end(kEcosystemNames)) {
          c.Rule(p + ".name", d["name"],
                 "directory name must differ from the ecosystem names (pypi, goproxy, npm, "
                 "cargo, maven, httpcache): pods select both by name");
        }
        if (const std::string* mount = c.String(d, "mountPath", p + ".mountPath", 256, true)) {
          ++mounts[*mount];
          if (mount->empty() || mount->front() != '/' || *mount == "/") {
            c.Rule(p + ".mountPath", d["mountPath"],
                   "mountPath must be an absolute path other than /");
          }
          if (std::regex_search(*mount, DotSegment())) {
            c.Rule(p + ".mountPath", d["mountPath"],
                   "mountPath must not contain '.' or '..' segments");
          }
        }
        auto size = c.ByteSizeField(d, "maxSize", p + ".maxSize", true);
        if (size && storage_max && *size > *storage_max) all_fit = false;
      });
  if (dirs == nullptr) return;
  if (std::any_of(mounts.begin(), mounts.end(), [](const auto& e) { return e.second > 1; })) {
    c.Rule("spec.directories", *dirs, "directory mountPaths must be unique");
  }
  if (!all_fit) {
    c.Rule("spec.directories", spec, "every directory's maxSize must fit within storage.maxSize");
  }
}

const std::regex& ServiceAccountRef() {
  static const std::regex re("^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$");
  return re;
}

// A label selector (matchLabels, matchExpressions) at `p`.
void CheckSelector(Checker& c, const Json& parent, const char* key, const std::string& p) {
  const Json* sel = c.Field(parent, key, p, "object");
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

void CheckTrustedWriters(Checker& c, const Json& access) {
  const std::string p = "spec.access.trustedWriters";
  const Json* tw = c.Field(access, "trustedWriters", p, "object");
  if (tw == nullptr) return;
  CheckSelector(c, *tw, "namespaceSelector", p + ".namespaceSelector");
  const Json* sas = c.Field(*tw, "serviceAccounts", p + ".serviceAccounts", "array");
  if (sas != nullptr && c.MaxItems(*sas, p + ".serviceAccounts", 64)) {
    for (size_t i = 0; i < sas->size(); ++i) {
      const std::string ip = p + ".serviceAccounts[" + std::to_string(i) + "]";
      const Json& sa = (*sas)[i];
      if (!sa.is_string()) {
        c.Add(ip, "Invalid value: " + Quoted(TypeName(sa)) + ": " + ip +
                      " in body must be of type string: " + Quoted(TypeName(sa)));
      } else if (sa.get_ref<const std::string&>().size() > 317) {
        c.Add(ip, "Too long: may not be more than 317 bytes");
      } else if (!std::regex_match(sa.get_ref<const std::string&>(), ServiceAccountRef())) {
        c.Rule(ip, sa,
               "trustedWriters.serviceAccounts entries are NAMESPACE/NAME of a ServiceAccount");
      }
    }
  }
  const Json* pods = c.Field(*tw, "podSelector", p + ".podSelector", "object");
  if (pods == nullptr) return;
  c.StringMap(*pods, "matchLabels", p + ".podSelector.matchLabels", 32, 63);
  if (pods->contains("matchExpressions")) {
    c.Rule(p + ".podSelector", *pods,
           "trustedWriters.podSelector takes matchLabels only: the agents match a pod's labels "
           "exactly");
  }
}

// spec.replication.scopeMissTTL: a duration, and not a negative one (the agent's
// replication.scopeMissTtl takes 0 and up).
void CheckScopeMissTtl(Checker& c, const Json& replication) {
  const std::string p = "spec.replication.scopeMissTTL";
  c.DurationField(replication, "scopeMissTTL", p);
  // Like the API server, rules are checked only on a string within maxLength.
  auto ttl = replication.find("scopeMissTTL");
  if (ttl != replication.end() && ttl->is_string() &&
      ttl->get_ref<const std::string&>().size() <= 32 &&
      ttl->get_ref<const std::string&>().starts_with('-')) {
    c.Rule(p, *ttl, "replication.scopeMissTTL must not be negative (0s asks every time)");
  }
}

// spec.access.attributionLimit: the agent's identity.attributionLimit range, and only where
// callers are identified (otherwise every caller is "(unscoped)").
void CheckAttributionLimit(Checker& c, const Json& access) {
  c.IntRange(access, "attributionLimit", "spec.access.attributionLimit", 0, 10000);
  if (access.contains("attributionLimit") && !access.contains("anonymous") &&
      !access.contains("trustedWriters")) {
    c.Rule("spec.access", access,
           "access.attributionLimit counts callers by namespace, which needs caller identity: "
           "give access.anonymous or access.trustedWriters too");
  }
}

void CheckAccess(Checker& c, const Json& spec) {
  const Json* access = c.Field(spec, "access", "spec.access", "object");
  if (access == nullptr) return;
  c.Field(*access, "networkPolicy", "spec.access.networkPolicy", "boolean");
  c.Enum(*access, "anonymous", "spec.access.anonymous", {"read", "none"});
  CheckAttributionLimit(c, *access);
  CheckTrustedWriters(c, *access);
  CheckSelector(c, *access, "namespaceSelector", "spec.access.namespaceSelector");
}

void CheckAgent(Checker& c, const Json& spec) {
  const Json* agent = c.Field(spec, "agent", "spec.agent", "object");
  if (agent == nullptr) return;
  c.String(*agent, "image", "spec.agent.image", 512);
  c.Enum(*agent, "imagePullPolicy", "spec.agent.imagePullPolicy",
         {"Always", "IfNotPresent", "Never"});
  c.Enum(*agent, "logLevel", "spec.agent.logLevel", {"debug", "info", "warn", "error"});
  CheckResources(c, *agent, "spec.agent.resources", 16, "agent.resources");
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
    CheckScopeMissTtl(c, *rep);
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

}  // namespace

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

}  // namespace buildcache::api
