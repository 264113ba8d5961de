#include "gocacheprog/agent_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/base/thread_annotations.h"
#include "gocacheprog/http_connection.h"

namespace buildcache::gocacheprog {
namespace {

// What the scripted agent does with one request.
enum class Action {
  kAnswer,              // 200 with a Content-Length body, connection kept
  kAnswerChunked,       // 200 with a chunked body, connection kept
  kAnswerThenClose,     // 200, then the connection is closed (as an agent's idle timeout does)
  kCloseWithoutAnswer,  // the request is read, then the connection closed unanswered
};

// A scripted HTTP/1.1 server on 127.0.0.1: one thread per connection, each request answered as
// script(connection number, request number on that connection) says. Records what it saw.
class ScriptedAgent {
 public:
  using Script = std::function<Action(int connection, int request)>;

  explicit ScriptedAgent(Script script) : script_(std::move(script)) {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listener_, 16), 0);
    socklen_t len = sizeof(addr);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~ScriptedAgent() {
    shutdown(listener_, SHUT_RDWR);
    close(listener_);
    acceptor_.join();
    std::vector<std::thread> threads;
    {
      MutexLock lock(mu_);
      for (int fd : open_) shutdown(fd, SHUT_RDWR);
      threads.swap(threads_);
    }
    for (std::thread& t : threads) t.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int connections() {
    MutexLock lock(mu_);
    return connections_;
  }
  int closed() {
    MutexLock lock(mu_);
    return closed_;
  }
  // "METHOD PATH" of every request read, in arrival order.
  std::vector<std::string> requests() {
    MutexLock lock(mu_);
    return requests_;
  }

 private:
  void AcceptLoop() {
    for (;;) {
      int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      MutexLock lock(mu_);
      const int n = connections_++;
      open_.push_back(fd);
      threads_.emplace_back([this, fd, n] { Serve(fd, n); });
    }
  }

  void Serve(int fd, int connection) {
    std::string buffer;
    for (int request = 0;; ++request) {
      size_t end;
      while ((end = buffer.find("\r\n\r\n")) == std::string::npos) {
        if (!Read(fd, &buffer)) return Close(fd);
      }
      std::string head = buffer.substr(0, end);
      size_t length = 0;
      if (size_t cl = head.find("Content-Length: "); cl != std::string::npos) {
        length = std::stoul(head.substr(cl + 16));
      }
      while (buffer.size() < end + 4 + length) {
        if (!Read(fd, &buffer)) return Close(fd);
      }
      buffer.erase(0, end + 4 + length);
      {
        MutexLock lock(mu_);
        requests_.push_back(head.substr(0, head.find(" HTTP/1.1")));
      }
      const Action action = script_(connection, request);
      if (action == Action::kCloseWithoutAnswer) return Close(fd);
      std::string answer = action == Action::kAnswerChunked
                               ? "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
                                 "chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n"
                                 "Trailer: 1\r\n\r\n"
                               : "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde";
      if (send(fd, answer.data(), answer.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(answer.size())) {
        return Close(fd);
      }
      if (action == Action::kAnswerThenClose) return Close(fd);
    }
  }

  static bool Read(int fd, std::string* buffer) {
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    buffer->append(buf, static_cast<size_t>(n));
    return true;
  }

  void Close(int fd) {
    MutexLock lock(mu_);
    std::erase(open_, fd);
    close(fd);
    ++closed_;
  }

  Script script_;
  int listener_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  Mutex mu_;
  int connections_ GUARDED_BY(mu_) = 0;
  int closed_ GUARDED_BY(mu_) = 0;
  std::vector<int> open_ GUARDED_BY(mu_);
  std::vector<std::thread> threads_ GUARDED_BY(mu_);
  std::vector<std::string> requests_ GUARDED_BY(mu_);
};

AgentClient ClientOf(const ScriptedAgent& agent) {
  auto address = ParseAgentUrl(agent.url());
  EXPECT_TRUE(address.ok());
  // A long timeout: the tests wait on answers, never on the clock.
  return AgentClient(*address, std::chrono::seconds(60), 1 << 20);
}

TEST(GoCacheProgAgentClient, SequentialRequestsShareOneConnection) {
  ScriptedAgent agent([](int, int) { return Action::kAnswer; });
  AgentClient client = ClientOf(agent);
  for (int i = 0; i < 5; ++i) {
    auto got = i % 2 == 0 ? client.Get("/cas/x") : client.Put("/cas/x", "body");
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->status, 200);
    EXPECT_EQ(got->body, "abcde");
  }
  EXPECT_EQ(agent.connections(), 1);
  EXPECT_EQ(client.connections_opened(), 1u);
  EXPECT_EQ(client.retries(), 0u);
}

TEST(GoCacheProgAgentClient, ChunkedAnswersKeepTheConnection) {
  ScriptedAgent agent([](int, int) { return Action::kAnswerChunked; });
  AgentClient client = ClientOf(agent);
  for (int i = 0; i < 3; ++i) {
    auto got = client.Get("/cache/gocache/v1/a/00");
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->body, "abcde");
  }
  EXPECT_EQ(agent.connections(), 1);
}

// The agent closed the idle connection (its idle timeout) before the next request: the pool sees
// it closed and the request goes out on a new connection, without being sent twice.
TEST(GoCacheProgAgentClient, ConnectionTheAgentClosedWhileIdleIsNotUsed) {
  ScriptedAgent agent([](int, int) { return Action::kAnswerThenClose; });
  AgentClient client = ClientOf(agent);
  ASSERT_TRUE(client.Put("/cas/1", "one").ok());
  // Bounded wait for the agent's side to have closed it (no timing assertion).
  for (int i = 0; i < 10000 && agent.closed() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(agent.closed(), 1);
  auto put = client.Put("/cas/2", "two");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(client.retries(), 0u);
  EXPECT_EQ(agent.connections(), 2);
  EXPECT_EQ(agent.requests(), (std::vector<std::string>{"PUT /cas/1", "PUT /cas/2"}));
}

// The agent took a GET on a reused connection and closed it unanswered (it closed the idle
// connection as the request arrived): the GET is sent once more on a new connection.
TEST(GoCacheProgAgentClient, GetIsSentAgainWhenAReusedConnectionDropsIt) {
  ScriptedAgent agent([](int connection, int request) {
    return connection == 0 && request == 1 ? Action::kCloseWithoutAnswer : Action::kAnswer;
  });
  AgentClient client = ClientOf(agent);
  ASSERT_TRUE(client.Get("/cas/first").ok());
  auto got = client.Get("/cas/second");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->body, "abcde");
  EXPECT_EQ(client.retries(), 1u);
  EXPECT_EQ(agent.connections(), 2);
  EXPECT_EQ(agent.requests(),
            (std::vector<std::string>{"GET /cas/first", "GET /cas/second", "GET /cas/second"}));
}

// The same for a PUT: it was sent, so it is not sent again; the caller sees a transport failure.
TEST(GoCacheProgAgentClient, PutThatWasSentIsNotSentAgain) {
  ScriptedAgent agent([](int connection, int request) {
    return connection == 0 && request == 1 ? Action::kCloseWithoutAnswer : Action::kAnswer;
  });
  AgentClient client = ClientOf(agent);
  ASSERT_TRUE(client.Get("/cas/first").ok());
  auto put = client.Put("/cas/second", "payload");
  EXPECT_FALSE(put.ok());
  EXPECT_EQ(put.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(client.retries(), 0u);
  EXPECT_EQ(agent.requests(), (std::vector<std::string>{"GET /cas/first", "PUT /cas/second"}));
  // The next request opens a new connection and works.
  EXPECT_TRUE(client.Get("/cas/third").ok());
}

// A fresh connection that fails is the agent's answer: no second attempt.
TEST(GoCacheProgAgentClient, NewConnectionFailureIsNotRetried) {
  ScriptedAgent agent([](int, int) { return Action::kCloseWithoutAnswer; });
  AgentClient client = ClientOf(agent);
  EXPECT_FALSE(client.Get("/cas/x").ok());
  EXPECT_EQ(client.retries(), 0u);
  EXPECT_EQ(agent.requests().size(), 1u);
}

TEST(GoCacheProgHttpConnection, NothingSentOnAConnectionClosedForWriting) {
  ScriptedAgent agent([](int, int) { return Action::kAnswer; });
  auto address = ParseAgentUrl(agent.url());
  ASSERT_TRUE(address.ok());
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  auto fd = ConnectTo(address->addr, address->addr_len, deadline);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  shutdown(fd->get(), SHUT_WR);
  Exchange ex = RoundTripOn(fd->get(), "PUT", "PUT /cas/x HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
                            "x", deadline, 1024);
  EXPECT_FALSE(ex.result.ok());
  EXPECT_FALSE(ex.sent_any);
  EXPECT_TRUE(MaySendAgain("PUT", ex));  // so a PUT may go out on a new connection
}

TEST(GoCacheProgHttpConnection, WhatMaySendAgain) {
  Exchange sent;
  sent.result = Unavailable("reset");
  sent.sent_any = true;
  EXPECT_TRUE(MaySendAgain("GET", sent));
  EXPECT_FALSE(MaySendAgain("PUT", sent));
  Exchange unsent;
  unsent.result = Unavailable("reset");
  EXPECT_TRUE(MaySendAgain("PUT", unsent));
  Exchange timed_out;
  timed_out.result = DeadlineExceeded("slow");
  EXPECT_FALSE(MaySendAgain("GET", timed_out));
  Exchange ok;
  ok.result = HttpResult{200, ""};
  EXPECT_FALSE(MaySendAgain("GET", ok));
}

TEST(GoCacheProgHttpConnection, PoolKeepsAtMostMaxIdleAndDropsStaleOnes) {
  ScriptedAgent agent([](int, int) { return Action::kAnswer; });
  auto address = ParseAgentUrl(agent.url());
  ASSERT_TRUE(address.ok());
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  ConnectionPool pool(2, std::chrono::seconds(60));
  for (int i = 0; i < 3; ++i) {
    auto fd = ConnectTo(address->addr, address->addr_len, deadline);
    ASSERT_TRUE(fd.ok());
    pool.Park(std::move(*fd));
  }
  EXPECT_EQ(pool.idle(), 2u);
  fs::UniqueFd taken = pool.Take();
  EXPECT_TRUE(taken.valid());
  EXPECT_EQ(pool.idle(), 1u);

  // Stray bytes waiting on an idle connection: not reused.
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  ConnectionPool strays(4, std::chrono::seconds(60));
  strays.Park(fs::UniqueFd(pair[0]));
  ASSERT_EQ(write(pair[1], "x", 1), 1);
  EXPECT_FALSE(strays.Take().valid());
  close(pair[1]);
  // Closed by the other side: not reused.
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  strays.Park(fs::UniqueFd(pair[0]));
  close(pair[1]);
  EXPECT_FALSE(strays.Take().valid());
  // Idle past max_idle_time: not reused.
  ConnectionPool short_lived(4, std::chrono::milliseconds(0));
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  short_lived.Park(fs::UniqueFd(pair[0]));
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_FALSE(short_lived.Take().valid());
  close(pair[1]);
}

}  // namespace
}  // namespace buildcache::gocacheprog
