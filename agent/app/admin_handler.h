#pragma once

#include <string>

#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::store {
class BlobStore;
}

namespace buildcache::agent {

// The admin endpoint: POST /admin/purge?key=KEY (KEY percent-encoded) removes one store key from
// this agent's local store, so that a poisoned object can be dropped cluster-wide by calling every
// agent (`kubectl buildcache purge`); a DELETE through a front end removes only the local copy and
// the next GET pulls it back from an owner. Keys are named as the front ends name them
// ("httpcache/" + the path under /cache/, ...).
//
// Every request must carry "Authorization: Bearer TOKEN" with the configured token, or the token
// in kAdminTokenHeader (the API server's pod proxy consumes the Authorization header, so
// `kubectl buildcache purge` uses this one; when both are sent it is the one checked). Compared
// in constant time (only the length can leak): no token is 401, a wrong one 403, and nothing is
// removed. With an empty token the endpoint is off and answers 404. Refusals are logged with the
// client address and the reason, never the presented token. A purge answers 200 with
// {"key":"...","removed":true|false} (false: the key was not stored here).
//
// Prefix purges are refused (501): the store indexes keys by a hash and cannot list them.
//
// Thread-safe; `store` must outlive the handler.
inline constexpr char kAdminTokenHeader[] = "X-Buildcache-Admin-Token";

class AdminHandler {
 public:
  AdminHandler(std::string token, store::BlobStore& store);

  void Handle(http::Request& req, http::Response& resp);

 private:
  const std::string token_;
  store::BlobStore& store_;
};

// The token in admin.tokenFile, without surrounding whitespace. kFailedPrecondition when the file
// cannot be read or holds no token.
Result<std::string> ReadAdminToken(const std::string& path);

}  // namespace buildcache::agent
