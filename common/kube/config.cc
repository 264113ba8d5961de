#include "common/kube/config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/net/host_port.h"

namespace buildcache::kube {

namespace {

Result<std::string> ReadFile(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno, std::string(what) + " " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string Resolve(const std::string& path, const std::string& base_dir) {
  if (path.empty() || path.front() == '/' || base_dir.empty()) return path;
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

std::string Trim(std::string s) {
  auto sp = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && sp(s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && sp(s[i])) ++i;
  return s.substr(i);
}

// The entry of a named list (clusters, users, contexts) with this name: its `field` mapping.
Result<YAML::Node> FindNamed(const YAML::Node& root, const char* list, const char* field,
                             const std::string& name) {
  YAML::Node entries = root[list];
  if (entries && entries.IsSequence()) {
    for (const YAML::Node& entry : entries) {
      if (entry.IsMap() && entry["name"] && entry["name"].as<std::string>() == name) {
        YAML::Node value = entry[field];
        if (!value || value.IsNull()) return YAML::Node(YAML::NodeType::Map);
        if (!value.IsMap()) {
          return InvalidArgument(std::string(list) + "[" + name + "]." + field +
                                 " is not a mapping");
        }
        return value;
      }
    }
  }
  return InvalidArgument(std::string("kubeconfig has no ") + list + " entry named \"" + name +
                         "\"");
}

std::string Str(const YAML::Node& map, const char* key) {
  YAML::Node v = map[key];
  if (!v || v.IsNull()) return "";
  return v.as<std::string>();
}

Result<KubeConfig> Parse(std::string_view text, const std::string& base_dir,
                         const std::string& wanted_context) {
  YAML::Node root = YAML::Load(std::string(text));
  if (!root.IsMap()) return InvalidArgument("kubeconfig is not a mapping");
  std::string context_name = wanted_context.empty() ? Str(root, "current-context") : wanted_context;
  if (context_name.empty()) {
    return InvalidArgument("kubeconfig has no current-context and none was given");
  }
  BC_ASSIGN_OR_RETURN(YAML::Node context, FindNamed(root, "contexts", "context", context_name));
  std::string cluster_name = Str(context, "cluster");
  std::string user_name = Str(context, "user");
  if (cluster_name.empty()) {
    return InvalidArgument("context \"" + context_name + "\" names no cluster");
  }
  BC_ASSIGN_OR_RETURN(YAML::Node cluster, FindNamed(root, "clusters", "cluster", cluster_name));
  YAML::Node user(YAML::NodeType::Map);
  if (!user_name.empty()) {
    BC_ASSIGN_OR_RETURN(user, FindNamed(root, "users", "user", user_name));
  }

  KubeConfig config;
  config.source = "context \"" + context_name + "\"";
  config.server = Str(cluster, "server");
  if (config.server.empty()) {
    return InvalidArgument("cluster \"" + cluster_name + "\" has no server");
  }
  std::string where = "cluster \"" + cluster_name + "\": ";
  if (cluster["insecure-skip-tls-verify"] && cluster["insecure-skip-tls-verify"].as<bool>()) {
    return InvalidArgument(where +
                           "insecure-skip-tls-verify is not supported: TLS verification is "
                           "always on; give certificate-authority(-data) instead");
  }
  for (const char* unsupported : {"proxy-url", "tls-server-name"}) {
    if (!Str(cluster, unsupported).empty()) {
      return InvalidArgument(where + unsupported + " is not supported");
    }
  }
  if (!Str(cluster, "certificate-authority-data").empty()) {
    BC_ASSIGN_OR_RETURN(config.ca_pem, Base64Decode(Str(cluster, "certificate-authority-data")));
  } else {
    config.ca_file = Resolve(Str(cluster, "certificate-authority"), base_dir);
  }

  where = "user \"" + user_name + "\": ";
  for (const char* unsupported : {"exec", "auth-provider", "username", "password"}) {
    if (user[unsupported] && !user[unsupported].IsNull()) {
      return InvalidArgument(where + unsupported +
                             " is not supported (use client certificates or a token)");
    }
  }
  if (!Str(user, "client-certificate-data").empty()) {
    BC_ASSIGN_OR_RETURN(config.client_cert_pem, Base64Decode(Str(user, "client-certificate-data")));
  } else {
    config.client_cert_file = Resolve(Str(user, "client-certificate"), base_dir);
  }
  if (!Str(user, "client-key-data").empty()) {
    BC_ASSIGN_OR_RETURN(config.client_key_pem, Base64Decode(Str(user, "client-key-data")));
  } else {
    config.client_key_file = Resolve(Str(user, "client-key"), base_dir);
  }
  config.token = Str(user, "token");
  config.token_file = Resolve(Str(user, "tokenFile"), base_dir);
  std::string ns = Str(context, "namespace");
  if (!ns.empty()) config.default_namespace = ns;
  return config;
}

}  // namespace

Result<KubeConfig> ParseKubeConfig(std::string_view text, const std::string& base_dir,
                                   const std::string& context) {
  try {
    return Parse(text, base_dir, context);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(std::string("kubeconfig: ") + e.what());
  }
}

Result<KubeConfig> LoadKubeConfigFile(const std::string& path, const std::string& context) {
  BC_ASSIGN_OR_RETURN(std::string text, ReadFile(path, "kubeconfig"));
  auto config = ParseKubeConfig(text, std::filesystem::path(path).parent_path().string(), context);
  if (!config.ok()) return config.status().WithContext(path);
  config->source = "kubeconfig " + path + " (" + config->source + ")";
  return config;
}

Result<KubeConfig> InClusterConfig(const GetEnv& getenv, const std::string& sa_dir) {
  const char* host = getenv("KUBERNETES_SERVICE_HOST");
  const char* port = getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return FailedPrecondition(
        "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset");
  }
  KubeConfig config;
  config.server = "https://" + net::BracketHost(host) + ":" + port;
  config.token_file = sa_dir + "/token";
  config.ca_file = sa_dir + "/ca.crt";
  if (!std::filesystem::exists(config.token_file)) {
    return FailedPrecondition("in-cluster configuration: no service account token at " +
                              config.token_file);
  }
  auto ns = ReadFile(sa_dir + "/namespace", "namespace file");
  if (ns.ok() && !Trim(*ns).empty()) config.default_namespace = Trim(*ns);
  config.source = "in-cluster";
  return config;
}

Result<KubeConfig> InClusterConfig() {
  return InClusterConfig([](const char* name) { return std::getenv(name); }, kServiceAccountDir);
}

Result<KubeConfig> LoadDefaultConfig(const std::string& kubeconfig_path,
                                     const std::string& context) {
  if (!kubeconfig_path.empty()) return LoadKubeConfigFile(kubeconfig_path, context);
  if (const char* env = std::getenv("KUBECONFIG"); env != nullptr && *env != '\0') {
    std::string list = env;
    size_t start = 0;
    while (start <= list.size()) {
      size_t end = list.find(':', start);
      if (end == std::string::npos) end = list.size();
      std::string path = list.substr(start, end - start);
      if (!path.empty() && std::filesystem::exists(path)) return LoadKubeConfigFile(path, context);
      start = end + 1;
    }
    return NotFound("no file of KUBECONFIG=" + list + " exists");
  }
  if (const char* host = std::getenv("KUBERNETES_SERVICE_HOST"); host != nullptr && *host != '\0') {
    return InClusterConfig();
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    std::string path = std::string(home) + "/.kube/config";
    if (std::filesystem::exists(path)) return LoadKubeConfigFile(path, context);
  }
  return NotFound(
      "no Kubernetes configuration: no --kubeconfig, no KUBECONFIG, not in a cluster "
      "and no ~/.kube/config");
}

}  // namespace buildcache::kube
