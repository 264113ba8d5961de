#include "common/net/host_port.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace buildcache::net {
namespace {

using ::testing::HasSubstr;

TEST(HostPortTest, ParsesIpv4NameAndIpv6) {
  Result<HostPort> v4 = HostPort::Parse("127.0.0.1:8080");
  ASSERT_TRUE(v4.ok()) << v4.status().ToString();
  EXPECT_EQ(v4->host(), "127.0.0.1");
  EXPECT_EQ(v4->port(), 8080);
  EXPECT_FALSE(v4->is_ipv6());

  Result<HostPort> name = HostPort::Parse("agent-0.agents.ci.svc:8081");
  ASSERT_TRUE(name.ok()) << name.status().ToString();
  EXPECT_EQ(name->host(), "agent-0.agents.ci.svc");
  EXPECT_EQ(name->port(), 8081);

  Result<HostPort> v6 = HostPort::Parse("[fd00::1]:443");
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(v6->host(), "fd00::1");
  EXPECT_EQ(v6->port(), 443);
  EXPECT_TRUE(v6->is_ipv6());
}

TEST(HostPortTest, ToStringBracketsIpv6AndRoundTrips) {
  for (const char* text : {"127.0.0.1:0", "[::1]:65535", "[::]:80", "localhost:8080"}) {
    Result<HostPort> hp = HostPort::Parse(text);
    ASSERT_TRUE(hp.ok()) << text << ": " << hp.status().ToString();
    EXPECT_EQ(hp->ToString(), text);
    EXPECT_EQ(HostPort::Parse(hp->ToString()).value(), *hp);
  }
  EXPECT_EQ(HostPort("::1", 80).BracketedHost(), "[::1]");
  EXPECT_EQ(HostPort("10.0.0.1", 80).BracketedHost(), "10.0.0.1");
}

TEST(HostPortTest, EmptyHostOnlyWhenAllowed) {
  EXPECT_FALSE(HostPort::Parse(":8080").ok());
  Result<HostPort> any = HostPort::ParseListen(":8080");
  ASSERT_TRUE(any.ok()) << any.status().ToString();
  EXPECT_EQ(any->host(), "");
  EXPECT_EQ(any->port(), 8080);
}

TEST(HostPortTest, DefaultPortWhenTextHasNone) {
  Result<HostPort> name = HostPort::ParseWithDefaultPort("example.com", 80);
  ASSERT_TRUE(name.ok()) << name.status().ToString();
  EXPECT_EQ(name->ToString(), "example.com:80");
  Result<HostPort> v6 = HostPort::ParseWithDefaultPort("[::1]", 80);
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(v6->ToString(), "[::1]:80");
  EXPECT_THAT(HostPort::Parse("example.com").status().message(), HasSubstr("missing port"));
}

TEST(HostPortTest, ErrorsNameTheProblem) {
  auto message = [](std::string_view text) {
    Result<HostPort> r = HostPort::Parse(text);
    EXPECT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << text;
    return std::string(r.status().message());
  };
  EXPECT_THAT(message(""), HasSubstr("empty address"));
  EXPECT_THAT(message("10.0.0.1"), HasSubstr("missing port"));
  EXPECT_THAT(message("::1"), HasSubstr("IPv6 address without brackets"));
  EXPECT_THAT(message("fd00::1:8080"), HasSubstr("IPv6 address without brackets"));
  EXPECT_THAT(message("[::1"), HasSubstr("unterminated IPv6 address"));
  EXPECT_THAT(message("[::1]8080"), HasSubstr("after ']'"));
  EXPECT_THAT(message("[1.2.3.4]:80"), HasSubstr("invalid IPv6 address"));
  EXPECT_THAT(message("[]:80"), HasSubstr("invalid IPv6 address"));
  EXPECT_THAT(message("host:65536"), HasSubstr("invalid port \"65536\" (expected 0-65535)"));
  EXPECT_THAT(message("host:"), HasSubstr("invalid port"));
  EXPECT_THAT(message(":80"), HasSubstr("missing host"));
  EXPECT_THAT(message("exa mple:80"), HasSubstr("invalid host"));
  EXPECT_THAT(message("http://127.0.0.1:8080"), HasSubstr("invalid host \"http://127.0.0.1\""));
}

// Strings an attacker or a typo could put where an address goes: each is rejected, and the error
// never carries a raw control character into a log line.
TEST(HostPortTest, HostileStringsAreRejectedAndQuotedSafely) {
  const std::string hostile[] = {
      "host:80\r\nX-Injected: 1",
      std::string("host\0evil:80", 12),
      std::string("host:80\0", 8),
      "user@host:80",
      "host:80/path",
      "http://host:80",
      "host:+80",
      "host:-1",
      "host: 80",
      " host:80",
      "host:0x50",
      "host:080080",
      "host:99999999999999999999",
      "[::1]]:80",
      "[[::1]]:80",
      "[::1%eth0]:80",
      "[::1]:80:80",
      "a:b:c",
      ":::",
      "-host:80",
      "host-:80",
      "ho..st:80",
      std::string(300, 'a') + ":80",
      std::string(64, 'a') + ".com:80",
      "h\xc3\xa9st:80",
      "\x7f:80",
  };
  for (const std::string& text : hostile) {
    Result<HostPort> r = HostPort::Parse(text);
    EXPECT_FALSE(r.ok()) << "accepted " << text;
    if (r.ok()) continue;
    const std::string& m = r.status().message();
    for (char c : m) {
      EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
          << "raw control character in: " << m;
    }
    EXPECT_LT(m.size(), 400u) << "unbounded message for a long input";
  }
}

TEST(HostPortTest, HostOfKeepsBracketsAndLeavesPortlessTextWhole) {
  EXPECT_EQ(HostOf("10.0.0.1:5000"), "10.0.0.1");
  EXPECT_EQ(HostOf("[fd00::1]:5000"), "[fd00::1]");
  EXPECT_EQ(HostOf("fd00::1"), "fd00::1");
  EXPECT_EQ(HostOf("name"), "name");
  EXPECT_EQ(HostOf("[::1"), "[::1");
  EXPECT_EQ(HostOf(""), "");
}

TEST(HostPortTest, BareHostDropsPortAndBrackets) {
  EXPECT_EQ(BareHost("10.0.0.1:5000"), "10.0.0.1");
  EXPECT_EQ(BareHost("[fd00::1]:5000"), "fd00::1");
  EXPECT_EQ(BareHost("[fd00::1]"), "fd00::1");
  EXPECT_EQ(BareHost("fd00::1"), "fd00::1");
  EXPECT_EQ(BareHost("name"), "name");
  EXPECT_EQ(BareHost("[fd00::1"), "");
  EXPECT_EQ(BracketHost("fd00::1"), "[fd00::1]");
  EXPECT_EQ(BracketHost("10.0.0.1"), "10.0.0.1");
}

TEST(HostPortTest, WithPortReplacesThePort) {
  EXPECT_EQ(WithPort("127.0.0.1:0", 4321), "127.0.0.1:4321");
  EXPECT_EQ(WithPort("[::1]:0", 4321), "[::1]:4321");
  EXPECT_EQ(WithPort(":0", 4321), ":4321");
  EXPECT_EQ(WithPort("localhost:0", 1), "localhost:1");
}

TEST(RedactUserinfoTest, MasksCredentialsInTheAuthorityOnly) {
  EXPECT_EQ(RedactUserinfo("https://user:pw@host:8443/simple/"), "https://***@host:8443/simple/");
  EXPECT_EQ(RedactUserinfo("http://tok@h"), "http://***@h");
  EXPECT_EQ(RedactUserinfo("https://a@b@host/p"), "https://***@host/p");
  EXPECT_EQ(RedactUserinfo("https://host/p@q?x=@y"), "https://host/p@q?x=@y");
  EXPECT_EQ(RedactUserinfo("sparse+https://u:p@host/"), "sparse+https://***@host/");
  EXPECT_EQ(RedactUserinfo("not a url"), "not a url");
}

}  // namespace
}  // namespace buildcache::net
