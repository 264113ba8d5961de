// A ServiceAccount token issuer for tests and benchmarks: an RSA (RS256) or EC P-256 (ES256)
// signing key, its JWK as the API server publishes it (/openid/v1/jwks), and JWTs signed with it.
// Header-only; link OpenSSL.
#pragma once

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

namespace buildcache::identity::testing {

// base64url without padding (RFC 7515), as JWTs and JWKs spell their parts.
inline std::string B64Url(std::string_view data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : data) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

enum class KeyType { kRsa, kEcP256 };

struct Issuer {
  explicit Issuer(std::string kid_in, KeyType type_in = KeyType::kRsa)
      : kid(std::move(kid_in)),
        type(type_in),
        key(type == KeyType::kRsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256")) {}
  ~Issuer() { EVP_PKEY_free(key); }
  Issuer(const Issuer&) = delete;
  Issuer& operator=(const Issuer&) = delete;

  // The algorithm the API server signs with for this key.
  std::string alg() const { return type == KeyType::kRsa ? "RS256" : "ES256"; }

  nlohmann::json Jwk() const {
    if (type == KeyType::kEcP256) {
      return {{"kty", "EC"},
              {"kid", kid},
              {"alg", "ES256"},
              {"crv", "P-256"},
              {"x", B64Url(Coordinate(OSSL_PKEY_PARAM_EC_PUB_X))},
              {"y", B64Url(Coordinate(OSSL_PKEY_PARAM_EC_PUB_Y))}};
    }
    return {{"kty", "RSA"},
            {"kid", kid},
            {"alg", "RS256"},
            {"n", B64Url(Param(OSSL_PKEY_PARAM_RSA_N))},
            {"e", B64Url(Param(OSSL_PKEY_PARAM_RSA_E))}};
  }

  // A JWT of claims; the header names alg (default: the key's). The signature is the key's
  // algorithm whatever alg says: RS256, or ES256 as JWS spells it (R and S, 32 bytes each).
  std::string Sign(const nlohmann::json& claims, std::string header_alg = "") const {
    if (header_alg.empty()) header_alg = alg();
    std::string signed_part = B64Url(nlohmann::json{{"alg", header_alg}, {"kid", kid}}.dump()) +
                              "." + B64Url(claims.dump());
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    size_t len = 0;
    EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
    EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(signed_part.data()),
                   signed_part.size());
    std::string sig(len, '\0');
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                   reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size());
    EVP_MD_CTX_free(ctx);
    sig.resize(len);
    if (type == KeyType::kEcP256) sig = RawEcdsa(sig);
    return signed_part + "." + B64Url(sig);
  }

  std::string kid;
  KeyType type;
  EVP_PKEY* key;

 private:
  // A DER ECDSA signature as R || S, each left-padded to 32 bytes.
  static std::string RawEcdsa(const std::string& der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
    std::string raw(64, '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(sig), reinterpret_cast<unsigned char*>(raw.data()), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(sig), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
    ECDSA_SIG_free(sig);
    return raw;
  }
  // An EC public key coordinate, 32 bytes (P-256).
  std::string Coordinate(const char* name) const {
    BIGNUM* bn = nullptr;
    EVP_PKEY_get_bn_param(key, name, &bn);
    std::string out(32, '\0');
    BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), 32);
    BN_free(bn);
    return out;
  }
  std::string Param(const char* name) const {
    BIGNUM* bn = nullptr;
    EVP_PKEY_get_bn_param(key, name, &bn);
    std::string out(BN_num_bytes(bn), '\0');
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
    BN_free(bn);
    return out;
  }
};

}  // namespace buildcache::identity::testing
