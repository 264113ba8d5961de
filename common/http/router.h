#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/server.h"

namespace buildcache::http {

// The part of `path` after `prefix` when path is prefix itself ("") or continues below it
// ("/..."); nullopt for any other path, including one that merely starts with the same letters
// ("/npmx" is not under "/npm"). Front ends use it to check the route they were given.
std::optional<std::string_view> PathUnder(std::string_view path, std::string_view prefix);

// Dispatches requests by method and path prefix. The longest matching prefix among the routes
// whose method matches wins; a path no route's prefix matches gets 404, and a path some prefix
// matches but with no route for the method gets 405 with an Allow header.
//
// Routes are added before serving starts; Handle is then safe to call from any thread.
class Router {
 public:
  // Routes requests for `method` (exact, case-sensitive; "" = any method) whose undecoded path
  // starts with `prefix` to `handler`.
  void Add(std::string method, std::string prefix, Handler handler);

  void Handle(Request& request, Response& response) const;

  // A Handler that calls Handle; the router must outlive it.
  Handler AsHandler() const;

 private:
  struct Route {
    std::string method;
    std::string prefix;
    Handler handler;
  };
  std::vector<Route> routes_;
};

}  // namespace buildcache::http
