#pragma once

// For unit tests: a KubeClient over a map of objects, the one in-memory API server the operator's
// and the kubectl plugin's tests share. A test that needs a special answer derives from it and
// overrides that call (calling the base for the rest).

#include <map>
#include <string>
#include <vector>

#include "common/base/thread_annotations.h"
#include "common/kube/api_error.h"
#include "common/kube/kube_client.h"

namespace buildcache::kube::testing {

class MemoryKubeClient : public KubeClient {
 public:
  // The key of `objects`: "plural/namespace/name" ("plural//name" for cluster-scoped objects).
  static std::string Key(const Resource& r, const std::string& ns, const std::string& name) {
    return r.plural + "/" + ns + "/" + name;
  }

  // Objects as stored. Calls hold mu_; a test may read and write the map directly while no call
  // runs on another thread, or through Put and At while one may.
  std::map<std::string, Json> objects;
  // When not OK, every call fails with it.
  Status fail_with = Status::Ok();
  // When not OK, Apply fails with it.
  Status fail_apply = Status::Ok();
  int writes = 0;                     // successful Creates and Updates
  std::vector<std::string> patches;   // per MergePatch: the subresource, or "main"
  std::vector<std::string> deleted;   // per Delete: "plural/name"
  std::vector<ApplyOptions> applies;  // per Apply: its options
  ListOptions last_list;              // selectors are recorded, not applied

  void Put(const std::string& key, Json object) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    objects[key] = std::move(object);
  }
  // The object, or null when there is none.
  Json At(const std::string& key) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = objects.find(key);
    return it != objects.end() ? it->second : Json();
  }

  Result<Json> Get(const Resource& r, const std::string& ns, const std::string& name,
                   const std::string& = "") override EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (!fail_with.ok()) return fail_with;
    auto it = objects.find(Key(r, ns, name));
    if (it == objects.end()) return NotFoundError(r, name, "get");
    return it->second;
  }
  // Every object of the resource in ns (all namespaces when ns is "").
  Result<Json> List(const Resource& r, const std::string& ns,
                    const ListOptions& options = {}) override EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (!fail_with.ok()) return fail_with;
    last_list = options;
    Json items = Json::array();
    const std::string prefix = r.plural + "/" + (ns.empty() ? "" : ns + "/");
    for (const auto& [key, object] : objects) {
      if (key.starts_with(prefix)) items.push_back(object);
    }
    return Json{{"metadata", Json::object()}, {"items", items}};
  }
  // Sets metadata.resourceVersion; AlreadyExists when the key is taken.
  Result<Json> Create(const Resource& r, const Json& object) override EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (!fail_with.ok()) return fail_with;
    const std::string key = Key(r, NamespaceOf(object), NameOf(object));
    if (objects.contains(key)) {
      return ApiErrorStatus(409, R"({"kind":"Status","reason":"AlreadyExists","code":409})",
                            "create");
    }
    return objects[key] = Stored(object);
  }
  // A conflict (IsConflict) when metadata.resourceVersion is not the stored one.
  Result<Json> Update(const Resource& r, const Json& object, const std::string& = "") override
      EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (!fail_with.ok()) return fail_with;
    auto it = objects.find(Key(r, NamespaceOf(object), NameOf(object)));
    if (it == objects.end()) return NotFoundError(r, NameOf(object), "update");
    if (ResourceVersionOf(object) != ResourceVersionOf(it->second)) {
      return ApiErrorStatus(409, R"({"kind":"Status","reason":"Conflict","code":409})", "update");
    }
    return it->second = Stored(object);
  }
  // RFC 7386 (a resourceVersion in the patch is ignored).
  Result<Json> MergePatch(const Resource& r, const std::string& ns, const std::string& name,
                          const Json& patch, const std::string& subresource = "") override
      EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (!fail_with.ok()) return fail_with;
    auto it = objects.find(Key(r, ns, name));
    if (it == objects.end()) return NotFoundError(r, name, "patch");
    Json p = patch;
    if (p.contains("metadata")) p["metadata"].erase("resourceVersion");
    it->second.merge_patch(p);
    patches.push_back(subresource.empty() ? "main" : subresource);
    return it->second;
  }
  // Stores the applied object as it is (no merging with what is stored).
  Result<Json> Apply(const Resource& r, const Json& object, const ApplyOptions& options,
                     const std::string& = "") override EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (!fail_with.ok()) return fail_with;
    applies.push_back(options);
    if (!fail_apply.ok()) return fail_apply;
    return objects[Key(r, NamespaceOf(object), NameOf(object))] = object;
  }
  Status Delete(const Resource& r, const std::string& ns, const std::string& name,
                const DeleteOptions& = {}) override EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (!fail_with.ok()) return fail_with;
    if (objects.erase(Key(r, ns, name)) == 0) return NotFoundError(r, name, "delete");
    deleted.push_back(r.plural + "/" + name);
    return Status::Ok();
  }
  Status Watch(const Resource&, const std::string&, const WatchOptions&, const WatchHandler&,
               std::stop_token = {}) override {
    return Unavailable("Watch is not supported by MemoryKubeClient");
  }

 protected:
  // Held during every call; a derived override that touches `objects` takes it too.
  Mutex mu_;

 private:
  static Status NotFoundError(const Resource& r, const std::string& name, std::string_view verb) {
    return ApiErrorStatus(404,
                          R"({"kind":"Status","reason":"NotFound","code":404,"message":")" +
                              r.plural + " \\\"" + name + "\\\" not found\"}",
                          verb);
  }
  Json Stored(const Json& object) REQUIRES(mu_) {
    Json stored = object;
    stored["metadata"]["resourceVersion"] = std::to_string(++version_);
    ++writes;
    return stored;
  }

  int version_ GUARDED_BY(mu_) = 0;
};

}  // namespace buildcache::kube::testing
