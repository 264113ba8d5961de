#include "common/http/status_http.h"

#include <gtest/gtest.h>

#include "common/http/client.h"

namespace buildcache::http {
namespace {

TEST(StatusHttpTest, MapsEveryCodeAsDocumented) {
  EXPECT_EQ(HttpCodeFor(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpCodeFor(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpCodeFor(StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpCodeFor(StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpCodeFor(StatusCode::kFailedPrecondition), 412);
  EXPECT_EQ(HttpCodeFor(StatusCode::kResourceExhausted), 507);
  EXPECT_EQ(HttpCodeFor(StatusCode::kTooLarge), 413);
  EXPECT_EQ(HttpCodeFor(StatusCode::kDataLoss), 502);
  EXPECT_EQ(HttpCodeFor(StatusCode::kUnavailable), 502);
  EXPECT_EQ(HttpCodeFor(StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpCodeFor(StatusCode::kCancelled), 499);
  EXPECT_EQ(HttpCodeFor(StatusCode::kInternal), 500);
}

TEST(StatusHttpTest, SendErrorWritesCodeAndBodyOrAborts) {
  ServerOptions options;
  auto server = Server::Start(options, [](Request& req, Response& resp) {
    if (req.path() == "/started") {
      (void)resp.Begin(100);
      (void)resp.Write("partial");
      SendError(resp, DataLoss("digest mismatch"));
      return;
    }
    SendError(resp, NotFound("no such key"));
  });
  ASSERT_TRUE(server.ok());
  Client client("127.0.0.1", (*server)->port());
  auto r = client.Fetch("GET", "/x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, "NOT_FOUND: no such key\n");
  EXPECT_EQ(r->header("content-type"), "text/plain; charset=utf-8");
  r = client.Fetch("GET", "/started");
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace buildcache::http
