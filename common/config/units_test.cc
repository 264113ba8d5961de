#include "common/config/units.h"

#include <gtest/gtest.h>

namespace buildcache::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;

uint64_t Bytes(std::string_view s) {
  Result<uint64_t> r = ParseByteSize(s);
  EXPECT_TRUE(r.ok()) << s << ": " << r.status().ToString();
  return r.ok() ? *r : 0;
}

TEST(ParseByteSizeTest, AcceptsPlainBinaryAndDecimalSizes) {
  EXPECT_EQ(Bytes("0"), 0u);
  EXPECT_EQ(Bytes("1000"), 1000u);
  EXPECT_EQ(Bytes("1Ki"), 1024u);
  EXPECT_EQ(Bytes("512Mi"), 512u << 20);
  EXPECT_EQ(Bytes("10Gi"), 10ULL << 30);
  EXPECT_EQ(Bytes("2Ti"), 2ULL << 40);
  EXPECT_EQ(Bytes("1Pi"), 1ULL << 50);
  EXPECT_EQ(Bytes("7Ei"), 7ULL << 60);
  EXPECT_EQ(Bytes("10k"), 10000u);
  EXPECT_EQ(Bytes("10K"), 10000u);
  EXPECT_EQ(Bytes("1G"), 1000000000u);
  EXPECT_EQ(Bytes("3T"), 3000000000000u);
  EXPECT_EQ(Bytes("9223372036854775807"), 9223372036854775807u);
}

TEST(ParseByteSizeTest, AcceptsFractionsThatAreWholeBytes) {
  EXPECT_EQ(Bytes("1.5Gi"), 1536ULL << 20);
  EXPECT_EQ(Bytes("0.5k"), 500u);
  EXPECT_EQ(Bytes("0.25Ki"), 256u);
  EXPECT_EQ(Bytes("1.000"), 1u);
  EXPECT_EQ(Bytes(".5Ki"), 512u);
}

TEST(ParseByteSizeTest, RejectsNegativeJunkAndOverflow) {
  for (std::string_view bad : {"",
                               "-1",
                               "-1Gi",
                               "+1",
                               "abc",
                               "10 Gi",
                               " 10Gi",
                               "10Gi ",
                               "10GiB",
                               "10GB",
                               "10gi",
                               "1e9",
                               "100m",
                               "0x10",
                               "1.",
                               ".",
                               "1..5",
                               "Gi",
                               "1.5",
                               "0.3Ki",
                               "1,5Gi",
                               "9223372036854775808",
                               "8Ei",
                               "99999999999999999999",
                               "10000000000Ei",
                               "1.0000000000000000000000001Ki"}) {
    Result<uint64_t> r = ParseByteSize(bad);
    EXPECT_FALSE(r.ok()) << "accepted \"" << bad << "\" as " << (r.ok() ? *r : 0);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(r.status().message().find("\"" + std::string(bad) + "\""), std::string::npos)
          << r.status().message();
    }
  }
  EXPECT_NE(ParseByteSize("-5Mi").status().message().find("negative"), std::string::npos);
}

TEST(ParseByteSizeTest, FormatRoundTrips) {
  EXPECT_EQ(FormatByteSize(0), "0");
  EXPECT_EQ(FormatByteSize(1000), "1000");
  EXPECT_EQ(FormatByteSize(512u << 20), "512Mi");
  EXPECT_EQ(FormatByteSize(1536u << 10), "1536Ki");
  EXPECT_EQ(FormatByteSize(1ULL << 60), "1Ei");
  for (uint64_t n : {0ULL, 1ULL, 1023ULL, 1024ULL, 1ULL << 33, 12345678901ULL}) {
    EXPECT_EQ(Bytes(FormatByteSize(n)), n);
  }
}

nanoseconds Dur(std::string_view s) {
  Result<nanoseconds> r = ParseDuration(s);
  EXPECT_TRUE(r.ok()) << s << ": " << r.status().ToString();
  return r.ok() ? *r : nanoseconds(-1);
}

TEST(ParseDurationTest, AcceptsGoDurations) {
  EXPECT_EQ(Dur("0"), nanoseconds(0));
  EXPECT_EQ(Dur("0s"), nanoseconds(0));
  EXPECT_EQ(Dur("250ms"), milliseconds(250));
  EXPECT_EQ(Dur("30s"), seconds(30));
  EXPECT_EQ(Dur("5m"), minutes(5));
  EXPECT_EQ(Dur("1h"), hours(1));
  EXPECT_EQ(Dur("1h30m"), minutes(90));
  EXPECT_EQ(Dur("1.5s"), milliseconds(1500));
  EXPECT_EQ(Dur("10us"), nanoseconds(10000));
  EXPECT_EQ(Dur("10\xC2\xB5s"), nanoseconds(10000));
  EXPECT_EQ(Dur("7ns"), nanoseconds(7));
  EXPECT_EQ(Dur("2h45m3.5s"), hours(2) + minutes(45) + milliseconds(3500));
  EXPECT_EQ(Dur("2562047h"), hours(2562047));
}

TEST(ParseDurationTest, RejectsNegativeJunkAndOverflow) {
  for (std::string_view bad : {"",
                               "-1s",
                               "-0",
                               "30",
                               "1",
                               "s",
                               "1x",
                               "1 s",
                               " 1s",
                               "1s ",
                               "1S",
                               "1sec",
                               "1d",
                               "1.s5",
                               "..1s",
                               "1h-5m",
                               "+1s",
                               "2562048h",
                               "99999999999999999999h",
                               "1e3s"}) {
    Result<nanoseconds> r = ParseDuration(bad);
    EXPECT_FALSE(r.ok()) << "accepted \"" << bad << "\"";
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    }
  }
  EXPECT_NE(ParseDuration("30").status().message().find("missing unit"), std::string::npos);
}

TEST(ParseDurationTest, FormatUsesLargestExactUnit) {
  EXPECT_EQ(FormatDuration(minutes(5)), "5m");
  EXPECT_EQ(FormatDuration(seconds(90)), "90s");
  EXPECT_EQ(FormatDuration(milliseconds(250)), "250ms");
  EXPECT_EQ(FormatDuration(nanoseconds(0)), "0s");
  EXPECT_EQ(Dur(FormatDuration(milliseconds(1500))), milliseconds(1500));
}

}  // namespace
}  // namespace buildcache::config
