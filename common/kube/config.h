#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "common/status/status.h"
#include "common/text/base64.h"

namespace buildcache::kube {

// Where and how to reach an API server: the part of a kubeconfig (or of a pod's service account)
// a client needs. PEM material is either inline (*_pem) or a file (*_file); files are read by the
// REST client, so rotated certificates and tokens are picked up.
struct KubeConfig {
  std::string server{};  // "https://host:port"
  std::string ca_file{};
  std::string ca_pem{};
  std::string client_cert_file{};
  std::string client_cert_pem{};
  std::string client_key_file{};
  std::string client_key_pem{};
  std::string token{};
  std::string token_file{};
  std::string default_namespace = "default";
  std::string
      source{};  // where this came from, for logs: "kubeconfig /p (context c)", "in-cluster"
};

// Parses a kubeconfig document (YAML or JSON). `context` selects a context by name; "" means
// current-context. Relative file paths are resolved against base_dir (the kubeconfig's
// directory). The *-data fields are base64-decoded. Supported credentials: client certificates,
// token, tokenFile. Rejected with kInvalidArgument and a message naming the field:
// insecure-skip-tls-verify (TLS verification is always on), exec and auth-provider plugins,
// username/password, proxy-url and tls-server-name. Missing contexts, clusters or users, and a
// missing server, are kInvalidArgument too.
Result<KubeConfig> ParseKubeConfig(std::string_view text, const std::string& base_dir,
                                   const std::string& context = "");

// Reads and parses a kubeconfig file (ParseKubeConfig with its directory as base_dir).
Result<KubeConfig> LoadKubeConfigFile(const std::string& path, const std::string& context = "");

inline constexpr char kServiceAccountDir[] = "/var/run/secrets/kubernetes.io/serviceaccount";

// The configuration of a pod's own service account: https://$KUBERNETES_SERVICE_HOST:
// $KUBERNETES_SERVICE_PORT, token file DIR/token (re-read as the kubelet rotates it), CA
// DIR/ca.crt and namespace from DIR/namespace. kFailedPrecondition when not in a cluster (the
// variables are unset) or the token is missing. getenv is injectable for tests.
using GetEnv = std::function<const char*(const char*)>;
Result<KubeConfig> InClusterConfig(const GetEnv& getenv, const std::string& sa_dir);
Result<KubeConfig> InClusterConfig();

// The configuration a program should use, in the usual order: an explicit kubeconfig path; else
// $KUBECONFIG (the first file of a ':'-separated list that exists; lists are not merged); else
// the in-cluster configuration when $KUBERNETES_SERVICE_HOST is set; else ~/.kube/config.
Result<KubeConfig> LoadDefaultConfig(const std::string& kubeconfig_path = "",
                                     const std::string& context = "");

// Standard base64 (one definition, in common/text/base64.h).
using text::Base64Decode;
using text::Base64Encode;

}  // namespace buildcache::kube
