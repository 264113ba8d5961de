#include "agent/app/admin_handler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "agent/store/memory_store.h"
#include "common/http/client.h"
#include "common/http/server.h"

namespace buildcache::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "s3cret-admin-token-0123456789";

class AdminHandlerTest : public ::testing::Test {
 protected:
  void StartWithToken(std::string token) {
    ASSERT_TRUE(store::PutBytes(store_, "httpcache/poisoned", "evil").ok());
    ASSERT_TRUE(store::PutBytes(store_, "httpcache/innocent", "good").ok());
    handler_ = std::make_unique<AdminHandler>(std::move(token), store_);
    http::ServerOptions options;
    options.listen = "127.0.0.1:0";
    auto server = http::Server::Start(
        options, [this](http::Request& req, http::Response& resp) { handler_->Handle(req, resp); });
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    client_ = std::make_unique<http::Client>("127.0.0.1", server_->port());
  }

  http::ClientResponse Post(std::string_view target, const http::HeaderList& headers = {}) {
    auto r = client_->Fetch("POST", target, headers);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }

  bool Stored(std::string_view key) { return store_.Stat(key).ok(); }

  store::MemoryStore store_;
  std::unique_ptr<AdminHandler> handler_;
  std::unique_ptr<http::Server> server_;
  std::unique_ptr<http::Client> client_;
};

TEST_F(AdminHandlerTest, PurgeWithoutTokenIsRefusedAndRemovesNothing) {
  StartWithToken(kToken);
  http::ClientResponse r = Post("/admin/purge?key=httpcache%2Fpoisoned");
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.header("WWW-Authenticate"), HasSubstr("Bearer"));
  EXPECT_TRUE(Stored("httpcache/poisoned"));
}

TEST_F(AdminHandlerTest, PurgeWithWrongTokenIsRefusedAndRemovesNothing) {
  StartWithToken(kToken);
  const std::string same_length(sizeof(kToken) - 1, 'x');
  for (const std::string& auth :
       {std::string("Bearer wrong"), "Bearer " + same_length,
        "Bearer " + std::string(kToken).substr(0, 10), "Bearer " + std::string(kToken) + "x",
        "Basic " + std::string(kToken), std::string(kToken), std::string("Bearer ")}) {
    http::ClientResponse r =
        Post("/admin/purge?key=httpcache%2Fpoisoned", {{"Authorization", auth}});
    EXPECT_EQ(r.status, 403) << auth;
    EXPECT_THAT(r.body, Not(HasSubstr(kToken)));
  }
  EXPECT_TRUE(Stored("httpcache/poisoned"));
  EXPECT_TRUE(Stored("httpcache/innocent"));
}

TEST_F(AdminHandlerTest, PurgeWithTheTokenRemovesTheKeyAndNoOther) {
  StartWithToken(kToken);
  const http::HeaderList auth = {{"Authorization", std::string("Bearer ") + kToken}};
  http::ClientResponse r = Post("/admin/purge?key=httpcache%2Fpoisoned", auth);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{\"key\":\"httpcache/poisoned\",\"removed\":true}\n");
  EXPECT_FALSE(Stored("httpcache/poisoned"));
  EXPECT_TRUE(Stored("httpcache/innocent"));

  EXPECT_EQ(Post("/admin/purge?key=httpcache%2Finnocent", {{kAdminTokenHeader, "wrong"}}).status,
            403);
  EXPECT_TRUE(Stored("httpcache/innocent"));
  // The header the pod proxy lets through; it wins over an Authorization header.
  r = Post("/admin/purge?key=httpcache%2Finnocent",
           {{kAdminTokenHeader, kToken}, {"Authorization", "Bearer kube-credentials"}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Stored("httpcache/innocent"));

  r = Post("/admin/purge?key=httpcache/poisoned", auth);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"key\":\"httpcache/poisoned\",\"removed\":false}\n");
}

TEST_F(AdminHandlerTest, MalformedPurgesAreRejectedWithTheirReason) {
  StartWithToken(kToken);
  const http::HeaderList auth = {{"Authorization", std::string("Bearer ") + kToken}};
  EXPECT_EQ(Post("/admin/purge", auth).status, 400);
  EXPECT_EQ(Post("/admin/purge?key=", auth).status, 400);
  EXPECT_EQ(Post("/admin/purge?key=%zz", auth).status, 400);
  // An empty prefix is never read as "everything".
  for (const char* empty :
       {"/admin/purge?prefix=", "/admin/purge?prefix", "/admin/purge?prefix=&x=1"}) {
    http::ClientResponse r = Post(empty, auth);
    EXPECT_EQ(r.status, 400) << empty;
    EXPECT_THAT(r.body, HasSubstr("empty prefix")) << empty;
  }
  EXPECT_EQ(Post("/admin/purge?prefix=%zz", auth).status, 400);
  EXPECT_EQ(Post("/admin/purge?prefix=httpcache%2F&key=httpcache%2Fpoisoned", auth).status, 400);
  auto get = client_->Fetch("GET", "/admin/purge?key=httpcache%2Fpoisoned", auth);
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->status, 405);
  EXPECT_TRUE(Stored("httpcache/poisoned"));
  EXPECT_TRUE(Stored("httpcache/innocent"));
}

TEST_F(AdminHandlerTest, PrefixPurgeWithoutTheTokenIsRefusedAndRemovesNothing) {
  StartWithToken(kToken);
  const uint64_t keys = store_.Stats().keys;
  EXPECT_EQ(Post("/admin/purge?prefix=httpcache%2F").status, 401);
  EXPECT_EQ(Post("/admin/purge?prefix=h", {{"Authorization", "Bearer wrong"}}).status, 403);
  EXPECT_EQ(Post("/admin/purge?prefix=h", {{kAdminTokenHeader, "wrong"}}).status, 403);
  EXPECT_EQ(store_.Stats().keys, keys);
  EXPECT_TRUE(Stored("httpcache/poisoned"));
  EXPECT_TRUE(Stored("httpcache/innocent"));
}

TEST_F(AdminHandlerTest, PrefixPurgeRemovesEveryMatchingKeyAndNoOther) {
  StartWithToken(kToken);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(store::PutBytes(store_, "pypi/file/evil-" + std::to_string(i), "evil").ok());
  }
  ASSERT_TRUE(store::PutBytes(store_, "pypi/file/evim", "good").ok());
  ASSERT_TRUE(store::PutBytes(store_, "pypi/fil", "good").ok());
  http::ClientResponse r =
      Post("/admin/purge?prefix=pypi%2Ffile%2Fevil-", {{kAdminTokenHeader, kToken}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{\"prefix\":\"pypi/file/evil-\",\"removed\":5,\"next\":\"\",\"unnamed\":0}\n");
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(Stored("pypi/file/evil-" + std::to_string(i)));
  EXPECT_TRUE(Stored("pypi/file/evim"));
  EXPECT_TRUE(Stored("pypi/fil"));
  EXPECT_TRUE(Stored("httpcache/poisoned"));
  // Nothing left: removed 0.
  r = Post("/admin/purge?prefix=pypi%2Ffile%2Fevil-", {{kAdminTokenHeader, kToken}});
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("\"removed\":0,"));
}

TEST_F(AdminHandlerTest, PrefixPurgeIsCappedPerCallAndContinuesWithNext) {
  StartWithToken(kToken);
  const size_t n = AdminHandler::kMaxPurgeKeysPerCall + 7;
  for (size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(store::PutBytes(store_, "bulk/" + std::to_string(100000 + i), "x").ok());
  }
  const http::HeaderList auth = {{kAdminTokenHeader, kToken}};
  http::ClientResponse r = Post("/admin/purge?prefix=bulk%2F", auth);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body,
              HasSubstr("\"removed\":" + std::to_string(AdminHandler::kMaxPurgeKeysPerCall)));
  const std::string marker = "\"next\":\"";
  size_t at = r.body.find(marker);
  ASSERT_NE(at, std::string::npos);
  std::string next =
      r.body.substr(at + marker.size(), r.body.find('"', at + marker.size()) - at - marker.size());
  ASSERT_FALSE(next.empty());
  EXPECT_EQ(store_.Stats().keys, 2u + 7u);
  r = Post("/admin/purge?prefix=bulk%2F&after=" + next, auth);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, HasSubstr("\"removed\":7,\"next\":\"\""));
  EXPECT_EQ(store_.Stats().keys, 2u);
  EXPECT_TRUE(Stored("httpcache/innocent"));
}

TEST_F(AdminHandlerTest, EndpointIsOffWithoutAToken) {
  StartWithToken("");
  http::ClientResponse r =
      Post("/admin/purge?key=httpcache%2Fpoisoned", {{"Authorization", "Bearer "}});
  EXPECT_EQ(r.status, 404);
  EXPECT_THAT(r.body, HasSubstr("admin.tokenFile"));
  EXPECT_TRUE(Stored("httpcache/poisoned"));
}

TEST(ReadAdminTokenTest, TrimsWhitespaceAndRejectsAnEmptyFile) {
  const std::filesystem::path dir = ::testing::TempDir();
  const std::string path = (dir / "admin_token_test").string();
  std::ofstream(path) << "  tok-123\n";
  Result<std::string> token = ReadAdminToken(path);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(*token, "tok-123");
  std::ofstream(path) << " \n";
  EXPECT_THAT(ReadAdminToken(path).status().message(), HasSubstr("holds no token"));
  EXPECT_THAT(ReadAdminToken(path + ".missing").status().message(), HasSubstr("cannot read"));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace buildcache::agent
