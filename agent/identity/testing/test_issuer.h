// A ServiceAccount token issuer for tests and benchmarks: an RSA signing key, its JWK as the API
// server publishes it (/openid/v1/jwks), and JWTs signed with it. Header-only; link OpenSSL.
#pragma once

#include <openssl/bn.h>
#include <openssl/core_names.h>
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

struct Issuer {
  explicit Issuer(std::string kid_in) : kid(std::move(kid_in)), key(EVP_RSA_gen(2048)) {}
  ~Issuer() { EVP_PKEY_free(key); }
  Issuer(const Issuer&) = delete;
  Issuer& operator=(const Issuer&) = delete;

  nlohmann::json Jwk() const {
    return {{"kty", "RSA"},
            {"kid", kid},
            {"alg", "RS256"},
            {"n", B64Url(Param(OSSL_PKEY_PARAM_RSA_N))},
            {"e", B64Url(Param(OSSL_PKEY_PARAM_RSA_E))}};
  }

  // A JWT of claims; the header names alg (the signature is RS256 whatever alg says).
  std::string Sign(const nlohmann::json& claims, std::string alg = "RS256") const {
    std::string signed_part =
        B64Url(nlohmann::json{{"alg", alg}, {"kid", kid}}.dump()) + "." + B64Url(claims.dump());
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
    return signed_part + "." + B64Url(sig);
  }

  std::string kid;
  EVP_PKEY* key;

 private:
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
