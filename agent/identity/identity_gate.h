#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent/identity/caller.h"
#include "agent/identity/identity_source.h"
#include "common/http/server.h"

namespace buildcache::identity {

// Reasons a request is refused, the `reason` label of buildcache_identity_refused_total:
//   bad_credentials  credentials present but not valid (401)
//   unverified       credentials that could not be checked now: the API server's TokenReview
//                    failed or was busy (503, Retry-After)
//   anonymous_read   no credentials and anonymous access is "none" (401)
//   anonymous_write  an anonymous caller tried to write (403)
//   untrusted_write  a write only trusted writers may make: a wheel upload, deleting a shared
//                    CAS entry (403)
struct GateObserver {
  // Called once per refused request, on the server thread that refused it.
  std::function<void(std::string_view reason)> on_refused;
};

// A handler that is told who the caller is.
using CallerHandler = std::function<void(http::Request&, http::Response&, const Caller&)>;

// How a front end's writes are policed by Wrap.
enum class WritePolicy {
  // The front end scopes writes itself (agent/frontends/httpcache); the gate only admits.
  kScopedByFrontend,
  // Any method but GET, HEAD and OPTIONS needs a trusted writer (package front ends: a pypi
  // wheel upload would shadow an upstream sdist for every reader).
  kTrustedWritersOnly,
};

// Puts an IdentitySource in front of handlers: every request is identified before the front
// end sees it; refused ones are answered here, logged (with the caller's scope and subject,
// never a token) and counted.
//
// Without a source (identity off) every caller is Caller::Unrestricted() and nothing is logged.
// Thread-safe; the gate must outlive the handlers Wrap returns.
class IdentityGate {
 public:
  IdentityGate(std::unique_ptr<IdentitySource> source, AnonymousAccess anonymous,
               GateObserver observer);

  bool enabled() const { return source_ != nullptr; }
  std::string_view mode() const { return source_ ? source_->mode() : "off"; }

  // The caller of this request, or nullopt after answering 401 (with a WWW-Authenticate
  // challenge and a message saying why): invalid credentials, or none when anonymous access is
  // "none". `frontend` names the front end in logs.
  std::optional<Caller> Admit(http::Request& request, http::Response& response,
                              std::string_view frontend);

  // Answers 403 for a write the caller may not make (reason: anonymous_write or
  // untrusted_write), logged and counted. Front ends that scope writes themselves call it.
  void RefuseWrite(http::Request& request, http::Response& response, const Caller& caller,
                   std::string_view frontend, std::string_view why);

  // Admit, the write policy, then inner.
  http::Handler Wrap(std::string frontend, WritePolicy policy, CallerHandler inner);

 private:
  void Refuse(http::Request& request, http::Response& response, int code, std::string_view reason,
              std::string_view why, const Caller* caller, std::string_view frontend);

  std::unique_ptr<IdentitySource> source_;
  const AnonymousAccess anonymous_;
  const GateObserver observer_;
};

}  // namespace buildcache::identity
