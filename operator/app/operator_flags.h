#pragma once

#include <string>
#include <vector>

#include "common/log/log.h"
#include "common/status/status.h"

namespace buildcache::op {

// What the operator runs with: its command-line flags as a value (defaults as documented in
// OperatorUsage()). Tests fill one in directly and hand it to Operator::Start.
struct OperatorConfig {
  std::string kubeconfig;  // empty: $KUBECONFIG, in-cluster, ~/.kube/config
  std::string agent_image;
  std::string ns;  // empty: all namespaces
  std::vector<std::string> buildcache_namespaces;
  std::vector<std::string> allowed_agent_images;
  std::string host_path_root = "/var/lib/buildcache";
  std::string go_sumdb_name;
  // The ClusterRole (pods list/watch, the issuer's discovery and keys) bound to the agents of a
  // BuildCache with caller identity on (charts/buildcache: FULLNAME-agent).
  std::string agent_cluster_role = "buildcache-agent";
  bool leader_elect = false;
  std::string lease_namespace;  // empty: the kubeconfig's namespace
  std::string lease_name = "buildcache-operator";
  int lease_seconds = 15;
  std::string metrics_addr = "0.0.0.0:8080";
  int workers = 2;
  int scrape_seconds = 30;  // 0: no hit-ratio scraping
  log::Level log_level = log::Level::kInfo;
  std::string webhook_listen;    // empty: no webhook
  std::string webhook_cert_dir;  // empty: the operator keeps its own CA in webhook_secret
  std::string webhook_service = "buildcache-webhook";
  std::string webhook_configuration = "buildcache";
  std::string webhook_secret = "buildcache-webhook-tls";
};

// The outcome of parsing the operator's command line.
struct OperatorFlags {
  enum class Action {
    kRun,      // run with config
    kHelp,     // --help or -h: print OperatorUsage() to stdout and exit 0
    kVersion,  // --version: print OperatorVersion() to stdout and exit 0
  };
  Action action = Action::kRun;
  OperatorConfig config;
};

// Parses the flags OperatorUsage() lists. Values come as "--flag value" (the next argument,
// whatever it looks like) or "--flag=value"; --leader-elect takes only "=true" or "=false".
// Unknown flags, positional arguments, missing or malformed values, and a run without
// --agent-image fail with kInvalidArgument naming the flag.
Result<OperatorFlags> ParseOperatorFlags(int argc, const char* const* argv);

// Usage text for --help, ending in a newline.
std::string OperatorUsage();

// "buildcache-operator 0.1.0", from the CMake project version.
std::string OperatorVersion();

}  // namespace buildcache::op
