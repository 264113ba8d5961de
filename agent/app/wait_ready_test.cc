#include "agent/app/wait_ready.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "common/http/server.h"

namespace buildcache::agent {
namespace {

using namespace std::chrono_literals;

// An agent stand-in whose /readyz answers 503 to its first `not_ready` requests, then 200.
class FakeAgent {
 public:
  explicit FakeAgent(int not_ready) : not_ready_(not_ready) {
    auto server = http::Server::Start({}, [this](http::Request&, http::Response& resp) {
      int n = requests_.fetch_add(1);
      resp.SetStatus(n < not_ready_ ? 503 : 200);
      (void)resp.Send(n < not_ready_ ? "hydrating" : "ok");
    });
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
  }
  // The server goes first: its threads use requests_.
  ~FakeAgent() { server_->Stop(); }
  FakeAgent(const FakeAgent&) = delete;
  FakeAgent& operator=(const FakeAgent&) = delete;

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(server_->port()) + "/readyz";
  }
  int requests() const { return requests_.load(); }

 private:
  const int not_ready_;
  std::atomic<int> requests_{0};
  std::unique_ptr<http::Server> server_;
};

// A loopback port nothing listens on (bound, then closed).
uint16_t ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST(WaitReadyTest, ReturnsOnceTheAgentTurnsReady) {
  FakeAgent agent(3);
  std::vector<std::string> progress;
  Status s = WaitReady({.url = agent.url(), .timeout = 60s, .interval = 10ms},
                       [&](std::string_view line) { progress.emplace_back(line); });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(agent.requests(), 4);
  // One line at the first failed attempt (the next is 30 s later), naming what it waits for.
  ASSERT_EQ(progress.size(), 1u);
  EXPECT_NE(progress[0].find(agent.url()), std::string::npos) << progress[0];
  EXPECT_NE(progress[0].find("HTTP 503"), std::string::npos) << progress[0];
}

TEST(WaitReadyTest, ReadyAgentAnswersTheFirstAttempt) {
  FakeAgent agent(0);
  EXPECT_TRUE(WaitReady({.url = agent.url(), .timeout = 60s}).ok());
  EXPECT_EQ(agent.requests(), 1);
}

TEST(WaitReadyTest, AgentNeverReadyTimesOutNamingTheUrlAndTheLastAnswer) {
  FakeAgent agent(1 << 30);
  Status s = WaitReady({.url = agent.url(), .timeout = 300ms, .interval = 20ms});
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_NE(s.message().find(agent.url()), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("HTTP 503"), std::string::npos) << s.ToString();
  EXPECT_GE(agent.requests(), 1);
}

TEST(WaitReadyTest, NoAgentListeningTimesOut) {
  std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort()) + "/readyz";
  Status s = WaitReady({.url = url, .timeout = 300ms, .interval = 20ms});
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_NE(s.message().find(url), std::string::npos) << s.ToString();
}

TEST(WaitReadyTest, ArgumentsParse) {
  const char* argv[] = {"--url=http://buildcache-ci.ns.svc/readyz", "--timeout=2m",
                        "--interval=500ms"};
  Result<WaitReadyOptions> o = ParseWaitReadyArgs(3, argv);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->url, "http://buildcache-ci.ns.svc/readyz");
  EXPECT_EQ(o->timeout, 120s);
  EXPECT_EQ(o->interval, 500ms);
}

TEST(WaitReadyTest, BadArgumentsAreNamed) {
  struct Case {
    std::vector<const char*> argv;
    std::string want;
  };
  for (const Case& c : std::vector<Case>{
           {{}, "--url is required"},
           {{"--url=https://x/readyz"}, "--url"},
           {{"--url=http://"}, "--url"},
           {{"--url=http://x/", "--timeout=0s"}, "--timeout"},
           {{"--url=http://x/", "--timeout=soon"}, "--timeout"},
           {{"--url=http://x/", "--interval=-1s"}, "--interval"},
           {{"--url=http://x/", "--retries=3"}, "unknown flag --retries"},
           {{"--url", "http://x/"}, "expected --name=value"},
       }) {
    Result<WaitReadyOptions> o = ParseWaitReadyArgs(static_cast<int>(c.argv.size()), c.argv.data());
    ASSERT_FALSE(o.ok()) << c.want;
    EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(o.status().message().find(c.want), std::string::npos) << o.status().ToString();
  }
}

}  // namespace
}  // namespace buildcache::agent
