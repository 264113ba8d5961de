#include "agent/replication/rendezvous.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace buildcache::replication {
namespace {

std::vector<std::string> Members(int n) {
  std::vector<std::string> out;
  for (int i = 1; i <= n; ++i) out.push_back("10.0.0." + std::to_string(i) + ":8081");
  return out;
}

std::string Key(int i) { return "httpcache/ac/" + std::to_string(i * 7919); }

TEST(RendezvousTest, OwnersAreDistinctOrderedAndIndependentOfMemberOrder) {
  std::vector<std::string> m = Members(5);
  std::vector<std::string> reversed(m.rbegin(), m.rend());
  for (int i = 0; i < 200; ++i) {
    auto owners = RendezvousOwners(Key(i), m, 3);
    ASSERT_EQ(owners.size(), 3u);
    EXPECT_NE(owners[0], owners[1]);
    EXPECT_NE(owners[1], owners[2]);
    EXPECT_NE(owners[0], owners[2]);
    EXPECT_GE(RendezvousScore(Key(i), owners[0]), RendezvousScore(Key(i), owners[1]));
    EXPECT_EQ(owners, RendezvousOwners(Key(i), reversed, 3));
  }
  EXPECT_EQ(RendezvousOwners("k", m, 99).size(), 5u);
  EXPECT_TRUE(RendezvousOwners("k", {}, 2).empty());
  EXPECT_EQ(RendezvousOwners("k", {"a:1", "a:1", "b:1"}, 3).size(), 2u);
}

TEST(RendezvousTest, DistributionIsRoughlyEven) {
  const std::vector<std::string> m = Members(5);
  const int keys = 20000;
  std::map<std::string, int> first;
  for (int i = 0; i < keys; ++i) ++first[RendezvousOwners(Key(i), m, 1)[0]];
  ASSERT_EQ(first.size(), 5u);
  for (const auto& [member, count] : first) {
    // 4000 expected; a skewed hash puts far more (or fewer) on some member.
    EXPECT_GT(count, 3500) << member;
    EXPECT_LT(count, 4500) << member;
  }
}

TEST(RendezvousTest, JoinAndLeaveMoveOnlyTheKeysWhoseOwnersChanged) {
  const std::vector<std::string> before = Members(4);
  std::vector<std::string> after = before;
  after.push_back("10.0.0.99:8081");
  const int keys = 20000;
  int moved = 0;
  for (int i = 0; i < keys; ++i) {
    auto old_owners = RendezvousOwners(Key(i), before, 2);
    auto new_owners = RendezvousOwners(Key(i), after, 2);
    if (old_owners != new_owners) {
      ++moved;
      // Only the newcomer can displace an owner; the other owner keeps its place order-wise.
      EXPECT_TRUE(new_owners[0] == after.back() || new_owners[1] == after.back()) << Key(i);
    }
    // Leaving: removing a member that did not own the key changes nothing.
    std::vector<std::string> without = before;
    without.erase(without.begin());
    auto left = RendezvousOwners(Key(i), without, 2);
    if (old_owners[0] != before[0] && old_owners[1] != before[0]) {
      EXPECT_EQ(left, old_owners) << Key(i);
    } else {
      EXPECT_NE(left, old_owners);
    }
  }
  // A fifth member takes 2/5 of the owner slots: about 40% of keys change one owner. Modulo
  // hashing would move about 80%.
  EXPECT_GT(moved, keys * 30 / 100);
  EXPECT_LT(moved, keys * 50 / 100);
}

}  // namespace
}  // namespace buildcache::replication
