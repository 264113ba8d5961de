#include "agent/identity/service_account_token.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "common/log/log.h"

namespace buildcache::identity {
namespace {

using Json = nlohmann::json;
constexpr int64_t kLeewaySeconds = 30;
constexpr size_t kMaxVerdicts = 10000;
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

bool VerifyRs256(EVP_PKEY* key, std::string_view signed_part, std::string_view signature) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok =
      ctx && EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
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

}  // namespace

struct ServiceAccountTokenIdentity::Keys {
  std::map<std::string, std::shared_ptr<EVP_PKEY>> by_kid;
};

ServiceAccountTokenIdentity::ServiceAccountTokenIdentity(ServiceAccountTokenOptions options,
                                                         std::unique_ptr<IdentitySource> others)
    : options_(std::move(options)), others_(std::move(others)) {}

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
  BC_ASSIGN_OR_RETURN(std::string discovery,
                      source->options_.fetch("/.well-known/openid-configuration"));
  Json doc = Json::parse(discovery, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.value("issuer", Json()).is_string()) {
    return InvalidArgument("the API server's OIDC discovery document names no issuer");
  }
  source->issuer_ = doc["issuer"].get<std::string>();
  BC_RETURN_IF_ERROR(source->RefreshKeys());
  return source;
}

Status ServiceAccountTokenIdentity::RefreshKeys() {
  // The API server serves its keys at this path whatever jwks_uri says (which may be an
  // external URL for other consumers).
  BC_ASSIGN_OR_RETURN(std::string body, options_.fetch("/openid/v1/jwks"));
  Json jwks = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!jwks.is_object() || !jwks.value("keys", Json()).is_array()) {
    return InvalidArgument("the API server's JWKS has no keys");
  }
  auto keys = std::make_shared<Keys>();
  for (const Json& jwk : jwks["keys"]) {
    if (!jwk.is_object() || jwk.value("kty", "") != "RSA") continue;
    auto key = RsaFromJwk(jwk);
    if (!key.ok()) continue;
    keys->by_kid[jwk.value("kid", "")] = std::shared_ptr<EVP_PKEY>(key->release(), PkeyFree());
  }
  if (keys->by_kid.empty()) return InvalidArgument("the API server's JWKS has no RSA key");
  size_t count = keys->by_kid.size();
  {
    MutexLock lock(mu_);
    keys_ = std::move(keys);
    fetched_at_ = options_.now();
  }
  log::Info("service account keys loaded", {{"issuer", issuer_}, {"keys", count}});
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
  if (header.value("alg", "") != "RS256") return PermissionDenied("unsupported token algorithm");
  const std::string kid = header.value("kid", "");
  std::shared_ptr<const Keys> keys = CurrentKeys(false);
  if (!keys->by_kid.contains(kid)) keys = CurrentKeys(true);
  auto key = keys->by_kid.find(kid);
  if (key == keys->by_kid.end()) return PermissionDenied("token signed by an unknown key");
  if (!VerifyRs256(key->second.get(), token.substr(0, dot2), *signature)) {
    return PermissionDenied("bad token signature");
  }
  if (claims.value("iss", "") != issuer_) return PermissionDenied("token of another issuer");
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
  std::map<std::string, std::string> labels;
  const Json& pod = k8s.value("pod", Json::object());
  if (pod.is_object() && options_.pod_labels && pod.value("name", "") != "") {
    labels = options_.pod_labels(ns, pod.value("name", ""));
  }
  // Cached until the token expires, so a cached verdict never outlives the token.
  return Verdict{
      Caller{ns, ns + "/" + sa_name, options_.trusted.Matches(ns, sa_name, labels), false},
      claims["exp"].get<int64_t>() + kLeewaySeconds};
}

Result<Caller> ServiceAccountTokenIdentity::Verify(std::string_view token) {
  if (token.size() > kMaxTokenBytes) return PermissionDenied("token too long");
  const std::string hash = Sha256Hex(token);
  const int64_t now = options_.now();
  {
    MutexLock lock(mu_);
    auto it = verdicts_.find(hash);
    if (it != verdicts_.end() && it->second.expires > now) return it->second.caller;
  }
  BC_ASSIGN_OR_RETURN(Verdict verdict, VerifyUncached(token));
  MutexLock lock(mu_);
  if (verdicts_.size() >= kMaxVerdicts) verdicts_.clear();
  verdicts_[hash] = verdict;
  return verdict.caller;
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
