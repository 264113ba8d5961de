#include "agent/identity/service_account_token.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <nlohmann/json.hpp>

namespace buildcache::identity {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

std::string B64Url(std::string_view data) {
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

// An RSA signing key and its JWK, as the API server's service-account issuer has.
struct Issuer {
  explicit Issuer(std::string kid_in) : kid(std::move(kid_in)), key(EVP_RSA_gen(2048)) {}
  ~Issuer() { EVP_PKEY_free(key); }
  Json Jwk() const {
    BIGNUM* n = nullptr;
    BIGNUM* e = nullptr;
    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n);
    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e);
    std::string nb(BN_num_bytes(n), '\0'), eb(BN_num_bytes(e), '\0');
    BN_bn2bin(n, reinterpret_cast<unsigned char*>(nb.data()));
    BN_bn2bin(e, reinterpret_cast<unsigned char*>(eb.data()));
    BN_free(n);
    BN_free(e);
    return {{"kty", "RSA"}, {"kid", kid}, {"alg", "RS256"}, {"n", B64Url(nb)}, {"e", B64Url(eb)}};
  }
  std::string Sign(const Json& claims, std::string alg = "RS256") const {
    std::string signed_part =
        B64Url(Json{{"alg", alg}, {"kid", kid}}.dump()) + "." + B64Url(claims.dump());
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
};

constexpr int64_t kNow = 1'800'000'000;
constexpr char kIssuerUrl[] = "https://kubernetes.default.svc";

Json Claims(std::string ns = "team-a", std::string sa = "builder") {
  return {{"iss", kIssuerUrl},
          {"aud", {"buildcache.io"}},
          {"exp", kNow + 600},
          {"iat", kNow - 10},
          {"nbf", kNow - 10},
          {"kubernetes.io", {{"namespace", ns}, {"serviceaccount", {{"name", sa}}}}}};
}

class ServiceAccountTokenTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServiceAccountTokenIdentity> Create() {
    ServiceAccountTokenOptions options;
    options.trusted.service_accounts = {"release/publisher"};
    options.now = [this] { return now_; };
    options.fetch = [this](const std::string& path) -> Result<std::string> {
      ++fetches_[path];
      if (path == "/.well-known/openid-configuration") {
        return Json{{"issuer", kIssuerUrl}, {"jwks_uri", "https://elsewhere/keys"}}.dump();
      }
      Json keys = Json::array();
      for (const Issuer* i : published_) keys.push_back(i->Jwk());
      return Json{{"keys", keys}}.dump();
    };
    auto source = ServiceAccountTokenIdentity::Create(std::move(options), nullptr);
    EXPECT_TRUE(source.ok()) << source.status().ToString();
    return source.ok() ? std::move(source).value() : nullptr;
  }
  std::string Refusal(ServiceAccountTokenIdentity& source, const std::string& token) {
    auto r = source.Verify(token);
    EXPECT_FALSE(r.ok());
    return r.ok() ? "" : std::string(r.status().message());
  }

  Issuer issuer_{"key-1"};
  std::vector<const Issuer*> published_{&issuer_};
  int64_t now_ = kNow;
  std::map<std::string, int> fetches_;
};

TEST_F(ServiceAccountTokenTest, AValidTokenIsItsServiceAccountAndTheVerdictIsCached) {
  auto source = Create();
  ASSERT_TRUE(source);
  auto builder = source->Verify(issuer_.Sign(Claims()));
  ASSERT_TRUE(builder.ok()) << builder.status().ToString();
  EXPECT_EQ(builder->scope, "team-a");
  EXPECT_EQ(builder->subject, "team-a/builder");
  EXPECT_FALSE(builder->trusted_writer);
  auto publisher = source->Verify(issuer_.Sign(Claims("release", "publisher")));
  ASSERT_TRUE(publisher.ok());
  EXPECT_TRUE(publisher->trusted_writer);
  // The cached verdict ends with the token: after exp (and the leeway) it is refused.
  const std::string token = issuer_.Sign(Claims());
  ASSERT_TRUE(source->Verify(token).ok());
  now_ = kNow + 600 + 31;
  EXPECT_THAT(Refusal(*source, token), HasSubstr("token expired"));
}

TEST_F(ServiceAccountTokenTest, ForgedAndMisdirectedTokensAreRefusedSayingWhy) {
  auto source = Create();
  ASSERT_TRUE(source);
  Issuer stranger("key-1");  // same key id, another key
  EXPECT_THAT(Refusal(*source, stranger.Sign(Claims())), HasSubstr("bad token signature"));
  Json wrong_aud = Claims();
  wrong_aud["aud"] = "https://kubernetes.default.svc";
  EXPECT_THAT(Refusal(*source, issuer_.Sign(wrong_aud)), HasSubstr("not for audience"));
  Json other_issuer = Claims();
  other_issuer["iss"] = "https://evil.example";
  EXPECT_THAT(Refusal(*source, issuer_.Sign(other_issuer)), HasSubstr("another issuer"));
  Json expired = Claims();
  expired["exp"] = kNow - 31;
  EXPECT_THAT(Refusal(*source, issuer_.Sign(expired)), HasSubstr("token expired"));
  Json early = Claims();
  early["nbf"] = kNow + 3600;
  EXPECT_THAT(Refusal(*source, issuer_.Sign(early)), HasSubstr("not valid yet"));
  Json no_ns = Claims();
  no_ns.erase("kubernetes.io");
  EXPECT_THAT(Refusal(*source, issuer_.Sign(no_ns)), HasSubstr("no namespace"));
  EXPECT_THAT(Refusal(*source, issuer_.Sign(Claims(), "none")), HasSubstr("algorithm"));
  // A valid token with its claims edited (another namespace), signature kept.
  std::string token = issuer_.Sign(Claims());
  size_t dot1 = token.find('.'), dot2 = token.rfind('.');
  std::string edited = token.substr(0, dot1 + 1) + B64Url(Claims("release", "publisher").dump()) +
                       token.substr(dot2);
  EXPECT_THAT(Refusal(*source, edited), HasSubstr("bad token signature"));
  for (std::string junk : {"a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"}) {
    EXPECT_FALSE(source->Verify(junk).ok()) << junk;
  }
}

TEST_F(ServiceAccountTokenTest, ARotatedKeyIsFetchedWhenATokenNamesIt) {
  auto source = Create();
  ASSERT_TRUE(source);
  Issuer rotated("key-2");
  const std::string token = rotated.Sign(Claims());
  EXPECT_THAT(Refusal(*source, token), HasSubstr("unknown key"));  // not published yet
  published_.push_back(&rotated);
  EXPECT_FALSE(source->Verify(token).ok());  // refreshed at most every 10 s
  now_ += 11;
  EXPECT_TRUE(source->Verify(token).ok());
  EXPECT_EQ(fetches_["/openid/v1/jwks"], 2);
}

}  // namespace
}  // namespace buildcache::identity
