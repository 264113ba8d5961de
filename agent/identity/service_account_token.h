#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "agent/identity/identity_source.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::identity {

// Whether the pod a token is bound to (its kubernetes.io pod claim) still exists, as far as the
// agent's watch of its node's pods can tell.
enum class BoundPod {
  kUnknown,  // not a pod of this node the agent has seen (another node's, or not listed yet)
  kLive,     // a pod of this node with that name and uid
  kGone,     // deleted from this node, or the name now belongs to a pod with another uid
};

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
  // POSTs a TokenReview (the body TokenReviewRequestBody makes) to the API server and returns
  // the body of its 201 answer. Asked about tokens the offline check cannot decide: the issuer's
  // keys were never loaded (unreachable at start and since), the token's key id is still unknown
  // after the rate-limited refresh, or it is signed with an algorithm not checked offline (RS384,
  // PS256, ...). Unset: such tokens are refused. The request holds the token; whatever this
  // returns must not.
  std::function<Result<std::string>(const std::string& body)> review;
  // Called once per TokenReview with "authenticated", "refused" or "error".
  std::function<void(std::string_view result)> on_review;
  // At most this many TokenReviews at once (more callers wait for one to finish, up to
  // `review_wait`, then are told to retry: kUnavailable).
  int max_reviews_in_flight = 8;
  std::chrono::seconds review_wait{10};
  // What the agent's pod watch says about the pod a token is bound to ("namespace", "name",
  // "uid"): a token of a pod that is kGone is refused. Unset: not checked.
  std::function<BoundPod(const std::string&, const std::string&, const std::string&)> bound_pod;
  // Refusals (and failed TokenReviews) are remembered this long, so a bad token costs one
  // verification, not one per request.
  std::chrono::seconds refusal_ttl{10};
  // Seconds since the epoch; injected for tests.
  std::function<int64_t()> now;
};

// Verifies Kubernetes ServiceAccount tokens offline (JWTs signed by the API server's
// service-account issuer: RS256 with an RSA key, ES256/ES384/ES512 with an EC P-256/P-384/P-521
// key, each key taking only its own algorithm): the issuer and its keys come from the API server's
// OIDC discovery document and JWKS (fetched at start, refreshed), a token must carry that issuer,
// the configured audience, an `exp` in the future (and `nbf`, if any, in the past; 30 s leeway)
// and the kubernetes.io namespace and service account claims. The caller is then that service
// account: scope = its namespace, subject "namespace/name", trusted by `options.trusted` (the
// pod's labels when the token names a pod).
//
// A token the offline check cannot decide (see `options.review`) goes to the API server's
// TokenReview, which decides it (and checks that a pod-bound token's pod still exists). A token
// bound to a pod the agent's pod watch saw deleted (or replaced by another uid) is refused
// either way, and ForgetPod drops the cached verdicts of a pod that goes away.
//
// Verdicts are cached by the token's SHA-256 (at most 10,000 acceptances, kept until the token
// expires, and 1,024 refusals, kept `refusal_ttl`): a cached verdict costs a hash and a lookup.
//
// Identify: no Authorization header is anonymous; a token that is not a JWT goes to `others`
// (the tokens file) when set; anything that fails verification is kPermissionDenied saying why
// ("token expired", "wrong audience", "bad signature", ...), never quoting the token; a token
// that could not be decided now (TokenReview failed or busy) is kUnavailable.
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

  // The issuer named by the discovery document last read; "" until one was.
  std::string issuer() const EXCLUDES(mu_);

  // Drops the cached verdicts of tokens bound to the pod with this uid (it was deleted).
  void ForgetPod(const std::string& uid) EXCLUDES(mu_);

 private:
  struct Keys;
  struct Verdict {
    Caller caller;
    int64_t expires = 0;
    std::string pod_ns, pod_name, pod_uid;  // the pod the token is bound to, if any
  };
  struct Refusal {
    Status status;
    int64_t expires = 0;
  };
  ServiceAccountTokenIdentity(ServiceAccountTokenOptions options,
                              std::unique_ptr<IdentitySource> others);
  Status RefreshKeys() EXCLUDES(mu_);
  std::shared_ptr<const Keys> CurrentKeys(bool unknown_kid) EXCLUDES(mu_);
  // kUnavailable: the token cannot be decided offline (the message says why).
  Result<Verdict> VerifyUncached(std::string_view token) EXCLUDES(mu_);
  Result<Verdict> Review(const std::string& hash, std::string_view token) EXCLUDES(mu_);
  Result<Verdict> ReviewOnce(std::string_view token);
  Result<Caller> Remember(const std::string& hash, Result<Verdict> verdict) EXCLUDES(mu_);
  // The cached verdict of a token, if any.
  std::optional<Result<Caller>> Cached(const std::string& hash, int64_t now) REQUIRES(mu_);

  ServiceAccountTokenOptions options_;
  std::unique_ptr<IdentitySource> others_;
  mutable Mutex mu_;
  CondVar review_done_;
  std::shared_ptr<const Keys> keys_ GUARDED_BY(mu_);
  int64_t fetched_at_ GUARDED_BY(mu_) = 0;
  int reviews_in_flight_ GUARDED_BY(mu_) = 0;
  // By the SHA-256 of the token.
  std::unordered_map<std::string, Verdict> verdicts_ GUARDED_BY(mu_);
  std::unordered_map<std::string, Refusal> refusals_ GUARDED_BY(mu_);
};

}  // namespace buildcache::identity
