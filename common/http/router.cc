#include "common/http/router.h"

#include <algorithm>
#include <utility>

namespace buildcache::http {

std::optional<std::string_view> PathUnder(std::string_view path, std::string_view prefix) {
  if (!path.starts_with(prefix)) return std::nullopt;
  std::string_view rest = path.substr(prefix.size());
  if (!rest.empty() && rest.front() != '/') return std::nullopt;
  return rest;
}

void Router::Add(std::string method, std::string prefix, Handler handler) {
  routes_.push_back({std::move(method), std::move(prefix), std::move(handler)});
}

void Router::Handle(Request& request, Response& response) const {
  std::string_view path = request.path();
  std::string_view method = request.method();
  const Route* best = nullptr;
  bool prefix_matched = false;
  for (const Route& r : routes_) {
    if (!path.starts_with(r.prefix)) continue;
    prefix_matched = true;
    if (!r.method.empty() && r.method != method) continue;
    if (best == nullptr || r.prefix.size() > best->prefix.size()) best = &r;
  }
  if (best != nullptr) {
    best->handler(request, response);
    return;
  }
  if (!prefix_matched) {
    response.SetStatus(404);
    response.SetHeader("Content-Type", "text/plain; charset=utf-8");
    (void)response.Send("NOT_FOUND: no route for this path\n");
    return;
  }
  std::vector<std::string_view> allowed;
  for (const Route& r : routes_) {
    if (path.starts_with(r.prefix) &&
        std::find(allowed.begin(), allowed.end(), r.method) == allowed.end()) {
      allowed.push_back(r.method);
    }
  }
  std::string allow;
  for (std::string_view m : allowed) {
    if (!allow.empty()) allow += ", ";
    allow += m;
  }
  response.SetStatus(405);
  response.SetHeader("Allow", allow);
  response.SetHeader("Content-Type", "text/plain; charset=utf-8");
  (void)response.Send("method not allowed\n");
}

Handler Router::AsHandler() const {
  return [this](Request& request, Response& response) { Handle(request, response); };
}

}  // namespace buildcache::http
