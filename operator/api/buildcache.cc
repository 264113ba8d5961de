#include "operator/api/buildcache.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>

#include "common/config/units.h"
#include "operator/api/json_util.h"

namespace buildcache::api {

using internal::Quoted;
using internal::Str;

namespace {

constexpr char kMetadataTtlDefault[] = "10m";
constexpr char kMaxObjectSizeDefault[] = "1Gi";
constexpr char kBuildDeadlineDefault[] = "15m";
constexpr char kBuildFailureTtlDefault[] = "1h";

// Conversion helpers for valid (checked) JSON.

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

LabelSelector ToSelector(const Json& sel) {
  LabelSelector selector;
  selector.match_labels = ToStringMap(sel, "matchLabels");
  if (sel.contains("matchExpressions")) {
    for (const Json& e : sel["matchExpressions"]) {
      LabelSelectorRequirement r{Str(e, "key"), Str(e, "operator"), {}};
      if (e.contains("values")) r.values = e["values"].get<std::vector<std::string>>();
      selector.match_expressions.push_back(std::move(r));
    }
  }
  return selector;
}

Json SelectorToJson(const LabelSelector& selector) {
  Json sel = Json::object();
  if (!selector.match_labels.empty()) sel["matchLabels"] = selector.match_labels;
  if (!selector.match_expressions.empty()) {
    Json exprs = Json::array();
    for (const LabelSelectorRequirement& r : selector.match_expressions) {
      Json rj = {{"key", r.key}, {"operator", r.op}};
      if (!r.values.empty()) rj["values"] = r.values;
      exprs.push_back(std::move(rj));
    }
    sel["matchExpressions"] = std::move(exprs);
  }
  return sel;
}

Mirror ToMirror(const Json& j) {
  Mirror m{Str(j, "upstream"), ToTtl(Str(j, "metadataTTL"))};
  if (j.contains("upstreamSecretRef") && j["upstreamSecretRef"].is_object()) {
    const Json& ref = j["upstreamSecretRef"];
    m.upstream_secret_ref = UpstreamSecretRef{Str(ref, "name"), Str(ref, "type")};
  }
  return m;
}

Json MirrorToJson(const Mirror& m);

PypiBuilds ToPypiBuilds(const Json& pypi) {
  PypiBuilds out;
  out.deadline = ToTtl(Str(pypi, "buildDeadline", kBuildDeadlineDefault));
  out.failure_ttl = ToTtl(Str(pypi, "buildFailureTTL", kBuildFailureTtlDefault));
  out.workers = pypi.value("buildWorkers", 1);
  if (!pypi.contains("builders") || !pypi["builders"].is_array()) return out;
  for (const Json& b : pypi["builders"]) {
    PypiBuilder builder{Str(b, "name"),          Str(b, "image"),
                        Str(b, "python"),        Str(b, "implementation", "CPython"),
                        Str(b, "libc", "glibc"), Str(b, "libcVersion"),
                        Str(b, "cpu", "x86_64")};
    if (b.contains("resources")) {
      builder.requests = ToStringMap(b["resources"], "requests");
      builder.limits = ToStringMap(b["resources"], "limits");
    }
    out.builders.push_back(std::move(builder));
  }
  return out;
}

Json PypiToJson(const Mirror& m) {
  Json j = MirrorToJson(m);
  j["wheelHouse"] = m.wheel_house;
  const PypiBuilds& b = m.builds;
  j["buildDeadline"] = b.deadline.text;
  j["buildFailureTTL"] = b.failure_ttl.text;
  j["buildWorkers"] = b.workers;
  if (b.builders.empty()) return j;
  Json list = Json::array();
  for (const PypiBuilder& builder : b.builders) {
    Json bj = {{"name", builder.name},     {"image", builder.image},
               {"python", builder.python}, {"implementation", builder.implementation},
               {"libc", builder.libc},     {"libcVersion", builder.libc_version},
               {"cpu", builder.cpu}};
    if (!builder.requests.empty()) bj["resources"]["requests"] = builder.requests;
    if (!builder.limits.empty()) bj["resources"]["limits"] = builder.limits;
    list.push_back(std::move(bj));
  }
  j["builders"] = std::move(list);
  return j;
}

Json MirrorToJson(const Mirror& m) {
  Json j = {{"upstream", m.upstream}, {"metadataTTL", m.metadata_ttl.text}};
  if (m.upstream_secret_ref) {
    j["upstreamSecretRef"] = {{"name", m.upstream_secret_ref->name},
                              {"type", m.upstream_secret_ref->type}};
  }
  return j;
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

const PypiBuilder* PypiBuilds::Find(const std::string& name) const {
  for (const PypiBuilder& b : builders) {
    if (b.name == name) return &b;
  }
  return nullptr;
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
    if (eco.contains("pypi") && eco["pypi"].is_object()) {
      Json& pypi = eco["pypi"];
      set_default(pypi, "wheelHouse", false);
      set_default(pypi, "buildDeadline", kBuildDeadlineDefault);
      set_default(pypi, "buildFailureTTL", kBuildFailureTtlDefault);
      set_default(pypi, "buildWorkers", 1);
      if (pypi.contains("builders") && pypi["builders"].is_array()) {
        for (Json& b : pypi["builders"]) {
          set_default(b, "implementation", "CPython");
          set_default(b, "libc", "glibc");
          set_default(b, "cpu", "x86_64");
        }
      }
    }
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

// Over 80 lines on purpose: one flat read per CRD field, in the CRD's order, so a new field is one
// line here beside its neighbours (see the CRD touch list in docs/development.md).
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
    if (s.ecosystems.pypi) {
      s.ecosystems.pypi->wheel_house = eco["pypi"].value("wheelHouse", false);
      s.ecosystems.pypi->builds = ToPypiBuilds(eco["pypi"]);
    }
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
  if (spec["replication"].contains("scopeMissTTL")) {
    s.replication.scope_miss_ttl = ToTtl(Str(spec["replication"], "scopeMissTTL"));
  }
  if (spec.contains("access") && spec["access"].contains("networkPolicy")) {
    s.access.network_policy = spec["access"]["networkPolicy"].get<bool>();
  }
  if (spec.contains("access") && spec["access"].contains("namespaceSelector")) {
    s.access.namespace_selector = ToSelector(spec["access"]["namespaceSelector"]);
  }
  if (spec.contains("access")) {
    const Json& access = spec["access"];
    s.access.anonymous = Str(access, "anonymous");
    if (access.contains("attributionLimit")) {
      s.access.attribution_limit = access["attributionLimit"].get<int32_t>();
    }
    if (access.contains("trustedWriters")) {
      const Json& tw = access["trustedWriters"];
      TrustedWriters writers;
      if (tw.contains("namespaceSelector")) {
        writers.namespace_selector = ToSelector(tw["namespaceSelector"]);
      }
      if (tw.contains("serviceAccounts")) {
        writers.service_accounts = tw["serviceAccounts"].get<std::vector<std::string>>();
      }
      if (tw.contains("podSelector")) {
        writers.pod_labels = ToStringMap(tw["podSelector"], "matchLabels");
      }
      s.access.trusted_writers = std::move(writers);
    }
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
    out.status.identity = Str(st, "identity");
    if (st.contains("ecosystems") && st["ecosystems"].is_array()) {
      for (const Json& e : st["ecosystems"]) {
        if (!e.is_object()) continue;
        const Json& lookups = e.value("lookups", Json());
        out.status.ecosystems.push_back(
            {Str(e, "name"), Str(e, "hitRatio"),
             lookups.is_number_integer() ? lookups.get<int64_t>() : int64_t{0}});
      }
    }
    out.status.top_namespaces = TopNamespacesFromJson(st);
  }
  return out;
}

std::vector<NamespaceStatus> TopNamespacesFromJson(const Json& status) {
  std::vector<NamespaceStatus> out;
  if (!status.is_object() || !status.contains("topNamespaces") ||
      !status["topNamespaces"].is_array()) {
    return out;
  }
  auto integer = [](const Json& e, const char* key) {
    const Json& v = e.value(key, Json());
    return v.is_number_integer() ? v.get<int64_t>() : int64_t{0};
  };
  for (const Json& e : status["topNamespaces"]) {
    if (!e.is_object()) continue;
    const Json& name = e.value("name", Json());
    const Json& ratio = e.value("hitRatio", Json());
    out.push_back({name.is_string() ? name.get<std::string>() : "", integer(e, "savedBytes"),
                   ratio.is_string() ? ratio.get<std::string>() : "", integer(e, "lookups")});
  }
  return out;
}

Json TopNamespacesToJson(const std::vector<NamespaceStatus>& top) {
  Json list = Json::array();
  for (const NamespaceStatus& n : top) {
    list.push_back({{"name", n.name},
                    {"savedBytes", n.saved_bytes},
                    {"hitRatio", n.hit_ratio},
                    {"lookups", n.lookups}});
  }
  return list;
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
  if (!status.identity.empty()) out["identity"] = status.identity;
  if (!status.ecosystems.empty()) {
    Json list = Json::array();
    for (const EcosystemStatus& e : status.ecosystems) {
      list.push_back({{"name", e.name}, {"hitRatio", e.hit_ratio}, {"lookups", e.lookups}});
    }
    out["ecosystems"] = std::move(list);
  }
  if (!status.top_namespaces.empty()) {
    out["topNamespaces"] = TopNamespacesToJson(status.top_namespaces);
  }
  return out;
}

// Over 80 lines on purpose: the mirror of FromJsonUnchecked, one write per CRD field.
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
    eco["pypi"] = PypiToJson(*s.ecosystems.pypi);
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
  if (s.replication.scope_miss_ttl) {
    spec["replication"]["scopeMissTTL"] = s.replication.scope_miss_ttl->text;
  }
  if (s.access.namespace_selector) {
    spec["access"] = {{"namespaceSelector", SelectorToJson(*s.access.namespace_selector)}};
  }
  if (s.access.network_policy) spec["access"]["networkPolicy"] = true;
  if (!s.access.anonymous.empty()) spec["access"]["anonymous"] = s.access.anonymous;
  if (s.access.attribution_limit) {
    spec["access"]["attributionLimit"] = *s.access.attribution_limit;
  }
  if (s.access.trusted_writers) {
    const TrustedWriters& tw = *s.access.trusted_writers;
    Json writers = Json::object();
    if (tw.namespace_selector) {
      writers["namespaceSelector"] = SelectorToJson(*tw.namespace_selector);
    }
    if (!tw.service_accounts.empty()) writers["serviceAccounts"] = tw.service_accounts;
    if (!tw.pod_labels.empty()) writers["podSelector"] = {{"matchLabels", tw.pod_labels}};
    spec["access"]["trustedWriters"] = std::move(writers);
  }
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
