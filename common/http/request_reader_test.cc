#include "common/http/request_reader.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <string>
#include <string_view>

#include "common/http/testing.h"

namespace buildcache::http::server_internal {
namespace {

using testing::RawConnection;

// A loopback TCP connection: `client` as a test client sees it, `server_fd` as the server's
// connection thread does.
class TcpPair {
 public:
  TcpPair() {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 1), 0);
    EXPECT_EQ(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    client = std::make_unique<RawConnection>(ntohs(addr.sin_port));
    server_fd = accept(listen_fd_, nullptr, nullptr);
    EXPECT_GE(server_fd, 0);
  }
  ~TcpPair() {
    client.reset();
    if (server_fd >= 0) close(server_fd);
    close(listen_fd_);
  }
  TcpPair(const TcpPair&) = delete;
  TcpPair& operator=(const TcpPair&) = delete;

  // Puts the server side in the delayed-ACK ("ping-pong") mode the kernel enters after a server
  // answers a request, as it has on a keep-alive connection from the second request on.
  void EnterDelayedAckMode() const {
    int zero = 0;
    ASSERT_EQ(setsockopt(server_fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero)), 0);
    ASSERT_FALSE(QuickAck());
  }

  // Whether the server side acknowledges at once (TCP_QUICKACK reads back as "not in delayed-ACK
  // mode"). Only the server's own sends put it back into delayed-ACK mode.
  bool QuickAck() const {
    int v = -1;
    socklen_t len = sizeof(v);
    EXPECT_EQ(getsockopt(server_fd, IPPROTO_TCP, TCP_QUICKACK, &v, &len), 0);
    return v != 0;
  }

  std::unique_ptr<RawConnection> client;
  int server_fd = -1;

 private:
  int listen_fd_ = -1;
};

std::string ReadWholeBody(RequestReader& reader) {
  std::string out;
  std::array<char, 64> buf{};
  for (;;) {
    auto n = reader.ReadBody(buf);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok() || *n == 0) return out;
    out.append(buf.data(), *n);
  }
}

// ccache (cpp-httplib) writes a PUT's head and body in two writes without TCP_NODELAY: Nagle holds
// the body until the head is acknowledged. Acknowledging the head as soon as it is read keeps
// that from costing the kernel's whole delayed-ACK time on every PUT of a keep-alive connection.
TEST(RequestReaderTest, HeadWhoseBodyIsStillToComeIsAcknowledgedAtOnce) {
  TcpPair pair;
  ServerOptions options;
  RequestReader reader(pair.server_fd, options, [] { return Status::Ok(); });
  pair.EnterDelayedAckMode();

  reader.Reset();
  ASSERT_TRUE(pair.client->Send("PUT /cache/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"));
  ASSERT_EQ(reader.ReadHead([] { return true; }), RequestReader::HeadResult::kRequest);
  EXPECT_TRUE(pair.QuickAck()) << "the head of a PUT whose body is still to come waits for a "
                                  "delayed ACK";

  ASSERT_TRUE(pair.client->Send("hello"));
  EXPECT_EQ(ReadWholeBody(reader), "hello");
}

TEST(RequestReaderTest, ChunkedBodyStillToComeIsAcknowledgedAtOnce) {
  TcpPair pair;
  ServerOptions options;
  RequestReader reader(pair.server_fd, options, [] { return Status::Ok(); });
  pair.EnterDelayedAckMode();

  reader.Reset();
  ASSERT_TRUE(
      pair.client->Send("PUT /cache/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
  ASSERT_EQ(reader.ReadHead([] { return true; }), RequestReader::HeadResult::kRequest);
  EXPECT_TRUE(pair.QuickAck());

  ASSERT_TRUE(pair.client->Send("5\r\nhello\r\n0\r\n\r\n"));
  EXPECT_EQ(ReadWholeBody(reader), "hello");
}

// After "100 Continue" (a send, which can bring delayed ACKs back) the body is acknowledged at once
// too.
TEST(RequestReaderTest, BodyAfterContinueIsAcknowledgedAtOnce) {
  TcpPair pair;
  ServerOptions options;
  const int fd = pair.server_fd;
  RequestReader reader(fd, options, [&pair, fd] {
    constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    EXPECT_EQ(send(fd, kContinue.data(), kContinue.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(kContinue.size()));
    pair.EnterDelayedAckMode();
    return Status::Ok();
  });

  reader.Reset();
  ASSERT_TRUE(pair.client->Send(
      "PUT /cache/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"));
  ASSERT_EQ(reader.ReadHead([] { return true; }), RequestReader::HeadResult::kRequest);
  ASSERT_TRUE(pair.client->Send("hello"));
  EXPECT_EQ(ReadWholeBody(reader), "hello");
  EXPECT_TRUE(pair.QuickAck());
}

}  // namespace
}  // namespace buildcache::http::server_internal
