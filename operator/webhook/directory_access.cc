#include "operator/webhook/directory_access.h"

#include <algorithm>

namespace buildcache::webhook {

namespace {

std::string StringAt(const api::Json& object, const char* key) {
  if (!object.is_object()) return "";
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

ReadOnlyUse DirectoryReadOnlyUse(const std::string& dir) {
  // Checked with the real tools: go fails on a read-only GOCACHE even when every action hits;
  // pip turns its cache off when the directory is not writable; ccache 4.7 with
  // CCACHE_READONLY=true (and CCACHE_TEMPDIR outside the cache) serves hits and compiles misses.
  // The others write lock or index files on every run.
  static const std::set<std::string, std::less<>> kWritableOnly = {
      "gobuild", "gocache",   "gomod",   "gomodcache",    "pip",
      "uv",      "npm-cache", "sccache", "cargo-registry"};
  return kWritableOnly.count(dir) > 0 ? ReadOnlyUse::kNone : ReadOnlyUse::kReadOnly;
}

bool IsTrustedWriter(const api::Json& pod, const std::string& pod_ns,
                     const std::map<std::string, std::string>& ns_labels,
                     const api::BuildCache& cache) {
  if (!cache.spec.access.IdentityEnabled()) return true;
  if (!cache.spec.access.trusted_writers) return false;
  const api::TrustedWriters& tw = *cache.spec.access.trusted_writers;
  if (tw.namespace_selector && tw.namespace_selector->Matches(ns_labels)) return true;
  const api::Json spec = pod.is_object() ? pod.value("spec", api::Json::object()) : api::Json();
  std::string sa = StringAt(spec, "serviceAccountName");
  if (sa.empty()) sa = StringAt(spec, "serviceAccount");
  if (sa.empty()) sa = "default";
  const std::string subject = pod_ns + "/" + sa;
  if (std::find(tw.service_accounts.begin(), tw.service_accounts.end(), subject) !=
      tw.service_accounts.end()) {
    return true;
  }
  if (tw.pod_labels.empty()) return false;
  const api::Json meta = pod.is_object() ? pod.value("metadata", api::Json::object()) : api::Json();
  const api::Json labels =
      meta.is_object() ? meta.value("labels", api::Json::object()) : api::Json();
  return std::all_of(tw.pod_labels.begin(), tw.pod_labels.end(), [&](const auto& want) {
    return StringAt(labels, want.first.c_str()) == want.second;
  });
}

void RestrictDirectories(const api::BuildCache& cache, bool trusted_writer,
                         std::set<std::string>* selected, std::set<std::string>* read_only,
                         std::vector<std::string>* warnings) {
  if (trusted_writer) return;
  for (const api::Directory& d : cache.spec.directories) {
    if (selected->count(d.name) == 0) continue;
    const std::string why = "this pod is not a trusted writer of BuildCache " + cache.ns + "/" +
                            cache.name + " (spec.access.trustedWriters)";
    if (DirectoryReadOnlyUse(d.name) == ReadOnlyUse::kNone) {
      selected->erase(d.name);
      warnings->push_back("buildcache: directory cache \"" + d.name + "\" is not mounted: " + why +
                          ", and its tool cannot use a read-only cache");
      continue;
    }
    read_only->insert(d.name);
    if (d.name != "ccache") {
      warnings->push_back("buildcache: directory cache \"" + d.name +
                          "\" is mounted read-only: " + why);
    }
  }
}

}  // namespace buildcache::webhook
