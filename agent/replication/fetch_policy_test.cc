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
  PeerFetchPolicy policy(
      {"http://10.0.0.5:3141/simple/", "sparse+http://10.0.0.5:8000/index/", "not a url"},
      [&](const std::string& host) -> Result<std::vector<std::string>> {
        auto it = dns.find(host);
        if (it == dns.end()) return Unavailable("cannot resolve " + host);
        return it->second;
      });
  auto check = [&](const std::string& url) { return policy.Check(*upstream::ParseUrl(url)); };
  // A configured upstream's origin, private or not; the Cargo "sparse+" prefix is understood.
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

}  // namespace
}  // namespace buildcache::replication
