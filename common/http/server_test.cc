#include "common/http/server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/http/client.h"
#include "common/http/testing.h"

namespace buildcache::http {
namespace {

using namespace std::chrono_literals;
using testing::RawConnection;

std::unique_ptr<Server> StartServer(Handler handler, ServerOptions options = {}) {
  options.listen = "127.0.0.1:0";
  auto server = Server::Start(options, std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return std::move(server).value();
}

// Reads the whole body through ReadBody in small pieces.
Result<std::string> ReadAllBody(Request& req, size_t piece = 1000) {
  std::string out;
  std::string buf(piece, '\0');
  for (;;) {
    auto n = req.ReadBody(buf);
    if (!n.ok()) return n.status();
    if (*n == 0) return out;
    out.append(buf.data(), *n);
  }
}

// Echoes method, target, a header and the body back.
void EchoHandler(Request& req, Response& resp) {
  auto body = ReadAllBody(req);
  if (!body.ok()) {
    resp.SetStatus(body.status().code() == StatusCode::kTooLarge ? 413 : 400);
    (void)resp.Send(body.status().ToString());
    return;
  }
  resp.SetHeader("X-Method", req.method());
  resp.SetHeader("X-Path", req.path());
  resp.SetHeader("X-Query", req.query());
  resp.SetHeader("X-Test", req.header("x-test"));
  (void)resp.Send(*body);
}

TEST(ServerTest, ServesGetAndEchoesRequestParts) {
  auto server = StartServer(EchoHandler);
  Client client("127.0.0.1", server->port());
  auto r = client.Fetch("POST", "/a/b?c=d", {{"X-Test", "hello"}}, "payload");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "payload");
  EXPECT_EQ(r->header("x-method"), "POST");
  EXPECT_EQ(r->header("x-path"), "/a/b");
  EXPECT_EQ(r->header("x-query"), "c=d");
  EXPECT_EQ(r->header("x-test"), "hello");
  EXPECT_EQ(r->header("server"), "buildcache");
  EXPECT_FALSE(r->header("date").empty());
}

TEST(ServerTest, KeepAliveServesManyRequestsOnOneConnection) {
  std::atomic<int> ports_seen{0};
  std::string first_remote;
  std::mutex mu;
  auto server = StartServer([&](Request& req, Response& resp) {
    std::lock_guard lock(mu);
    if (first_remote.empty()) first_remote = std::string(req.remote_address());
    if (req.remote_address() == first_remote) ports_seen++;
    (void)resp.Send("ok");
  });
  Client client("127.0.0.1", server->port());
  for (int i = 0; i < 50; ++i) {
    auto r = client.Fetch("GET", "/x");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->body, "ok");
  }
  EXPECT_EQ(ports_seen.load(), 50);
  EXPECT_TRUE(first_remote.starts_with("127.0.0.1:"));
}

TEST(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  auto server = StartServer(EchoHandler);
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send(
      "PUT /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
      "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
      "PUT /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"));
  std::string got = c.ReadUntil("X-Path: /3");
  size_t p1 = got.find("X-Path: /1"), p2 = got.find("X-Path: /2"), p3 = got.find("X-Path: /3");
  ASSERT_NE(p1, std::string::npos) << got;
  ASSERT_NE(p2, std::string::npos) << got;
  ASSERT_NE(p3, std::string::npos) << got;
  EXPECT_LT(p1, p2);
  EXPECT_LT(p2, p3);
  got += c.ReadFor(200ms);
  EXPECT_NE(got.find("\r\n\r\nabc"), std::string::npos);
  EXPECT_NE(got.find("\r\n\r\nde"), std::string::npos);
}

TEST(ServerTest, HeadSendsContentLengthWithoutBody) {
  auto server = StartServer([](Request& req, Response& resp) { (void)resp.Send("0123456789"); });
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string got = c.ReadUntil("0123456789");
  // The HEAD response has the length but no body: the next bytes are the GET's status line.
  size_t second = got.find("HTTP/1.1 200", 1);
  ASSERT_NE(second, std::string::npos) << got;
  std::string head = got.substr(0, second);
  EXPECT_NE(head.find("Content-Length: 10\r\n"), std::string::npos);
  EXPECT_TRUE(head.ends_with("\r\n\r\n")) << head;
}

TEST(ServerTest, HeadWithSendFileAndStreamingSendsNoBody) {
  char path[] = "/tmp/bc_http_test_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  ASSERT_EQ(write(fd, "filedata", 8), 8);
  auto server = StartServer([fd](Request& req, Response& resp) {
    if (req.path() == "/file") {
      (void)resp.SendFile(fd, 0, 8);
    } else {
      (void)resp.Begin(std::nullopt);
      (void)resp.Write("streamed");
      (void)resp.End();
    }
  });
  Client client("127.0.0.1", server->port());
  auto r = client.Fetch("HEAD", "/file");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->header("content-length"), "8");
  EXPECT_EQ(r->body, "");
  r = client.Fetch("HEAD", "/stream");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "");
  r = client.Fetch("GET", "/file");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "filedata");
  close(fd);
}

TEST(ServerTest, SendFileServesTheRequestedRangeOfALargeFile) {
  char path[] = "/tmp/bc_http_test_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 4096);
  ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  auto server = StartServer([fd](Request& req, Response& resp) {
    resp.SetHeader("Content-Type", "application/octet-stream");
    (void)resp.SendFile(fd, 100, (2 << 20) + 5);
  });
  auto r = Fetch("GET", "http://127.0.0.1:" + std::to_string(server->port()) + "/f");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, data.substr(100, (2 << 20) + 5));
  EXPECT_EQ(r->header("content-type"), "application/octet-stream");
  close(fd);
}

TEST(ServerTest, SendFileOfAShortFileAbortsInsteadOfCompleting) {
  char path[] = "/tmp/bc_http_test_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  ASSERT_EQ(write(fd, "short", 5), 5);
  auto server = StartServer([fd](Request& req, Response& resp) {
    EXPECT_EQ(resp.SendFile(fd, 0, 100).code(), StatusCode::kDataLoss);
  });
  auto r = Fetch("GET", "http://127.0.0.1:" + std::to_string(server->port()) + "/f");
  EXPECT_FALSE(r.ok());
  close(fd);
}

TEST(ServerTest, StreamingResponsesUseChunkedOrContentLength) {
  auto server = StartServer([](Request& req, Response& resp) {
    if (req.path() == "/chunked") {
      ASSERT_TRUE(resp.Begin(std::nullopt).ok());
    } else {
      ASSERT_TRUE(resp.Begin(10).ok());
    }
    EXPECT_TRUE(resp.started());
    ASSERT_TRUE(resp.Write("01234").ok());
    ASSERT_TRUE(resp.Write("").ok());
    ASSERT_TRUE(resp.Write("56789").ok());
    ASSERT_TRUE(resp.End().ok());
  });
  Client client("127.0.0.1", server->port());
  auto r = client.Fetch("GET", "/chunked");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "0123456789");
  EXPECT_EQ(r->header("transfer-encoding"), "chunked");
  r = client.Fetch("GET", "/length");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "0123456789");
  EXPECT_EQ(r->header("content-length"), "10");
}

TEST(ServerTest, AbortTruncatesTheResponse) {
  auto server = StartServer([](Request& req, Response& resp) {
    ASSERT_TRUE(resp.Begin(100).ok());
    ASSERT_TRUE(resp.Write("partial").ok());
    resp.Abort();
  });
  auto r = Fetch("GET", "http://127.0.0.1:" + std::to_string(server->port()) + "/");
  EXPECT_FALSE(r.ok());
}

TEST(ServerTest, ChunkedRequestBodyIsDecoded) {
  auto server = StartServer(EchoHandler);
  RawConnection c(server->port());
  ASSERT_TRUE(
      c.Send("PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"));
  std::string got = c.ReadUntil("hello 0123456789");
  EXPECT_NE(got.find("HTTP/1.1 200 OK"), std::string::npos) << got;
  EXPECT_NE(got.find("Content-Length: 16"), std::string::npos) << got;
}

TEST(ServerTest, LargeChunkedBodyArrivingSlowlyIsDecoded) {
  auto server = StartServer([](Request& req, Response& resp) {
    auto body = ReadAllBody(req, 777);
    ASSERT_TRUE(body.ok()) << body.status().ToString();
    (void)resp.Send(std::to_string(body->size()) + ":" +
                    std::to_string(std::hash<std::string>()(*body)));
  });
  std::string body;
  for (int i = 0; i < 300000; ++i) body.push_back(static_cast<char>('a' + i % 26));
  std::string wire = "PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t off = 0; off < body.size();) {
    size_t n = std::min<size_t>(body.size() - off, 1 + (off * 31) % 20000);
    char hex[32];
    snprintf(hex, sizeof(hex), "%zx\r\n", n);
    wire += hex;
    wire += body.substr(off, n);
    wire += "\r\n";
    off += n;
  }
  wire += "0\r\n\r\n";
  RawConnection c(server->port());
  for (size_t off = 0; off < wire.size(); off += 4093) {
    ASSERT_TRUE(c.Send(std::string_view(wire).substr(off, 4093)));
  }
  std::string expect =
      std::to_string(body.size()) + ":" + std::to_string(std::hash<std::string>()(body));
  std::string got = c.ReadUntil(expect);
  EXPECT_NE(got.find(expect), std::string::npos) << got;
}

TEST(ServerTest, ExpectContinueIsAnsweredWhenTheHandlerReadsTheBody) {
  std::promise<void> handler_entered;
  std::promise<void> may_read;
  auto may_read_future = may_read.get_future();
  auto server = StartServer([&](Request& req, Response& resp) {
    handler_entered.set_value();
    may_read_future.wait();
    EchoHandler(req, resp);
  });
  RawConnection c(server->port());
  ASSERT_TRUE(
      c.Send("PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
  handler_entered.get_future().wait();
  // Nothing is sent before the handler reads.
  EXPECT_EQ(c.ReadFor(100ms), "");
  may_read.set_value();
  std::string got = c.ReadUntil("HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_EQ(got, "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(c.Send("body"));
  got = c.ReadUntil("\r\n\r\nbody");
  EXPECT_NE(got.find("HTTP/1.1 200 OK"), std::string::npos) << got;
}

TEST(ServerTest, ExpectContinueIsNotSentWhenTheHandlerRejectsAndTheConnectionCloses) {
  auto server = StartServer([](Request& req, Response& resp) {
    resp.SetStatus(413);
    (void)resp.Send("too big");
  });
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send(
      "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 400000\r\nExpect: 100-continue\r\n\r\n"));
  std::string got = c.ReadUntil("too big");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 413 ")) << got;
  EXPECT_EQ(got.find("100 Continue"), std::string::npos);
  EXPECT_NE(got.find("Connection: close"), std::string::npos);
  EXPECT_TRUE(c.WaitClosed());
}

TEST(ServerTest, BodyBeyondMaxIsTooLarge) {
  ServerOptions options;
  options.max_body_bytes = 1000;
  auto server = StartServer(EchoHandler, options);
  Client client("127.0.0.1", server->port());
  auto r = client.Fetch("PUT", "/x", {}, std::string(1000, 'x'));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  r = client.Fetch("PUT", "/x", {}, std::string(1001, 'x'));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("TOO_LARGE"), std::string::npos);

  RawConnection c(server->port());
  std::string wire = "PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) wire += "190\r\n" + std::string(400, 'y') + "\r\n";
  wire += "0\r\n\r\n";
  ASSERT_TRUE(c.Send(wire));
  std::string got = c.ReadUntil("TOO_LARGE");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 413 ")) << got;
  EXPECT_TRUE(c.WaitClosed());
}

TEST(ServerTest, SmallUnreadBodyIsDrainedAndTheConnectionReused) {
  auto server = StartServer([](Request& req, Response& resp) { (void)resp.Send("ignored body"); });
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" +
                     std::string(5000, 'z') + "GET /y HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string got = c.ReadUntil("ignored bodyHTTP/1.1 200 OK");
  if (!got.ends_with("ignored body")) got += c.ReadUntil("ignored body");
  size_t first = got.find("ignored body");
  ASSERT_NE(first, std::string::npos);
  EXPECT_NE(got.find("ignored body", first + 1), std::string::npos) << got;
  EXPECT_EQ(got.find("Connection: close"), std::string::npos);
}

TEST(ServerTest, LargeUnreadBodyClosesTheConnection) {
  auto server = StartServer([](Request& req, Response& resp) { (void)resp.Send("nope"); });
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nabc"));
  std::string got = c.ReadUntil("nope");
  EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
  EXPECT_TRUE(c.WaitClosed());
}

TEST(ServerTest, HandlerThatDoesNotRespondOrThrowsGets500) {
  auto server = StartServer([](Request& req, Response& resp) {
    if (req.path() == "/throw") throw std::runtime_error("boom");
  });
  Client client("127.0.0.1", server->port());
  auto r = client.Fetch("GET", "/silent");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 500);
  r = client.Fetch("GET", "/throw");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 500);
  r = client.Fetch("GET", "/silent");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 500);
}

TEST(ServerTest, HandlerHeadersCannotInjectOrOverrideFraming) {
  auto server = StartServer([](Request& req, Response& resp) {
    resp.SetHeader("X-Evil", "a\r\nInjected: yes");
    resp.SetHeader("Content-Length", "999");
    resp.SetHeader("Transfer-Encoding", "chunked");
    resp.SetHeader("X-Good", "fine");
    (void)resp.Send("body");
  });
  Client client("127.0.0.1", server->port());
  auto r = client.Fetch("GET", "/");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, "body");
  EXPECT_EQ(r->header("injected"), "");
  EXPECT_EQ(r->header("x-good"), "fine");
  EXPECT_EQ(r->header("content-length"), "4");
}

TEST(ServerTest, Http10ClientGetsCloseUnlessKeepAliveAsked) {
  auto server = StartServer([](Request& req, Response& resp) { (void)resp.Send("hi"); });
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("GET / HTTP/1.0\r\n\r\n"));
  std::string got = c.ReadUntil("hi");
  EXPECT_NE(got.find("Connection: close"), std::string::npos);
  EXPECT_TRUE(c.WaitClosed());

  RawConnection k(server->port());
  ASSERT_TRUE(k.Send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  got = k.ReadUntil("hi");
  EXPECT_NE(got.find("Connection: keep-alive"), std::string::npos) << got;
  ASSERT_TRUE(k.Send("GET / HTTP/1.0\r\n\r\n"));
  EXPECT_NE(k.ReadUntil("hi").find("hi"), std::string::npos);
}

TEST(ServerTest, MaxConnectionsRefusesWith503) {
  ServerOptions options;
  options.max_connections = 2;
  auto server = StartServer([](Request& req, Response& resp) { (void)resp.Send("ok"); }, options);
  RawConnection a(server->port()), b(server->port());
  ASSERT_TRUE(a.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(b.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_NE(a.ReadUntil("ok").find("200 OK"), std::string::npos);
  ASSERT_NE(b.ReadUntil("ok").find("200 OK"), std::string::npos);
  RawConnection c(server->port());
  c.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string got = c.ReadUntil("too many connections");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 503 ")) << got;
  EXPECT_TRUE(c.WaitClosed());
}

// Issue 11 item 6: one client holding connections up to (and beyond) its share gets 429 with
// Retry-After for the excess, and another client is still served.
TEST(ServerTest, PerClientConnectionLimitAnswers429AndServesOtherClients) {
  ServerOptions options;
  options.max_connections = 8;
  options.max_connections_per_client = 3;
  auto server = StartServer([](Request&, Response& resp) { (void)resp.Send("ok"); }, options);
  // The hostile client opens connections and sends nothing on them.
  std::vector<std::unique_ptr<RawConnection>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawConnection>(server->port(), "127.0.0.1"));
    ASSERT_TRUE(held.back()->connected());
  }
  // Its one-request probe makes sure the server has accepted the three before the excess.
  for (int i = 0; i < 12; ++i) {
    RawConnection extra(server->port(), "127.0.0.1");
    ASSERT_TRUE(extra.connected());
    extra.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string got = extra.ReadUntil("from this client");
    EXPECT_TRUE(got.starts_with("HTTP/1.1 429 ")) << got;
    EXPECT_NE(got.find("\r\nRetry-After: 1\r\n"), std::string::npos) << got;
    EXPECT_TRUE(extra.WaitClosed());
  }
  // Another client is served while the hostile one holds its share.
  for (int i = 0; i < 5; ++i) {
    RawConnection other(server->port(), "127.0.0.2");
    ASSERT_TRUE(other.connected());
    ASSERT_TRUE(other.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::string got = other.ReadUntil("ok");
    EXPECT_TRUE(got.starts_with("HTTP/1.1 200 ")) << got;
  }
  // Closing its connections gives the hostile client its share back.
  held.clear();
  bool served = false;
  for (int attempt = 0; attempt < 100 && !served; ++attempt) {
    RawConnection again(server->port(), "127.0.0.1");
    again.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    served = again.ReadUntil("ok").starts_with("HTTP/1.1 200 ");
    if (!served) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(served);
}

// A handler that reads the whole body and answers what ReadBody said (a store would answer 507
// or 502 for its own failure; the server must turn a late body into 408 whatever the handler says).
void ReadBodyOr507(Request& req, Response& resp) {
  auto body = ReadAllBody(req);
  if (!body.ok()) {
    resp.SetStatus(507);
    resp.SetHeader("X-Read-Status", body.status().ToString().substr(0, 60));
    (void)resp.Send("failed\n");
    return;
  }
  (void)resp.Send("got " + std::to_string(body->size()));
}

// Issue 11 item 5: a PUT announcing a large body and trickling it ends at body_timeout with 408,
// the connection closed.
TEST(ServerTest, BodyMissingItsDeadlineGets408AndClose) {
  ServerOptions options;
  options.body_timeout = 300ms;
  auto server = StartServer(ReadBodyOr507, options);
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\nx"));
  std::string got = c.ReadUntil("failed\n", 10s);
  EXPECT_TRUE(got.starts_with("HTTP/1.1 408 ")) << got;
  EXPECT_NE(got.find("DEADLINE_EXCEEDED"), std::string::npos) << got;
  EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
  EXPECT_TRUE(c.WaitClosed());
}

TEST(ServerTest, BodySlowerThanTheMinimumRateGets408) {
  ServerOptions options;
  options.min_body_rate = 1000;
  options.min_body_rate_grace = 200ms;
  auto server = StartServer(ReadBodyOr507, options);
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("PUT /k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
  // Ten bytes every 50 ms, well inside idle_timeout but far below 1000 bytes/s.
  std::string got;
  for (int i = 0; i < 400 && got.empty(); ++i) {
    if (!c.Send("a\r\n0123456789\r\n")) break;
    got = c.ReadFor(50ms);
  }
  got += c.ReadUntil("failed\n");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 408 ")) << got;
  EXPECT_TRUE(c.WaitClosed());
}

TEST(ServerTest, BodyLimitsDoNotHurtABodyThatKeepsUp) {
  ServerOptions options;
  options.body_timeout = 10s;
  options.min_body_rate = 1000;
  options.min_body_rate_grace = 100ms;
  auto server = StartServer(ReadBodyOr507, options);
  Client client("127.0.0.1", server->port(), ClientOptions{.timeout = 10s});
  for (int i = 0; i < 3; ++i) {
    auto r = client.Fetch("PUT", "/k", {}, std::string(3 << 20, 'b'));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "got 3145728");
  }
}

TEST(ServerTest, HeaderBlockTooLargeGets431) {
  ServerOptions options;
  options.max_header_bytes = 4096;
  auto server = StartServer(EchoHandler, options);
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(5000, 'a') + "\r\n\r\n"));
  std::string got = c.ReadUntil("\r\n\r\n");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 431 ")) << got;
  EXPECT_TRUE(c.WaitClosed());
}

TEST(ServerTest, MalformedRequestGets400AndClose) {
  auto server = StartServer(EchoHandler);
  for (std::string bad :
       {"GARBAGE\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
        "PUT / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        "PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"}) {
    RawConnection c(server->port());
    ASSERT_TRUE(c.Send(bad));
    std::string got = c.ReadUntil("\r\n\r\n");
    EXPECT_TRUE(got.starts_with("HTTP/1.1 400 ")) << bad << " -> " << got;
    EXPECT_TRUE(c.WaitClosed()) << bad;
  }
}

TEST(ServerTest, IdleConnectionIsClosedAfterTimeout) {
  ServerOptions options;
  options.idle_timeout = 200ms;
  auto server = StartServer(EchoHandler, options);
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  c.ReadUntil("\r\n\r\n");
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.WaitClosed(3s));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
}

TEST(ServerTest, StopLetsInFlightRequestsFinishAndIsIdempotent) {
  std::promise<void> entered;
  auto server = StartServer([&](Request& req, Response& resp) {
    if (req.path() == "/slow") {
      entered.set_value();
      std::this_thread::sleep_for(300ms);
    }
    (void)resp.Send("done");
  });
  uint16_t port = server->port();
  RawConnection idle(port);
  ASSERT_TRUE(idle.Send("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_NE(idle.ReadUntil("done").find("done"), std::string::npos);

  auto slow = std::async(std::launch::async, [port] {
    return Fetch("GET", "http://127.0.0.1:" + std::to_string(port) + "/slow");
  });
  entered.get_future().wait();
  auto start = std::chrono::steady_clock::now();
  server->Stop(5s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  auto r = slow.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "done");
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(idle.WaitClosed(1s));
  server->Stop();
  RawConnection after(port);
  EXPECT_FALSE(after.connected());
}

TEST(ServerTest, StopAfterGraceClosesStuckRequests) {
  auto server = StartServer([&](Request& req, Response& resp) {
    char buf[100];
    auto r = req.ReadBody(buf);  // blocks: the client never sends the body
    EXPECT_FALSE(r.ok());
  });
  RawConnection c(server->port());
  ASSERT_TRUE(c.Send("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"));
  std::this_thread::sleep_for(100ms);
  auto start = std::chrono::steady_clock::now();
  server->Stop(200ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_TRUE(c.WaitClosed(1s));
}

TEST(ServerTest, ManyConcurrentClients) {
  auto server = StartServer(EchoHandler);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      Client client("127.0.0.1", server->port());
      for (int i = 0; i < 50; ++i) {
        std::string body(static_cast<size_t>(t * 1000 + i), static_cast<char>('a' + t));
        auto r = client.Fetch("PUT", "/x", {}, body);
        if (r.ok() && r->body == body) ok++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 16 * 50);
}

TEST(ServerTest, Ipv6ListenAddressServesAndCountsTheClientByAddress) {
  ServerOptions options;
  options.listen = "[::1]:0";
  auto server = Server::Start(options, [](Request& req, Response& resp) {
    resp.SetHeader("X-Client", req.client_ip());
    (void)resp.Send(req.remote_address());
  });
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto r = Fetch("GET", "http://[::1]:" + std::to_string((*server)->port()) + "/x", {}, "");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("x-client"), "[::1]");
  EXPECT_TRUE(r->body.starts_with("[::1]:")) << r->body;
}

TEST(ServerTest, ListenOnBadAddressFails) {
  ServerOptions options;
  options.listen = "no-port";
  EXPECT_FALSE(Server::Start(options, EchoHandler).ok());
  for (const char* bad : {"::1:0", "127.0.0.1:65536", "127.0.0.1:0\r\nx", "[::1:0"}) {
    options.listen = bad;
    auto s = Server::Start(options, EchoHandler);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find("listen address"), std::string::npos)
        << s.status().ToString();
  }
  options.listen = "127.0.0.1:0";
  EXPECT_FALSE(Server::Start(options, nullptr).ok());
}

}  // namespace
}  // namespace buildcache::http
