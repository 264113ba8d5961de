#include "common/kube/rest_kube_client.h"

#include <utility>

#include "common/log/log.h"

namespace buildcache::kube {

namespace {

constexpr char kJson[] = "application/json";

// Builds "?a=1&b=2", percent-encoding values and skipping empty ones.
class Query {
 public:
  Query& Add(std::string_view key, std::string_view value) {
    if (value.empty()) return *this;
    text_ += text_.empty() ? "?" : "&";
    text_ += key;
    text_ += "=";
    text_ += http::UrlEncode(value);
    return *this;
  }
  const std::string& str() const { return text_; }

 private:
  std::string text_;
};

std::string Describe(const Resource& resource, std::string_view ns, std::string_view name) {
  std::string out = resource.Describe();
  if (!name.empty()) {
    out += " " + ObjectKey(ns, name);
  } else if (!ns.empty()) {
    out += " in " + std::string(ns);
  }
  return out;
}

Status RequireName(const Resource& resource, const Json& object, std::string_view verb) {
  if (!object.is_object()) {
    return InvalidArgument(std::string(verb) + " " + resource.Describe() + ": not a JSON object");
  }
  if (NameOf(object).empty()) {
    return InvalidArgument(std::string(verb) + " " + resource.Describe() +
                           ": metadata.name is required");
  }
  if (resource.namespaced && NamespaceOf(object).empty()) {
    return InvalidArgument(std::string(verb) + " " + Describe(resource, "", NameOf(object)) +
                           ": metadata.namespace is required for a namespaced resource");
  }
  return Status::Ok();
}

Result<WatchEventType> ParseEventType(std::string_view type) {
  if (type == "ADDED") return WatchEventType::kAdded;
  if (type == "MODIFIED") return WatchEventType::kModified;
  if (type == "DELETED") return WatchEventType::kDeleted;
  if (type == "BOOKMARK") return WatchEventType::kBookmark;
  return InvalidArgument("unknown watch event type \"" + std::string(type) + "\"");
}

}  // namespace

std::string_view WatchEventTypeName(WatchEventType type) {
  switch (type) {
    case WatchEventType::kAdded:
      return "ADDED";
    case WatchEventType::kModified:
      return "MODIFIED";
    case WatchEventType::kDeleted:
      return "DELETED";
    case WatchEventType::kBookmark:
      return "BOOKMARK";
  }
  return "UNKNOWN";
}

RestKubeClient::RestKubeClient(std::unique_ptr<http::RestClient> rest,
                               std::string default_namespace, std::chrono::milliseconds timeout)
    : rest_(std::move(rest)), default_namespace_(std::move(default_namespace)), timeout_(timeout) {}

Result<std::unique_ptr<RestKubeClient>> RestKubeClient::Create(const KubeConfig& config,
                                                               RestKubeClientOptions options) {
  http::RestClientOptions rest;
  rest.base_url = config.server;
  rest.ca_file = config.ca_file;
  rest.ca_pem = config.ca_pem;
  rest.client_cert_file = config.client_cert_file;
  rest.client_cert_pem = config.client_cert_pem;
  rest.client_key_file = config.client_key_file;
  rest.client_key_pem = config.client_key_pem;
  rest.bearer_token = config.token;
  rest.bearer_token_file = config.token_file;
  rest.timeout = options.timeout;
  rest.user_agent = options.user_agent;
  auto client = http::RestClient::Create(std::move(rest));
  if (!client.ok()) {
    return client.status().WithContext("kube client for " + config.server);
  }
  return std::unique_ptr<RestKubeClient>(
      new RestKubeClient(std::move(*client), config.default_namespace, options.timeout));
}

Result<Json> RestKubeClient::Call(const std::string& what, const std::string& method,
                                  const std::string& target, const std::string& content_type,
                                  const std::string& body) {
  http::RestRequest request;
  request.method = method;
  request.target = target;
  request.headers = {{"Accept", kJson}};
  if (!content_type.empty()) request.headers.emplace_back("Content-Type", content_type);
  request.body = body;
  request.timeout = timeout_;
  auto response = rest_->Do(request);
  if (!response.ok()) return response.status().WithContext(what);
  if (response->status >= 400) return ApiErrorStatus(response->status, response->body, what);
  if (response->body.empty()) return Json::object();
  Json parsed = Json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Unavailable(what + ": the server's answer is not JSON (HTTP " +
                       std::to_string(response->status) + ")");
  }
  return parsed;
}

Result<http::RestResponse> RestKubeClient::Raw(http::RestRequest request) {
  if (request.timeout.count() == 0) request.timeout = timeout_;
  return rest_->Do(request);
}

Result<Json> RestKubeClient::Get(const Resource& resource, const std::string& ns,
                                 const std::string& name, const std::string& subresource) {
  if (name.empty()) return InvalidArgument("get " + resource.Describe() + ": no name");
  return Call("get " + Describe(resource, ns, name), "GET", resource.Path(ns, name, subresource),
              "", "");
}

Result<Json> RestKubeClient::List(const Resource& resource, const std::string& ns,
                                  const ListOptions& options) {
  Query query;
  query.Add("labelSelector", options.label_selector)
      .Add("fieldSelector", options.field_selector)
      .Add("resourceVersion", options.resource_version)
      .Add("limit", options.limit > 0 ? std::to_string(options.limit) : "")
      .Add("continue", options.continue_token);
  return Call("list " + Describe(resource, ns, ""), "GET", resource.Path(ns) + query.str(), "", "");
}

Result<Json> RestKubeClient::Create(const Resource& resource, const Json& object) {
  if (!object.is_object()) {
    return InvalidArgument("create " + resource.Describe() + ": not a JSON object");
  }
  std::string ns = NamespaceOf(object);
  if (resource.namespaced && ns.empty()) {
    return InvalidArgument("create " + resource.Describe() +
                           ": metadata.namespace is required for a namespaced resource");
  }
  std::string name = NameOf(object);
  return Call("create " + Describe(resource, ns, name), "POST", resource.Path(ns), kJson,
              object.dump());
}

Result<Json> RestKubeClient::Update(const Resource& resource, const Json& object,
                                    const std::string& subresource) {
  BC_RETURN_IF_ERROR(RequireName(resource, object, "update"));
  std::string ns = NamespaceOf(object), name = NameOf(object);
  std::string what = "update " + Describe(resource, ns, name);
  if (!subresource.empty()) what += " " + subresource;
  return Call(what, "PUT", resource.Path(ns, name, subresource), kJson, object.dump());
}

Result<Json> RestKubeClient::MergePatch(const Resource& resource, const std::string& ns,
                                        const std::string& name, const Json& patch,
                                        const std::string& subresource) {
  if (name.empty()) return InvalidArgument("patch " + resource.Describe() + ": no name");
  std::string what = "patch " + Describe(resource, ns, name);
  if (!subresource.empty()) what += " " + subresource;
  return Call(what, "PATCH", resource.Path(ns, name, subresource), "application/merge-patch+json",
              patch.dump());
}

Result<Json> RestKubeClient::Apply(const Resource& resource, const Json& object,
                                   const ApplyOptions& options, const std::string& subresource) {
  BC_RETURN_IF_ERROR(RequireName(resource, object, "apply"));
  if (options.field_manager.empty()) {
    return InvalidArgument("apply " + resource.Describe() + ": a field manager is required");
  }
  std::string ns = NamespaceOf(object), name = NameOf(object);
  std::string what = "apply " + Describe(resource, ns, name);
  if (!subresource.empty()) what += " " + subresource;
  Query query;
  query.Add("fieldManager", options.field_manager).Add("force", options.force ? "true" : "");
  // JSON is YAML, so the object goes as it is.
  return Call(what, "PATCH", resource.Path(ns, name, subresource) + query.str(),
              "application/apply-patch+yaml", object.dump());
}

Status RestKubeClient::Delete(const Resource& resource, const std::string& ns,
                              const std::string& name, const DeleteOptions& options) {
  if (name.empty()) return InvalidArgument("delete " + resource.Describe() + ": no name");
  Json body = {{"kind", "DeleteOptions"}, {"apiVersion", "v1"}};
  if (!options.propagation_policy.empty()) body["propagationPolicy"] = options.propagation_policy;
  if (!options.precondition_uid.empty()) body["preconditions"]["uid"] = options.precondition_uid;
  if (!options.precondition_resource_version.empty()) {
    body["preconditions"]["resourceVersion"] = options.precondition_resource_version;
  }
  if (options.grace_period_seconds) body["gracePeriodSeconds"] = *options.grace_period_seconds;
  return Call("delete " + Describe(resource, ns, name), "DELETE", resource.Path(ns, name), kJson,
              body.dump())
      .status();
}

Status RestKubeClient::Watch(const Resource& resource, const std::string& ns,
                             const WatchOptions& options, const WatchHandler& on_event,
                             std::stop_token stop) {
  std::string what = "watch " + Describe(resource, ns, "");
  Query query;
  query.Add("watch", "1")
      .Add("labelSelector", options.label_selector)
      .Add("fieldSelector", options.field_selector)
      .Add("resourceVersion", options.resource_version)
      .Add("allowWatchBookmarks", options.allow_bookmarks ? "true" : "")
      .Add("timeoutSeconds",
           options.timeout_seconds > 0 ? std::to_string(options.timeout_seconds) : "");
  http::RestRequest request;
  request.target = resource.Path(ns) + query.str();
  request.headers = {{"Accept", kJson}};
  // The server may stay silent for the whole watch; give it that long, and then some.
  int64_t server_seconds = options.timeout_seconds > 0 ? options.timeout_seconds : 1800;
  request.timeout = std::chrono::seconds(server_seconds + 60);

  Status outcome;
  auto response = rest_->StreamLines(
      request,
      [&](std::string_view line) {
        if (line.empty()) return true;
        Json event = Json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!event.is_object() || !event.contains("type") || !event["type"].is_string() ||
            !event.contains("object")) {
          outcome =
              Unavailable(what + ": malformed watch event: " + std::string(line.substr(0, 200)));
          return false;
        }
        const std::string& type = event["type"].get_ref<const std::string&>();
        if (type == "ERROR") {
          const Json& status = event["object"];
          int code = 500;
          if (status.is_object() && status.contains("code") && status["code"].is_number_integer()) {
            code = status["code"].get<int>();
          }
          outcome = ApiErrorStatus(code, status.dump(), what);
          return false;
        }
        auto parsed = ParseEventType(type);
        if (!parsed.ok()) {
          outcome = parsed.status().WithContext(what);
          return false;
        }
        return on_event(WatchEvent{*parsed, std::move(event["object"])});
      },
      stop);
  if (!response.ok()) return response.status().WithContext(what);
  if (response->status >= 400) return ApiErrorStatus(response->status, response->body, what);
  return outcome;
}

}  // namespace buildcache::kube
