#include "common/http/client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "common/http/server.h"

namespace buildcache::http {
namespace {

// Accepts connections and never answers; closes them after 20 s (so a client that ignores its
// timeout ends with "end of stream", not "timed out").
class SilentServer {
 public:
  SilentServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      int client = -1;
      for (int i = 0; i < 200 && !stop_; ++i) {  // 20 s at most
        pollfd p{fd_, POLLIN, 0};
        if (client < 0 && ::poll(&p, 1, 100) == 1) {
          client = ::accept(fd_, nullptr, nullptr);
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
      if (client >= 0) ::close(client);
    });
  }
  ~SilentServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(ClientTest, FetchesFromAServer) {
  auto server = Server::Start({}, [](Request&, Response& response) {
    response.SetStatus(200);
    (void)response.Send("hello");
  });
  ASSERT_TRUE(server.ok());
  auto got = Fetch("GET", "http://127.0.0.1:" + std::to_string((*server)->port()) + "/x");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, "hello");
}

TEST(ClientTest, ASilentServerTimesOut) {
  SilentServer silent;
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(300);
  auto got = Fetch("GET", "http://127.0.0.1:" + std::to_string(silent.port()) + "/metrics", {}, {},
                   options);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status().message().find("timed out"), std::string::npos) << got.status().ToString();
}

}  // namespace
}  // namespace buildcache::http
