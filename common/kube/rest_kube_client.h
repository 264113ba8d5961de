#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/http/rest_client.h"
#include "common/kube/config.h"
#include "common/kube/kube_client.h"

namespace buildcache::kube {

struct RestKubeClientOptions {
  std::string user_agent = "buildcache-operator";
  // Bound on each wait for the server in ordinary requests (watches get their own, longer one).
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
};

// KubeClient over HTTPS (common/http's RestClient) with JSON bodies.
class RestKubeClient : public KubeClient {
 public:
  // Fails when the configuration's certificates, keys or token file cannot be loaded.
  static Result<std::unique_ptr<RestKubeClient>> Create(const KubeConfig& config,
                                                        RestKubeClientOptions options = {});

  // KubeClient
  Result<Json> Get(const Resource& resource, const std::string& ns, const std::string& name,
                   const std::string& subresource = "") override;
  Result<Json> List(const Resource& resource, const std::string& ns,
                    const ListOptions& options = {}) override;
  Result<Json> Create(const Resource& resource, const Json& object) override;
  Result<Json> Update(const Resource& resource, const Json& object,
                      const std::string& subresource = "") override;
  Result<Json> MergePatch(const Resource& resource, const std::string& ns, const std::string& name,
                          const Json& patch, const std::string& subresource = "") override;
  Result<Json> Apply(const Resource& resource, const Json& object, const ApplyOptions& options,
                     const std::string& subresource = "") override;
  Status Delete(const Resource& resource, const std::string& ns, const std::string& name,
                const DeleteOptions& options = {}) override;
  Status Watch(const Resource& resource, const std::string& ns, const WatchOptions& options,
               const WatchHandler& on_event, std::stop_token stop = {}) override;

  // Sends one request as is (e.g. to a pod's port through /api/v1/.../pods/POD:PORT/proxy/...)
  // with the client's credentials and timeout; any HTTP status is an answer, transport failures
  // are a Status.
  Result<http::RestResponse> Raw(http::RestRequest request);

  // The namespace of the kubeconfig context, or the pod's own namespace in a cluster.
  const std::string& default_namespace() const { return default_namespace_; }

 private:
  RestKubeClient(std::unique_ptr<http::RestClient> rest, std::string default_namespace,
                 std::chrono::milliseconds timeout);

  // Sends a request with a JSON (or other) body and decodes the JSON answer; HTTP errors become
  // API error Statuses with `what` as context.
  Result<Json> Call(const std::string& what, const std::string& method, const std::string& target,
                    const std::string& content_type, const std::string& body);

  std::unique_ptr<http::RestClient> rest_;
  std::string default_namespace_;
  std::chrono::milliseconds timeout_;
};

}  // namespace buildcache::kube
