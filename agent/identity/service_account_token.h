#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "agent/identity/identity_source.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::identity {

struct ServiceAccountTokenOptions {
  // The audience a token must name (`aud`): projected tokens are requested for it.
  std::string audience = "buildcache.io";
  TrustedWriters trusted;
  // GETs a path of the API server (/.well-known/openid-configuration, /openid/v1/jwks) and
  // returns the body of a 200 answer.
  std::function<Result<std::string>(const std::string& path)> fetch;
  // The labels of a pod ("namespace", "name") when known, for trustedWriters.podLabels.
  std::function<std::map<std::string, std::string>(const std::string&, const std::string&)>
      pod_labels;
  // Keys are fetched again after this long, and when a token names a key id not in the set (at
  // most once per `min_refresh`).
  std::chrono::seconds refresh{600};
  std::chrono::seconds min_refresh{10};
  // Seconds since the epoch; injected for tests.
  std::function<int64_t()> now;
};

// Verifies Kubernetes ServiceAccount tokens offline (RS256 JWTs signed by the API server's
// service-account issuer): the issuer and its keys come from the API server's OIDC discovery
// document and JWKS (fetched at start, refreshed), a token must carry that issuer, the configured
// audience, an `exp` in the future (and `nbf`, if any, in the past; 30 s leeway) and the
// kubernetes.io namespace and service account claims. The caller is then that service account:
// scope = its namespace, subject "namespace/name", trusted by `options.trusted` (the pod's labels
// when the token names a pod). Verdicts are cached by the token's SHA-256 until the token expires.
//
// Identify: no Authorization header is anonymous; a token that is not a JWT goes to `others`
// (the tokens file) when set; anything that fails verification is kPermissionDenied saying why
// ("token expired", "wrong audience", "bad signature", ...), never quoting the token.
//
// Thread-safe.
class ServiceAccountTokenIdentity final : public IdentitySource {
 public:
  // Fetches the discovery document and keys; fails naming what could not be fetched or parsed.
  static Result<std::unique_ptr<ServiceAccountTokenIdentity>> Create(
      ServiceAccountTokenOptions options, std::unique_ptr<IdentitySource> others);
  ~ServiceAccountTokenIdentity() override;

  // IdentitySource
  Result<Caller> Identify(const http::Request& request) override;
  std::string_view mode() const override { return "serviceaccount"; }

  // Verifies one token (what Identify does after taking it from the header).
  Result<Caller> Verify(std::string_view token) EXCLUDES(mu_);

  const std::string& issuer() const { return issuer_; }

 private:
  struct Keys;
  struct Verdict {
    Caller caller;
    int64_t expires = 0;
  };
  ServiceAccountTokenIdentity(ServiceAccountTokenOptions options,
                              std::unique_ptr<IdentitySource> others);
  Status RefreshKeys() EXCLUDES(mu_);
  std::shared_ptr<const Keys> CurrentKeys(bool unknown_kid) EXCLUDES(mu_);
  Result<Verdict> VerifyUncached(std::string_view token) EXCLUDES(mu_);

  ServiceAccountTokenOptions options_;
  std::unique_ptr<IdentitySource> others_;
  std::string issuer_;
  Mutex mu_;
  std::shared_ptr<const Keys> keys_ GUARDED_BY(mu_);
  int64_t fetched_at_ GUARDED_BY(mu_) = 0;
  std::map<std::string, Verdict> verdicts_ GUARDED_BY(mu_);  // by SHA-256 of the token
};

}  // namespace buildcache::identity
