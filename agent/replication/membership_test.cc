#include "agent/replication/membership.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace buildcache::replication {
namespace {

using namespace std::chrono_literals;

TEST(MembershipTest, PeerListParsingIgnoresCommentsBlanksAndDuplicates) {
  EXPECT_EQ(ParsePeerList("# peers\n10.0.0.2:8081\n\n  10.0.0.1:8081  # me\n10.0.0.2:8081\r\n"),
            (std::vector<std::string>{"10.0.0.1:8081", "10.0.0.2:8081"}));
  EXPECT_TRUE(ParsePeerList("").empty());
}

TEST(MembershipTest, FileIsReReadWhenItChanges) {
  std::string path = ::testing::TempDir() + "/peers_" + std::to_string(getpid());
  std::ofstream(path) << "a:1\nb:1\n";
  FileMembership file(path, 0ms);
  EXPECT_EQ(file.Peers(), (std::vector<std::string>{"a:1", "b:1"}));
  std::ofstream(path) << "a:1\nb:1\nc:1\n";  // size changes
  EXPECT_EQ(file.Peers(), (std::vector<std::string>{"a:1", "b:1", "c:1"}));
  std::filesystem::remove(path);
  EXPECT_EQ(file.Peers().size(), 3u);  // a vanished file keeps the last list
  std::ofstream(path) << "d:1\n";
  EXPECT_EQ(file.Peers(), (std::vector<std::string>{"d:1"}));
  std::filesystem::remove(path);
}

TEST(MembershipTest, DnsResolvesEveryAddressWithThePort) {
  DnsMembership dns("localhost", 9000, 1h);
  auto peers = dns.Peers();
  ASSERT_FALSE(peers.empty());
  EXPECT_NE(std::find(peers.begin(), peers.end(), "127.0.0.1:9000"), peers.end());
  DnsMembership none("no-such-name.invalid", 9000, 1h);
  EXPECT_TRUE(none.Peers().empty());
}

// The pods of a DaemonSet start together: each agent's first look-up finds only itself. It looks
// again within seconds (kDnsRetryMin, doubling), not after the interval.
TEST(MembershipTest, DnsLooksAgainSoonWhileAlone) {
  Mutex mu;
  std::vector<std::string> answer = {"10.0.0.1:8081"};
  DnsMembership dns("peers.ns.svc", 1h, [&]() -> std::optional<std::vector<std::string>> {
    MutexLock lock(mu);
    return answer;
  });
  EXPECT_EQ(dns.Peers(), (std::vector<std::string>{"10.0.0.1:8081"}));
  {
    MutexLock lock(mu);
    answer = {"10.0.0.2:8081", "10.0.0.1:8081"};  // the other pod is listed now
  }
  // Alone: the next look-up comes after kDnsRetryMin (1 s), not the interval (1 h).
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (dns.Peers().size() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(dns.Peers(), (std::vector<std::string>{"10.0.0.1:8081", "10.0.0.2:8081"}));
}

TEST(ClusterTest, SelfIsExcludedAndFailedPeersBackOff) {
  auto now = std::chrono::steady_clock::time_point{} + 1h;
  ClusterOptions options;
  options.copies = 2;
  options.backoff_min = 1000ms;
  options.backoff_max = 4000ms;
  options.clock = [&] { return now; };
  std::vector<std::unique_ptr<Membership>> sources;
  sources.push_back(std::make_unique<StaticMembership>(std::vector<std::string>{"a:1", "me:1"}));
  sources.push_back(std::make_unique<StaticMembership>(std::vector<std::string>{"b:1"}));
  Cluster cluster(std::make_unique<UnionMembership>(std::move(sources)), "me:1", options);
  EXPECT_EQ(cluster.Peers(), (std::vector<std::string>{"a:1", "b:1"}));
  EXPECT_EQ(cluster.TotalCount(), 3u);
  EXPECT_EQ(cluster.Owners("k").size(), 2u);

  cluster.ReportFailure("a:1");
  EXPECT_FALSE(cluster.IsLive("a:1"));
  EXPECT_EQ(cluster.LivePeers(), (std::vector<std::string>{"b:1"}));
  EXPECT_EQ(cluster.LiveCount(), 2u);
  now += 1001ms;
  EXPECT_TRUE(cluster.IsLive("a:1"));  // retried after the backoff
  cluster.ReportFailure("a:1");        // second failure: 2 s
  now += 1500ms;
  EXPECT_FALSE(cluster.IsLive("a:1"));
  now += 600ms;
  EXPECT_TRUE(cluster.IsLive("a:1"));
  for (int i = 0; i < 10; ++i) cluster.ReportFailure("a:1");  // capped at 4 s
  now += 4001ms;
  EXPECT_TRUE(cluster.IsLive("a:1"));
  cluster.ReportFailure("a:1");
  cluster.ReportSuccess("a:1");
  EXPECT_TRUE(cluster.IsLive("a:1"));
  EXPECT_TRUE(cluster.IsLive("me:1"));
}

}  // namespace
}  // namespace buildcache::replication
