#pragma once

#include <cstdint>
#include <string>
#include <string_view>

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
// POST /admin/purge?prefix=PREFIX[&after=NEXT] removes every key starting with PREFIX (non-empty:
// an empty prefix is refused with 400, never read as "everything"), at most kMaxPurgeKeysPerCall
// keys and kMaxPurgePagesPerCall store listing pages per call. It answers 200 with
// {"prefix":"...","removed":N,"next":"...","unnamed":U}: a non-empty next means more may match,
// and the caller repeats the call with after=NEXT (percent-encoded) until next is empty. unnamed
// counts keys the store cannot list (written by a version before key names were recorded, see
// LmdbStore::ListKeys): a prefix purge does not reach them.
//
// Thread-safe; `store` must outlive the handler.
inline constexpr char kAdminTokenHeader[] = "X-Buildcache-Admin-Token";

class AdminHandler {
 public:
  static constexpr size_t kMaxPurgeKeysPerCall = 10000;
  static constexpr int kMaxPurgePagesPerCall = 64;

  AdminHandler(std::string token, store::BlobStore& store);

  void Handle(http::Request& req, http::Response& resp);

 private:
  struct PrefixPurge {
    uint64_t removed = 0;
    std::string next;  // "" when done
    uint64_t unnamed = 0;
  };
  void PurgePrefix(http::Request& req, http::Response& resp, std::string_view raw_prefix);
  Result<PrefixPurge> RemovePrefix(std::string_view prefix, std::string after);

  const std::string token_;
  store::BlobStore& store_;
};

// The token in admin.tokenFile, without surrounding whitespace. kFailedPrecondition when the file
// cannot be read or holds no token.
Result<std::string> ReadAdminToken(const std::string& path);

}  // namespace buildcache::agent
