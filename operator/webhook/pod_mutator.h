#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status/status.h"
#include "operator/api/buildcache.h"
#include "operator/webhook/agent_wait.h"

namespace buildcache::webhook {

// The pure part of the mutating admission webhook: an AdmissionReview (admission.k8s.io/v1) for a
// Pod in, an AdmissionReview with a JSON patch out. Nothing here talks to the API server; the
// BuildCache and the namespace's labels come from a CacheLookup.

using Json = nlohmann::json;

// Pod annotations.
inline constexpr char kCacheAnnotation[] = "buildcache.io/cache";  // "name" or "namespace/name"
inline constexpr char kUseAnnotation[] = "buildcache.io/use";      // "pypi,goproxy,gobuild"

// Go's build cache through the agent (buildcache-gocacheprog as GOCACHEPROG). Offered when
// spec.ecosystems.httpcache is enabled and wired only when buildcache.io/use names it (it adds an
// init container, so it is not part of the default selection). The init container runs the agent
// image's static buildcache-gocacheprog with --install into an emptyDir mounted in every
// container at kGoCacheProgMountPath; GOCACHEPROG runs it from there with the agent's node-local
// Service address and its local directory in the same emptyDir. No hostPath, no privileges: the
// init container satisfies the "restricted" Pod Security profile.
inline constexpr char kGoCacheProgName[] = "gocacheprog";
inline constexpr char kGoCacheProgVolume[] = "buildcache-gocacheprog";
inline constexpr char kGoCacheProgInitName[] = "buildcache-gocacheprog";  // the init container
inline constexpr char kGoCacheProgMountPath[] = "/buildcache/gocacheprog";
// Where the agent image carries the binary (images/agent.Dockerfile, scripts/build-images).
inline constexpr char kGoCacheProgImagePath[] = "/usr/local/bin/buildcache-gocacheprog";

// What the webhook needs besides the BuildCache.
struct MutatorOptions {
  // The image of the gocacheprog init container when the BuildCache names none
  // (spec.agent.image): the operator's --agent-image. With neither, gocacheprog is not wired.
  std::string default_agent_image{};
};

// The GOCACHEPROG value: "<mount>/buildcache-gocacheprog --agent=http://<service>:<port>
// --dir=<mount>/cache".
std::string GoCacheProgCommand(const api::BuildCache& cache);

// Where pods reach their node's agent: the BuildCache's local Service (internalTrafficPolicy
// Local, so a pod always reaches its own node's agent, under the same URL on every node), as
// operator/controllers builds it (controllers::ServiceName, controllers::kServicePort).
// "buildcache-<name>.<namespace>.svc".
std::string AgentServiceHost(const api::BuildCache& cache);
// "http://<AgentServiceHost>" (with ":<port>" unless the Service port is 80).
std::string AgentBaseUrl(const api::BuildCache& cache);
// The node directory behind spec.directories[*] named `dir` (controllers::DirectoryHostPath:
// HostPath()/directories/<dir>), which the agent DaemonSet also mounts.
std::string DirectoryHostPath(const api::BuildCache& cache, const std::string& dir);
// "buildcache-<dir>": the pod volume (and mount) name of a directory cache.
std::string DirectoryVolumeName(const std::string& dir);

// The environment variable a well-known directory cache name is also announced in (so the tool
// finds it whatever HOME is): gobuild/gocache -> GOCACHE, gomod/gomodcache -> GOMODCACHE, pip ->
// PIP_CACHE_DIR, uv -> UV_CACHE_DIR, npm-cache -> npm_config_cache, ccache -> CCACHE_DIR, sccache
// -> SCCACHE_DIR, cargo-registry -> none. "" for other names.
std::string DirectoryEnvVar(const std::string& dir);

// Caller identity (spec.access.trustedWriters or anonymous): every wired container gets a
// ServiceAccount token for audience controllers::kTokenAudience in a projected volume (the
// kubelet rotates it; it lives kTokenExpirationSeconds and is bound to the pod), mounted read-only
// at kTokenDir, with BUILDCACHE_TOKEN_FILE naming the file. Clients that read credentials from a
// file or a helper send it; the others are identified by the pod's address (docs/security.md).
inline constexpr char kTokenVolume[] = "buildcache-token";
inline constexpr char kTokenDir[] = "/var/run/secrets/buildcache.io";
inline constexpr char kTokenFile[] = "/var/run/secrets/buildcache.io/token";
inline constexpr int64_t kTokenExpirationSeconds = 3600;

struct EnvVar {
  std::string name{};
  std::string value{};
};

// The environment variables that point each tool of `ecosystems` (enabled ones only) at the
// agent, and of the directory caches in `directories`, in a fixed order. Directories in
// `read_only` (directory_access.h) get their tool's read-only settings too.
std::vector<EnvVar> CacheEnv(const api::BuildCache& cache, const std::set<std::string>& selected,
                             const std::set<std::string>& read_only = {});

// What a pod asks for, parsed from its annotations against the BuildCache: the selected
// ecosystem and directory names (every enabled one when there is no buildcache.io/use
// annotation), plus warnings for names the cache does not offer.
struct Selection {
  std::set<std::string> names{};
  std::vector<std::string> warnings{};
};
Selection SelectCaches(const Json& pod, const api::BuildCache& cache);

// The RFC 6902 JSON patch that adds the env vars, volumes and mounts of `selected` to every
// container and initContainer of `pod`. Never replaces or removes anything: an env var or a
// volume the pod already has (by name), or a mount on a path (or with a volume name) a container
// already has, is left alone. So patching a patched pod yields an empty patch. Never throws;
// tolerates malformed pod fields by skipping them.
// With kGoCacheProgName selected, also the emptyDir, its mounts and the init container (added
// first among initContainers, image `agent_image`, which must not be empty then). Directories in
// `read_only` are mounted readOnly.
Json BuildPodPatch(const Json& pod, const api::BuildCache& cache,
                   const std::set<std::string>& selected, const std::string& agent_image = "",
                   const std::set<std::string>& read_only = {});

// Where the webhook gets a BuildCache and a namespace's labels from (the API server, or a map in
// tests). Implementations must be thread-safe.
class CacheLookup {
 public:
  virtual ~CacheLookup() = default;
  // kNotFound when there is no such BuildCache.
  virtual Result<api::BuildCache> GetBuildCache(const std::string& ns, const std::string& name) = 0;
  virtual Result<std::map<std::string, std::string>> NamespaceLabels(const std::string& ns) = 0;
};

// An Event the caller should record about a BuildCache (the webhook itself does not write).
struct CacheEvent {
  Json object{};  // the BuildCache (apiVersion, kind, metadata)
  std::string reason{};
  std::string note{};
};

// How a review ended, for metrics (AdmissionOutcomeName gives the label value).
enum class AdmissionOutcome {
  kNotRequested,  // no buildcache.io/cache annotation, or not a pod CREATE
  kMutated,       // the patch adds something
  kUnchanged,     // wired already, or the pod sets everything itself
  kNotAllowed,    // the namespace may not use the BuildCache
  kFailed,        // malformed review, unknown BuildCache, failed lookup
};
std::string_view AdmissionOutcomeName(AdmissionOutcome outcome);

struct AdmissionResult {
  Json review{};  // the AdmissionReview to answer with
  AdmissionOutcome outcome = AdmissionOutcome::kNotRequested;
  bool mutated = false;
  std::optional<CacheEvent> event{};
};

// Answers one AdmissionReview. Fails open: always allowed. A pod without the cache annotation, a
// malformed review, an unknown BuildCache or a failed lookup gives an unchanged pod (with a
// warning for anything but a pod that asked for nothing); a pod whose namespace the BuildCache
// does not allow is unchanged with a warning and an Event on the BuildCache (no Event for a dry
// run: the webhook is registered with sideEffects None). Only CREATE of a Pod is mutated; other
// operations and kinds are allowed unchanged.
AdmissionResult Admit(const Json& review, CacheLookup& lookup, const MutatorOptions& options = {});

}  // namespace buildcache::webhook
