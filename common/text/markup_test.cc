#include "common/text/markup.h"

#include <gtest/gtest.h>

namespace buildcache::text {
namespace {

TEST(MarkupTest, TheFiveSpecialCharactersBecomeReferences) {
  EXPECT_EQ(EscapeMarkup(R"(a&b<c>d"e'f)"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
}

TEST(MarkupTest, OtherBytesPassThrough) {
  EXPECT_EQ(EscapeMarkup("plain /path?q=1 \xc3\xa9"), "plain /path?q=1 \xc3\xa9");
  std::string out = "<D:href>";
  AppendMarkupEscaped(out, "/cache/a&b");
  EXPECT_EQ(out, "<D:href>/cache/a&amp;b");
}

}  // namespace
}  // namespace buildcache::text
