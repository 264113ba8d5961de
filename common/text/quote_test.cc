#include "common/text/quote.h"

#include <gtest/gtest.h>

namespace buildcache::text {
namespace {

TEST(QuoteTest, PlainTextIsQuotedAsIs) { EXPECT_EQ(Quote("abc def"), "\"abc def\""); }

TEST(QuoteTest, QuotesAndBackslashesAreEscaped) { EXPECT_EQ(Quote(R"(a"b\c)"), R"("a\"b\\c")"); }

TEST(QuoteTest, ControlCharactersBecomeHexEscapes) {
  EXPECT_EQ(Quote(std::string("a\r\n\x7f\0b", 6)), R"("a\x0d\x0a\x7f\x00b")");
}

TEST(QuoteTest, NewlineAsBackslashNWhenAsked) {
  EXPECT_EQ(Quote("a\nb", {.newline_as_n = true}), R"("a\nb")");
}

TEST(QuoteTest, LongValuesAreShortened) {
  EXPECT_EQ(Quote("abcdef", {.max_chars = 3}), "\"abc...\"");
  EXPECT_EQ(Quote("abc", {.max_chars = 3}), "\"abc\"");
}

TEST(QuoteTest, HighBytesPassThrough) { EXPECT_EQ(Quote("\xc3\xa9"), "\"\xc3\xa9\""); }

TEST(HexTest, BytesBecomeTwoDigitsEach) {
  EXPECT_EQ(ToHex(std::string("\x00\x0f\xab\xff", 4)), "000fabff");
  std::string out;
  AppendHexByte(out, 0xab, /*upper=*/true);
  EXPECT_EQ(out, "AB");
}

}  // namespace
}  // namespace buildcache::text
