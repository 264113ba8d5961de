#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/kube/kube_client.h"
#include "common/status/status.h"
#include "operator/api/buildcache.h"
#include "operator/webhook/pod_mutator.h"

namespace buildcache::cli {

// The kubectl plugin (`kubectl buildcache ...`, binary kubectl-buildcache): reads BuildCaches
// through the operator's KubeClient and shows their status, or the environment a pod would get
// from the admission webhook (computed by the webhook's own functions, so the two cannot differ).

using Json = nlohmann::json;

enum class Command { kHelp, kVersion, kStatus, kEnv, kPurge };
enum class OutputFormat { kTable, kJson };
enum class EnvFormat { kShell, kDotenv, kGithub };

struct Options {
  Command command = Command::kHelp;
  std::string name{};  // status: optional; env: required
  std::string ns{};    // -n; "" means the kubeconfig's namespace
  bool all_namespaces = false;
  OutputFormat output = OutputFormat::kTable;
  std::optional<std::string> use{};  // env --use: "pypi,gobuild"; nullopt means everything
  EnvFormat env_format = EnvFormat::kShell;
  std::string kubeconfig{};  // --kubeconfig; "" for the usual search ($KUBECONFIG, ...)
  std::string context{};     // --context
  std::string key{};         // purge --key: the store key to remove from every agent
  // purge --prefix: remove every store key starting with it (never empty: refused by ParseArgs)
  std::optional<std::string> prefix{};
};

std::string Usage();

// Parses the plugin's arguments (argv[0] is the program). Fails with kInvalidArgument and a
// one-line message for unknown commands, flags or values and for missing arguments.
Result<Options> ParseArgs(int argc, const char* const* argv);

// One BuildCache as `status` shows it, read tolerantly from the object's JSON (a status written by
// an older or newer operator still shows what is there).
struct CacheSummary {
  std::string ns{};
  std::string name{};
  std::string ready{};  // the Ready condition's status: "True", "False", "Unknown"; "" if none
  std::string ready_reason{};
  int64_t nodes_ready = 0;
  int64_t nodes_desired = 0;
  std::string max_size{};   // spec.storage.maxSize as written ("200Gi")
  std::string hit_ratio{};  // status.hitRatio; "" while unknown
  struct Ecosystem {
    std::string name{};
    std::string hit_ratio{};
    int64_t lookups = 0;
  };
  std::vector<Ecosystem> ecosystems{};  // status.ecosystems, by name
  std::string identity{};               // status.identity ("off", "podAddress+token;...")
  // status.topNamespaces: the caller namespaces the cache saved the most bytes for, most first.
  std::vector<api::NamespaceStatus> top_namespaces{};
  std::optional<std::chrono::system_clock::time_point> created{};
};
CacheSummary Summarize(const Json& object);

// kubectl's age notation: "45s", "12m", "5h", "3d"; "<unknown>" without a time.
std::string FormatAge(std::optional<std::chrono::system_clock::time_point> created,
                      std::chrono::system_clock::time_point now);

// "512B", "3.0KiB", "1.5GiB": binary units, one decimal above bytes.
std::string FormatBytes(int64_t bytes);

// The status table (with a NAMESPACE column when `with_namespace`), one line per cache; then,
// when any cache reports status.topNamespaces, a second table of them (cache, caller namespace,
// bytes saved, hit ratio, lookups).
std::string RenderStatusTable(const std::vector<CacheSummary>& caches, bool with_namespace,
                              std::chrono::system_clock::time_point now);
// {"items": [{"namespace", "name", "ready", "readyReason", "nodes": {"ready", "desired"},
// "maxSize", "hitRatio", "ecosystems": [{"name", "hitRatio", "lookups"}], "identity",
// "topNamespaces": [{"name", "savedBytes", "hitRatio", "lookups"}], "creationTimestamp"}]}
Json RenderStatusJson(const std::vector<CacheSummary>& caches);

// The environment the webhook gives a pod that asks for `cache` with buildcache.io/use set to
// `use` (nullopt: no annotation, so every cache). Unlike the webhook, which must fail open and
// only warns, a name the cache does not offer is an error (kInvalidArgument naming it).
Result<std::vector<webhook::EnvVar>> PodEnv(const api::BuildCache& cache,
                                            const std::optional<std::string>& use);

// The variables as `format`: shell (`export NAME='value'`, for eval), dotenv (`NAME=value`, for
// docker --env-file and the like, which take the value verbatim), or github (the $GITHUB_ENV
// file syntax, with a heredoc for multi-line values). Values a format cannot carry (a newline in
// dotenv) are kInvalidArgument. `comment` (the agent's address) is a leading # line in the
// formats that allow comments.
Result<std::string> RenderEnv(const std::vector<webhook::EnvVar>& env, EnvFormat format,
                              const std::string& comment);

// Runs a status or env command against `client` and returns what to print; on failure, a Status
// whose message is one line. `default_ns` is used when options.ns is "".
Result<std::string> Run(const Options& options, kube::KubeClient& client,
                        const std::string& default_ns, std::chrono::system_clock::time_point now);

// An agent's HTTP port reached through the API server's pod proxy
// (/api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH), so Kubernetes RBAC (pods/proxy) decides who
// may call it. Implemented over RestKubeClient in main, by a fake in tests.
class AgentProxy {
 public:
  struct Answer {
    int status = 0;
    std::string body{};
  };
  virtual ~AgentProxy() = default;
  // POSTs to path_and_query (starting with '/') on the pod's port with the given headers.
  // Transport failures are a non-OK Status; any HTTP answer is an Answer.
  virtual Result<Answer> Post(const std::string& ns, const std::string& pod, int port,
                              const std::string& path_and_query,
                              const std::vector<std::pair<std::string, std::string>>& headers) = 0;
};

// What `purge` prints (one line per agent pod) and whether any agent failed.
struct PurgeReport {
  std::string text{};
  bool failed = false;
};

// `kubectl buildcache purge NAME --key KEY`: reads the admin token from the Secret
// buildcache-NAME-admin, lists the pods of the DaemonSet buildcache-NAME, and POSTs
// /admin/purge?key=KEY to each through `proxy` with the token in X-Buildcache-Admin-Token (the
// pod proxy consumes the Authorization header). An agent that cannot be reached or answers other
// than 200 marks the report failed; the others are still called. Errors before any agent is
// called (no Secret, no DaemonSet, no pods) are a Status.
//
// With --prefix P it POSTs /admin/purge?prefix=P to each agent, repeating with after=NEXT while
// the agent answers a non-empty next (at most kMaxPurgeCallsPerAgent calls; an agent with more
// left fails the report), and reports the keys removed per agent, and the keys the agent could
// not check (stored before it recorded key names) when there are any.
inline constexpr int kMaxPurgeCallsPerAgent = 1000;
Result<PurgeReport> RunPurge(const Options& options, kube::KubeClient& client, AgentProxy& proxy,
                             const std::string& ns);

}  // namespace buildcache::cli
