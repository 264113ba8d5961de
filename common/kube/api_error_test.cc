#include "common/kube/api_error.h"

#include <gtest/gtest.h>

namespace buildcache::kube {
namespace {

TEST(ApiErrorTest, NotFoundCarriesTheServersMessage) {
  Status s = ApiErrorStatus(404,
                            R"({"kind":"Status","apiVersion":"v1","status":"Failure",)"
                            R"("message":"configmaps \"x\" not found","reason":"NotFound",)"
                            R"("code":404})",
                            "get configmaps ns/x");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), R"(get configmaps ns/x: configmaps "x" not found (NotFound, HTTP 404))");
  EXPECT_TRUE(IsNotFound(s));
  EXPECT_FALSE(IsConflict(s));
  auto e = GetApiError(s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, 404);
  EXPECT_EQ(e->reason, "NotFound");
  EXPECT_EQ(e->message, R"(get configmaps ns/x: configmaps "x" not found)");
}

TEST(ApiErrorTest, AlreadyExistsAndConflictAreDistinguishable) {
  Status exists = ApiErrorStatus(
      409, R"({"kind":"Status","reason":"AlreadyExists","message":"exists","code":409})", "");
  Status conflict = ApiErrorStatus(
      409, R"({"kind":"Status","reason":"Conflict","message":"modified","code":409})", "");
  EXPECT_EQ(exists.code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(IsAlreadyExists(exists));
  EXPECT_FALSE(IsConflict(exists));
  EXPECT_EQ(conflict.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(IsConflict(conflict));
  EXPECT_FALSE(IsAlreadyExists(conflict));
}

TEST(ApiErrorTest, DetailsSurviveAddedContext) {
  Status s = ApiErrorStatus(410, R"({"kind":"Status","reason":"Expired","message":"too old"})",
                            "watch pods")
                 .WithContext("informer");
  EXPECT_TRUE(IsGone(s));
  EXPECT_EQ(GetApiError(s)->code, 410);
}

TEST(ApiErrorTest, BodyThatIsNotAStatusBecomesTheMessage) {
  Status s = ApiErrorStatus(503, "upstream connect error\n", "list pods");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "list pods: upstream connect error (ServiceUnavailable, HTTP 503)");
  Status empty = ApiErrorStatus(403, "", "");
  EXPECT_EQ(empty.message(), "the server returned HTTP 403 (Forbidden, HTTP 403)");
  EXPECT_EQ(empty.code(), StatusCode::kFailedPrecondition);
}

TEST(ApiErrorTest, CodesMapToStatusCodes) {
  EXPECT_EQ(ApiErrorStatus(422, "", "").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsInvalid(ApiErrorStatus(422, "", "")));
  EXPECT_EQ(ApiErrorStatus(400, "", "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ApiErrorStatus(413, "", "").code(), StatusCode::kTooLarge);
  EXPECT_EQ(ApiErrorStatus(429, "", "").code(), StatusCode::kUnavailable);
  EXPECT_EQ(ApiErrorStatus(500, "", "").code(), StatusCode::kUnavailable);
  EXPECT_EQ(ApiErrorStatus(504, "", "").code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ApiErrorStatus(410, "", "").code(), StatusCode::kFailedPrecondition);
}

TEST(ApiErrorTest, OtherStatusesAreNotApiErrors) {
  EXPECT_FALSE(GetApiError(Status::Ok()));
  EXPECT_FALSE(GetApiError(Unavailable("connection refused")));
  EXPECT_FALSE(IsNotFound(NotFound("no such file")));
}

}  // namespace
}  // namespace buildcache::kube
