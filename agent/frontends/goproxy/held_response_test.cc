#include "agent/frontends/goproxy/held_response.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace buildcache::goproxy {
namespace {

// The client's side: every write as it reached the connection, and how the response ended.
class RecordingResponse : public http::Response {
 public:
  void SetStatus(int code) override { status = code; }
  void SetHeader(std::string_view, std::string_view) override {}
  Status Send(std::string_view body) override {
    writes.emplace_back(body);
    ended = true;
    return Status::Ok();
  }
  Status SendFile(int, uint64_t, uint64_t) override {
    return Internal("SendFile is not used here");
  }
  Status Begin(std::optional<uint64_t> l) override {
    begun = true;
    length = l;
    return Status::Ok();
  }
  Status Write(std::string_view data) override {
    writes.emplace_back(data);
    return Status::Ok();
  }
  Status End() override {
    ended = true;
    return Status::Ok();
  }
  void Abort() override { aborted = true; }
  bool started() const override { return begun; }

  std::string Body() const {
    std::string all;
    for (const std::string& w : writes) all += w;
    return all;
  }

  int status = 200;
  bool begun = false, ended = false, aborted = false;
  std::optional<uint64_t> length;
  std::vector<std::string> writes;
};

HeldBackResponse::Check Expect(const std::string& body, bool pass) {
  return [body, pass](const store::Digest& sha256, uint64_t size) -> Status {
    EXPECT_EQ(sha256, store::Digest::Of(body));
    EXPECT_EQ(size, body.size());
    return pass ? Status::Ok() : DataLoss("h1 mismatch");
  };
}

TEST(HeldBackResponseTest, KnownLengthSendsEachPieceWholeButTheLastByte) {
  RecordingResponse client;
  std::string seen;
  HeldBackResponse held(client, Expect("abcdefgh", true), {}, [&](std::string_view d) {
    // Each piece reached the client before this sees it.
    EXPECT_EQ(client.Body().size() + (client.writes.size() == 3 ? 1 : 0), seen.size() + d.size());
    seen += d;
  });
  ASSERT_TRUE(held.Begin(8).ok());
  for (const char* piece : {"abc", "def", "gh"}) ASSERT_TRUE(held.Write(piece).ok());
  EXPECT_EQ(client.writes, (std::vector<std::string>{"abc", "def", "g"}));
  EXPECT_FALSE(client.ended);
  ASSERT_TRUE(held.End().ok());
  EXPECT_EQ(client.writes.back(), "h");
  EXPECT_EQ(client.Body(), "abcdefgh");
  EXPECT_TRUE(client.ended);
  EXPECT_EQ(seen, "abcdefgh");
}

TEST(HeldBackResponseTest, FailedCheckAbortsWithoutTheLastByte) {
  RecordingResponse client;
  HeldBackResponse held(client, Expect("abcdefgh", false));
  ASSERT_TRUE(held.Begin(8).ok());
  ASSERT_TRUE(held.Write("abcd").ok());
  ASSERT_TRUE(held.Write("efgh").ok());
  EXPECT_EQ(held.End().code(), StatusCode::kDataLoss);
  EXPECT_EQ(held.outcome().code(), StatusCode::kDataLoss);
  EXPECT_EQ(client.Body(), "abcdefg");
  EXPECT_TRUE(client.aborted);
  EXPECT_FALSE(client.ended);
}

TEST(HeldBackResponseTest, UnknownLengthHoldsEachPiecesLastByteUntilTheNext) {
  RecordingResponse client;
  HeldBackResponse held(client, Expect("abcdef", true));
  ASSERT_TRUE(held.Begin(std::nullopt).ok());
  ASSERT_TRUE(held.Write("abc").ok());
  EXPECT_EQ(client.Body(), "ab");
  ASSERT_TRUE(held.Write("def").ok());
  EXPECT_EQ(client.Body(), "abcde");
  ASSERT_TRUE(held.End().ok());
  EXPECT_EQ(client.Body(), "abcdef");
}

// An upstream that sends more than its declared length: the bytes past it are held like the
// last one (the connection's own length check then fails the response), never sent unchecked.
TEST(HeldBackResponseTest, BytesPastTheDeclaredLengthAreHeldToo) {
  RecordingResponse client;
  HeldBackResponse held(client, Expect("abcdef", false));
  ASSERT_TRUE(held.Begin(4).ok());
  ASSERT_TRUE(held.Write("abcd").ok());
  EXPECT_EQ(client.Body(), "abc");
  ASSERT_TRUE(held.Write("ef").ok());
  EXPECT_EQ(client.Body(), "abcde");
  EXPECT_FALSE(held.End().ok());
  EXPECT_TRUE(client.aborted);
}

TEST(HeldBackResponseTest, ErrorAnswersPassThrough) {
  RecordingResponse client;
  HeldBackResponse held(client, Expect("", false));
  held.SetStatus(404);
  ASSERT_TRUE(held.Send("not found").ok());
  EXPECT_EQ(client.status, 404);
  EXPECT_EQ(client.Body(), "not found");
  EXPECT_TRUE(client.ended);
}

}  // namespace
}  // namespace buildcache::goproxy
