#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "agent/identity/caller.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::identity {

// The credentials a request carries, taken from its Authorization header:
//   Authorization: Bearer <token>
//   Authorization: Basic base64(<user>:<password>)   the password is the token; with an empty
//                                                    password the user name is (clients that
//                                                    put the token in URL user-info either way)
// Returns nullopt when the header is absent or empty, the token otherwise, and kInvalidArgument
// (a message saying why, never containing the header) for another scheme, bad base64 or an
// empty token.
Result<std::optional<std::string>> BearerToken(std::string_view authorization);

// Maps a request to the caller who sent it. Implementations are named by mechanism
// (TokenFileIdentity: a file of tokens; a Kubernetes pod watch and ServiceAccount tokens later).
//
// Identify returns the caller, Caller::Anonymous() when the request carries no credentials the
// source recognises as absent (no Authorization header), or kPermissionDenied with a message
// saying why when credentials are present but not valid: a bad token is never a silent
// downgrade to anonymous. Messages never contain the token.
//
// Thread-safe: Identify may run concurrently on every server thread.
class IdentitySource {
 public:
  virtual ~IdentitySource() = default;
  virtual Result<Caller> Identify(const http::Request& request) = 0;
  // "tokens", "kubernetes": for logs and status.
  virtual std::string_view mode() const = 0;
};

}  // namespace buildcache::identity
