#include "agent/replication/fetch_policy.h"

#include <gtest/gtest.h>

#include <map>

namespace buildcache::replication {
namespace {

TEST(FetchPolicyTest, InternalAddresses) {
  for (const char* a : {"127.0.0.1",
                        "10.1.2.3",
                        "172.16.0.1",
                        "172.31.255.255",
                        "192.168.1.1",
                        "169.254.169.254",
                        "100.64.0.1",
                        "0.0.0.0",
                        "224.0.0.1",
                        "255.255.255.255",
                        "198.18.0.1",
                        "::1",
                        "::",
                        "fe80::1",
                        "fd00::1",
                        "fc00::1",
                        "ff02::1",
                        "::ffff:127.0.0.1",
                        "::ffff:169.254.169.254",
                        "not-an-address",
                        ""}) {
    EXPECT_TRUE(IsInternalAddress(a)) << a;
  }
  for (const char* a :
       {"8.8.8.8", "151.101.0.223", "1.1.1.1", "2a04:4e42::223", "2606:4700::6810:84e5",
        "::ffff:8.8.4.4", "203.0.113.80", "2001:db8::1", "172.32.0.1", "100.128.0.1"}) {
    EXPECT_FALSE(IsInternalAddress(a)) << a;  // the last two: just past 172.16/12, 100.64/10
  }
}

TEST(FetchPolicyTest, ConfiguredUpstreamsAndHostsWithoutInternalAddresses) {
  std::map<std::string, std::vector<std::string>> dns = {
      {"files.example", {"151.101.0.223", "2a04:4e42::223"}},
      {"mixed.example", {"151.101.0.223", "10.0.0.7"}},
      {"metadata.internal", {"169.254.169.254"}},
      {"10.0.0.5", {"10.0.0.5"}},
      {"127.0.0.1", {"127.0.0.1"}},
  };
  // As the agent configures them: PyPI's index and its parent, Cargo's index and its parent.
  PeerFetchPolicy policy(
      {"http://10.0.0.5:3141/simple/", ParentUrl("http://10.0.0.5:3141/simple/"),
       "sparse+http://10.0.0.5:8000/index/", ParentUrl("http://10.0.0.5:8000/index/"), "not a url"},
      [&](const std::string& host) -> Result<std::vector<std::string>> {
        auto it = dns.find(host);
        if (it == dns.end()) return Unavailable("cannot resolve " + host);
        return it->second;
      });
  auto check = [&](const std::string& url) { return policy.Check(*upstream::ParseUrl(url)); };
  // Under a configured upstream prefix, private or not; the Cargo "sparse+" prefix is understood.
  EXPECT_TRUE(check("http://10.0.0.5:3141/packages/x.whl").ok());
  EXPECT_TRUE(check("http://10.0.0.5:8000/api/v1/crates/x/1.0/download").ok());
  // Public hosts (files on another host than the index).
  EXPECT_TRUE(check("https://files.example/packages/x.whl").ok());
  // The same private host on another port or scheme is not the configured upstream.
  EXPECT_EQ(check("http://10.0.0.5:22/").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(check("https://10.0.0.5:3141/").code(), StatusCode::kPermissionDenied);
  // Internal targets, by literal or by name, and names with any internal address.
  for (const char* url : {"http://127.0.0.1:8080/metrics", "http://metadata.internal/latest/",
                          "https://mixed.example/x", "http://unknown.example/x"}) {
    Status s = check(url);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << url;
  }
  EXPECT_NE(check("http://metadata.internal/latest/").message().find("169.254.169.254"),
            std::string::npos);
}

// Issue 11 item 14: an internal registry's other repositories on the configured origin.
TEST(FetchPolicyTest, OnlyPathsUnderTheConfiguredUpstreamOnItsOrigin) {
  PeerFetchPolicy policy(
      {"http://10.0.0.5:8081/artifactory/maven-remote",
       "http://10.0.0.5:8081/artifactory/api/pypi/pypi-remote/simple/",
       ParentUrl("http://10.0.0.5:8081/artifactory/api/pypi/pypi-remote/simple/")},
      [](const std::string& host) -> Result<std::vector<std::string>> {
        return std::vector<std::string>{host};
      });
  auto check = [&](const std::string& url) { return policy.Check(*upstream::ParseUrl(url)); };
  EXPECT_TRUE(check("http://10.0.0.5:8081/artifactory/maven-remote/com/x/1.0/x-1.0.jar").ok());
  EXPECT_TRUE(
      check("http://10.0.0.5:8081/artifactory/api/pypi/pypi-remote/packages/ab/x-1.0.whl").ok());
  for (const char* url : {
           "http://10.0.0.5:8081/artifactory/maven-private/com/x/1.0/x-1.0.jar",
           "http://10.0.0.5:8081/artifactory/maven-remote-private/x.jar",  // a sibling prefix
           "http://10.0.0.5:8081/artifactory/api/security/users",
           "http://10.0.0.5:8081/artifactory/maven-remote/../maven-private/x.jar",
           "http://10.0.0.5:8081/artifactory/maven-remote/%2e%2E/maven-private/x.jar",
           "http://10.0.0.5:8081/artifactory/maven-remote/..%2fmaven-private/x.jar",
           "http://10.0.0.5:8081/artifactory/maven-remote/.%2E/maven-private/x.jar",
       }) {
    EXPECT_EQ(check(url).code(), StatusCode::kPermissionDenied) << url;
  }
}

TEST(FetchPolicyTest, ParentUrl) {
  EXPECT_EQ(ParentUrl("https://h/a/simple/"), "https://h/a/");
  EXPECT_EQ(ParentUrl("https://h/a/simple"), "https://h/a/");
  EXPECT_EQ(ParentUrl("https://h/simple/"), "https://h/");
  EXPECT_EQ(ParentUrl("https://h/"), "https://h/");
  EXPECT_EQ(ParentUrl("https://h"), "https://h");
}

// Issue 11 items 2 and 13: the front end is one this agent runs (it becomes a metric label), and
// the key is the one that front end gives the URL.
TEST(FetchRulesTest, KeyMustBeWhatTheFrontEndNamesTheUrl) {
  using Kind = PeerFetchRule::Kind;
  PeerFetchRules rules({
      {"maven", "maven/files/", Kind::kUpstreamPath, "http://repo/maven2/", "", false},
      {"pypi", "pypi/files/", Kind::kFileName, "", "", false},
      {"pypi", "pypi/metadata/", Kind::kFileName, "", ".metadata", false},
      {"npm", "npm/tarball/", Kind::kFileName, "", "", true},
      {"cargo", "cargo/crates/", Kind::kCrate, "", "", false},
  });
  const std::string raw(64, '\x11');
  const std::string hex16 = std::string(32, '1');
  auto check = [&](const std::string& fe, const std::string& key, const std::string& url) {
    return rules.Check(fe, key, url, {raw});
  };
  EXPECT_TRUE(check("maven", "maven/files/com/example/lib/1.0/lib-1.0.jar",
                    "http://repo/maven2/com/example/lib/1.0/lib-1.0.jar")
                  .ok());
  // The key of one artifact, the URL of another (the review's attack).
  EXPECT_EQ(check("maven", "maven/files/com/example/lib/1.0/lib-1.0.jar",
                  "http://repo/maven2/com/example/other/1.0/other-1.0.jar")
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(check("maven", "maven/meta/com/example/lib/maven-metadata.xml",
                     "http://repo/maven2/com/example/lib/maven-metadata.xml")
                   .ok());
  EXPECT_TRUE(check("pypi", "pypi/files/six/six-1.16.0-py2.py3-none-any.whl",
                    "https://files.example/packages/ab/cd/six-1.16.0-py2.py3-none-any.whl#sha256=x")
                  .ok());
  EXPECT_TRUE(check("pypi", "pypi/metadata/six/six-1.16.0-py2.py3-none-any.whl",
                    "https://files.example/p/six-1.16.0-py2.py3-none-any.whl.metadata")
                  .ok());
  EXPECT_FALSE(check("pypi", "pypi/files/six/six-1.16.0-py2.py3-none-any.whl",
                     "https://files.example/packages/evil-1.0-py3-none-any.whl")
                   .ok());
  EXPECT_FALSE(check("pypi", "pypi/page/six", "https://files.example/simple/six/").ok());
  EXPECT_TRUE(check("npm", "npm/tarball/left-pad/left-pad-1.3.0.tgz/" + hex16,
                    "http://reg/left-pad/-/left-pad-1.3.0.tgz")
                  .ok());
  EXPECT_FALSE(check("npm", "npm/tarball/left-pad/left-pad-1.3.0.tgz/" + std::string(32, '2'),
                     "http://reg/left-pad/-/left-pad-1.3.0.tgz")
                   .ok());
  EXPECT_FALSE(check("npm", "npm/tarball/left-pad/left-pad-1.3.0.tgz/" + hex16,
                     "http://reg/evil/-/evil-1.0.0.tgz")
                   .ok());
  EXPECT_TRUE(
      check("cargo", "cargo/crates/serde/1.0.1", "http://dl/api/v1/crates/serde/1.0.1/download")
          .ok());
  EXPECT_FALSE(
      check("cargo", "cargo/crates/serde/1.0.1", "http://dl/api/v1/crates/evil/2.0.0/download")
          .ok());
  // Unknown front ends: never a new metric label, and a short message.
  Status unknown = check("x-label-" + std::string(500, 'y'), "anything", "http://reg/x");
  EXPECT_EQ(unknown.code(), StatusCode::kInvalidArgument);
  EXPECT_LT(unknown.message().size(), 100u);
  EXPECT_FALSE(check("goproxy", "goproxy/x", "http://proxy/x/@v/v1.0.0.zip").ok());
}

}  // namespace
}  // namespace buildcache::replication
