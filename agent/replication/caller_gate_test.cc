#include "agent/replication/caller_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>

namespace buildcache::replication {
namespace {

using namespace std::chrono_literals;

TEST(CallerGateTest, CallerAddressFromGrpcPeerStrings) {
  EXPECT_EQ(CallerAddress("ipv4:10.0.0.7:41234"), "10.0.0.7");
  EXPECT_EQ(CallerAddress("ipv6:[::1]:41234"), "::1");
  EXPECT_EQ(CallerAddress("ipv6:%5B::1%5D:41234"), "::1");
  EXPECT_EQ(CallerAddress("ipv6:[::ffff:10.0.0.7]:5"), "10.0.0.7");
  EXPECT_EQ(CallerAddress("ipv6:[fe80::1%25eth0]:5"), "fe80::1");
  EXPECT_EQ(CallerAddress("unix:/tmp/sock"), "");
  EXPECT_EQ(CallerAddress("ipv4:not-an-address:1"), "");
  EXPECT_EQ(CallerAddress(""), "");
}

TEST(CallerGateTest, AdmitsMemberAddressesOnlyAndResolvesNames) {
  std::vector<std::string> members = {"10.0.0.2:8081", "agent-b.peers:8081", "[fd00::3]:8081"};
  std::map<std::string, std::vector<std::string>> dns = {{"agent-b.peers", {"10.0.0.9"}}};
  std::atomic<int> lookups{0};
  MemberAddresses gate([&] { return members; },
                       [&](const std::string& host) -> Result<std::vector<std::string>> {
                         ++lookups;
                         auto it = dns.find(host);
                         if (it == dns.end()) return Unavailable("no " + host);
                         return it->second;
                       },
                       0ms);
  EXPECT_TRUE(gate.Admits("10.0.0.2"));
  EXPECT_TRUE(gate.Admits("10.0.0.9"));
  EXPECT_TRUE(gate.Admits("fd00::3"));
  EXPECT_TRUE(gate.Admits("::ffff:10.0.0.2"));
  EXPECT_FALSE(gate.Admits("10.0.0.3"));
  EXPECT_FALSE(gate.Admits("127.0.0.1"));
  EXPECT_FALSE(gate.Admits("garbage"));
  // A member that left is refused after the next refresh; one that joined is admitted.
  members = {"10.0.0.4:8081"};
  EXPECT_TRUE(gate.Admits("10.0.0.4"));
  EXPECT_FALSE(gate.Admits("10.0.0.2"));
}

TEST(CallerGateTest, RefusedCallersCannotMakeItResolveAtTheirRate) {
  std::atomic<int> lists{0};
  MemberAddresses gate(
      [&] {
        ++lists;
        return std::vector<std::string>{"10.0.0.2:8081"};
      },
      {}, 60s);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(gate.Admits("10.0.0." + std::to_string(100 + i)));
  EXPECT_TRUE(gate.Admits("10.0.0.2"));
  EXPECT_EQ(lists, 1);
}

}  // namespace
}  // namespace buildcache::replication
