#include "agent/identity/service_account_token.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "agent/identity/testing/test_issuer.h"
#include "agent/identity/token_review.h"

namespace buildcache::identity {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

using testing::B64Url;
using testing::Issuer;

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

// What the API server answers to a TokenReview.
std::string ReviewAnswer(bool authenticated,
                         std::string user = "system:serviceaccount:team-a:builder",
                         Json extra = Json::object(), std::string error = "") {
  Json status = {{"authenticated", authenticated}};
  if (authenticated) {
    status["user"] = {{"username", user}, {"extra", extra}};
    status["audiences"] = {"buildcache.io"};
  }
  if (!error.empty()) status["error"] = error;
  return Json{
      {"apiVersion", "authentication.k8s.io/v1"}, {"kind", "TokenReview"}, {"status", status}}
      .dump();
}

class ServiceAccountTokenTest : public ::testing::Test {
 protected:
  std::unique_ptr<ServiceAccountTokenIdentity> Create() {
    ServiceAccountTokenOptions options;
    options.trusted.service_accounts = {"release/publisher"};
    options.now = [this] { return now_; };
    if (with_review_) {
      options.review = [this](const std::string& body) -> Result<std::string> {
        ++reviews_;
        Json request = Json::parse(body);
        EXPECT_EQ(request["spec"]["audiences"], Json({"buildcache.io"}));
        last_reviewed_ = request["spec"]["token"].get<std::string>();
        return review_answer_;
      };
      options.on_review = [this](std::string_view result) { review_results_.emplace_back(result); };
      options.bound_pod = [this](const std::string& ns, const std::string& name,
                                 const std::string& uid) {
        auto it = pods_.find(ns + "/" + name);
        if (it == pods_.end()) return BoundPod::kUnknown;
        return it->second == uid ? BoundPod::kLive : BoundPod::kGone;
      };
    }
    options.fetch = [this](const std::string& path) -> Result<std::string> {
      ++fetches_[path];
      if (!keys_reachable_) return Unavailable("GET " + path + ": HTTP 403");
      if (path == "/.well-known/openid-configuration") {
        return Json{{"issuer", kIssuerUrl}, {"jwks_uri", "https://elsewhere/keys"}}.dump();
      }
      Json keys = Json::array();
      for (const Issuer* i : published_) keys.push_back(i->Jwk());
      for (const Json& k : extra_keys_) keys.push_back(k);
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
  std::vector<Json> extra_keys_;  // published as they are
  int64_t now_ = kNow;
  std::map<std::string, int> fetches_;
  bool keys_reachable_ = true;
  bool with_review_ = false;
  Result<std::string> review_answer_ = ReviewAnswer(true);
  int reviews_ = 0;
  std::string last_reviewed_;
  std::vector<std::string> review_results_;
  std::map<std::string, std::string> pods_;  // "ns/name" -> uid
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

// kube-apiserver signs with ES256 when --service-account-signing-key-file is an EC P-256 key; its
// JWKS then publishes {kty: EC, crv: P-256, x, y}. Those tokens are verified offline too.
TEST_F(ServiceAccountTokenTest, AnEcdsaIssuersTokensAreVerifiedOffline) {
  with_review_ = true;  // to see that none is asked
  Issuer ec("ec-1", testing::KeyType::kEcP256);
  published_ = {&ec};
  auto source = Create();
  ASSERT_TRUE(source);
  const std::string token = ec.Sign(Claims("team-a", "builder"));
  auto caller = source->Verify(token);
  ASSERT_TRUE(caller.ok()) << caller.status().ToString();
  EXPECT_EQ(caller->scope, "team-a");
  EXPECT_EQ(caller->subject, "team-a/builder");
  auto publisher = source->Verify(ec.Sign(Claims("release", "publisher")));
  ASSERT_TRUE(publisher.ok());
  EXPECT_TRUE(publisher->trusted_writer);

  // A changed signature (one bit of S), another EC key under the same key id, edited claims with
  // the signature kept, and signatures of the wrong length are refused, never reviewed.
  const size_t dot2 = token.rfind('.');
  {
    std::string raw = token.substr(dot2 + 1);
    raw[raw.size() - 2] = raw[raw.size() - 2] == 'A' ? 'B' : 'A';
    EXPECT_THAT(Refusal(*source, token.substr(0, dot2 + 1) + raw),
                HasSubstr("bad token signature"));
  }
  Issuer stranger("ec-1", testing::KeyType::kEcP256);
  EXPECT_THAT(Refusal(*source, stranger.Sign(Claims())), HasSubstr("bad token signature"));
  const size_t dot1 = token.find('.');
  const std::string edited = token.substr(0, dot1 + 1) +
                             B64Url(Claims("release", "publisher").dump()) + token.substr(dot2);
  EXPECT_THAT(Refusal(*source, edited), HasSubstr("bad token signature"));
  for (size_t len : {0, 63, 65, 72}) {
    EXPECT_THAT(Refusal(*source, token.substr(0, dot2 + 1) + B64Url(std::string(len, '\x01'))),
                HasSubstr("bad token signature"))
        << len;
  }
  // A key verifies only its own algorithm: an EC key's id under an RS256 or ES384 header, or an
  // RSA key's under ES256, is refused (no token picks how its signature is read).
  EXPECT_THAT(Refusal(*source, ec.Sign(Claims(), "RS256")), HasSubstr("does not match its key"));
  EXPECT_THAT(Refusal(*source, ec.Sign(Claims(), "ES384")), HasSubstr("does not match its key"));
  published_ = {&ec, &issuer_};
  now_ += 601;  // the next refresh publishes the RSA key too
  ASSERT_TRUE(source->Verify(issuer_.Sign(Claims("team-b"))).ok());
  EXPECT_THAT(Refusal(*source, issuer_.Sign(Claims("team-c"), "ES256")),
              HasSubstr("does not match its key"));
  EXPECT_EQ(reviews_, 0);
}

// A JWKS EC key that does not load (a point off the curve, short coordinates, an unknown curve)
// is skipped; the others still work.
TEST_F(ServiceAccountTokenTest, BrokenEcKeysAreSkipped) {
  Issuer ec("ec-1", testing::KeyType::kEcP256);
  Json off_curve = ec.Jwk();
  off_curve["kid"] = "off-curve";
  std::string y = testing::B64Url(std::string(32, '\x07'));
  off_curve["y"] = y;
  Json short_x = ec.Jwk();
  short_x["kid"] = "short";
  short_x["x"] = testing::B64Url(std::string(31, '\x07'));
  Json curve = ec.Jwk();
  curve["kid"] = "curve";
  curve["crv"] = "secp256k1";
  extra_keys_ = {off_curve, short_x, curve};
  published_ = {&ec};
  auto source = Create();
  ASSERT_TRUE(source);
  EXPECT_TRUE(source->Verify(ec.Sign(Claims())).ok());
  for (const char* kid : {"off-curve", "short", "curve"}) {
    Json header = {{"alg", "ES256"}, {"kid", kid}};
    const std::string token = ec.Sign(Claims());
    const std::string forged = B64Url(header.dump()) + token.substr(token.find('.'));
    EXPECT_THAT(Refusal(*source, forged), HasSubstr("unknown key")) << kid;
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

TEST_F(ServiceAccountTokenTest, WithoutKeysATokenIsDecidedByTheTokenReviewOnce) {
  keys_reachable_ = false;
  with_review_ = true;
  auto source = Create();  // starts: the keys are not fatal with a review to fall back on
  ASSERT_TRUE(source);
  const std::string token = issuer_.Sign(Claims());
  auto caller = source->Verify(token);
  ASSERT_TRUE(caller.ok()) << caller.status().ToString();
  EXPECT_EQ(caller->scope, "team-a");
  EXPECT_EQ(caller->subject, "team-a/builder");
  EXPECT_EQ(last_reviewed_, token);
  // Cached until the token's exp: the warm path asks nobody.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(source->Verify(token).ok());
  EXPECT_EQ(reviews_, 1);
  EXPECT_EQ(review_results_, std::vector<std::string>{"authenticated"});
  now_ = kNow + 601;
  review_answer_ = ReviewAnswer(false, "", Json::object(), "token has expired");
  EXPECT_THAT(Refusal(*source, token), HasSubstr("refused by the API server's TokenReview"));
  // The keys come back: tokens are verified offline again (after the rate-limited refresh).
  keys_reachable_ = true;
  now_ += 11;
  const int before = reviews_;
  EXPECT_TRUE(source->Verify(issuer_.Sign(Claims("release", "publisher"))).ok());
  EXPECT_EQ(reviews_, before);
}

TEST_F(ServiceAccountTokenTest, ATokenOfAnUnknownKeyIsRefusedByTheReviewAndTheRefusalIsCached) {
  with_review_ = true;
  auto source = Create();
  ASSERT_TRUE(source);
  Issuer stranger("key-from-elsewhere");
  const std::string forged = stranger.Sign(Claims("release", "publisher"));
  review_answer_ =
      ReviewAnswer(false, "", Json::object(), "[invalid bearer token, " + forged + "]");
  const std::string why = Refusal(*source, forged);
  EXPECT_THAT(why, HasSubstr("refused by the API server's TokenReview"));
  EXPECT_EQ(why.find(forged), std::string::npos);  // the API server's reason quoted the token
  EXPECT_EQ(fetches_["/openid/v1/jwks"], 1);       // the refresh is rate-limited
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(source->Verify(forged).ok());
  EXPECT_EQ(reviews_, 1);
  now_ += 11;  // the refusal is remembered for refusal_ttl (10 s), then asked again
  EXPECT_FALSE(source->Verify(forged).ok());
  EXPECT_EQ(reviews_, 2);
  EXPECT_EQ(fetches_["/openid/v1/jwks"], 2);
  EXPECT_EQ(review_results_, (std::vector<std::string>{"refused", "refused"}));
}

TEST_F(ServiceAccountTokenTest, TheReviewsAnswerMustNameAServiceAccountForTheAudience) {
  with_review_ = true;
  auto source = Create();
  ASSERT_TRUE(source);
  Issuer stranger("key-2");
  review_answer_ = ReviewAnswer(true, "admin");  // authenticated, but a user, not a pod
  EXPECT_THAT(Refusal(*source, stranger.Sign(Claims())), HasSubstr("not a service account"));
  Json other = Json::parse(ReviewAnswer(true));
  other["status"]["audiences"] = {"https://kubernetes.default.svc"};
  review_answer_ = other.dump();
  EXPECT_THAT(Refusal(*source, stranger.Sign(Claims("team-b"))), HasSubstr("not for audience"));
  // The API server does not answer: unavailable (503), not a refusal of the token.
  review_answer_ = Unavailable("POST tokenreviews: HTTP 500");
  auto r = source->Verify(stranger.Sign(Claims("team-c")));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(review_results_.back(), "error");
  // Algorithms not checked offline that an API server's key could sign with go to the review;
  // others never do.
  review_answer_ = ReviewAnswer(true, "system:serviceaccount:team-d:builder");
  auto ps = source->Verify(issuer_.Sign(Claims("team-d"), "PS256"));
  ASSERT_TRUE(ps.ok()) << ps.status().ToString();
  EXPECT_EQ(ps->subject, "team-d/builder");
  const int before = reviews_;
  EXPECT_THAT(Refusal(*source, issuer_.Sign(Claims(), "HS256")), HasSubstr("algorithm"));
  EXPECT_EQ(reviews_, before);
}

TEST_F(ServiceAccountTokenTest, ADeletedPodsTokenIsRefusedAndItsCachedVerdictDropped) {
  with_review_ = true;
  auto source = Create();
  ASSERT_TRUE(source);
  Json bound = Claims();
  bound["kubernetes.io"]["pod"] = {{"name", "ci-1"}, {"uid", "uid-1"}};
  pods_["team-a/ci-1"] = "uid-1";
  const std::string token = issuer_.Sign(bound);
  ASSERT_TRUE(source->Verify(token).ok());
  // The pod is deleted: the watch reports it, the cached verdict goes.
  pods_["team-a/ci-1"] = "uid-2";           // the name now belongs to another pod
  ASSERT_TRUE(source->Verify(token).ok());  // still cached
  source->ForgetPod("uid-1");
  EXPECT_THAT(Refusal(*source, token), HasSubstr("no longer exists"));
  // A pod the watch does not know (another node's) is not refused for that.
  Json elsewhere = Claims();
  elsewhere["kubernetes.io"]["pod"] = {{"name", "far"}, {"uid", "uid-9"}};
  EXPECT_TRUE(source->Verify(issuer_.Sign(elsewhere)).ok());
  // Through the TokenReview too: the pod named in the review's extra is checked.
  Issuer stranger("key-2");
  review_answer_ = ReviewAnswer(true, "system:serviceaccount:team-a:builder",
                                {{"authentication.kubernetes.io/pod-name", {"ci-1"}},
                                 {"authentication.kubernetes.io/pod-uid", {"uid-1"}}});
  EXPECT_THAT(Refusal(*source, stranger.Sign(bound)), HasSubstr("no longer exists"));
  EXPECT_EQ(reviews_, 1);
}

TEST(TokenReviewTest, RequestAndAnswer) {
  Json request = Json::parse(TokenReviewRequestBody("abc", "buildcache.io"));
  EXPECT_EQ(request["kind"], "TokenReview");
  EXPECT_EQ(request["apiVersion"], "authentication.k8s.io/v1");
  EXPECT_EQ(request["spec"]["token"], "abc");
  auto v = ParseTokenReview(ReviewAnswer(true, "system:serviceaccount:a:b",
                                         {{"authentication.kubernetes.io/pod-name", {"p"}},
                                          {"authentication.kubernetes.io/pod-uid", {"u"}}}));
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->authenticated);
  EXPECT_EQ(v->pod_name, "p");
  EXPECT_EQ(v->pod_uid, "u");
  EXPECT_FALSE(ParseTokenReview("{}").ok());
  EXPECT_FALSE(ParseTokenReview("not json").ok());
  std::string ns, name;
  EXPECT_TRUE(SplitServiceAccountUser("system:serviceaccount:a:b", &ns, &name));
  EXPECT_EQ(ns + "/" + name, "a/b");
  for (const char* bad : {"admin", "system:serviceaccount:a", "system:serviceaccount::b",
                          "system:serviceaccount:a:b:c", "system:serviceaccounts:a:b"}) {
    EXPECT_FALSE(SplitServiceAccountUser(bad, &ns, &name)) << bad;
  }
}

}  // namespace
}  // namespace buildcache::identity
