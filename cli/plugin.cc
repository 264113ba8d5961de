#include "cli/plugin.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iterator>
#include <string_view>
#include <tuple>

#include "common/flags/flags.h"
#include "common/kube/api_error.h"
#include "common/kube/config.h"
#include "common/kube/kube_time.h"
#include "common/kube/resource.h"
#include "operator/webhook/webhook_server.h"

namespace buildcache::cli {
namespace {

constexpr char kNone[] = "<none>";

// The string at obj[key], or "" when it is missing or not a string. Never throws.
std::string StringAt(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

const Json& ObjectAt(const Json& obj, std::string_view key) {
  static const Json kEmpty = Json::object();
  if (!obj.is_object()) return kEmpty;
  auto it = obj.find(key);
  return it != obj.end() && it->is_object() ? *it : kEmpty;
}

int64_t IntAt(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return 0;
  auto it = obj.find(key);
  return it != obj.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

std::string OrNone(const std::string& s) { return s.empty() ? kNone : s; }

// The API server's multi-line messages (validation lists) on one line, for a one-line error.
std::string OneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ';');
  return s;
}

std::string Describe(const std::string& ns, const std::string& name) {
  return "BuildCache \"" + name + "\" in namespace \"" + ns + "\"";
}

// A client error as the one line the user sees; a missing collection means the CRD is missing.
Status Explain(const Status& s, const std::string& what) {
  if (kube::IsNotFound(s)) return NotFound(what + " not found");
  return Status(s.code(), OneLine(what + ": " + s.message()));
}

Result<std::string> RunStatus(const Options& o, kube::KubeClient& client, const std::string& ns,
                              std::chrono::system_clock::time_point now) {
  const kube::Resource& resource = webhook::BuildCacheResource();
  std::vector<CacheSummary> caches;
  if (!o.name.empty()) {
    Result<Json> object = client.Get(resource, ns, o.name);
    if (!object.ok()) return Explain(object.status(), Describe(ns, o.name));
    caches.push_back(Summarize(*object));
  } else {
    const std::string list_ns = o.all_namespaces ? "" : ns;
    kube::ListOptions options;
    options.limit = 500;
    // Bounded: a page per 500 objects, and a cluster with a million BuildCaches is not one.
    for (int page = 0; page < 2000; ++page) {
      Result<Json> list = client.List(resource, list_ns, options);
      if (!list.ok()) {
        if (kube::IsNotFound(list.status())) {
          return NotFound("the API server has no BuildCache resource (is the CRD installed?)");
        }
        return Explain(list.status(), "list BuildCaches");
      }
      if (list->contains("items") && (*list)["items"].is_array()) {
        for (const Json& item : (*list)["items"]) caches.push_back(Summarize(item));
      }
      options.continue_token = StringAt(ObjectAt(*list, "metadata"), "continue");
      if (options.continue_token.empty()) break;
    }
    std::sort(caches.begin(), caches.end(), [](const CacheSummary& a, const CacheSummary& b) {
      return std::tie(a.ns, a.name) < std::tie(b.ns, b.name);
    });
  }
  if (o.output == OutputFormat::kJson) return RenderStatusJson(caches).dump(2) + "\n";
  if (caches.empty()) {
    return o.all_namespaces ? std::string("No BuildCaches found.\n")
                            : "No BuildCaches found in namespace " + ns + ".\n";
  }
  return RenderStatusTable(caches, o.all_namespaces, now);
}

Result<std::string> RunEnv(const Options& o, kube::KubeClient& client, const std::string& ns) {
  Result<Json> object = client.Get(webhook::BuildCacheResource(), ns, o.name);
  if (!object.ok()) return Explain(object.status(), Describe(ns, o.name));
  // The webhook reads BuildCaches the same way (KubeCacheLookup): defaults, then validation.
  Result<api::BuildCache> cache = api::FromJson(*object);
  if (!cache.ok()) {
    return InvalidArgument(
        OneLine(Describe(ns, o.name) + " is invalid: " + cache.status().message()));
  }
  BC_ASSIGN_OR_RETURN(std::vector<webhook::EnvVar> env, PodEnv(*cache, o.use));
  return RenderEnv(env, o.env_format,
                   "BuildCache " + ns + "/" + o.name + ": agent " + webhook::AgentBaseUrl(*cache));
}

// Single quotes keep every byte literal in POSIX shells; a quote itself is closed, escaped and
// reopened.
std::string ShellQuote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

std::string Usage() {
  return R"usage(Usage:
  kubectl buildcache status [NAME] [-n NAMESPACE | -A] [-o table|json]
      Each BuildCache: readiness, agents ready/desired, storage, hit ratios, caller identity
      (status.identity), age.
  kubectl buildcache env NAME [-n NAMESPACE] [--use pypi,goproxy,...] [--format shell|dotenv|github]
      The environment the admission webhook gives a pod using BuildCache NAME (for CI systems
      that do not run pods through the webhook): `eval "$(kubectl buildcache env ci)"`.
  kubectl buildcache purge NAME (--key KEY | --prefix PREFIX) [-n NAMESPACE]
      Removes store key KEY (e.g. httpcache/ccache/ab/cd for /cache/ccache/ab/cd), or every key
      starting with PREFIX (non-empty), from every agent of BuildCache NAME, through the API
      server's pod proxy; needs get on the Secret buildcache-NAME-admin and create on pods/proxy.
      Exit 1 when an agent failed.
  kubectl buildcache version

Flags:
  -n, --namespace NS     the BuildCache's namespace (default: the kubeconfig context's)
  -A, --all-namespaces   status: every namespace
  -o, --output FORMAT    status: table (default) or json
  --use LIST             env: only these ecosystems and directories (buildcache.io/use)
  --format FORMAT        env: shell (default, export lines), dotenv or github ($GITHUB_ENV)
  --kubeconfig PATH      kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)
  --context NAME         kubeconfig context (default: current-context)
  -h, --help
)usage";
}

namespace {

using flags::Arity;

constexpr flags::Spec kFlags[] = {
    {"-h", Arity::kNone},
    {"--help", Arity::kNone},
    {"-A", Arity::kNone},
    {"--all-namespaces", Arity::kNone},
    {"-n", Arity::kRequired},
    {"--namespace", Arity::kRequired},
    {"-o", Arity::kRequired},
    {"--output", Arity::kRequired},
    {"--use", Arity::kRequired},
    {"--format", Arity::kRequired},
    {"--kubeconfig", Arity::kRequired},
    {"--context", Arity::kRequired},
    {"--key", Arity::kRequired},
    {"--prefix", Arity::kRequired},
};

Status ApplyFlag(const flags::Arg& arg, Options& o) {
  const std::string name(arg.name());
  const std::string& value = arg.value;
  if (name == "-A" || name == "--all-namespaces") {
    o.all_namespaces = true;
  } else if (name == "-n" || name == "--namespace") {
    if (value.empty()) return InvalidArgument(name + " needs a non-empty value");
    o.ns = value;
  } else if (name == "-o" || name == "--output") {
    if (value == "table" || value == "wide") {
      o.output = OutputFormat::kTable;
    } else if (value == "json") {
      o.output = OutputFormat::kJson;
    } else {
      return InvalidArgument(name + ": table or json, not \"" + value + "\"");
    }
  } else if (name == "--use") {
    o.use = value;
  } else if (name == "--format") {
    if (value == "shell") {
      o.env_format = EnvFormat::kShell;
    } else if (value == "dotenv") {
      o.env_format = EnvFormat::kDotenv;
    } else if (value == "github") {
      o.env_format = EnvFormat::kGithub;
    } else {
      return InvalidArgument("--format: shell, dotenv or github, not \"" + value + "\"");
    }
  } else if (name == "--kubeconfig") {
    o.kubeconfig = value;
  } else if (name == "--context") {
    o.context = value;
  } else if (name == "--key") {
    o.key = value;
  } else if (name == "--prefix") {
    if (value.empty()) {
      return InvalidArgument(
          "--prefix needs a non-empty value (an empty prefix would purge "
          "every key)");
    }
    o.prefix = value;
  }
  return Status::Ok();
}

// The command and its NAME from the positional arguments.
Status ApplyCommand(const std::vector<std::string>& positional, Options& o) {
  if (positional.empty()) return InvalidArgument("missing command: status, env or version");
  const std::string& command = positional[0];
  if (command == "status") {
    o.command = Command::kStatus;
    if (positional.size() > 2) return InvalidArgument("status takes at most one NAME");
    if (positional.size() == 2) o.name = positional[1];
    if (!o.name.empty() && o.all_namespaces) {
      return InvalidArgument("a NAME cannot be combined with --all-namespaces");
    }
  } else if (command == "env") {
    o.command = Command::kEnv;
    if (positional.size() != 2) return InvalidArgument("env needs exactly one BuildCache NAME");
    o.name = positional[1];
    if (o.all_namespaces) return InvalidArgument("env does not take --all-namespaces");
  } else if (command == "purge") {
    o.command = Command::kPurge;
    if (positional.size() != 2) return InvalidArgument("purge needs exactly one BuildCache NAME");
    o.name = positional[1];
    if (o.all_namespaces) return InvalidArgument("purge does not take --all-namespaces");
    if (o.key.empty() == !o.prefix) {
      return InvalidArgument("purge needs --key KEY or --prefix PREFIX");
    }
  } else if (command == "version") {
    o.command = Command::kVersion;
  } else {
    return InvalidArgument("unknown command \"" + command + "\": status, env, purge or version");
  }
  return Status::Ok();
}

}  // namespace

Result<Options> ParseArgs(int argc, const char* const* argv) {
  // Values are taken as given, whatever they look like (as kubectl does).
  BC_ASSIGN_OR_RETURN(
      std::vector<flags::Arg> args,
      flags::Tokenize(
          argc, argv, kFlags,
          {.positional = true, .value_may_start_with_dashes = true, .empty_value = true}));
  Options o;
  std::vector<std::string> positional;
  for (const flags::Arg& arg : args) {
    if (arg.name() == "-h" || arg.name() == "--help") {
      o.command = Command::kHelp;
      return o;
    }
  }
  for (const flags::Arg& arg : args) {
    if (arg.spec == nullptr) {
      positional.push_back(arg.value);
    } else {
      BC_RETURN_IF_ERROR(ApplyFlag(arg, o));
    }
  }
  BC_RETURN_IF_ERROR(ApplyCommand(positional, o));
  if (o.use && o.command != Command::kEnv) return InvalidArgument("--use is for env only");
  if ((!o.key.empty() || o.prefix) && o.command != Command::kPurge) {
    return InvalidArgument("--key and --prefix are for purge only");
  }
  return o;
}

CacheSummary Summarize(const Json& object) {
  CacheSummary s;
  const Json& meta = ObjectAt(object, "metadata");
  s.ns = StringAt(meta, "namespace");
  s.name = StringAt(meta, "name");
  if (Result<std::chrono::system_clock::time_point> t =
          kube::ParseTime(StringAt(meta, "creationTimestamp"));
      t.ok()) {
    s.created = *t;
  }
  s.max_size = StringAt(ObjectAt(ObjectAt(object, "spec"), "storage"), "maxSize");
  const Json& status = ObjectAt(object, "status");
  if (auto it = status.find("conditions"); it != status.end() && it->is_array()) {
    for (const Json& c : *it) {
      if (StringAt(c, "type") == "Ready") {
        s.ready = StringAt(c, "status");
        s.ready_reason = StringAt(c, "reason");
      }
    }
  }
  const Json& nodes = ObjectAt(status, "nodes");
  s.nodes_ready = IntAt(nodes, "ready");
  s.nodes_desired = IntAt(nodes, "desired");
  s.hit_ratio = StringAt(status, "hitRatio");
  s.identity = StringAt(status, "identity");
  if (auto it = status.find("ecosystems"); it != status.end() && it->is_array()) {
    for (const Json& e : *it) {
      if (StringAt(e, "name").empty()) continue;
      s.ecosystems.push_back({StringAt(e, "name"), StringAt(e, "hitRatio"), IntAt(e, "lookups")});
    }
  }
  for (api::NamespaceStatus& n : api::TopNamespacesFromJson(status)) {
    if (!n.name.empty()) s.top_namespaces.push_back(std::move(n));
  }
  return s;
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return std::to_string(std::max<int64_t>(bytes, 0)) + "B";
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%s", value, kUnits[unit]);
  return buf;
}

std::string FormatAge(std::optional<std::chrono::system_clock::time_point> created,
                      std::chrono::system_clock::time_point now) {
  if (!created) return "<unknown>";
  // Clocks disagree a little; an object "from the future" is just new.
  const int64_t s = std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::seconds>(now - *created).count());
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m";
  if (s < 86400) return std::to_string(s / 3600) + "h";
  if (s < 365 * 86400) return std::to_string(s / 86400) + "d";
  return std::to_string(s / (365 * 86400)) + "y";
}

namespace {

// Rows as columns separated by at least three spaces, each as wide as its widest cell.
std::string Aligned(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 3, ' ');
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::string RenderStatusTable(const std::vector<CacheSummary>& caches, bool with_namespace,
                              std::chrono::system_clock::time_point now) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"NAME",      "READY",      "NODES",    "MAX SIZE",
                                     "HIT RATIO", "ECOSYSTEMS", "IDENTITY", "AGE"};
  if (with_namespace) header.insert(header.begin(), "NAMESPACE");
  rows.push_back(header);
  for (const CacheSummary& c : caches) {
    std::string ecosystems;
    for (const CacheSummary::Ecosystem& e : c.ecosystems) {
      if (!ecosystems.empty()) ecosystems += ",";
      ecosystems += e.name + "=" + OrNone(e.hit_ratio);
    }
    std::vector<std::string> row = {
        c.name,
        OrNone(c.ready),
        std::to_string(c.nodes_ready) + "/" + std::to_string(c.nodes_desired),
        OrNone(c.max_size),
        OrNone(c.hit_ratio),
        OrNone(ecosystems),
        OrNone(c.identity),
        FormatAge(c.created, now)};
    if (with_namespace) row.insert(row.begin(), c.ns);
    rows.push_back(std::move(row));
  }
  std::string out = Aligned(rows);
  std::vector<std::vector<std::string>> top = {
      {"CACHE", "CALLER NAMESPACE", "SAVED", "HIT RATIO", "LOOKUPS"}};
  for (const CacheSummary& c : caches) {
    for (const api::NamespaceStatus& n : c.top_namespaces) {
      top.push_back({with_namespace ? c.ns + "/" + c.name : c.name, n.name,
                     FormatBytes(n.saved_bytes), OrNone(n.hit_ratio), std::to_string(n.lookups)});
    }
  }
  if (top.size() > 1) out += "\n" + Aligned(top);
  return out;
}

Json RenderStatusJson(const std::vector<CacheSummary>& caches) {
  Json items = Json::array();
  for (const CacheSummary& c : caches) {
    Json ecosystems = Json::array();
    for (const CacheSummary::Ecosystem& e : c.ecosystems) {
      ecosystems.push_back({{"name", e.name}, {"hitRatio", e.hit_ratio}, {"lookups", e.lookups}});
    }
    items.push_back({{"namespace", c.ns},
                     {"name", c.name},
                     {"ready", c.ready},
                     {"readyReason", c.ready_reason},
                     {"nodes", {{"ready", c.nodes_ready}, {"desired", c.nodes_desired}}},
                     {"maxSize", c.max_size},
                     {"hitRatio", c.hit_ratio},
                     {"ecosystems", std::move(ecosystems)},
                     {"identity", c.identity},
                     {"topNamespaces", api::TopNamespacesToJson(c.top_namespaces)},
                     {"creationTimestamp", c.created ? kube::FormatTime(*c.created) : ""}});
  }
  return {{"items", std::move(items)}};
}

Result<std::vector<webhook::EnvVar>> PodEnv(const api::BuildCache& cache,
                                            const std::optional<std::string>& use) {
  // A pod as the webhook sees it, so the selection is parsed by the webhook's own code.
  Json pod = {{"metadata", {{"annotations", {{webhook::kCacheAnnotation, cache.name}}}}}};
  if (use) {
    if (use->find_first_not_of(" ,") == std::string::npos) {
      return InvalidArgument("--use names no cache");
    }
    pod["metadata"]["annotations"][webhook::kUseAnnotation] = *use;
  }
  webhook::Selection selection = webhook::SelectCaches(pod, cache);
  if (!selection.warnings.empty()) {
    std::vector<std::string> offered = cache.spec.ecosystems.Enabled();
    for (const api::Directory& d : cache.spec.directories) offered.push_back(d.name);
    std::string list;
    for (const std::string& name : offered) list += (list.empty() ? "" : ",") + name;
    return InvalidArgument("--use: BuildCache " + cache.ns + "/" + cache.name + " offers only " +
                           OrNone(list) + " (" + OneLine(selection.warnings[0]) + ")");
  }
  return webhook::CacheEnv(cache, selection.names);
}

Result<std::string> RenderEnv(const std::vector<webhook::EnvVar>& env, EnvFormat format,
                              const std::string& comment) {
  std::string out;
  if (format != EnvFormat::kGithub && !comment.empty()) out += "# " + OneLine(comment) + "\n";
  for (const webhook::EnvVar& e : env) {
    switch (format) {
      case EnvFormat::kShell:
        out += "export " + e.name + "=" + ShellQuote(e.value) + "\n";
        break;
      case EnvFormat::kDotenv:
        if (e.value.find('\n') != std::string::npos) {
          return InvalidArgument("dotenv cannot carry the newline in " + e.name);
        }
        out += e.name + "=" + e.value + "\n";
        break;
      case EnvFormat::kGithub:
        if (e.value.find('\n') == std::string::npos) {
          out += e.name + "=" + e.value + "\n";
        } else {
          // A delimiter that is not a line of the value.
          std::string delimiter = "BUILDCACHE_EOF";
          while (("\n" + e.value + "\n").find("\n" + delimiter + "\n") != std::string::npos) {
            delimiter += "_";
          }
          out += e.name + "<<" + delimiter + "\n" + e.value + "\n" + delimiter + "\n";
        }
        break;
    }
  }
  return out;
}

Result<std::string> Run(const Options& options, kube::KubeClient& client,
                        const std::string& default_ns, std::chrono::system_clock::time_point now) {
  const std::string ns = options.ns.empty() ? default_ns : options.ns;
  switch (options.command) {
    case Command::kStatus:
      return RunStatus(options, client, ns, now);
    case Command::kEnv:
      return RunEnv(options, client, ns);
    default:
      return InvalidArgument("not a command that talks to the API server");
  }
}

namespace {

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

}  // namespace

namespace {

// The agents of BuildCache NAME: the admin token, the agents' HTTP port and their pods.
struct PurgeTargets {
  std::string token;
  int port = 8080;
  std::vector<std::pair<std::string, std::string>> pods;  // (pod, node), sorted
};

Result<PurgeTargets> FindPurgeTargets(const Options& o, kube::KubeClient& client,
                                      const std::string& ns) {
  PurgeTargets t;
  const std::string prefix = "buildcache-" + o.name;
  Result<Json> secret = client.Get(kube::resources::kSecrets, ns, prefix + "-admin");
  if (!secret.ok()) return Explain(secret.status(), "Secret " + ns + "/" + prefix + "-admin");
  Result<std::string> token = kube::Base64Decode(StringAt(ObjectAt(*secret, "data"), "token"));
  if (!token.ok() || token->empty()) {
    return FailedPrecondition("Secret " + ns + "/" + prefix + "-admin holds no token");
  }
  t.token = *token;
  Result<Json> ds = client.Get(kube::resources::kDaemonSets, ns, prefix);
  if (!ds.ok()) return Explain(ds.status(), "DaemonSet " + ns + "/" + prefix);
  const Json& match = ObjectAt(ObjectAt(ObjectAt(*ds, "spec"), "selector"), "matchLabels");
  std::string selector;
  for (const auto& [k, v] : match.items()) {
    if (v.is_string()) selector += (selector.empty() ? "" : ",") + k + "=" + v.get<std::string>();
  }
  if (selector.empty()) {
    return FailedPrecondition("DaemonSet " + ns + "/" + prefix + " has no selector");
  }
  const Json& tmpl = ObjectAt(ObjectAt(*ds, "spec"), "template");
  if (auto cs = ObjectAt(tmpl, "spec").find("containers");
      cs != ObjectAt(tmpl, "spec").end() && cs->is_array() && !cs->empty()) {
    if (auto ports = (*cs)[0].find("ports"); ports != (*cs)[0].end() && ports->is_array()) {
      for (const Json& p : *ports) {
        if (StringAt(p, "name") == "http" && IntAt(p, "containerPort") > 0) {
          t.port = static_cast<int>(IntAt(p, "containerPort"));
        }
      }
    }
  }
  kube::ListOptions list_options;
  list_options.label_selector = selector;
  Result<Json> pods = client.List(kube::resources::kPods, ns, list_options);
  if (!pods.ok()) return Explain(pods.status(), "list pods of " + ns + "/" + prefix);
  if (auto items = pods->find("items"); items != pods->end() && items->is_array()) {
    for (const Json& pod : *items) {
      t.pods.emplace_back(StringAt(ObjectAt(pod, "metadata"), "name"),
                          StringAt(ObjectAt(pod, "spec"), "nodeName"));
    }
  }
  if (t.pods.empty()) {
    return FailedPrecondition("BuildCache " + ns + "/" + o.name + " has no agent pods");
  }
  std::sort(t.pods.begin(), t.pods.end());
  return t;
}

// One agent's purge: the line's outcome, or an error (unreachable, a non-200 answer).
Result<std::string> PurgeAgent(const Options& o, AgentProxy& proxy, const std::string& ns,
                               const std::string& pod, const PurgeTargets& t) {
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"X-Buildcache-Admin-Token", t.token}};
  auto post = [&](const std::string& path) -> Result<Json> {
    Result<AgentProxy::Answer> answer = proxy.Post(ns, pod, t.port, path, headers);
    if (!answer.ok()) return Unavailable(OneLine(answer.status().message()));
    if (answer->status != 200) {
      return Unavailable("HTTP " + std::to_string(answer->status) + " " + OneLine(answer->body));
    }
    Json body = Json::parse(answer->body, nullptr, /*allow_exceptions=*/false);
    return body.is_object() ? body : Json::object();
  };
  if (!o.prefix) {
    BC_ASSIGN_OR_RETURN(Json body, post("/admin/purge?key=" + PercentEncode(o.key)));
    return std::string(body.value("removed", false) ? "removed" : "not stored");
  }
  int64_t removed = 0;
  int64_t unnamed = 0;
  std::string after;
  for (int call = 0; call < kMaxPurgeCallsPerAgent; ++call) {
    std::string path = "/admin/purge?prefix=" + PercentEncode(*o.prefix);
    if (!after.empty()) path += "&after=" + PercentEncode(after);
    BC_ASSIGN_OR_RETURN(Json body, post(path));
    removed += body.value("removed", int64_t{0});
    unnamed = body.value("unnamed", int64_t{0});
    after = body.value("next", std::string());
    if (after.empty()) {
      std::string line = "removed " + std::to_string(removed) + " keys";
      if (unnamed > 0) {
        line += " (" + std::to_string(unnamed) +
                " keys stored before key names were recorded could not be checked)";
      }
      return line;
    }
  }
  return Unavailable("removed " + std::to_string(removed) + " keys; more left after " +
                     std::to_string(kMaxPurgeCallsPerAgent) + " calls: run purge again");
}

}  // namespace

Result<PurgeReport> RunPurge(const Options& o, kube::KubeClient& client, AgentProxy& proxy,
                             const std::string& ns) {
  BC_ASSIGN_OR_RETURN(PurgeTargets targets, FindPurgeTargets(o, client, ns));
  PurgeReport report;
  for (const auto& [pod, node] : targets.pods) {
    std::string line = pod + " (node " + (node.empty() ? "<none>" : node) + "): ";
    Result<std::string> outcome = PurgeAgent(o, proxy, ns, pod, targets);
    if (!outcome.ok()) {
      report.failed = true;
      line += "failed: " + outcome.status().message();
    } else {
      line += *outcome;
    }
    report.text += line + "\n";
  }
  return report;
}

}  // namespace buildcache::cli
