#include "agent/replication/pull_stream.h"

#include <gtest/gtest.h>

#include <thread>

#include "agent/store/memory_store.h"

namespace buildcache::replication {
namespace {

std::string Bytes(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i % 23);
  return s;
}

store::BlobInfo InfoOf(const std::string& body) {
  return store::BlobInfo{store::Digest::Of(body), body.size()};
}

Result<std::string> ReadAt(store::BlobReader& reader, uint64_t offset, size_t n) {
  std::string buf(n, '\0');
  BC_ASSIGN_OR_RETURN(size_t got, reader.ReadAt(offset, std::span<char>(buf.data(), n)));
  buf.resize(got);
  return buf;
}

TEST(PullStreamTest, ASmallObjectIsReleasedOnlyWholeAndVerifiedSoARestartIsInvisible) {
  store::MemoryStore local;
  auto stream = std::make_shared<PullStream>(1024);
  const std::string bad = Bytes(600, 'x');
  const std::string good = Bytes(600, 'a');
  stream->Announce(InfoOf(good));
  stream->Append(bad);  // a lying peer: the writer's digest check fails at commit
  stream->Restart(DataLoss("digest mismatch"));
  stream->Announce(InfoOf(good));
  stream->Append(good.substr(0, 100));
  stream->Append(good.substr(100));
  stream->Verified();
  auto info = stream->WaitReadable();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->digest, store::Digest::Of(good));
  auto reader = stream->NewReader(stream, local);
  EXPECT_EQ(reader->origin(), "peer");
  EXPECT_EQ(reader->fd(), -1);
  EXPECT_EQ(*store::ReadAll(*reader), good);  // served before the pull finished committing
  stream->Finish(Status::Ok());
}

TEST(PullStreamTest, ALargeObjectStreamsButItsLastByteWaitsForVerification) {
  store::MemoryStore local;
  auto stream = std::make_shared<PullStream>(1024);
  const std::string body = Bytes(1536, 'b');
  stream->Announce(InfoOf(body));
  auto info = stream->WaitReadable();  // no byte yet: large objects are readable once announced
  ASSERT_TRUE(info.ok());
  auto reader = stream->NewReader(stream, local);
  stream->Append(body.substr(0, 512));
  EXPECT_EQ(*ReadAt(*reader, 0, 1024), body.substr(0, 512));
  stream->Append(body.substr(512, 512));
  stream->Append(body.substr(1024));  // all there, within the window, not yet verified
  EXPECT_EQ(*ReadAt(*reader, 512, 2048), body.substr(512, 1023));  // all but the last byte
  std::thread verify([&] {
    stream->Verified();
    stream->Finish(Status::Ok());
  });
  EXPECT_EQ(*ReadAt(*reader, 1535, 16), body.substr(1535));  // waits for the verification
  verify.join();
  EXPECT_EQ(*ReadAt(*reader, 1536, 16), "");
}

TEST(PullStreamTest, ARestartAfterTheReaderTookBytesFailsTheReader) {
  store::MemoryStore local;
  auto stream = std::make_shared<PullStream>(1024);
  const std::string body = Bytes(4096, 'c');
  stream->Announce(InfoOf(body));
  ASSERT_TRUE(stream->WaitReadable().ok());
  auto reader = stream->NewReader(stream, local);
  stream->Append(body.substr(0, 256));
  ASSERT_EQ(ReadAt(*reader, 0, 256)->size(), 256u);
  stream->Restart(DataLoss("peer sent bytes that do not match"));
  auto next = ReadAt(*reader, 256, 256);
  EXPECT_EQ(next.status().code(), StatusCode::kDataLoss);
  // The pull goes on for the store alone; the reader stays failed.
  stream->Announce(InfoOf(body));
  stream->Append(body);
  stream->Verified();
  stream->Finish(Status::Ok());
  EXPECT_EQ(ReadAt(*reader, 256, 256).status().code(), StatusCode::kDataLoss);
}

TEST(PullStreamTest, BytesPastTheWindowAreReadFromTheStoreAfterTheCommit) {
  store::MemoryStore local;
  auto stream = std::make_shared<PullStream>(1024);
  const std::string body = Bytes(4096, 'd');
  stream->Announce(InfoOf(body));
  ASSERT_TRUE(stream->WaitReadable().ok());
  auto reader = stream->NewReader(stream, local);
  for (size_t i = 0; i < body.size(); i += 512) stream->Append(body.substr(i, 512));
  // The reader took nothing, so the window overflowed and was dropped; the pull commits.
  ASSERT_TRUE(store::PutBytes(local, "k", body).ok());
  stream->Verified();
  stream->Finish(Status::Ok());
  EXPECT_EQ(*store::ReadAll(*reader), body);
}

TEST(PullStreamTest, APullThatFailsBeforeAnyReleaseReportsItsError) {
  auto stream = std::make_shared<PullStream>(1024);
  const std::string body = Bytes(100, 'e');
  stream->Announce(InfoOf(body));
  stream->Append(body.substr(0, 50));
  stream->Finish(Unavailable("peer went away"));
  auto info = stream->WaitReadable();
  EXPECT_EQ(info.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(stream->WaitDone().code(), StatusCode::kUnavailable);
}

TEST(PullStreamTest, AStreamingReaderSeesTheFailureOfAnUnverifiedPull) {
  store::MemoryStore local;
  auto stream = std::make_shared<PullStream>(1024);
  const std::string body = Bytes(2048, 'f');
  stream->Announce(InfoOf(body));
  ASSERT_TRUE(stream->WaitReadable().ok());
  auto reader = stream->NewReader(stream, local);
  stream->Append(body.substr(0, 1000));
  stream->Finish(DeadlineExceeded("every owner stalled"));
  EXPECT_EQ(ReadAt(*reader, 0, 100)->size(), 100u);  // what arrived is still handed out
  EXPECT_EQ(ReadAt(*reader, 1000, 100).status().code(), StatusCode::kDeadlineExceeded);
}

TEST(PullStreamTest, WindowsShareOneBudgetAndAStreamOverItReadsFromTheStore) {
  store::MemoryStore local;
  auto budget = std::make_shared<WindowBudget>(1000);
  const std::string first = Bytes(600, 'g');
  const std::string second = Bytes(600, 'h');
  auto a = std::make_shared<PullStream>(1024, budget);
  auto b = std::make_shared<PullStream>(1024, budget);
  a->Announce(InfoOf(first));
  a->Append(first);
  EXPECT_EQ(budget->left(), 400u);
  b->Announce(InfoOf(second));
  b->Append(second);  // does not fit: b keeps no window
  EXPECT_EQ(budget->left(), 400u);
  a->Verified();
  ASSERT_TRUE(a->WaitReadable().ok());
  auto reader_a = a->NewReader(a, local);
  EXPECT_EQ(*store::ReadAll(*reader_a), first);  // from its window, before any commit
  // b's reader gets its bytes from the store once the pull committed them.
  b->Verified();
  ASSERT_TRUE(b->WaitReadable().ok());
  auto reader_b = b->NewReader(b, local);
  ASSERT_TRUE(store::PutBytes(local, "b", second).ok());
  b->Finish(Status::Ok());
  EXPECT_EQ(*store::ReadAll(*reader_b), second);
  reader_a.reset();  // a reader gone gives its window back
  EXPECT_EQ(budget->left(), 1000u);
  a->Finish(Status::Ok());
}

}  // namespace
}  // namespace buildcache::replication
