#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "agent/identity/identity_gate.h"
#include "agent/identity/token_file_identity.h"

namespace buildcache::identity {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

constexpr std::string_view kRelease = "release-token-0123456789";
constexpr std::string_view kPr = "pr-token-abcdefghijklmnop";

// A request with headers and an address; no body.
class FakeRequest final : public http::Request {
 public:
  FakeRequest(std::string method, std::map<std::string, std::string> headers = {})
      : method_(std::move(method)), headers_(std::move(headers)) {}
  std::string_view method() const override { return method_; }
  std::string_view target() const override { return "/cache/key"; }
  std::string_view header(std::string_view name) const override {
    auto it = headers_.find(std::string(name));
    return it == headers_.end() ? std::string_view() : std::string_view(it->second);
  }
  std::optional<uint64_t> content_length() const override { return std::nullopt; }
  std::string_view remote_address() const override { return "10.0.0.7:5555"; }
  Result<size_t> ReadBody(std::span<char>) override { return size_t{0}; }

 private:
  std::string method_;
  std::map<std::string, std::string> headers_;
};

class FakeResponse final : public http::Response {
 public:
  void SetStatus(int code) override { status = code; }
  void SetHeader(std::string_view name, std::string_view value) override {
    headers[std::string(name)] = std::string(value);
  }
  Status Send(std::string_view b) override {
    body = std::string(b);
    sent = true;
    return Status::Ok();
  }
  Status SendFile(int, uint64_t, uint64_t) override { return Status::Ok(); }
  Status Begin(std::optional<uint64_t>) override { return Status::Ok(); }
  Status Write(std::string_view) override { return Status::Ok(); }
  Status End() override { return Status::Ok(); }
  void Abort() override {}
  bool started() const override { return sent; }

  int status = 200;
  bool sent = false;
  std::string body;
  std::map<std::string, std::string> headers;
};

std::string Basic(std::string_view user_pass) {
  static constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < user_pass.size(); i += 3) {
    uint32_t v = (uint8_t(user_pass[i]) << 16) | (uint8_t(user_pass[i + 1]) << 8) |
                 uint8_t(user_pass[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
  }
  if (size_t rest = user_pass.size() - i; rest > 0) {
    uint32_t v = uint8_t(user_pass[i]) << 16;
    if (rest == 2) v |= uint8_t(user_pass[i + 1]) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += rest == 2 ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return "Basic " + out;
}

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("identity_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    path_ = (dir_ / "tokens.yaml").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const std::string& text) {
    std::string tmp = path_ + ".tmp";
    std::ofstream(tmp) << text;
    fs::rename(tmp, path_);  // a new inode, as a Secret volume's symlink swap gives
  }
  std::string TwoTokens() {
    return "tokens:\n  - token: \"" + std::string(kRelease) +
           "\"\n    scope: release\n    trustedWriter: true\n  - token: \"" + std::string(kPr) +
           "\"\n    scope: pr-42\n    name: pull-request-42\n";
  }
  std::unique_ptr<TokenFileIdentity> Open() {
    TokenFileOptions options;
    options.path = path_;
    options.recheck = std::chrono::seconds(1);
    options.clock = [this] { return now_; };
    auto source = TokenFileIdentity::Open(std::move(options));
    EXPECT_TRUE(source.ok()) << source.status().ToString();
    return source.ok() ? std::move(source).value() : nullptr;
  }

  fs::path dir_;
  std::string path_;
  std::chrono::steady_clock::time_point now_{};
};

TEST(BearerTokenTest, BearerAndBasicCarryTheToken) {
  EXPECT_EQ(BearerToken("")->value_or("none"), "none");
  EXPECT_EQ(*BearerToken("Bearer abc").value(), "abc");
  EXPECT_EQ(*BearerToken("bearer   abc ").value(), "abc");
  EXPECT_EQ(*BearerToken(Basic("user:secret")).value(), "secret");
  EXPECT_EQ(*BearerToken(Basic("secret:")).value(), "secret");  // token as the user name
  EXPECT_EQ(*BearerToken(Basic("a:b:c")).value(), "b:c");
}

TEST(BearerTokenTest, MalformedCredentialsAreErrorsThatDoNotEchoThem) {
  for (const std::string& header :
       std::vector<std::string>{"Digest username=\"x\"", "Basic !!!notbase64", "Basic c2VjcmV0",
                                "Bearer ", "Bearer", Basic(":"), "Token hunter2hunter2"}) {
    auto t = BearerToken(header);
    ASSERT_FALSE(t.ok()) << header;
    EXPECT_THAT(std::string(t.status().message()), Not(HasSubstr("hunter2"))) << header;
  }
}

TEST_F(TokenFileTest, KnownTokensNameTheirScopeUnknownOnesAreRefused) {
  Write(TwoTokens());
  auto source = Open();
  ASSERT_TRUE(source);
  EXPECT_EQ(source->size(), 2u);

  auto release =
      source->Identify(FakeRequest("GET", {{"Authorization", "Bearer " + std::string(kRelease)}}));
  ASSERT_TRUE(release.ok());
  EXPECT_EQ(release->scope, "release");
  EXPECT_EQ(release->subject, "release");
  EXPECT_TRUE(release->trusted_writer);
  EXPECT_FALSE(release->anonymous);

  auto pr =
      source->Identify(FakeRequest("GET", {{"Authorization", Basic("ci:" + std::string(kPr))}}));
  ASSERT_TRUE(pr.ok());
  EXPECT_EQ(pr->scope, "pr-42");
  EXPECT_EQ(pr->subject, "pull-request-42");
  EXPECT_FALSE(pr->trusted_writer);

  auto anonymous = source->Identify(FakeRequest("GET"));
  ASSERT_TRUE(anonymous.ok());
  EXPECT_TRUE(anonymous->anonymous);
  EXPECT_FALSE(anonymous->may_write());

  // A forged token and a prefix of a real one: refused, never a downgrade to anonymous.
  for (const std::string& forged :
       {std::string("forged-token-0123456789"), std::string(kRelease.substr(0, 20)),
        std::string(kRelease) + "x"}) {
    auto r = source->Identify(FakeRequest("GET", {{"Authorization", "Bearer " + forged}}));
    ASSERT_FALSE(r.ok()) << forged;
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
    EXPECT_THAT(std::string(r.status().message()), Not(HasSubstr(forged)));
  }
}

TEST_F(TokenFileTest, TheFileIsReReadWhenItChangesAndABadEditKeepsTheOldTokens) {
  Write(TwoTokens());
  auto source = Open();
  ASSERT_TRUE(source);
  const std::string release_header = "Bearer " + std::string(kRelease);
  ASSERT_TRUE(source->IdentifyToken(kRelease).ok());

  // Revoke the release token, keep the other; not looked at before the recheck interval.
  Write("tokens:\n  - {token: \"" + std::string(kPr) + "\", scope: pr-42}\n");
  EXPECT_TRUE(source->IdentifyToken(kRelease).ok());
  now_ += std::chrono::seconds(2);
  EXPECT_FALSE(source->IdentifyToken(kRelease).ok());
  EXPECT_TRUE(source->IdentifyToken(kPr).ok());

  // A broken edit is reported and the tokens loaded last stay.
  Write("tokens:\n  - {token: short, scope: pr-42}\n");
  now_ += std::chrono::seconds(2);
  EXPECT_TRUE(source->IdentifyToken(kPr).ok());
  EXPECT_FALSE(source->ReloadIfChanged().ok());

  // An empty list revokes everything.
  Write("tokens: []\n");
  now_ += std::chrono::seconds(2);
  EXPECT_FALSE(source->IdentifyToken(kPr).ok());
  EXPECT_EQ(source->size(), 0u);
}

TEST(ParseTokensFileTest, EveryProblemIsNamedWithoutQuotingATokenValue) {
  auto parsed = ParseTokensFile(
      "tokens:\n"
      "  - {token: tooshort, scope: a}\n"
      "  - {token: \"has space in it 0123\", scope: b}\n"
      "  - {token: \"secret-value-0123456789\", scope: Bad_Scope}\n"
      "  - {token: \"secret-value-0123456789\", scope: c}\n"
      "  - {scope: d}\n"
      "  - {token: \"another-secret-0123456789\"}\n"
      "  - {token: \"third-secret-0123456789\", scope: e, trustedWriter: maybe}\n"
      "  - {token: \"fourth-secret-0123456789\", scope: f, colour: red}\n",
      "tokens.yaml");
  ASSERT_FALSE(parsed.ok());
  std::string m(parsed.status().message());
  EXPECT_THAT(m, HasSubstr("tokens.yaml:2:"));
  EXPECT_THAT(m, HasSubstr("tokens[0].token: must be 16 to 4096 characters long"));
  EXPECT_THAT(m, HasSubstr("tokens[1].token: must not contain whitespace"));
  EXPECT_THAT(m, HasSubstr("tokens[2].scope: must be 1-63 characters"));
  EXPECT_THAT(m, HasSubstr("the same token as the entry named Bad_Scope"));
  EXPECT_THAT(m, HasSubstr("tokens[4]: token: required"));
  EXPECT_THAT(m, HasSubstr("tokens[5]: scope: required"));
  EXPECT_THAT(m, HasSubstr("tokens[6].trustedWriter"));
  EXPECT_THAT(m, HasSubstr("colour"));
  for (std::string secret : {"tooshort", "has space", "secret-value", "another-secret"}) {
    EXPECT_THAT(m, Not(HasSubstr(secret)));
  }
  EXPECT_FALSE(ParseTokensFile("tokenz: []\n", "t").ok());
  EXPECT_FALSE(ParseTokensFile("{}\n", "t").ok());
  EXPECT_TRUE(ParseTokensFile("tokens: []\n", "t").ok());
}

TEST(IsScopeNameTest, NamespaceLikeNames) {
  EXPECT_TRUE(IsScopeName("team-a"));
  EXPECT_TRUE(IsScopeName("a"));
  EXPECT_TRUE(IsScopeName(std::string(63, 'x')));
  EXPECT_FALSE(IsScopeName(std::string(64, 'x')));
  EXPECT_FALSE(IsScopeName(""));
  EXPECT_FALSE(IsScopeName("-a"));
  EXPECT_FALSE(IsScopeName("a/b"));
  EXPECT_FALSE(IsScopeName("A"));
  EXPECT_FALSE(IsScopeName(".."));
}

class GateTest : public TokenFileTest {
 protected:
  std::unique_ptr<IdentityGate> Gate(AnonymousAccess anonymous) {
    Write(TwoTokens());
    GateObserver observer;
    observer.on_refused = [this](std::string_view reason) { refused_.emplace_back(reason); };
    return std::make_unique<IdentityGate>(Open(), anonymous, observer);
  }
  // Runs a request through a wrapped handler; returns the status and the caller it saw.
  std::pair<int, std::optional<Caller>> Run(IdentityGate& gate, WritePolicy policy,
                                            FakeRequest req) {
    std::optional<Caller> seen;
    http::Handler h =
        gate.Wrap("test", policy, [&seen](http::Request&, http::Response& resp, const Caller& c) {
          seen = c;
          resp.SetStatus(200);
          (void)resp.Send("ok");
        });
    FakeResponse resp;
    h(req, resp);
    return {resp.status, seen};
  }
  std::vector<std::string> refused_;
};

TEST_F(GateTest, ABadTokenIs401AndNeverReachesTheFrontEnd) {
  auto gate = Gate(AnonymousAccess::kRead);
  auto [code, caller] =
      Run(*gate, WritePolicy::kScopedByFrontend,
          FakeRequest("GET", {{"Authorization", "Bearer forged-token-01234567"}}));
  EXPECT_EQ(code, 401);
  EXPECT_FALSE(caller);
  EXPECT_EQ(refused_, std::vector<std::string>{"bad_credentials"});
}

TEST_F(GateTest, AnonymousNoneRefusesReadsAnonymousReadAdmitsThem) {
  auto none = Gate(AnonymousAccess::kNone);
  EXPECT_EQ(Run(*none, WritePolicy::kScopedByFrontend, FakeRequest("GET")).first, 401);
  EXPECT_EQ(refused_, std::vector<std::string>{"anonymous_read"});
  auto read = Gate(AnonymousAccess::kRead);
  auto [code, caller] = Run(*read, WritePolicy::kScopedByFrontend, FakeRequest("GET"));
  EXPECT_EQ(code, 200);
  ASSERT_TRUE(caller);
  EXPECT_TRUE(caller->anonymous);
}

TEST_F(GateTest, TrustedWritersOnlyRefusesOtherWriters) {
  auto gate = Gate(AnonymousAccess::kRead);
  const std::string pr = "Bearer " + std::string(kPr);
  const std::string release = "Bearer " + std::string(kRelease);
  EXPECT_EQ(Run(*gate, WritePolicy::kTrustedWritersOnly, FakeRequest("POST")).first, 403);
  EXPECT_EQ(
      Run(*gate, WritePolicy::kTrustedWritersOnly, FakeRequest("POST", {{"Authorization", pr}}))
          .first,
      403);
  EXPECT_EQ(Run(*gate, WritePolicy::kTrustedWritersOnly,
                FakeRequest("POST", {{"Authorization", release}}))
                .first,
            200);
  EXPECT_EQ(
      Run(*gate, WritePolicy::kTrustedWritersOnly, FakeRequest("GET", {{"Authorization", pr}}))
          .first,
      200);
  EXPECT_EQ(refused_, (std::vector<std::string>{"anonymous_write", "untrusted_write"}));
}

TEST(GateOffTest, WithoutASourceEveryoneIsATrustedWriter) {
  IdentityGate gate(nullptr, AnonymousAccess::kNone, {});
  EXPECT_FALSE(gate.enabled());
  FakeRequest req("PUT", {{"Authorization", "Bearer anything-at-all-really"}});
  FakeResponse resp;
  auto caller = gate.Admit(req, resp, "test");
  ASSERT_TRUE(caller);
  EXPECT_TRUE(caller->trusted_writer);
  EXPECT_FALSE(resp.sent);
}

}  // namespace
}  // namespace buildcache::identity
