#include "operator/app/operator_flags.h"

#include <string_view>

#include "common/flags/flags.h"

#ifndef BC_OPERATOR_VERSION
#define BC_OPERATOR_VERSION "unknown"
#endif

namespace buildcache::op {
namespace {

using flags::Arity;

constexpr flags::Spec kFlags[] = {
    {"--help", Arity::kNone},
    {"-h", Arity::kNone},
    {"--version", Arity::kNone},
    {"--leader-elect", Arity::kOptional},
    {"--kubeconfig", Arity::kRequired},
    {"--agent-image", Arity::kRequired},
    {"--namespace", Arity::kRequired},
    {"--buildcache-namespaces", Arity::kRequired},
    {"--allowed-agent-images", Arity::kRequired},
    {"--host-path-root", Arity::kRequired},
    {"--go-sumdb-name", Arity::kRequired},
    {"--agent-cluster-role", Arity::kRequired},
    {"--leader-election-namespace", Arity::kRequired},
    {"--leader-election-id", Arity::kRequired},
    {"--leader-election-lease-seconds", Arity::kRequired},
    {"--metrics-addr", Arity::kRequired},
    {"--workers", Arity::kRequired},
    {"--metrics-scrape-interval", Arity::kRequired},
    {"--log-level", Arity::kRequired},
    {"--webhook-listen", Arity::kRequired},
    {"--webhook-cert-dir", Arity::kRequired},
    {"--webhook-service", Arity::kRequired},
    {"--webhook-configuration", Arity::kRequired},
    {"--webhook-secret", Arity::kRequired},
};

// Flags whose value is stored as given.
std::string* PlainString(std::string_view name, OperatorConfig& c) {
  if (name == "--kubeconfig") return &c.kubeconfig;
  if (name == "--agent-image") return &c.agent_image;
  if (name == "--namespace") return &c.ns;
  if (name == "--go-sumdb-name") return &c.go_sumdb_name;
  if (name == "--agent-cluster-role") return &c.agent_cluster_role;
  if (name == "--leader-election-namespace") return &c.lease_namespace;
  if (name == "--leader-election-id") return &c.lease_name;
  if (name == "--metrics-addr") return &c.metrics_addr;
  if (name == "--webhook-listen") return &c.webhook_listen;
  if (name == "--webhook-cert-dir") return &c.webhook_cert_dir;
  if (name == "--webhook-service") return &c.webhook_service;
  if (name == "--webhook-configuration") return &c.webhook_configuration;
  if (name == "--webhook-secret") return &c.webhook_secret;
  return nullptr;
}

// Stores one flag's value in c, checking it.
Status Apply(const flags::Arg& arg, OperatorConfig& c) {
  const std::string_view name = arg.name();
  const std::string& value = arg.value;
  if (std::string* field = PlainString(name, c)) {
    *field = value;
  } else if (name == "--leader-elect") {
    c.leader_elect = true;
    if (arg.has_value) {
      BC_ASSIGN_OR_RETURN(c.leader_elect, flags::ParseBool(name, value));
    }
  } else if (name == "--buildcache-namespaces") {
    c.buildcache_namespaces = flags::SplitList(value);
  } else if (name == "--allowed-agent-images") {
    c.allowed_agent_images = flags::SplitList(value);
  } else if (name == "--host-path-root") {
    if (value.empty() || value.front() != '/') {
      return flags::FlagError(name, "an absolute directory");
    }
    c.host_path_root = value;
  } else if (name == "--leader-election-lease-seconds") {
    BC_ASSIGN_OR_RETURN(c.lease_seconds, flags::ParseInt(name, value, 3));
  } else if (name == "--workers") {
    BC_ASSIGN_OR_RETURN(c.workers, flags::ParseInt(name, value, 1));
  } else if (name == "--metrics-scrape-interval") {
    Result<int> seconds = flags::ParseInt(name, value, 0);
    if (!seconds.ok()) return flags::FlagError(name, "an integer >= 0 (seconds)");
    c.scrape_seconds = *seconds;
  } else if (name == "--log-level") {
    if (!log::ParseLevel(value, &c.log_level)) {
      return flags::FlagError(name, "debug, info, warn or error");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<OperatorFlags> ParseOperatorFlags(int argc, const char* const* argv) {
  // The operator has always taken the next argument as the value and an empty value as "none"
  // (--namespace= watches all namespaces, --webhook-listen= runs no webhook).
  BC_ASSIGN_OR_RETURN(std::vector<flags::Arg> args,
                      flags::Tokenize(argc, argv, kFlags,
                                      {.value_may_start_with_dashes = true, .empty_value = true}));
  OperatorFlags result;
  for (const flags::Arg& arg : args) {
    if (arg.name() == "--help" || arg.name() == "-h") {
      result.action = OperatorFlags::Action::kHelp;
      return result;
    }
  }
  for (const flags::Arg& arg : args) {
    if (arg.name() == "--version") {
      result.action = OperatorFlags::Action::kVersion;
      return result;
    }
  }
  for (const flags::Arg& arg : args) BC_RETURN_IF_ERROR(Apply(arg, result.config));
  if (result.config.agent_image.empty()) return InvalidArgument("--agent-image is required");
  return result;
}

std::string OperatorUsage() {
  return R"(Usage: buildcache-operator [flags]

  --kubeconfig PATH                  kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)
  --agent-image IMAGE                agent image for BuildCaches that name none (required)
  --namespace NS                     namespace to watch (default: all namespaces)
  --buildcache-namespaces NS,...     the only namespaces where BuildCaches are run (the operator's
                                     RBAC covers their DaemonSets, Services and ConfigMaps);
                                     others get condition NamespaceNotManaged (default: any)
  --allowed-agent-images REPO,...    image repositories spec.agent.image may name, with any tag
                                     or digest (default: only --agent-image)
  --host-path-root DIR               storage.hostPath must lie beneath it (default
                                     /var/lib/buildcache)
  --go-sumdb-name NAME               checksum database for goproxy.sumdb (on by default) when a
                                     BuildCache names none; without it such BuildCaches are refused
  --agent-cluster-role NAME          ClusterRole bound to the agents of BuildCaches with caller
                                     identity on (spec.access.trustedWriters or anonymous):
                                     pods list/watch, the issuer's keys (default buildcache-agent)
  --leader-elect[=true|false]        only the replica holding the lease reconciles (default false)
  --leader-election-namespace NS     namespace of the Lease (default: the kubeconfig's namespace)
  --leader-election-id NAME          name of the Lease (default buildcache-operator)
  --leader-election-lease-seconds N  lease duration (default 15; renew deadline 2/3 of it)
  --metrics-addr HOST:PORT           /metrics, /healthz, /readyz (default 0.0.0.0:8080; port 0 picks one)
  --workers N                        concurrent reconciles (default 2)
  --metrics-scrape-interval SECONDS  how often the leader reads every agent's /metrics for
                                     status.hitRatio (default 30; 0 turns it off)
  --log-level LEVEL                  debug, info, warn or error (default info)
  --webhook-listen HOST:PORT         serve the pod-wiring admission webhook (HTTPS) here;
                                     empty (the default) runs no webhook
  --webhook-cert-dir DIR             tls.crt and tls.key from cert-manager; without it the
                                     operator keeps its own CA and certificate in a Secret
  --webhook-service NAME             the webhook's Service, for the certificate's names
                                     (default buildcache-webhook)
  --webhook-configuration NAME       MutatingWebhookConfiguration whose caBundle is kept current
                                     (default buildcache)
  --webhook-secret NAME              Secret holding the generated CA and certificate
                                     (default buildcache-webhook-tls)
  --version                          print the version and exit
  --help
)";
}

std::string OperatorVersion() { return std::string("buildcache-operator ") + BC_OPERATOR_VERSION; }

}  // namespace buildcache::op
