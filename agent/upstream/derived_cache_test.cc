#include "agent/upstream/derived_cache.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace buildcache::upstream {
namespace {

std::shared_ptr<const std::string> Value(std::string s) {
  return std::make_shared<const std::string>(std::move(s));
}

TEST(DerivedCacheTest, ValueIsOnlyFoundForTheInputItWasDerivedFrom) {
  DerivedCache<std::string> cache(1 << 20);
  EXPECT_EQ(cache.Find("page", "v1"), nullptr);
  cache.Put("page", "v1", Value("rendered from v1"), 16);
  auto hit = cache.Find("page", "v1");
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(*hit, "rendered from v1");
  EXPECT_EQ(cache.Find("page", "v2"), nullptr);
  EXPECT_EQ(cache.Find("other", "v1"), nullptr);
  // Peek ignores the validator (e.g. to learn which form was read last).
  ASSERT_NE(cache.Peek("page"), nullptr);
  EXPECT_EQ(*cache.Peek("page"), "rendered from v1");
}

TEST(DerivedCacheTest, ReplacedValueStaysValidForItsReaders) {
  DerivedCache<std::string> cache(1 << 20);
  cache.Put("page", "v1", Value("old"), 3);
  auto reader = cache.Find("page", "v1");
  cache.Put("page", "v2", Value("new"), 3);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(*reader, "old");
  EXPECT_EQ(cache.Find("page", "v1"), nullptr);
  EXPECT_EQ(*cache.Find("page", "v2"), "new");
}

TEST(DerivedCacheTest, LeastRecentlyUsedGoFirstAndTheBudgetHolds) {
  // Each entry costs 100 bytes plus its key (1) and validator (1).
  DerivedCache<std::string> cache(350);
  cache.Put("a", "1", Value("a"), 100);
  cache.Put("b", "1", Value("b"), 100);
  cache.Put("c", "1", Value("c"), 100);
  EXPECT_EQ(cache.bytes(), 306u);
  ASSERT_NE(cache.Find("a", "1"), nullptr);  // "b" is now the least recently used
  cache.Put("d", "1", Value("d"), 100);
  EXPECT_EQ(cache.Find("b", "1"), nullptr);
  EXPECT_NE(cache.Find("a", "1"), nullptr);
  EXPECT_NE(cache.Find("c", "1"), nullptr);
  EXPECT_NE(cache.Find("d", "1"), nullptr);
  EXPECT_LE(cache.bytes(), 350u);
  EXPECT_EQ(cache.size(), 3u);
}

TEST(DerivedCacheTest, ValueLargerThanTheBudgetIsNotKeptAndDropsTheOldOne) {
  DerivedCache<std::string> cache(100);
  cache.Put("page", "v1", Value("small"), 10);
  cache.Put("page", "v2", Value("huge"), 1000);
  EXPECT_EQ(cache.Find("page", "v2"), nullptr);
  EXPECT_EQ(cache.Find("page", "v1"), nullptr);  // stale: its input was replaced
  EXPECT_EQ(cache.bytes(), 0u);
  DerivedCache<std::string> none(0);
  none.Put("page", "v1", Value("x"), 1);
  EXPECT_EQ(none.Find("page", "v1"), nullptr);
}

TEST(DocumentFingerprintTest, ChangesWithBodyContentTypeAndStatusOnly) {
  Document a;
  a.body = "{\"files\":[]}";
  a.content_type = "application/vnd.pypi.simple.v1+json";
  a.etag = "\"x\"";
  a.fetched_at = std::chrono::system_clock::time_point(std::chrono::seconds(1));
  Document refreshed = a;  // the same bytes fetched again later
  refreshed.fetched_at += std::chrono::hours(1);
  refreshed.etag = "\"y\"";
  EXPECT_EQ(DocumentFingerprint(a), DocumentFingerprint(refreshed));
  Document body = a;
  body.body = "{\"files\":[1]}";
  EXPECT_NE(DocumentFingerprint(a), DocumentFingerprint(body));
  Document type = a;
  type.content_type = "text/html";
  EXPECT_NE(DocumentFingerprint(a), DocumentFingerprint(type));
  Document gone = a;
  gone.status = 404;
  EXPECT_NE(DocumentFingerprint(a), DocumentFingerprint(gone));
}

}  // namespace
}  // namespace buildcache::upstream
