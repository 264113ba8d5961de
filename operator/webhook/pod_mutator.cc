#include "operator/webhook/pod_mutator.h"

#include <algorithm>
#include <string_view>

#include "common/kube/config.h"
#include "operator/controllers/agent_identity.h"
#include "operator/controllers/owned_objects.h"
#include "operator/webhook/directory_access.h"

namespace buildcache::webhook {

namespace {

constexpr char kWarningPrefix[] = "buildcache: ";

const Json* Find(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string StringField(const Json& object, std::string_view key) {
  const Json* v = Find(object, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : "";
}

std::string Annotation(const Json& pod, const char* key) {
  const Json* meta = Find(pod, "metadata");
  const Json* annotations = meta != nullptr ? Find(*meta, "annotations") : nullptr;
  return annotations != nullptr ? StringField(*annotations, key) : "";
}

std::string Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

// JSON pointer token escaping (RFC 6901).
std::string Escape(std::string_view token) {
  std::string out;
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

// Appends "add" operations for `items` to the array at `path` in `parent[key]`: one op creating
// the array when it is missing, else one op per item appended at the end.
void AddToArray(Json& patch, const Json& parent, const std::string& path, std::string_view key,
                const std::vector<Json>& items) {
  if (items.empty()) return;
  const Json* existing = Find(parent, key);
  std::string array_path = path + "/" + Escape(key);
  if (existing == nullptr || existing->is_null()) {
    patch.push_back({{"op", "add"}, {"path", array_path}, {"value", items}});
    return;
  }
  if (!existing->is_array()) return;  // malformed: leave it to the API server to reject
  for (const Json& item : items) {
    patch.push_back({{"op", "add"}, {"path", array_path + "/-"}, {"value", item}});
  }
}

bool HasNamed(const Json* list, const std::string& name) {
  if (list == nullptr || !list->is_array()) return false;
  return std::any_of(list->begin(), list->end(),
                     [&](const Json& e) { return StringField(e, "name") == name; });
}

bool HasMountPath(const Json* list, const std::string& path) {
  if (list == nullptr || !list->is_array()) return false;
  return std::any_of(list->begin(), list->end(),
                     [&](const Json& e) { return StringField(e, "mountPath") == path; });
}

Json Allowed(const std::string& uid, const std::vector<std::string>& warnings) {
  Json response = {{"uid", uid}, {"allowed", true}};
  if (!warnings.empty()) response["warnings"] = warnings;
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"response", std::move(response)}};
}

}  // namespace

std::string_view AdmissionOutcomeName(AdmissionOutcome outcome) {
  switch (outcome) {
    case AdmissionOutcome::kNotRequested:
      return "not_requested";
    case AdmissionOutcome::kMutated:
      return "mutated";
    case AdmissionOutcome::kUnchanged:
      return "unchanged";
    case AdmissionOutcome::kNotAllowed:
      return "not_allowed";
    case AdmissionOutcome::kFailed:
      return "failed";
  }
  return "failed";
}

std::string AgentServiceHost(const api::BuildCache& cache) {
  return controllers::ServiceName(cache) + "." + cache.ns + ".svc";
}

std::string AgentBaseUrl(const api::BuildCache& cache) {
  std::string url = "http://" + AgentServiceHost(cache);
  if (controllers::kServicePort != 80) url += ":" + std::to_string(controllers::kServicePort);
  return url;
}

std::string DirectoryHostPath(const api::BuildCache& cache, const std::string& dir) {
  return controllers::DirectoryHostPath(cache, dir);
}

std::string DirectoryVolumeName(const std::string& dir) { return "buildcache-" + dir; }

std::string DirectoryEnvVar(const std::string& dir) {
  static const std::map<std::string, std::string, std::less<>> kVars = {
      {"gobuild", "GOCACHE"},
      {"gocache", "GOCACHE"},
      {"gomod", "GOMODCACHE"},
      {"gomodcache", "GOMODCACHE"},
      {"pip", "PIP_CACHE_DIR"},
      {"uv", "UV_CACHE_DIR"},
      {"npm-cache", "npm_config_cache"},
      {"ccache", "CCACHE_DIR"},
      {"sccache", "SCCACHE_DIR"}};
  auto it = kVars.find(dir);
  return it == kVars.end() ? "" : it->second;
}

std::string GoCacheProgCommand(const api::BuildCache& cache) {
  return std::string(kGoCacheProgMountPath) + "/buildcache-gocacheprog --agent=http://" +
         AgentServiceHost(cache) + ":" + std::to_string(controllers::kServicePort) +
         " --dir=" + kGoCacheProgMountPath + "/cache";
}

std::vector<EnvVar> CacheEnv(const api::BuildCache& cache, const std::set<std::string>& selected,
                             const std::set<std::string>& read_only) {
  const std::string base = AgentBaseUrl(cache);
  const api::Ecosystems& eco = cache.spec.ecosystems;
  auto want = [&](const char* name) { return selected.count(name) > 0; };
  std::vector<EnvVar> env;
  if (eco.pypi && want("pypi")) {
    std::string index = base + "/pypi/simple/";
    env.push_back({"PIP_INDEX_URL", index});
    // The agent speaks plain HTTP inside the cluster; pip refuses such an index otherwise.
    env.push_back({"PIP_TRUSTED_HOST", AgentServiceHost(cache)});
    env.push_back({"UV_INDEX_URL", index});
  }
  if (eco.goproxy && want("goproxy")) {
    // With sumdb enabled the agent answers <GOPROXY>/sumdb/<name>/supported, so the go command
    // proxies its checksum database (GOSUMDB, left as it is) through the agent by itself.
    env.push_back({"GOPROXY", base + "/gomod"});
  }
  if (eco.npm && want("npm")) {
    env.push_back({"npm_config_registry", base + "/npm/"});
    // Lockfiles record each tarball's URL, which names the agent's in-cluster Service; this makes
    // npm fetch locked tarballs from whatever registry is configured wherever the lockfile is
    // used, instead of a host that only resolves inside the cluster.
    env.push_back({"npm_config_replace_registry_host", "always"});
    // pnpm 10 and newer read only their own prefix from the environment.
    env.push_back({"pnpm_config_registry", base + "/npm/"});
    // Yarn 1 reads YARN_REGISTRY (npm_config_registry only through an .npmrc it finds).
    env.push_back({"YARN_REGISTRY", base + "/npm/"});
  }
  if (eco.cargo && want("cargo")) {
    // Environment variables cannot replace crates-io (the [source] table is file-only), so the
    // agent is announced as the registry "buildcache"; a config.toml line `[source.crates-io]
    // replace-with = "buildcache"` makes it the default.
    env.push_back({"CARGO_REGISTRIES_CRATES_IO_PROTOCOL", "sparse"});
    env.push_back({"CARGO_REGISTRIES_BUILDCACHE_INDEX", "sparse+" + base + "/cargo/index/"});
  }
  if (eco.maven && want("maven")) {
    // Maven takes mirrors only from settings.xml, which interpolates ${env.BUILDCACHE_MAVEN_URL}.
    env.push_back({"BUILDCACHE_MAVEN_URL", base + "/maven/"});
  }
  if (eco.httpcache && want(kGoCacheProgName)) {
    env.push_back({"GOCACHEPROG", GoCacheProgCommand(cache)});
  }
  if (eco.httpcache && want("httpcache")) {
    env.push_back({"CCACHE_REMOTE_STORAGE", base + "/cache/ccache"});
    // No trailing slash: sccache appends "/<key>" itself.
    env.push_back({"SCCACHE_WEBDAV_ENDPOINT", base + "/cache/sccache"});
    // Bazel (--remote_cache) and Gradle (settings.gradle) read it from their own configuration.
    env.push_back({"BUILDCACHE_HTTP_CACHE_URL", base + "/cache/"});
  }
  for (const api::Directory& d : cache.spec.directories) {
    if (!want(d.name.c_str())) continue;
    std::string var = DirectoryEnvVar(d.name);
    if (!var.empty()) env.push_back({var, d.mount_path});
    if (d.name == "ccache" && read_only.count(d.name) > 0) {
      // Hits from the shared tree, misses compiled without storing; ccache's temporary files
      // go outside the read-only mount.
      env.push_back({"CCACHE_READONLY", "true"});
      env.push_back({"CCACHE_TEMPDIR", "/tmp"});
    }
  }
  if (cache.spec.access.IdentityEnabled()) env.push_back({"BUILDCACHE_TOKEN_FILE", kTokenFile});
  return env;
}

Selection SelectCaches(const Json& pod, const api::BuildCache& cache) {
  std::set<std::string> offered;
  for (const std::string& name : cache.spec.ecosystems.Enabled()) offered.insert(name);
  for (const api::Directory& d : cache.spec.directories) offered.insert(d.name);

  Selection out;
  std::string use = Annotation(pod, kUseAnnotation);
  if (use.empty()) {
    out.names = offered;
    return out;
  }
  if (cache.spec.ecosystems.httpcache) offered.insert(kGoCacheProgName);  // only when named
  size_t start = 0;
  while (start <= use.size()) {
    size_t comma = use.find(',', start);
    if (comma == std::string::npos) comma = use.size();
    std::string name = Trim(std::string_view(use).substr(start, comma - start));
    start = comma + 1;
    if (name.empty()) continue;
    if (offered.count(name) > 0) {
      out.names.insert(name);
    } else {
      out.warnings.push_back(std::string(kWarningPrefix) + "BuildCache " + cache.ns + "/" +
                             cache.name + " offers no cache named \"" + name +
                             "\" (buildcache.io/use); ignored");
    }
  }
  return out;
}

namespace {

// The init container that copies the agent image's buildcache-gocacheprog into the emptyDir.
// Non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp: admissible under
// the "restricted" Pod Security profile.
Json GoCacheProgInitContainer(const api::BuildCache& cache, const std::string& image) {
  Json c = {
      {"name", kGoCacheProgInitName},
      {"image", image},
      {"command", {kGoCacheProgImagePath, std::string("--install=") + kGoCacheProgMountPath}},
      {"volumeMounts", {{{"name", kGoCacheProgVolume}, {"mountPath", kGoCacheProgMountPath}}}},
      {"resources",
       {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}}, {"limits", {{"memory", "64Mi"}}}}},
      {"securityContext",
       {{"runAsNonRoot", true},
        {"runAsUser", 65532},
        {"allowPrivilegeEscalation", false},
        {"readOnlyRootFilesystem", true},
        {"capabilities", {{"drop", {"ALL"}}}},
        {"seccompProfile", {{"type", "RuntimeDefault"}}}}}};
  if (!cache.spec.agent.image_pull_policy.empty()) {
    c["imagePullPolicy"] = cache.spec.agent.image_pull_policy;
  }
  return c;
}

}  // namespace

Json BuildPodPatch(const Json& pod, const api::BuildCache& cache,
                   const std::set<std::string>& selected, const std::string& agent_image,
                   const std::set<std::string>& read_only) {
  Json patch = Json::array();
  const Json* spec = Find(pod, "spec");
  if (spec == nullptr || !spec->is_object()) return patch;

  std::vector<const api::Directory*> dirs;
  for (const api::Directory& d : cache.spec.directories) {
    if (selected.count(d.name) > 0) dirs.push_back(&d);
  }

  // Volumes: a pod volume with our name is taken to be ours (or deliberately the pod's own).
  std::vector<Json> volumes;
  const Json* pod_volumes = Find(*spec, "volumes");
  for (const api::Directory* d : dirs) {
    std::string name = DirectoryVolumeName(d->name);
    if (HasNamed(pod_volumes, name)) continue;
    volumes.push_back(
        {{"name", name},
         {"hostPath",
          {{"path", DirectoryHostPath(cache, d->name)}, {"type", "DirectoryOrCreate"}}}});
  }
  const bool gocacheprog = selected.count(kGoCacheProgName) > 0 &&
                           cache.spec.ecosystems.httpcache && !agent_image.empty() &&
                           !HasNamed(pod_volumes, kGoCacheProgVolume);
  if (gocacheprog) volumes.push_back({{"name", kGoCacheProgVolume}, {"emptyDir", Json::object()}});
  const bool token = cache.spec.access.IdentityEnabled();
  const bool add_token = token && !HasNamed(pod_volumes, kTokenVolume);
  if (add_token) {
    Json source = {{"audience", controllers::kTokenAudience},
                   {"expirationSeconds", kTokenExpirationSeconds},
                   {"path", "token"}};
    volumes.push_back(
        {{"name", kTokenVolume},
         {"projected",
          {{"defaultMode", 0444}, {"sources", Json::array({{{"serviceAccountToken", source}}})}}}});
  }
  AddToArray(patch, *spec, "/spec", "volumes", volumes);
  // The API server projects tokens only for a named ServiceAccount; the ServiceAccount admission
  // plugin (which runs before webhooks) names "default" when the pod names none, and so does
  // this where that plugin is off.
  if (add_token && StringField(*spec, "serviceAccountName").empty()) {
    patch.push_back({{"op", "add"}, {"path", "/spec/serviceAccountName"}, {"value", "default"}});
  }

  std::set<std::string> wired = selected;
  if (!gocacheprog) wired.erase(kGoCacheProgName);  // no binary to point GOCACHEPROG at
  const std::vector<EnvVar> env = CacheEnv(cache, wired, read_only);
  for (const char* kind : {"initContainers", "containers"}) {
    const Json* containers = Find(*spec, kind);
    if (containers == nullptr || !containers->is_array()) continue;
    for (size_t i = 0; i < containers->size(); ++i) {
      const Json& c = (*containers)[i];
      if (!c.is_object()) continue;
      if (StringField(c, "name") == kGoCacheProgInitName) continue;  // ours, from a first pass
      if (StringField(c, "name") == kAgentWaitContainer) continue;   // ours: needs no caches
      std::string path = std::string("/spec/") + kind + "/" + std::to_string(i);
      const Json* c_env = Find(c, "env");
      std::vector<Json> env_items;
      for (const EnvVar& e : env) {
        if (!HasNamed(c_env, e.name)) env_items.push_back({{"name", e.name}, {"value", e.value}});
      }
      AddToArray(patch, c, path, "env", env_items);

      const Json* mounts = Find(c, "volumeMounts");
      std::vector<Json> mount_items;
      for (const api::Directory* d : dirs) {
        std::string name = DirectoryVolumeName(d->name);
        if (HasNamed(mounts, name) || HasMountPath(mounts, d->mount_path)) continue;
        Json mount = {{"name", name}, {"mountPath", d->mount_path}};
        if (read_only.count(d->name) > 0) mount["readOnly"] = true;
        mount_items.push_back(std::move(mount));
      }
      if (gocacheprog && !HasMountPath(mounts, kGoCacheProgMountPath)) {
        mount_items.push_back({{"name", kGoCacheProgVolume}, {"mountPath", kGoCacheProgMountPath}});
      }
      if (token && !HasNamed(mounts, kTokenVolume) && !HasMountPath(mounts, kTokenDir)) {
        mount_items.push_back(
            {{"name", kTokenVolume}, {"mountPath", kTokenDir}, {"readOnly", true}});
      }
      AddToArray(patch, c, path, "volumeMounts", mount_items);
    }
  }
  if (gocacheprog) {
    // Last, so the per-container operations above still address the pod's own indexes; first
    // among initContainers, so the pod's own init containers can build with it too.
    Json init = GoCacheProgInitContainer(cache, agent_image);
    const Json* inits = Find(*spec, "initContainers");
    if (inits == nullptr || inits->is_null()) {
      patch.push_back({{"op", "add"}, {"path", "/spec/initContainers"}, {"value", {init}}});
    } else if (inits->is_array()) {
      patch.push_back({{"op", "add"}, {"path", "/spec/initContainers/0"}, {"value", init}});
    }
  }
  return patch;
}

namespace {

// The pod's namespace: the request's, else the object's.
std::string PodNamespace(const Json& request, const Json& pod) {
  std::string ns = StringField(request, "namespace");
  if (ns.empty()) {
    const Json* meta = Find(pod, "metadata");
    if (meta != nullptr) ns = StringField(*meta, "namespace");
  }
  return ns;
}

// The pod's name, or "GENERATENAME*" before the API server has named it.
std::string PodName(const Json& pod) {
  std::string name;
  if (const Json* meta = Find(pod, "metadata")) {
    name = StringField(*meta, "name");
    if (name.empty()) name = StringField(*meta, "generateName") + "*";
  }
  return name;
}

// The warning for a BuildCache (NAMESPACE/NAME) that could not be read.
std::string LookupWarning(const Status& status, const std::string& key) {
  return std::string(kWarningPrefix) +
         (status.code() == StatusCode::kNotFound
              ? "BuildCache " + key + " not found"
              : "cannot read BuildCache " + key + ": " + status.ToString()) +
         "; pod admitted without caches";
}

// A dry run's side effects (events) are left out.
bool IsDryRun(const Json& request) {
  const Json* dry_run = Find(request, "dryRun");
  return dry_run != nullptr && dry_run->is_boolean() && dry_run->get<bool>();
}

// kCacheAnnotation's "NAME" (in the pod's namespace) or "NAMESPACE/NAME".
std::pair<std::string, std::string> SplitCacheRef(const std::string& ref,
                                                  const std::string& pod_ns) {
  if (size_t slash = ref.find('/'); slash != std::string::npos) {
    return {ref.substr(0, slash), ref.substr(slash + 1)};
  }
  return {pod_ns, ref};
}

}  // namespace

AdmissionResult Admit(const Json& review, CacheLookup& lookup, const MutatorOptions& options) {
  AdmissionResult result;
  const Json* request = Find(review, "request");
  std::string uid = request != nullptr ? StringField(*request, "uid") : "";
  std::vector<std::string> warnings;
  auto allow = [&](AdmissionOutcome outcome) {
    result.outcome = outcome;
    result.review = Allowed(uid, warnings);
    return result;
  };
  if (request == nullptr || !request->is_object() || uid.empty()) {
    warnings.push_back(std::string(kWarningPrefix) +
                       "malformed AdmissionReview (no request.uid); pod admitted unchanged");
    return allow(AdmissionOutcome::kFailed);
  }
  // Only new pods are wired: a patch adding env to a running pod's spec would fail its update.
  std::string operation = StringField(*request, "operation");
  const Json* kind = Find(*request, "kind");
  std::string kind_name = kind != nullptr ? StringField(*kind, "kind") : "";
  if ((!operation.empty() && operation != "CREATE") || (!kind_name.empty() && kind_name != "Pod")) {
    return allow(AdmissionOutcome::kNotRequested);
  }
  const Json* pod = Find(*request, "object");
  if (pod == nullptr || !pod->is_object()) {
    warnings.push_back(std::string(kWarningPrefix) +
                       "AdmissionReview without a pod object; admitted unchanged");
    return allow(AdmissionOutcome::kFailed);
  }
  std::string ref = Annotation(*pod, kCacheAnnotation);
  if (ref.empty()) return allow(AdmissionOutcome::kNotRequested);  // the pod asked for nothing

  const std::string pod_ns = PodNamespace(*request, *pod);
  auto [cache_ns, cache_name] = SplitCacheRef(ref, pod_ns);
  if (cache_ns.empty() || cache_name.empty()) {
    warnings.push_back(std::string(kWarningPrefix) + "annotation " + kCacheAnnotation + "=\"" +
                       ref + "\" does not name a BuildCache; pod admitted without caches");
    return allow(AdmissionOutcome::kFailed);
  }

  Result<api::BuildCache> cache = lookup.GetBuildCache(cache_ns, cache_name);
  if (!cache.ok()) {
    warnings.push_back(LookupWarning(cache.status(), cache_ns + "/" + cache_name));
    return allow(AdmissionOutcome::kFailed);
  }

  std::map<std::string, std::string> ns_labels;
  if (pod_ns != cache->ns) {
    Result<std::map<std::string, std::string>> labels = lookup.NamespaceLabels(pod_ns);
    if (!labels.ok()) {
      warnings.push_back(std::string(kWarningPrefix) + "cannot read namespace " + pod_ns + ": " +
                         labels.status().ToString() + "; pod admitted without caches");
      return allow(AdmissionOutcome::kFailed);
    }
    ns_labels = std::move(*labels);
  }
  if (!cache->AllowsNamespace(pod_ns, ns_labels)) {
    std::string note = "namespace " + pod_ns + " is not allowed to use BuildCache " + cache->ns +
                       "/" + cache->name + " (spec.access.namespaceSelector)";
    warnings.push_back(std::string(kWarningPrefix) + note + "; pod admitted without caches");
    if (!IsDryRun(*request)) {
      result.event = CacheEvent{api::ToJson(*cache), "NamespaceNotAllowed",
                                "pod " + pod_ns + "/" + PodName(*pod) + " was not wired: " + note};
    }
    return allow(AdmissionOutcome::kNotAllowed);
  }

  Selection selection = SelectCaches(*pod, *cache);
  warnings.insert(warnings.end(), selection.warnings.begin(), selection.warnings.end());
  const std::string agent_image =
      cache->spec.agent.image.empty() ? options.default_agent_image : cache->spec.agent.image;
  if (selection.names.count(kGoCacheProgName) > 0 && agent_image.empty()) {
    selection.names.erase(kGoCacheProgName);
    warnings.push_back(std::string(kWarningPrefix) +
                       "no agent image to take buildcache-gocacheprog from; gocacheprog not wired");
  }
  // Directory caches are writable for trusted writers only; the namespace's labels decide too.
  const std::optional<api::TrustedWriters>& writers = cache->spec.access.trusted_writers;
  if (pod_ns == cache->ns && writers && writers->namespace_selector) {
    Result<std::map<std::string, std::string>> labels = lookup.NamespaceLabels(pod_ns);
    if (labels.ok()) ns_labels = std::move(*labels);  // unreadable: not trusted by namespace
  }
  std::set<std::string> read_only;
  RestrictDirectories(*cache, IsTrustedWriter(*pod, pod_ns, ns_labels, *cache), &selection.names,
                      &read_only, &warnings);
  Json patch = BuildPodPatch(*pod, *cache, selection.names, agent_image, read_only);
  // The wait container runs the agent image too: without one known, the pod starts at once.
  WiringOptions wiring{.agent_image = options.default_agent_image};
  if (!patch.empty() && !agent_image.empty()) AddAgentWait(patch, *pod, *cache, wiring, warnings);
  result.review = Allowed(uid, warnings);
  result.outcome = patch.empty() ? AdmissionOutcome::kUnchanged : AdmissionOutcome::kMutated;
  if (!patch.empty()) {
    result.review["response"]["patchType"] = "JSONPatch";
    result.review["response"]["patch"] = kube::Base64Encode(patch.dump());
    result.mutated = true;
  }
  return result;
}

}  // namespace buildcache::webhook
