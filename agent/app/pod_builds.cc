#include "agent/app/pod_builds.h"

#include <cstdlib>
#include <memory>

#include "agent/app/agent.h"
#include "agent/frontends/pypi/build_uploads.h"
#include "agent/frontends/pypi/pypi_frontend.h"
#include "common/kube/rest_kube_client.h"
#include "common/log/log.h"
#include "common/net/host_port.h"

namespace buildcache::agent {
namespace {

Result<std::string> EnvValue(const std::string& name, std::string_view key) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr || *v == '\0') {
    return InvalidArgument(std::string(key) + ": $" + name + " is not set in the environment");
  }
  return std::string(v);
}

bool IsEnvName(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

pypi::BuilderSpec ImageBuilderSpec(const PypiBuilderConfig& b) {
  pypi::BuilderSpec spec;
  spec.name = b.name;
  spec.image = b.image;
  pypi::ClientPlatform& p = spec.platform;
  p.implementation = b.platform.implementation == "PyPy" ? "pp" : "cp";
  const std::string& py = b.platform.python;
  p.python_major = std::atoi(py.substr(0, py.find('.')).c_str());
  p.python_minor = std::atoi(py.substr(py.find('.') + 1).c_str());
  p.system = "linux";
  p.cpu = b.platform.cpu;
  p.libc = b.platform.libc;
  const std::string& lv = b.platform.libc_version;
  p.libc_major = std::atoi(lv.substr(0, lv.find('.')).c_str());
  p.libc_minor = std::atoi(lv.substr(lv.find('.') + 1).c_str());
  spec.tools = "image " + b.image;
  return spec;
}

Result<std::string> ExpandEnv(std::string_view value, std::string_view key) {
  if (value.starts_with('$') && IsEnvName(value.substr(1))) {
    return EnvValue(std::string(value.substr(1)), key);
  }
  std::string out;
  while (!value.empty()) {
    size_t at = value.find("$(");
    if (at == std::string_view::npos) break;
    size_t end = value.find(')', at);
    if (end == std::string_view::npos) {
      return InvalidArgument(std::string(key) + ": unterminated $( in " + std::string(value));
    }
    std::string name(value.substr(at + 2, end - at - 2));
    if (!IsEnvName(name)) {
      return InvalidArgument(std::string(key) + ": $(" + name + ") is no variable name");
    }
    BC_ASSIGN_OR_RETURN(std::string v, EnvValue(name, key));
    out.append(value.substr(0, at));
    out += v;
    value.remove_prefix(end + 1);
  }
  out.append(value);
  return out;
}

Result<pypi::PodRunnerOptions> PodRunnerOptionsFrom(const PypiBuildPodsConfig& pods,
                                                    std::string node) {
  pypi::PodRunnerOptions o;
  BC_ASSIGN_OR_RETURN(o.ns, ExpandEnv(pods.ns, "pypi.buildPods.namespace"));
  BC_ASSIGN_OR_RETURN(o.build_cache, ExpandEnv(pods.build_cache, "pypi.buildPods.buildCache"));
  BC_ASSIGN_OR_RETURN(std::string url, ExpandEnv(pods.agent_url, "pypi.buildPods.agentUrl"));
  constexpr std::string_view kHttp = "http://";
  std::string_view authority =
      std::string_view(url).substr(url.starts_with(kHttp) ? kHttp.size() : 0);
  while (authority.ends_with('/')) authority.remove_suffix(1);
  Result<net::HostPort> hp = net::HostPort::Parse(authority);
  if (!url.starts_with(kHttp) || authority.find_first_of("/@?#") != std::string_view::npos ||
      !hp.ok() || hp->port() == 0) {
    return InvalidArgument(
        "pypi.buildPods.agentUrl: must be http://HOST:PORT (no user-info or "
        "path), got \"" +
        url + "\"");
  }
  o.agent_url = std::string(kHttp) + std::string(authority);
  o.node = std::move(node);
  return o;
}

Status Agent::StartPodBuilds(const AgentConfig& config, pypi::WheelBuildOptions& options) {
  bool any = false;
  for (const pypi::BuilderSpec& b : options.builders) any |= b.pod();
  if (!any) return Status::Ok();
  std::string node;
  if (!config.identity.kube_node_name.empty()) {
    BC_ASSIGN_OR_RETURN(node,
                        ExpandEnv(config.identity.kube_node_name, "identity.kubernetes.nodeName"));
  }
  BC_ASSIGN_OR_RETURN(pypi::PodRunnerOptions runner_options,
                      PodRunnerOptionsFrom(config.pypi.build_pods, std::move(node)));
  BC_ASSIGN_OR_RETURN(kube::RestKubeClient * kube, KubeClient(config.identity, "pypi.buildPods"));
  build_uploads_ = std::make_unique<pypi::BuildUploads>(
      pypi::BuildUploadsOptions{.prefix = "/pypi", .max_wheel_bytes = options.max_wheel_bytes});
  options.pod_runner = std::make_shared<pypi::PodRunner>(*kube, *build_uploads_, runner_options);
  log::Info("pypi build pods", {{"namespace", runner_options.ns},
                                {"buildcache", runner_options.build_cache},
                                {"agent_url", runner_options.agent_url}});
  return Status::Ok();
}

}  // namespace buildcache::agent
