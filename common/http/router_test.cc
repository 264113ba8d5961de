#include "common/http/router.h"

#include <gtest/gtest.h>

#include "common/http/client.h"

namespace buildcache::http {
namespace {

Handler Reply(std::string text) {
  return [text](Request&, Response& resp) { (void)resp.Send(text); };
}

TEST(RouterTest, LongestPrefixWithMatchingMethodWins) {
  Router router;
  router.Add("GET", "/", Reply("root"));
  router.Add("GET", "/cache/", Reply("cache-get"));
  router.Add("PUT", "/cache/", Reply("cache-put"));
  router.Add("", "/cache/ac/", Reply("ac-any"));
  router.Add("DELETE", "/admin/", Reply("admin"));
  auto server = Server::Start({}, router.AsHandler());
  ASSERT_TRUE(server.ok());
  Client client("127.0.0.1", (*server)->port());

  auto body = [&](std::string_view method, std::string_view target) {
    auto r = client.Fetch(method, target);
    return r.ok() ? std::to_string(r->status) + " " + r->body : r.status().ToString();
  };
  EXPECT_EQ(body("GET", "/cache/x"), "200 cache-get");
  EXPECT_EQ(body("PUT", "/cache/x"), "200 cache-put");
  EXPECT_EQ(body("POST", "/cache/ac/1"), "200 ac-any");
  EXPECT_EQ(body("GET", "/cache/ac/1?q"), "200 ac-any");
  EXPECT_EQ(body("GET", "/other"), "200 root");
  EXPECT_EQ(body("GET", "/admin/x"), "200 root");
  auto r = client.Fetch("POST", "/admin/x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->header("allow"), "GET, DELETE");
}

TEST(RouterTest, UnmatchedPathIs404) {
  Router router;
  router.Add("GET", "/only/", Reply("x"));
  auto server = Server::Start({}, router.AsHandler());
  ASSERT_TRUE(server.ok());
  auto r = Fetch("GET", "http://127.0.0.1:" + std::to_string((*server)->port()) + "/elsewhere");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
}

TEST(PathUnderTest, OnlyThePrefixItselfOrPathsBelowIt) {
  EXPECT_EQ(PathUnder("/npm", "/npm"), std::optional<std::string_view>(""));
  EXPECT_EQ(PathUnder("/npm/", "/npm"), std::optional<std::string_view>("/"));
  EXPECT_EQ(PathUnder("/npm/left-pad", "/npm"), std::optional<std::string_view>("/left-pad"));
  EXPECT_EQ(PathUnder("/npmx", "/npm"), std::nullopt);  // same letters, another route
  EXPECT_EQ(PathUnder("/np", "/npm"), std::nullopt);
  EXPECT_EQ(PathUnder("/pypi/simple/", "/npm"), std::nullopt);
}

}  // namespace
}  // namespace buildcache::http
