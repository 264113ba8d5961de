// kubectl-buildcache: the kubectl plugin (`kubectl buildcache status|env|purge`). main() only
// parses flags, loads the kubeconfig, and prints what cli::Run returns; errors are one line on
// stderr with a non-zero exit code (2 for usage errors, 1 for everything else).
#include <chrono>
#include <cstdio>
#include <string>

#include "cli/plugin.h"
#include "common/kube/config.h"
#include "common/kube/rest_kube_client.h"
#include "common/log/log.h"

using namespace buildcache;

namespace {

// The agents' HTTP port through the API server's pod proxy.
class PodProxy : public cli::AgentProxy {
 public:
  explicit PodProxy(kube::RestKubeClient& client) : client_(client) {}
  Result<Answer> Post(const std::string& ns, const std::string& pod, int port,
                      const std::string& path_and_query,
                      const std::vector<std::pair<std::string, std::string>>& headers) override {
    http::RestRequest request;
    request.method = "POST";
    request.target = "/api/v1/namespaces/" + ns + "/pods/" + pod + ":" + std::to_string(port) +
                     "/proxy" + path_and_query;
    for (const auto& [name, value] : headers) request.headers.emplace_back(name, value);
    BC_ASSIGN_OR_RETURN(http::RestResponse response, client_.Raw(std::move(request)));
    return Answer{response.status, response.body};
  }

 private:
  kube::RestKubeClient& client_;
};

int Fail(const std::string& message) {
  std::fprintf(stderr, "kubectl-buildcache: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Result<cli::Options> options = cli::ParseArgs(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "kubectl-buildcache: %s (see kubectl buildcache --help)\n",
                 options.status().message().c_str());
    return 2;
  }
  if (options->command == cli::Command::kHelp) {
    std::fputs(cli::Usage().c_str(), stdout);
    return 0;
  }
  if (options->command == cli::Command::kVersion) {
    std::printf("kubectl-buildcache %s\n", BC_CLI_VERSION);
    return 0;
  }
  // The client logs transport trouble; the user gets the one-line error instead.
  log::SetLevel(log::Level::kError);
  Result<kube::KubeConfig> config = kube::LoadDefaultConfig(options->kubeconfig, options->context);
  if (!config.ok()) return Fail("no usable kubeconfig: " + config.status().message());
  Result<std::unique_ptr<kube::RestKubeClient>> client = kube::RestKubeClient::Create(
      *config, {.user_agent = std::string("kubectl-buildcache/") + BC_CLI_VERSION,
                .timeout = std::chrono::seconds(15)});
  if (!client.ok()) return Fail("kube client: " + client.status().message());
  if (options->command == cli::Command::kPurge) {
    PodProxy proxy(**client);
    const std::string ns = options->ns.empty() ? (*client)->default_namespace() : options->ns;
    Result<cli::PurgeReport> report = cli::RunPurge(*options, **client, proxy, ns);
    if (!report.ok()) return Fail(report.status().message());
    std::fputs(report->text.c_str(), stdout);
    return report->failed ? Fail("an agent failed; the key may still be stored there") : 0;
  }
  Result<std::string> out = cli::Run(*options, **client, (*client)->default_namespace(),
                                     std::chrono::system_clock::now());
  if (!out.ok()) {
    std::string message = out.status().message();
    if (out.status().code() == StatusCode::kUnavailable ||
        out.status().code() == StatusCode::kDeadlineExceeded) {
      message = "API server " + config->server + " unreachable: " + message;
    }
    return Fail(message);
  }
  std::fputs(out->c_str(), stdout);
  return 0;
}
