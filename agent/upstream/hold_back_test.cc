#include "agent/upstream/hold_back.h"

#include <gtest/gtest.h>

#include <string>

namespace buildcache::upstream {
namespace {

TEST(HoldBackTest, EveryByteButTheLastIsReleasableBeforeVerification) {
  HoldBack hold(10);
  EXPECT_EQ(hold.Releasable(0, false), 0u);
  EXPECT_EQ(hold.Releasable(5, false), 5u);
  EXPECT_EQ(hold.Releasable(9, false), 9u);
  EXPECT_EQ(hold.Releasable(10, false), 9u);
  EXPECT_EQ(hold.Releasable(10, true), 10u);
}

TEST(HoldBackTest, NothingIsHeldWithoutAnAnnouncedLength) {
  HoldBack hold;
  EXPECT_EQ(hold.Releasable(7, false), 7u);
  EXPECT_EQ(hold.Pass("abc"), "abc");
  EXPECT_EQ(hold.Release(), "");
}

TEST(HoldBackTest, AnEmptyObjectReleasesNothingBeforeVerification) {
  HoldBack hold(0);
  EXPECT_EQ(hold.Releasable(0, false), 0u);
  EXPECT_EQ(hold.Release(), "");
}

TEST(HoldBackTest, PassKeepsTheLastByteOfTheObjectWhateverTheChunking) {
  for (size_t chunk = 1; chunk <= 7; ++chunk) {
    const std::string body = "0123456";
    HoldBack hold(body.size());
    std::string out;
    for (size_t i = 0; i < body.size(); i += chunk) {
      out += std::string(hold.Pass(std::string_view(body).substr(i, chunk)));
    }
    EXPECT_EQ(out, "012345") << "chunk " << chunk;
    EXPECT_EQ(hold.Release(), "6") << "chunk " << chunk;
  }
}

TEST(HoldBackTest, AShortTransferNeverHandsOnTheWholeLength) {
  HoldBack hold(5);
  EXPECT_EQ(hold.Pass("abcd"), "abcd");
  EXPECT_EQ(hold.Release(), "");  // the fifth byte never came: nothing to complete the object
}

}  // namespace
}  // namespace buildcache::upstream
