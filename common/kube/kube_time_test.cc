#include "common/kube/kube_time.h"

#include <gtest/gtest.h>

namespace buildcache::kube {
namespace {

using std::chrono::system_clock;

system_clock::time_point At(int64_t seconds, int64_t micros = 0) {
  return system_clock::time_point(std::chrono::duration_cast<system_clock::duration>(
      std::chrono::seconds(seconds) + std::chrono::microseconds(micros)));
}

TEST(KubeTimeTest, FormatsSecondsAndMicroseconds) {
  EXPECT_EQ(FormatTime(At(1795851000, 123456)), "2026-11-28T07:30:00Z");
  EXPECT_EQ(FormatMicroTime(At(1795851000, 123456)), "2026-11-28T07:30:00.123456Z");
  EXPECT_EQ(FormatMicroTime(At(0)), "1970-01-01T00:00:00.000000Z");
}

TEST(KubeTimeTest, ParsesWhatItFormatsAndOffsets) {
  auto t = At(1795851000, 123456);
  EXPECT_EQ(*ParseTime(FormatMicroTime(t)), t);
  EXPECT_EQ(*ParseTime("2026-11-28T07:30:00Z"), At(1795851000));
  EXPECT_EQ(*ParseTime("2026-11-28T08:30:00+01:00"), At(1795851000));
  EXPECT_EQ(*ParseTime("2026-11-28T07:30:00.5Z"), At(1795851000, 500000));
  EXPECT_EQ(*ParseTime("2026-11-28T07:30:00.123456789Z"), At(1795851000, 123456));
}

TEST(KubeTimeTest, RejectsMalformedTimes) {
  for (const char* bad :
       {"", "2026-11-28", "2026-11-28T07:30:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
        "2026-11-28T07:30:00.Z", "2026-11-28T07:30:00Zjunk", "2026-11-28 07:30:00Z"}) {
    EXPECT_FALSE(ParseTime(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace buildcache::kube
