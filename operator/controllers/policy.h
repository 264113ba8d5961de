#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status/status.h"
#include "operator/api/buildcache.h"
#include "operator/controllers/owned_objects.h"

namespace buildcache::controllers {

// What the operator's installer allows BuildCache authors to ask for. A BuildCache becomes agent
// pods that run as root with its hostPath mounted read-write on every selected node, so whoever
// may create BuildCaches chooses what runs as root there; these limits are set by the operator's
// flags (chart values), not by the spec.
struct SpecPolicy {
  // Image repositories agents may run. An image is allowed when it is one of them, optionally
  // followed by ":TAG" and/or "@DIGEST" ("registry.example.internal/bc/agent" allows
  // "registry.example.internal/bc/agent:1.2" and "...agent@sha256:..."); nothing else matches (no
  // prefixes, no other repositories under the same path). The operator's own agent image
  // (BuildOptions::agent_image) is always allowed.
  std::vector<std::string> allowed_images{};
  // Every hostPath (storage.hostPath, or the default under it) must lie strictly beneath this
  // directory. Empty: no limit.
  std::string host_path_root = "/var/lib/buildcache";
  // The Go checksum database name for BuildCaches with goproxy.sumdb on (the default) that name
  // none (the first word of the go command's GOSUMDB). Empty: such BuildCaches are refused.
  std::string go_sumdb_name{};
};

// Whether `image` is one of the allowed repositories (with any tag or digest).
bool ImageAllowed(std::string_view image, const std::vector<std::string>& repositories);

// An absolute path with repeated and trailing '/' removed ("/a//b/" -> "/a/b"), so that two
// spellings of one directory compare equal (the CRD already refuses '.' and '..' segments).
std::string NormalizeHostPath(std::string_view path);

// Whether two absolute paths overlap once normalized: equal, or one is a directory above the
// other. (Symbolic links on the node cannot be seen from here: the agent's data-directory lock
// catches two agents on one store however its path is spelled.)
bool HostPathsOverlap(std::string_view a, std::string_view b);

// Checks `cache` against the policy and fills what the policy decides (the sumdb name).
// kPermissionDenied for an image or hostPath the policy does not allow, kFailedPrecondition when
// goproxy.sumdb is on and no database is named; the message says what to change.
Status ApplyPolicy(api::BuildCache* cache, const SpecPolicy& policy, const BuildOptions& build);

// One BuildCache's claim on a node directory, for the overlap check.
struct HostPathClaim {
  std::string key{};                 // "namespace/name"
  std::string host_path{};           // BuildCache::HostPath()
  std::string creation_timestamp{};  // RFC 3339, as the API server writes it
};

// The claim among `others` that overlaps `mine` and was made first (older creationTimestamp, then
// the smaller key), if any: that BuildCache keeps the directory and `mine` gets no agents.
// `others` may include `mine` (skipped by key).
std::optional<HostPathClaim> EarlierOverlappingClaim(const HostPathClaim& mine,
                                                     const std::vector<HostPathClaim>& others);

// The claim of a BuildCache object as the API server returns it (its spec need not be valid: an
// object the operator refuses still names a hostPath). nullopt when it names no usable path.
std::optional<HostPathClaim> ClaimOf(const api::Json& object);

}  // namespace buildcache::controllers
