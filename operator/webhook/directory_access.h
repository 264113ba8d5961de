#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "operator/api/buildcache.h"

namespace buildcache::webhook {

// Directory caches are node directories every wired pod mounts: one shared writable tree that no
// agent can check. With caller identity on (spec.access.trustedWriters or anonymous) only trusted
// writers get them read-write; other pods get a read-only mount where the tool works with one,
// and none where it does not (docs/directory-caches.md lists each well-known name).

// How a pod that is not a trusted writer may use a well-known directory cache.
enum class ReadOnlyUse {
  kReadOnly,  // mounted read-only (ccache with CCACHE_READONLY; unknown tools: with a warning)
  kNone,      // not mounted: the tool fails or turns its cache off when it cannot write
};
ReadOnlyUse DirectoryReadOnlyUse(const std::string& dir);

// Whether the pod writes into the trusted scope, by the rules the agents apply
// (spec.access.trustedWriters: its namespace's labels, its ServiceAccount, its labels). True when
// identity is off: then every pod writes everything, as before.
bool IsTrustedWriter(const api::Json& pod, const std::string& pod_ns,
                     const std::map<std::string, std::string>& ns_labels,
                     const api::BuildCache& cache);

// For a pod that is not a trusted writer: removes from `selected` the directories it gets no
// mount of, and returns the ones it gets read-only in `read_only`; each decision adds a warning.
// Does nothing for trusted writers.
void RestrictDirectories(const api::BuildCache& cache, bool trusted_writer,
                         std::set<std::string>* selected, std::set<std::string>* read_only,
                         std::vector<std::string>* warnings);

}  // namespace buildcache::webhook
