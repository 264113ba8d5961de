// The server faces untrusted clients: whatever they send, it must not crash, hang or stop serving.
// Each test throws some hostile input at it and then checks a normal request still works.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/http/client.h"
#include "common/http/server.h"
#include "common/http/testing.h"

namespace buildcache::http {
namespace {

using namespace std::chrono_literals;
using testing::RawConnection;

class HostileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.idle_timeout = 500ms;
    options.max_header_bytes = 8192;
    options.max_body_bytes = 1 << 20;
    options.max_connections = 64;
    auto server = Server::Start(options, [](Request& req, Response& resp) {
      std::string body;
      char buf[4096];
      for (;;) {
        auto n = req.ReadBody(buf);
        if (!n.ok()) {
          resp.SetStatus(400);
          (void)resp.Send(n.status().ToString());
          return;
        }
        if (*n == 0) break;
        body.append(buf, *n);
      }
      (void)resp.Send("ok " + std::to_string(body.size()));
    });
    ASSERT_TRUE(server.ok());
    server_ = std::move(server).value();
  }

  // A well-formed request on a fresh connection must get a prompt, correct answer.
  void ExpectHealthy() {
    Client client("127.0.0.1", server_->port(), ClientOptions{.timeout = 5s});
    auto r = client.Fetch("PUT", "/healthy", {}, "12345");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "ok 5");
  }

  // Sends `wire`, half-closes, and expects the server to answer or close within a bound.
  void ThrowAndExpectNoHang(const std::string& wire) {
    RawConnection c(server_->port());
    ASSERT_TRUE(c.connected());
    c.Send(wire);
    c.ShutdownWrite();
    EXPECT_TRUE(c.WaitClosed(3s)) << "server kept a connection open after: " << wire.substr(0, 80);
  }

  std::unique_ptr<Server> server_;
};

TEST_F(HostileTest, GarbageIsRejected) {
  for (std::string wire :
       {std::string("\x00\x01\x02\xff\xfe", 5), std::string("\r\n\r\n\r\n"), std::string("GET"),
        std::string(" / HTTP/1.1\r\n\r\n"), std::string("GET /\x01 HTTP/1.1\r\n\r\n"),
        std::string("GET / HTTP/1.1\r\nHo\x00st: x\r\n\r\n", 28),
        std::string("GET / HTTP/1.1\r\n: novalue\r\n\r\n"), std::string("GET / HTTP/1.1\n\n"),
        std::string(100000, 'A')}) {
    ThrowAndExpectNoHang(wire);
  }
  ExpectHealthy();
}

TEST_F(HostileTest, RandomBytesNeverBreakTheServer) {
  std::mt19937 rng(12345);
  const std::string prefixes[] = {"", "GET / HTTP/1.1\r\n",
                                  "PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
                                  "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"};
  for (int i = 0; i < 200; ++i) {
    std::string wire = prefixes[i % 4];
    size_t len = rng() % 600;
    for (size_t j = 0; j < len; ++j) {
      // Bias towards HTTP syntax so the parser gets deep.
      static const char kAlphabet[] = "\r\n:; 0123456789abcdefABCDEF-\t/HTTP";
      wire.push_back(rng() % 3 == 0 ? static_cast<char>(rng())
                                    : kAlphabet[rng() % (sizeof(kAlphabet) - 1)]);
    }
    ThrowAndExpectNoHang(wire);
  }
  ExpectHealthy();
}

TEST_F(HostileTest, TruncatedRequestsAreDropped) {
  for (std::string wire : {"GET / HTTP/1.1\r\nHost: x\r\n", "GET / HTT",
                           "PUT / HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort",
                           "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                           "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n"}) {
    ThrowAndExpectNoHang(wire);
  }
  ExpectHealthy();
}

TEST_F(HostileTest, HugeHeadersAreRefused) {
  {
    RawConnection c(server_->port());
    std::string wire = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 2000; ++i) wire += "X-H" + std::to_string(i) + ": v\r\n";
    c.Send(wire + "\r\n");
    std::string got = c.ReadUntil("\r\n\r\n");
    EXPECT_TRUE(got.starts_with("HTTP/1.1 431")) << got.substr(0, 100);
    EXPECT_TRUE(c.WaitClosed(3s));
  }
  {
    // One endless header line, never terminated.
    RawConnection c(server_->port());
    c.Send("GET / HTTP/1.1\r\nX-Long: ");
    for (int i = 0; i < 64 && c.Send(std::string(4096, 'x')); ++i) {
    }
    EXPECT_TRUE(c.WaitClosed(3s));
  }
  {
    // An endless request line.
    RawConnection c(server_->port());
    c.Send("GET /");
    for (int i = 0; i < 64 && c.Send(std::string(4096, 'a')); ++i) {
    }
    EXPECT_TRUE(c.WaitClosed(3s));
  }
  ExpectHealthy();
}

TEST_F(HostileTest, SlowlorisIsCutOffByTheHeaderDeadline) {
  std::vector<std::unique_ptr<RawConnection>> conns;
  for (int i = 0; i < 20; ++i) {
    conns.push_back(std::make_unique<RawConnection>(server_->port()));
    conns.back()->Send("GET / HTTP/1.1\r\n");
  }
  // Trickle a header byte every 100 ms: each read is within the idle timeout, but the header
  // block as a whole is not.
  auto start = std::chrono::steady_clock::now();
  bool all_closed = false;
  while (!all_closed && std::chrono::steady_clock::now() - start < 5s) {
    all_closed = true;
    for (auto& c : conns) {
      if (c->Send("X")) all_closed = false;
    }
    ExpectHealthy();  // meanwhile, others are served
    std::this_thread::sleep_for(100ms);
  }
  for (auto& c : conns) EXPECT_TRUE(c->WaitClosed(2s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  ExpectHealthy();
}

TEST_F(HostileTest, SlowBodyIsCutOffByTheIdleTimeout) {
  RawConnection c(server_->port());
  c.Send("PUT / HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc");
  EXPECT_TRUE(c.WaitClosed(3s));
  ExpectHealthy();
}

TEST_F(HostileTest, InvalidChunkSizesAreRejected) {
  for (std::string chunks : std::vector<std::string>{
           "zz\r\nab\r\n0\r\n\r\n", "-5\r\nabcde\r\n0\r\n\r\n",
           "ffffffffffffffffffff\r\nab\r\n0\r\n\r\n", "fffffffffffffff\r\nab\r\n0\r\n\r\n",
           "5\r\nabcdeXX0\r\n\r\n", "5 5\r\nabcde\r\n0\r\n\r\n", "\r\n\r\n",
           "1;" + std::string(30000, 'e') + "\r\na\r\n0\r\n\r\n"}) {
    RawConnection c(server_->port());
    c.Send("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks);
    std::string got = c.ReadUntil("\r\n\r\n", 3s);
    EXPECT_FALSE(got.starts_with("HTTP/1.1 200")) << chunks.substr(0, 40) << " -> " << got;
    EXPECT_TRUE(c.WaitClosed(3s)) << chunks.substr(0, 40);
  }
  ExpectHealthy();
}

TEST_F(HostileTest, RequestSmugglingShapesAreRejected) {
  for (std::string wire :
       {"PUT / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "PUT / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nab"}) {
    RawConnection c(server_->port());
    c.Send(wire);
    std::string got = c.ReadUntil("\r\n\r\n", 3s);
    EXPECT_TRUE(got.starts_with("HTTP/1.1 400")) << wire << " -> " << got;
    EXPECT_TRUE(c.WaitClosed(3s));
  }
  ExpectHealthy();
}

TEST_F(HostileTest, ConnectionFloodBeyondTheLimitIsRefusedAndRecovers) {
  std::vector<std::unique_ptr<RawConnection>> conns;
  for (int i = 0; i < 100; ++i) conns.push_back(std::make_unique<RawConnection>(server_->port()));
  std::this_thread::sleep_for(100ms);
  conns.clear();
  std::this_thread::sleep_for(100ms);
  ExpectHealthy();
}

TEST_F(HostileTest, ClientsThatVanishMidResponseDoNotHurt) {
  for (int i = 0; i < 20; ++i) {
    RawConnection c(server_->port());
    c.Send("PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde");
    // Close with an RST before reading the response.
    linger l{1, 0};
    setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  ExpectHealthy();
}

}  // namespace
}  // namespace buildcache::http
