#include "common/text/base64.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace buildcache::text {
namespace {

TEST(Base64Test, EncodesWithPaddingPerRfc4648Vectors) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foob"), "Zm9vYg==");
  EXPECT_EQ(Base64Encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode(std::string("\xfb\xff\x00", 3)), "+/8A");
}

TEST(Base64Test, RoundTripsAndToleratesWhitespace) {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto decoded = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, s);
  }
  EXPECT_EQ(*Base64Decode("aGVs\nbG8="), "hello");
  EXPECT_EQ(*Base64Decode("aGVsbG8"), "hello");
  EXPECT_FALSE(Base64Decode("a").ok());
  EXPECT_FALSE(Base64Decode("aGV=sbG8").ok());
}

TEST(Base64Test, DecodingRejectsWhatIsNotBase64) {
  EXPECT_EQ(*Base64Decode("Zm8======"), "fo");  // any run of trailing padding
  EXPECT_FALSE(Base64Decode("Zm9v!").ok());
  EXPECT_FALSE(Base64Decode("Zm9v-_").ok());  // the URL-safe alphabet is not accepted
  EXPECT_FALSE(Base64Decode("Zm9vY").ok());   // a lone character carries no whole byte
  EXPECT_EQ(Base64Decode("Zg=x").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace buildcache::text
