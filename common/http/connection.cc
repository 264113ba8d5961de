#include "common/http/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "common/http/server_io.h"

namespace buildcache::http::server_internal {

Connection::Connection(int fd, std::string remote, const ServerOptions& options,
                       const Handler& handler, const std::atomic<bool>& stopping)
    : fd_(fd),
      remote_(std::move(remote)),
      options_(options),
      handler_(handler),
      stopping_(stopping),
      claim_([this] {
        ConnState idle = ConnState::kIdle;
        return state_.compare_exchange_strong(idle, ConnState::kBusy);
      }),
      reader_(fd, options, [this] { return writer_.SendContinue(); }),
      writer_(fd, options, reader_, stopping) {}

Connection::~Connection() { close(fd_); }

void Connection::Serve() {
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  SetTimeout(fd_, SO_RCVTIMEO, options_.idle_timeout);
  SetTimeout(fd_, SO_SNDTIMEO, options_.idle_timeout);

  for (;;) {
    reader_.Reset();
    writer_.Reset();
    state_.store(ConnState::kIdle);
    if (stopping_.load(std::memory_order_relaxed)) return;
    switch (reader_.ReadHead(claim_)) {
      case RequestReader::HeadResult::kClosed:
      case RequestReader::HeadResult::kTimeout:
        return;
      case RequestReader::HeadResult::kHeaderTooLarge:
        SendSimple(431, "request header fields too large\n");
        return;
      case RequestReader::HeadResult::kBad:
        SendSimple(400, "malformed request\n");
        return;
      case RequestReader::HeadResult::kRequest:
        break;
    }
    if (!HandleRequest()) return;
  }
}

bool Connection::HandleRequest() {
  try {
    handler_(*this, *this);
  } catch (...) {
    if (!started()) {
      SendSimple(500, "internal error\n");
      return false;
    }
    writer_.MarkBroken();
  }
  switch (writer_.state()) {
    case ResponseWriter::State::kBroken:
      return false;
    case ResponseWriter::State::kStreaming:
      return false;  // Begin without End: the client sees a truncated response.
    case ResponseWriter::State::kPending:
      if (!writer_.Reply(500, "handler did not respond\n").ok()) return false;
      break;
    case ResponseWriter::State::kComplete:
      break;
  }
  if (!writer_.keep_alive()) {
    if (!reader_.body_done()) LingeringClose();
    return false;
  }
  return reader_.body_done() || reader_.DrainBody();
}

void Connection::SendSimple(int code, std::string_view body) {
  writer_.RequestClose();
  if (writer_.Reply(code, body).ok()) LingeringClose();
}

void Connection::LingeringClose() {
  // The client may still be sending (an oversized header block, garbage, a body we refused).
  // Closing with unread input makes the kernel send a reset, which can destroy the response
  // before the client reads it; so stop writing and read and drop input for a bounded time.
  shutdown(fd_, SHUT_WR);
  SetTimeout(fd_, SO_RCVTIMEO, std::chrono::milliseconds(500));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  char scratch[16384];
  uint64_t total = 0;
  while (total < (64u << 20) && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = recv(fd_, scratch, sizeof(scratch), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    total += static_cast<uint64_t>(n);
  }
}

}  // namespace buildcache::http::server_internal
