#include "agent/store/digest.h"

#include <gtest/gtest.h>

namespace buildcache::store {
namespace {

// Test names carry "store" so that `ctest -R store` selects them.

TEST(store_DigestTest, OfMatchesKnownSha256Vectors) {
  EXPECT_EQ(Digest::Of("").Hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Digest::Of("abc").Hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(store_DigestTest, IncrementalHashEqualsOneShot) {
  Sha256 h;
  h.Update("a");
  h.Update("");
  h.Update("bc");
  EXPECT_EQ(h.Finish(), Digest::Of("abc"));
  h.Update("abc");  // reusable after Finish
  EXPECT_EQ(h.Finish(), Digest::Of("abc"));
}

TEST(store_DigestTest, HexRoundTripsAndRejectsMalformedInput) {
  Digest d = Digest::Of("x");
  EXPECT_EQ(Digest::FromHex(d.Hex()), d);
  std::string upper = d.Hex();
  for (char& c : upper) {
    c = static_cast<char>(toupper(c));
  }
  EXPECT_EQ(Digest::FromHex(upper), d);
  EXPECT_FALSE(Digest::FromHex(d.Hex().substr(1)).has_value());
  std::string bad = d.Hex();
  bad[10] = 'g';
  EXPECT_FALSE(Digest::FromHex(bad).has_value());
}

}  // namespace
}  // namespace buildcache::store
