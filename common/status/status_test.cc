#include "common/status/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace buildcache {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument("odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  BC_ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

TEST(StatusTest, ResultCarriesValueOrError) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().ToString(), "INVALID_ARGUMENT: odd");
}

TEST(StatusTest, DiskFullMapsToResourceExhausted) {
  EXPECT_EQ(ErrnoStatus(ENOSPC, "write").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus(ENOENT, "open").code(), StatusCode::kNotFound);
  EXPECT_NE(ErrnoStatus(EIO, "read").message().find("read: "), std::string::npos);
}

TEST(StatusTest, WithContextKeepsCode) {
  Status s = NotFound("x").WithContext("open blob");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "open blob: x");
}

}  // namespace
}  // namespace buildcache
