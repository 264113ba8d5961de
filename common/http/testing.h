#pragma once

// Test helpers: a raw TCP connection for sending exactly the bytes a test wants (malformed,
// partial, pipelined) and reading what comes back. Header-only; for tests only.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace buildcache::http::testing {

class RawConnection {
 public:
  // Connects to 127.0.0.1:port, from `source_ip` when given (any 127.0.0.0/8 address is local on
  // Linux, so tests can play several clients).
  explicit RawConnection(uint16_t port, const char* source_ip = nullptr) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (source_ip != nullptr) {
      sockaddr_in src{};
      src.sin_family = AF_INET;
      inet_pton(AF_INET, source_ip, &src.sin_addr);
      if (bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
        close(fd_);
        fd_ = -1;
        return;
      }
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  // Sends all bytes; false if the peer closed or reset.
  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }

  // Reads until the peer closes, `max` bytes arrived, or nothing arrives for `quiet`.
  std::string ReadFor(std::chrono::milliseconds quiet, size_t max = 1 << 20) {
    std::string out;
    char buf[16384];
    while (out.size() < max) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(quiet.count())) <= 0) break;
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  // Reads until `needle` has been seen (returns everything read), or times out.
  std::string ReadUntil(std::string_view needle,
                        std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::string out;
    char buf[16384];
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.find(needle) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  // True if the peer closes (EOF or reset) within `timeout`; bytes read meanwhile are dropped.
  bool WaitClosed(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    if (closed_) return true;
    char buf[16384];
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      if (recv(fd_, buf, sizeof(buf), 0) <= 0) return closed_ = true;
    }
  }

 private:
  int fd_ = -1;
  bool closed_ = false;
};

}  // namespace buildcache::http::testing
