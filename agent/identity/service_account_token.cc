#include "agent/identity/service_account_token.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "agent/identity/token_review.h"
#include "common/log/log.h"

namespace buildcache::identity {
namespace {

using Json = nlohmann::json;
constexpr int64_t kLeewaySeconds = 30;
constexpr size_t kMaxVerdicts = 10000;
constexpr size_t kMaxRefusals = 1024;
// A TokenReview's acceptance is kept this long when the token carries no readable exp.
constexpr int64_t kReviewedWithoutExpSeconds = 60;
constexpr size_t kMaxTokenBytes = 16 << 10;

std::optional<std::string> Base64UrlDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '-') {
      v = 62;
    } else if (c == '_') {
      v = 63;
    } else {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// An RSA public key from a JWK's base64url modulus and exponent.
Result<Pkey> RsaFromJwk(const Json& jwk) {
  auto n = Base64UrlDecode(jwk.value("n", ""));
  auto e = Base64UrlDecode(jwk.value("e", ""));
  if (!n || !e || n->empty() || e->empty()) return InvalidArgument("RSA key without n or e");
  BIGNUM* bn_n = BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                           static_cast<int>(n->size()), nullptr);
  BIGNUM* bn_e = BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                           static_cast<int>(e->size()), nullptr);
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
  EVP_PKEY* key = nullptr;
  bool ok =
      bn_n && bn_e && bld && ctx && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) &&
      (params = OSSL_PARAM_BLD_to_param(bld)) != nullptr && EVP_PKEY_fromdata_init(ctx) == 1 &&
      EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) == 1;
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  EVP_PKEY_CTX_free(ctx);
  BN_free(bn_n);
  BN_free(bn_e);
  if (!ok) {
    EVP_PKEY_free(key);
    return InvalidArgument("RSA key does not load");
  }
  return Pkey(key);
}

// The signature algorithms checked offline: RS256 with the issuer's RSA keys, ES256/ES384/ES512
// with its EC keys of the matching curve (kube-apiserver signs with ES256 for a P-256 key, and so
// on). A JWS ECDSA signature is R || S, each `coordinate_bytes` long.
struct Algorithm {
  std::string_view name;
  std::string_view curve;  // the JWK's crv; "" for RSA
  const char* ossl_group;  // OpenSSL's name of that curve
  size_t coordinate_bytes;
  const EVP_MD* (*digest)();
};
constexpr Algorithm kAlgorithms[] = {
    {"RS256", "", nullptr, 0, EVP_sha256},
    {"ES256", "P-256", "prime256v1", 32, EVP_sha256},
    {"ES384", "P-384", "secp384r1", 48, EVP_sha384},
    {"ES512", "P-521", "secp521r1", 66, EVP_sha512},
};

const Algorithm* OfflineAlgorithm(std::string_view name) {
  for (const Algorithm& a : kAlgorithms) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

// An EC public key from a JWK's curve and base64url coordinates; the point must lie on the curve.
Result<std::pair<Pkey, const Algorithm*>> EcFromJwk(const Json& jwk) {
  const std::string crv = jwk.value("crv", Json()).is_string() ? jwk.value("crv", "") : "";
  const Algorithm* alg = nullptr;
  for (const Algorithm& a : kAlgorithms) {
    if (!a.curve.empty() && a.curve == crv) alg = &a;
  }
  if (alg == nullptr) return InvalidArgument("EC key on an unsupported curve");
  auto x = Base64UrlDecode(jwk.value("x", Json()).is_string() ? jwk.value("x", "") : "");
  auto y = Base64UrlDecode(jwk.value("y", Json()).is_string() ? jwk.value("y", "") : "");
  if (!x || !y || x->size() != alg->coordinate_bytes || y->size() != alg->coordinate_bytes) {
    return InvalidArgument("EC key without x or y of the curve's size");
  }
  std::string point = "\x04" + *x + *y;  // uncompressed
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
  EVP_PKEY* key = nullptr;
  bool ok =
      bld && ctx &&
      OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, alg->ossl_group, 0) &&
      OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) &&
      (params = OSSL_PARAM_BLD_to_param(bld)) != nullptr && EVP_PKEY_fromdata_init(ctx) == 1 &&
      EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) == 1;
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  EVP_PKEY_CTX_free(ctx);
  if (ok) {  // loading decodes the point; the check says it is on the curve
    EVP_PKEY_CTX* check = EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr);
    ok = check != nullptr && EVP_PKEY_public_check(check) == 1;
    EVP_PKEY_CTX_free(check);
  }
  if (!ok) {
    EVP_PKEY_free(key);
    return InvalidArgument("EC key does not load");
  }
  return std::make_pair(Pkey(key), alg);
}

// The DER form OpenSSL verifies of a JWS ECDSA signature (R || S); nullopt when it is not that.
std::optional<std::string> EcdsaDer(std::string_view raw, size_t coordinate_bytes) {
  if (raw.size() != 2 * coordinate_bytes) return std::nullopt;
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
  BIGNUM* r = BN_bin2bn(bytes, static_cast<int>(coordinate_bytes), nullptr);
  BIGNUM* s = BN_bin2bn(bytes + coordinate_bytes, static_cast<int>(coordinate_bytes), nullptr);
  ECDSA_SIG* sig = ECDSA_SIG_new();
  if (r == nullptr || s == nullptr || sig == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig, &der);  // sig owns r and s now
  ECDSA_SIG_free(sig);
  if (len <= 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// Whether signature (as the JWS carries it) is alg's signature of signed_part under key.
bool VerifySignature(const Algorithm& alg, EVP_PKEY* key, std::string_view signed_part,
                     std::string_view signature) {
  std::optional<std::string> der;
  if (alg.coordinate_bytes != 0) {
    der = EcdsaDer(signature, alg.coordinate_bytes);
    if (!der) return false;
    signature = *der;
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok =
      ctx && EVP_DigestVerifyInit(ctx, nullptr, alg.digest(), nullptr, key) == 1 &&
      EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(signed_part.data()),
                       signed_part.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char out[32];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : out) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  return hex;
}

bool HasAudience(const Json& claims, const std::string& audience) {
  auto it = claims.find("aud");
  if (it == claims.end()) return false;
  if (it->is_string()) return it->get<std::string>() == audience;
  if (!it->is_array()) return false;
  for (const Json& a : *it) {
    if (a.is_string() && a.get<std::string>() == audience) return true;
  }
  return false;
}

// Other algorithms an API server's keys could sign with; they are not checked offline and go to
// the TokenReview.
bool IsServerAlgorithm(std::string_view alg) {
  return alg == "RS384" || alg == "RS512" || alg == "PS256" || alg == "PS384" || alg == "PS512";
}

// The claims of a JWT, not verified (for a token the API server has authenticated).
Json UnverifiedClaims(std::string_view token) {
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos) return Json::object();
  auto raw = Base64UrlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  if (!raw) return Json::object();
  Json claims = Json::parse(*raw, nullptr, false);
  return claims.is_object() ? claims : Json::object();
}

// The API server's reason for refusing a token, safe to log and answer: bounded, and never
// containing the token or a piece of it.
std::string SafeReason(std::string reason, std::string_view token) {
  if (reason.size() > 200) reason.resize(200);
  for (std::string_view part : {token, token.substr(token.rfind('.') + 1)}) {
    if (part.size() >= 8 && reason.find(part) != std::string::npos) return "";
  }
  for (char& c : reason) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return reason;
}

}  // namespace

struct ServiceAccountTokenIdentity::Keys {
  struct Key {
    std::shared_ptr<EVP_PKEY> pkey;
    std::string_view alg;  // the one algorithm this key verifies (a kAlgorithms name)
  };
  std::string issuer;
  std::map<std::string, Key> by_kid;
};

ServiceAccountTokenIdentity::ServiceAccountTokenIdentity(ServiceAccountTokenOptions options,
                                                         std::unique_ptr<IdentitySource> others)
    : options_(std::move(options)), others_(std::move(others)), keys_(std::make_shared<Keys>()) {}

ServiceAccountTokenIdentity::~ServiceAccountTokenIdentity() = default;

Result<std::unique_ptr<ServiceAccountTokenIdentity>> ServiceAccountTokenIdentity::Create(
    ServiceAccountTokenOptions options, std::unique_ptr<IdentitySource> others) {
  if (!options.now) {
    options.now = [] {
      return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
    };
  }
  std::unique_ptr<ServiceAccountTokenIdentity> source(
      new ServiceAccountTokenIdentity(std::move(options), std::move(others)));
  if (Status s = source->RefreshKeys(); !s.ok()) {
    if (!source->options_.review) return s;
    // Not fatal with a TokenReview to fall back on: tokens are reviewed until the keys load.
    log::Warn("service account keys not loaded; tokens go to the TokenReview",
              {{"error", s.ToString()}});
    const int64_t now = source->options_.now();
    MutexLock lock(source->mu_);
    source->fetched_at_ = now;  // the next attempt follows the usual refresh limits
  }
  return source;
}

std::string ServiceAccountTokenIdentity::issuer() const {
  MutexLock lock(mu_);
  return keys_->issuer;
}

Status ServiceAccountTokenIdentity::RefreshKeys() {
  BC_ASSIGN_OR_RETURN(std::string discovery, options_.fetch("/.well-known/openid-configuration"));
  Json doc = Json::parse(discovery, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.value("issuer", Json()).is_string()) {
    return InvalidArgument("the API server's OIDC discovery document names no issuer");
  }
  auto keys = std::make_shared<Keys>();
  keys->issuer = doc["issuer"].get<std::string>();
  // The API server serves its keys at this path whatever jwks_uri says (which may be an
  // external URL for other consumers).
  BC_ASSIGN_OR_RETURN(std::string body, options_.fetch("/openid/v1/jwks"));
  Json jwks = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!jwks.is_object() || !jwks.value("keys", Json()).is_array()) {
    return InvalidArgument("the API server's JWKS has no keys");
  }
  for (const Json& jwk : jwks["keys"]) {
    if (!jwk.is_object() || !jwk.value("kty", Json()).is_string()) continue;
    const std::string kty = jwk.value("kty", "");
    const std::string kid = jwk.value("kid", Json()).is_string() ? jwk.value("kid", "") : "";
    if (kty == "RSA") {
      auto key = RsaFromJwk(jwk);
      if (!key.ok()) continue;
      keys->by_kid[kid] = {std::shared_ptr<EVP_PKEY>(key->release(), PkeyFree()), "RS256"};
    } else if (kty == "EC") {
      auto key = EcFromJwk(jwk);
      if (!key.ok()) {
        log::Warn("service account key skipped", {{"kid", kid}, {"error", key.status().message()}});
        continue;
      }
      keys->by_kid[kid] = {std::shared_ptr<EVP_PKEY>(key->first.release(), PkeyFree()),
                           key->second->name};
    }
  }
  // Without a usable key every token goes to the TokenReview.
  if (keys->by_kid.empty() && !options_.review) {
    return InvalidArgument("the API server's JWKS has no RSA or EC (P-256, P-384, P-521) key");
  }
  size_t count = keys->by_kid.size();
  const std::string issuer = keys->issuer;
  {
    MutexLock lock(mu_);
    keys_ = std::move(keys);
    fetched_at_ = options_.now();
  }
  log::Info("service account keys loaded", {{"issuer", issuer}, {"keys", count}});
  return Status::Ok();
}

std::shared_ptr<const ServiceAccountTokenIdentity::Keys> ServiceAccountTokenIdentity::CurrentKeys(
    bool unknown_kid) {
  const int64_t now = options_.now();
  bool refresh = false;
  {
    MutexLock lock(mu_);
    const int64_t age = now - fetched_at_;
    refresh =
        age >= options_.refresh.count() || (unknown_kid && age >= options_.min_refresh.count());
    if (refresh) fetched_at_ = now;  // one caller refreshes; the others use what is there
  }
  if (refresh) {
    if (Status s = RefreshKeys(); !s.ok()) {
      log::Warn("service account keys not refreshed", {{"error", s.ToString()}});
    }
  }
  MutexLock lock(mu_);
  return keys_;
}

Result<ServiceAccountTokenIdentity::Verdict> ServiceAccountTokenIdentity::VerifyUncached(
    std::string_view token) {
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return PermissionDenied("malformed token");
  }
  auto header_raw = Base64UrlDecode(token.substr(0, dot1));
  auto claims_raw = Base64UrlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  auto signature = Base64UrlDecode(token.substr(dot2 + 1));
  if (!header_raw || !claims_raw || !signature) return PermissionDenied("malformed token");
  Json header = Json::parse(*header_raw, nullptr, false);
  Json claims = Json::parse(*claims_raw, nullptr, false);
  if (!header.is_object() || !claims.is_object()) return PermissionDenied("malformed token");
  const std::string alg = header.value("alg", Json()).is_string() ? header.value("alg", "") : "";
  const Algorithm* algorithm = OfflineAlgorithm(alg);
  if (algorithm == nullptr) {
    if (IsServerAlgorithm(alg)) {
      return Unavailable("token algorithm " + alg + " not checked offline");
    }
    return PermissionDenied("unsupported token algorithm");
  }
  const std::string kid = header.value("kid", Json()).is_string() ? header.value("kid", "") : "";
  std::shared_ptr<const Keys> keys = CurrentKeys(false);
  if (!keys->by_kid.contains(kid)) keys = CurrentKeys(true);
  if (keys->issuer.empty()) return Unavailable("service account keys not loaded");
  auto key = keys->by_kid.find(kid);
  if (key == keys->by_kid.end()) return Unavailable("token signed by an unknown key");
  // A key verifies only its own algorithm (an RSA key never takes an ES256 header, nor a P-256
  // key ES384), so no token can pick how its signature is read.
  if (key->second.alg != alg) {
    return PermissionDenied("token algorithm " + alg + " does not match its key (" +
                            std::string(key->second.alg) + ")");
  }
  if (!VerifySignature(*algorithm, key->second.pkey.get(), token.substr(0, dot2), *signature)) {
    return PermissionDenied("bad token signature");
  }
  if (claims.value("iss", "") != keys->issuer) return PermissionDenied("token of another issuer");
  if (!HasAudience(claims, options_.audience)) {
    return PermissionDenied("token not for audience " + options_.audience);
  }
  const int64_t now = options_.now();
  if (!claims.value("exp", Json()).is_number_integer()) return PermissionDenied("token has no exp");
  if (claims["exp"].get<int64_t>() + kLeewaySeconds <= now) {
    return PermissionDenied("token expired");
  }
  if (claims.contains("nbf") &&
      (!claims["nbf"].is_number_integer() || claims["nbf"].get<int64_t>() - kLeewaySeconds > now)) {
    return PermissionDenied("token not valid yet");
  }
  const Json& k8s = claims.value("kubernetes.io", Json::object());
  const std::string ns = k8s.is_object() ? k8s.value("namespace", "") : "";
  const Json& sa = k8s.is_object() ? k8s.value("serviceaccount", Json::object()) : Json();
  const std::string sa_name = sa.is_object() ? sa.value("name", "") : "";
  if (!IsScopeName(ns) || sa_name.empty()) {
    return PermissionDenied("token names no namespace and service account");
  }
  Verdict verdict;
  const Json& pod = k8s.value("pod", Json::object());
  if (pod.is_object()) {
    verdict.pod_ns = ns;
    verdict.pod_name = pod.value("name", Json()).is_string() ? pod.value("name", "") : "";
    verdict.pod_uid = pod.value("uid", Json()).is_string() ? pod.value("uid", "") : "";
  }
  std::map<std::string, std::string> labels;
  if (options_.pod_labels && !verdict.pod_name.empty()) {
    labels = options_.pod_labels(ns, verdict.pod_name);
  }
  // Cached until the token expires, so a cached verdict never outlives the token.
  verdict.caller =
      Caller{ns, ns + "/" + sa_name, options_.trusted.Matches(ns, sa_name, labels), false};
  verdict.expires = claims["exp"].get<int64_t>() + kLeewaySeconds;
  return verdict;
}

Result<ServiceAccountTokenIdentity::Verdict> ServiceAccountTokenIdentity::Review(
    const std::string& hash, std::string_view token) {
  {
    MutexLock lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + options_.review_wait;
    while (reviews_in_flight_ >= options_.max_reviews_in_flight) {
      if (!review_done_.WaitUntil(mu_, deadline) &&
          reviews_in_flight_ >= options_.max_reviews_in_flight) {
        return Unavailable("too many token reviews in flight; try again");
      }
    }
    // Another request with the same token may have been reviewed while this one waited.
    const int64_t now = options_.now();
    if (auto it = verdicts_.find(hash); it != verdicts_.end() && it->second.expires > now) {
      return it->second;
    }
    if (auto it = refusals_.find(hash); it != refusals_.end() && it->second.expires > now) {
      return it->second.status;
    }
    ++reviews_in_flight_;
  }
  Result<Verdict> verdict = ReviewOnce(token);
  {
    MutexLock lock(mu_);
    --reviews_in_flight_;
  }
  review_done_.NotifyOne();
  if (options_.on_review) {
    options_.on_review(verdict.ok()                                          ? "authenticated"
                       : verdict.status().code() == StatusCode::kUnavailable ? "error"
                                                                             : "refused");
  }
  return verdict;
}

Result<ServiceAccountTokenIdentity::Verdict> ServiceAccountTokenIdentity::ReviewOnce(
    std::string_view token) {
  Result<std::string> body = options_.review(TokenReviewRequestBody(token, options_.audience));
  if (!body.ok()) {
    return Unavailable("the API server's TokenReview failed: " +
                       std::string(body.status().message()));
  }
  Result<TokenReviewVerdict> review = ParseTokenReview(*body);
  if (!review.ok()) return Unavailable(std::string(review.status().message()));
  if (!review->authenticated) {
    std::string why = SafeReason(review->error, token);
    return PermissionDenied("token refused by the API server's TokenReview" +
                            (why.empty() ? std::string() : " (" + why + ")"));
  }
  if (std::find(review->audiences.begin(), review->audiences.end(), options_.audience) ==
      review->audiences.end()) {
    return PermissionDenied("token not for audience " + options_.audience);
  }
  std::string ns, sa_name;
  if (!SplitServiceAccountUser(review->username, &ns, &sa_name) || !IsScopeName(ns)) {
    return PermissionDenied("token is not a service account's");
  }
  Verdict verdict;
  if (!review->pod_name.empty()) {
    verdict.pod_ns = ns;
    verdict.pod_name = review->pod_name;
    verdict.pod_uid = review->pod_uid;
  }
  std::map<std::string, std::string> labels;
  if (options_.pod_labels && !verdict.pod_name.empty()) {
    labels = options_.pod_labels(ns, verdict.pod_name);
  }
  verdict.caller =
      Caller{ns, ns + "/" + sa_name, options_.trusted.Matches(ns, sa_name, labels), false};
  // The API server authenticated this very token, so its exp claim is the token's.
  const Json claims = UnverifiedClaims(token);
  const int64_t now = options_.now();
  verdict.expires = claims.value("exp", Json()).is_number_integer()
                        ? std::min(claims["exp"].get<int64_t>(), now + 24 * 3600)
                        : now + kReviewedWithoutExpSeconds;
  return verdict;
}

std::optional<Result<Caller>> ServiceAccountTokenIdentity::Cached(const std::string& hash,
                                                                  int64_t now) {
  if (auto it = verdicts_.find(hash); it != verdicts_.end() && it->second.expires > now) {
    return Result<Caller>(it->second.caller);
  }
  if (auto it = refusals_.find(hash); it != refusals_.end() && it->second.expires > now) {
    return Result<Caller>(it->second.status);
  }
  return std::nullopt;
}

Result<Caller> ServiceAccountTokenIdentity::Remember(const std::string& hash,
                                                     Result<Verdict> verdict) {
  const int64_t now = options_.now();
  MutexLock lock(mu_);
  // Checked under the lock that ForgetPod takes, so a pod deleted while its token was being
  // verified either is seen here or drops this verdict right after.
  if (verdict.ok() && options_.bound_pod && !verdict->pod_name.empty() &&
      options_.bound_pod(verdict->pod_ns, verdict->pod_name, verdict->pod_uid) == BoundPod::kGone) {
    verdict = PermissionDenied("the token's pod " + verdict->pod_ns + "/" + verdict->pod_name +
                               " no longer exists on this node");
  }
  if (!verdict.ok()) {
    if (refusals_.size() >= kMaxRefusals) refusals_.clear();
    refusals_[hash] = Refusal{verdict.status(), now + options_.refusal_ttl.count()};
    return verdict.status();
  }
  if (verdicts_.size() >= kMaxVerdicts) verdicts_.clear();
  refusals_.erase(hash);
  Caller caller = verdict->caller;
  verdicts_[hash] = std::move(*verdict);
  return caller;
}

void ServiceAccountTokenIdentity::ForgetPod(const std::string& uid) {
  if (uid.empty()) return;
  MutexLock lock(mu_);
  std::erase_if(verdicts_, [&](const auto& entry) { return entry.second.pod_uid == uid; });
}

Result<Caller> ServiceAccountTokenIdentity::Verify(std::string_view token) {
  if (token.size() > kMaxTokenBytes) return PermissionDenied("token too long");
  const std::string hash = Sha256Hex(token);
  {
    MutexLock lock(mu_);
    if (std::optional<Result<Caller>> cached = Cached(hash, options_.now())) return *cached;
  }
  Result<Verdict> verdict = VerifyUncached(token);
  if (!verdict.ok() && verdict.status().code() == StatusCode::kUnavailable) {
    if (!options_.review) {
      verdict = PermissionDenied(std::string(verdict.status().message()));
    } else {
      log::Debug("token review", {{"why", verdict.status().message()}});
      verdict = Review(hash, token);
    }
  }
  return Remember(hash, std::move(verdict));
}
Result<Caller> ServiceAccountTokenIdentity::Identify(const http::Request& request) {
  Result<std::optional<std::string>> token = BearerToken(request.header("Authorization"));
  if (!token.ok()) return PermissionDenied(token.status().message());
  if (!token->has_value()) return Caller::Anonymous();
  const std::string& t = **token;
  const bool jwt = t.starts_with("eyJ") && std::count(t.begin(), t.end(), '.') == 2;
  if (!jwt && others_) return others_->Identify(request);
  return Verify(t);
}

}  // namespace buildcache::identity
