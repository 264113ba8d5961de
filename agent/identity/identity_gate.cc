#include "agent/identity/identity_gate.h"

#include "common/log/log.h"

namespace buildcache::identity {
namespace {

bool IsRead(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS";
}

}  // namespace

IdentityGate::IdentityGate(std::unique_ptr<IdentitySource> source, AnonymousAccess anonymous,
                           GateObserver observer)
    : source_(std::move(source)), anonymous_(anonymous), observer_(std::move(observer)) {}

void IdentityGate::Refuse(http::Request& req, http::Response& resp, int code,
                          std::string_view reason, std::string_view why, const Caller* caller,
                          std::string_view frontend) {
  log::Warn("request refused", {{"reason", reason},
                                {"why", why},
                                {"frontend", frontend},
                                {"scope", caller ? std::string_view(caller->scope) : ""},
                                {"subject", caller ? std::string_view(caller->subject) : ""},
                                {"client", req.client_ip()},
                                {"method", req.method()},
                                {"path", req.path()}});
  if (observer_.on_refused) observer_.on_refused(reason);
  resp.SetStatus(code);
  if (code == 401) resp.SetHeader("WWW-Authenticate", "Bearer realm=\"buildcache\"");
  if (code == 503) resp.SetHeader("Retry-After", "10");
  resp.SetHeader("Content-Type", "text/plain; charset=utf-8");
  resp.SetHeader("Cache-Control", "no-store");
  const char* prefix = code == 401   ? "unauthenticated: "
                       : code == 503 ? "unverified: "
                                     : "forbidden: ";
  (void)resp.Send(std::string(prefix) + std::string(why) + "\n");
}

std::optional<Caller> IdentityGate::Admit(http::Request& req, http::Response& resp,
                                          std::string_view frontend) {
  if (!source_) return Caller::Unrestricted();
  Result<Caller> caller = source_->Identify(req);
  if (!caller.ok()) {
    // Credentials that could not be checked now (the API server's TokenReview failed) are
    // neither accepted nor called bad: the client may retry.
    if (caller.status().code() == StatusCode::kUnavailable) {
      Refuse(req, resp, 503, "unverified", caller.status().message(), nullptr, frontend);
      return std::nullopt;
    }
    Refuse(req, resp, 401, "bad_credentials", caller.status().message(), nullptr, frontend);
    return std::nullopt;
  }
  if (caller->anonymous && anonymous_ == AnonymousAccess::kNone) {
    Refuse(req, resp, 401, "anonymous_read", "credentials required (anonymous access is none)",
           &*caller, frontend);
    return std::nullopt;
  }
  log::Debug("caller identified", {{"frontend", frontend},
                                   {"scope", caller->scope},
                                   {"subject", caller->subject},
                                   {"trusted_writer", caller->trusted_writer},
                                   {"anonymous", caller->anonymous},
                                   {"method", req.method()},
                                   {"path", req.path()}});
  return std::move(*caller);
}

void IdentityGate::RefuseWrite(http::Request& req, http::Response& resp, const Caller& caller,
                               std::string_view frontend, std::string_view why) {
  Refuse(req, resp, 403, caller.anonymous ? "anonymous_write" : "untrusted_write", why, &caller,
         frontend);
}

http::Handler IdentityGate::Wrap(std::string frontend, WritePolicy policy, CallerHandler inner) {
  return [this, frontend = std::move(frontend), policy, inner = std::move(inner)](
             http::Request& req, http::Response& resp) {
    std::optional<Caller> caller = Admit(req, resp, frontend);
    if (!caller) return;
    if (policy == WritePolicy::kTrustedWritersOnly && !IsRead(req.method()) &&
        !caller->trusted_writer) {
      RefuseWrite(req, resp, *caller, frontend,
                  caller->anonymous ? "anonymous callers may not write"
                                    : "only trusted writers may write here");
      return;
    }
    inner(req, resp, *caller);
  };
}

}  // namespace buildcache::identity
