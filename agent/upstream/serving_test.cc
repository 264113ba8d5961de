#include "agent/upstream/serving.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "agent/store/lmdb_store.h"
#include "agent/store/memory_store.h"
#include "common/http/client.h"

namespace buildcache::upstream {
namespace {

using namespace std::chrono_literals;
using Kind = ByteRange::Kind;

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return s;
}

void ExpectPartial(std::string_view header, uint64_t size, uint64_t first, uint64_t last) {
  ByteRange r = ParseByteRange(header, size);
  EXPECT_EQ(r.kind, Kind::kPartial) << header;
  EXPECT_EQ(r.first, first) << header;
  EXPECT_EQ(r.last, last) << header;
  EXPECT_EQ(r.status(), 206);
  EXPECT_EQ(r.length(), last - first + 1);
}

TEST(ParseByteRangeTest, SingleRanges) {
  ExpectPartial("bytes=0-0", 100, 0, 0);
  ExpectPartial("bytes=10-19", 100, 10, 19);
  ExpectPartial("bytes=90-", 100, 90, 99);      // open end
  ExpectPartial("bytes=90-1000", 100, 90, 99);  // last clamped to the end
  ExpectPartial("bytes=-10", 100, 90, 99);      // suffix
  ExpectPartial("bytes=-1000", 100, 0, 99);     // suffix longer than the body
  ExpectPartial("Bytes= 5 - 6 ", 100, 5, 6);    // case and spaces
  ExpectPartial("bytes=99-99", 100, 99, 99);    // the last byte
  ExpectPartial("bytes=0-18446744073709551615", 100, 0, 99);
}

TEST(ParseByteRangeTest, PastTheEndIsUnsatisfiable) {
  for (std::string_view h : {"bytes=100-", "bytes=100-200", "bytes=1000-", "bytes=-0"}) {
    ByteRange r = ParseByteRange(h, 100);
    EXPECT_EQ(r.kind, Kind::kUnsatisfiable) << h;
    EXPECT_EQ(r.status(), 416);
    EXPECT_EQ(r.length(), 0u);
  }
  // An empty body has no byte to start at.
  EXPECT_EQ(ParseByteRange("bytes=0-", 0).kind, Kind::kUnsatisfiable);
  EXPECT_EQ(ParseByteRange("bytes=-5", 0).kind, Kind::kUnsatisfiable);
}

TEST(ParseByteRangeTest, MalformedOrMultiRangeAsksForTheWholeBody) {
  for (std::string_view h :
       {"", "bytes", "bytes=", "bytes=-", "bytes=a-b", "bytes=5", "bytes=9-5", "bytes=+1-2",
        "bytes=-+1", "bytes=1--2", "bytes=0x10-", "items=0-5", "bytes 0-5", "bytes=0-1,5-6",
        "bytes=0-1, 200-300", "bytes=99999999999999999999-", "bytes=1-2 3"}) {
    ByteRange r = ParseByteRange(h, 100);
    EXPECT_EQ(r.kind, Kind::kWhole) << h;
    EXPECT_EQ(r.status(), 200);
    EXPECT_EQ(r.length(), 100u);
  }
}

// SendBlob with ranges through a real server, over both store read paths: sendfile from the
// LMDB store's blob files and reads from the memory store.
class RangeServingTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      char tmpl[] = "/tmp/bc-serving-lmdb-XXXXXX";
      ASSERT_NE(mkdtemp(tmpl), nullptr);
      dir_ = tmpl;
      store::LmdbStoreOptions options;
      options.data_dir = dir_;
      options.sync = false;
      auto s = store::LmdbStore::Open(options);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      store_ = std::move(s).value();
    } else {
      store_ = std::make_unique<store::MemoryStore>();
    }
    ASSERT_TRUE(store::PutBytes(*store_, "blob", body_).ok());
    ASSERT_TRUE(store::PutBytes(*store_, "empty", "").ok());
    http::ServerOptions so;
    so.listen = "127.0.0.1:0";
    auto server = http::Server::Start(so, [this](http::Request& req, http::Response& resp) {
      ServeImmutableBlob(*store_, req, resp, std::string(req.path().substr(1)),
                         "application/octet-stream");
    });
    ASSERT_TRUE(server.ok());
    server_ = std::move(server).value();
  }
  void TearDown() override {
    server_.reset();
    store_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  http::ClientResponse Get(std::string_view path, http::HeaderList headers = {},
                           std::string_view method = "GET") {
    http::ClientOptions options;
    options.timeout = 10s;
    auto r = http::Fetch(method,
                         "http://127.0.0.1:" + std::to_string(server_->port()) + std::string(path),
                         headers, {}, options);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }

  // Larger than the read buffer, so the memory store streams the range in pieces.
  const std::string body_ = Pattern(700'000);
  std::string dir_;
  std::unique_ptr<store::BlobStore> store_;
  std::unique_ptr<http::Server> server_;
};

TEST_P(RangeServingTest, WholeBodyAnnouncesRanges) {
  auto r = Get("/blob");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, body_);
  EXPECT_EQ(r.header("Accept-Ranges"), "bytes");
  EXPECT_EQ(r.header("Content-Range"), "");
  auto head = Get("/blob", {{"Range", "bytes=0-9"}}, "HEAD");  // Range applies to GET only
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("Content-Length"), "700000");
  EXPECT_EQ(head.header("Accept-Ranges"), "bytes");
}

TEST_P(RangeServingTest, SingleRangeIs206WithContentRange) {
  auto r = Get("/blob", {{"Range", "bytes=1000-1999"}});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, body_.substr(1000, 1000));
  EXPECT_EQ(r.header("Content-Range"), "bytes 1000-1999/700000");
  EXPECT_EQ(r.header("Content-Length"), "1000");
  EXPECT_EQ(r.header("Cache-Control"), "public, max-age=31536000, immutable");

  r = Get("/blob", {{"Range", "bytes=-300000"}});  // suffix, streamed past the read buffer
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, body_.substr(400'000));
  EXPECT_EQ(r.header("Content-Range"), "bytes 400000-699999/700000");

  r = Get("/blob", {{"Range", "bytes=699990-"}});  // open end
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, body_.substr(699'990));
}

TEST_P(RangeServingTest, PastTheEndIs416WithTheSize) {
  auto r = Get("/blob", {{"Range", "bytes=700000-"}});
  EXPECT_EQ(r.status, 416);
  EXPECT_EQ(r.header("Content-Range"), "bytes */700000");
  EXPECT_EQ(r.body.find(body_.substr(0, 16)), std::string::npos);
  r = Get("/empty", {{"Range", "bytes=0-"}});
  EXPECT_EQ(r.status, 416);
  EXPECT_EQ(r.header("Content-Range"), "bytes */0");
}

TEST_P(RangeServingTest, MalformedMultiAndConditionalRangesGetTheWholeBody) {
  for (std::string_view h : {"bytes=5-1", "bytes=0-1,10-11", "pages=1-2", "bytes=x-"}) {
    auto r = Get("/blob", {{"Range", std::string(h)}});
    EXPECT_EQ(r.status, 200) << h;
    EXPECT_EQ(r.body, body_) << h;
  }
  // No validator to compare If-Range with: the whole body, never a piece of another version.
  auto r = Get("/blob", {{"Range", "bytes=0-9"}, {"If-Range", "\"abc\""}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, body_);
}

INSTANTIATE_TEST_SUITE_P(Stores, RangeServingTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Lmdb" : "Memory"; });

}  // namespace
}  // namespace buildcache::upstream
