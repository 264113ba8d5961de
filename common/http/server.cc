// The HTTP/1.1 server: one blocking thread per connection (threads are pooled and reused), Beast's
// basic_parser for request heads and chunked bodies, and plain POSIX calls for everything that
// moves bytes (recv straight into the handler's buffer, writev for header+body, sendfile).
#include "common/http/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/beast/http/basic_parser.hpp>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <limits>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace buildcache::http {

std::string_view Request::path() const {
  std::string_view t = target();
  return t.substr(0, t.find('?'));
}

std::string_view Request::query() const {
  std::string_view t = target();
  size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

// An unread request body up to this size is read and discarded after the response so the
// connection can be reused; a larger remainder closes the connection instead.
constexpr uint64_t kDrainLimit = 64 * 1024;
// Room for body bytes in the connection buffer beyond the largest header block.
constexpr size_t kBodyBufferBytes = 16 * 1024;
// Request header fields kept per request; more is a 431 like an oversized header block.
constexpr size_t kMaxFields = 256;
// Answers to a connection refused at accept: the server is full, or this client holds its share.
constexpr std::string_view kBusy =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 20\r\nConnection: close\r\n"
    "Retry-After: 1\r\n\r\ntoo many connections";
constexpr std::string_view kTooMany =
    "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 38\r\nConnection: close\r\n"
    "Retry-After: 1\r\n\r\ntoo many connections from this client\n";

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view ReasonPhrase(int code) {
  switch (code) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 207:
      return "Multi-Status";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 507:
      return "Insufficient Storage";
    default:
      return "Unknown";
  }
}

// "Date: Tue, 15 Nov 1994 08:12:31 GMT\r\n", recomputed at most once a second per thread.
std::string_view DateHeader() {
  thread_local time_t cached_at = 0;
  thread_local char buf[64];
  thread_local size_t len = 0;
  time_t now = time(nullptr);
  if (now != cached_at) {
    struct tm tm;
    gmtime_r(&now, &tm);
    len = strftime(buf, sizeof(buf), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    cached_at = now;
  }
  return {buf, len};
}

void AppendUint(std::string& out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, r.ptr);
}

// The address part of "ip:port" or "[v6]:port": the client a per-client limit counts.
std::string_view ClientIp(std::string_view remote) {
  size_t colon = remote.rfind(':');
  return colon == std::string_view::npos ? remote : remote.substr(0, colon);
}

bool HasCrLf(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

void SetTimeout(int fd, int option, std::chrono::milliseconds t) {
  if (t.count() <= 0) t = std::chrono::milliseconds(1);
  timeval tv;
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv));
}

// Writes all of iov (modified in place), retrying partial writes. False on error or timeout.
bool WriteAllV(int fd, iovec* iov, int count) {
  while (count > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    auto left = static_cast<size_t>(n);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

bool WriteAll(int fd, std::string_view data, int flags = 0) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL | flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

class ServerImpl;

// Beast's push parser. Header fields are kept as views into the connection buffer, which is not
// moved while the request is handled. Chunked body bytes are copied into `sink`.
class RequestParser final : public bhttp::basic_parser<true> {
 public:
  struct Field {
    std::string_view name, value;
  };

  std::string_view method, target;
  int version = 11;
  std::vector<Field>* fields = nullptr;
  bool too_many_fields = false;
  bool has_transfer_encoding = false;
  // Chunked body output for the current put(): filled up to sink_cap.
  char* sink = nullptr;
  size_t sink_len = 0;
  size_t sink_cap = 0;

 private:
  void on_request_impl(bhttp::verb, beast::string_view method_str, beast::string_view target_str,
                       int v, beast::error_code&) override {
    method = {method_str.data(), method_str.size()};
    target = {target_str.data(), target_str.size()};
    version = v;
  }
  void on_response_impl(int, beast::string_view, int, beast::error_code&) override {}
  void on_field_impl(bhttp::field f, beast::string_view name, beast::string_view value,
                     beast::error_code& ec) override {
    if (fields->size() >= kMaxFields) {
      too_many_fields = true;
      ec = bhttp::error::header_limit;
      return;
    }
    if (f == bhttp::field::transfer_encoding) has_transfer_encoding = true;
    fields->push_back({{name.data(), name.size()}, {value.data(), value.size()}});
  }
  void on_header_impl(beast::error_code&) override {}
  void on_body_init_impl(const boost::optional<uint64_t>&, beast::error_code&) override {}
  size_t on_body_impl(beast::string_view, beast::error_code& ec) override {
    // Content-Length bodies are read by the connection directly, never through the parser.
    ec = bhttp::error::bad_transfer_encoding;
    return 0;
  }
  void on_chunk_header_impl(uint64_t, beast::string_view, beast::error_code&) override {}
  size_t on_chunk_body_impl(uint64_t, beast::string_view body, beast::error_code&) override {
    size_t n = std::min(body.size(), sink_cap - sink_len);
    std::memcpy(sink + sink_len, body.data(), n);
    sink_len += n;
    return n;
  }
  void on_finish_impl(beast::error_code&) override {}
};

enum class ConnState : int { kIdle, kBusy, kClosing };

// One client connection: the Request and Response a handler sees, and the loop serving them.
class Connection final : public Request, public Response {
 public:
  Connection(ServerImpl& server, int fd, std::string remote);
  ~Connection() override;

  void Serve();
  int fd() const { return fd_; }
  std::atomic<ConnState>& state() { return state_; }

  // Request
  std::string_view method() const override { return parser_->method; }
  std::string_view target() const override { return parser_->target; }
  std::string_view header(std::string_view name) const override;
  std::optional<uint64_t> content_length() const override { return declared_length_; }
  std::string_view remote_address() const override { return remote_; }
  Result<size_t> ReadBody(std::span<char> buf) override;

  // Response
  void SetStatus(int code) override { status_ = code; }
  void SetHeader(std::string_view name, std::string_view value) override;
  Status Send(std::string_view body) override;
  Status SendFile(int fd, uint64_t offset, uint64_t length) override;
  Status Begin(std::optional<uint64_t> length) override;
  Status Write(std::string_view data) override;
  Status End() override;
  void Abort() override;
  bool started() const override { return started_; }

 private:
  enum class ReadResult { kRequest, kClosed, kBad, kHeaderTooLarge, kTimeout };

  ReadResult ReadHead();
  // Fills the buffer from the socket at buf_len_; returns bytes read, 0 on EOF, -1 on error or
  // timeout (errno EAGAIN for timeout).
  ssize_t Fill();
  void ResetForRequest();
  void SendSimple(int code, std::string_view body);
  void LingeringClose();
  // Appends the status line and headers; `length` is the Content-Length (nullopt = chunked or,
  // for HTTP/1.0 clients, close-delimited).
  void BuildHead(std::optional<uint64_t> length);
  void DecideKeepAlive();
  Status Broken(std::string_view what);
  Result<size_t> ReadChunked(std::span<char> buf);
  bool DrainBody();
  // Bounds the next wait for body bytes by body_timeout and min_body_rate: sets SO_RCVTIMEO to
  // what is left (at most idle_timeout) and returns true, or returns false when the body is late.
  bool ArmBodyTimer();
  Status BodyLate();

  ServerImpl& server_;
  int fd_;
  std::string remote_;
  std::atomic<ConnState> state_{ConnState::kIdle};

  std::unique_ptr<char[]> buf_;
  size_t buf_cap_;
  size_t buf_len_ = 0;    // valid bytes in buf_
  size_t buf_pos_ = 0;    // next unparsed/unread byte
  size_t body_base_ = 0;  // end of the header block; body bytes are compacted to here

  std::optional<RequestParser> parser_;
  std::vector<RequestParser::Field> fields_;
  std::optional<uint64_t> declared_length_;
  bool chunked_ = false;
  uint64_t body_remaining_ = 0;  // Content-Length bytes not yet read
  uint64_t body_read_ = 0;
  bool body_done_ = true;
  bool body_failed_ = false;
  bool body_late_ = false;       // the body missed body_timeout or min_body_rate: answer 408
  bool body_timer_set_ = false;  // SO_RCVTIMEO differs from idle_timeout
  std::optional<std::chrono::steady_clock::time_point> body_start_;
  bool expect_continue_ = false;
  bool head_request_ = false;
  bool client_keep_alive_ = false;
  bool http10_ = false;

  int status_ = 200;
  std::string extra_headers_;
  std::string out_;
  bool started_ = false;
  bool finished_ = false;
  bool keep_alive_ = false;
  bool broken_ = false;
  bool handler_close_ = false;
  bool stream_chunked_ = false;
  std::optional<uint64_t> stream_remaining_;
};

class ServerImpl final : public Server {
 public:
  ServerImpl(ServerOptions options, Handler handler)
      : options_(std::move(options)), handler_(std::move(handler)) {}
  ~ServerImpl() override { Stop(std::chrono::milliseconds(0)); }

  Status Listen();
  uint16_t port() const override { return port_; }
  void Stop(std::chrono::milliseconds grace) override;

  const ServerOptions& options() const { return options_; }
  const Handler& handler() const { return handler_; }
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }

  void Register(Connection* c) {
    std::lock_guard lock(conns_mu_);
    conns_.insert(c);
  }
  void Unregister(Connection* c) {
    std::lock_guard lock(conns_mu_);
    conns_.erase(c);
    if (conns_.empty()) conns_cv_.notify_all();
  }

 private:
  void AcceptLoop();
  void Reject(int fd, std::string_view response);
  void Dispatch(int fd, std::string remote);
  void WorkerLoop(std::list<std::thread>::iterator self, int fd, std::string remote);

  ServerOptions options_;
  Handler handler_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  uint16_t port_ = 0;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::once_flag stop_once_;
  std::atomic<int> active_{0};
  // Connections per client address, for max_connections_per_client.
  std::mutex clients_mu_;
  std::unordered_map<std::string, int> clients_;  // guarded by clients_mu_; no zero entries
  void ReleaseClient(std::string_view remote);

  std::mutex conns_mu_;
  std::condition_variable conns_cv_;
  std::unordered_set<Connection*> conns_;

  // Worker pool: idle workers wait for a connection; a worker idle for long exits.
  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  struct Pending {
    int fd;
    std::string remote;
  };
  std::vector<Pending> pending_;
  int idle_workers_ = 0;
  bool pool_stopping_ = false;
  std::list<std::thread> workers_;
  std::vector<std::thread> finished_;
};

Connection::Connection(ServerImpl& server, int fd, std::string remote)
    : server_(server), fd_(fd), remote_(std::move(remote)) {
  buf_cap_ = server.options().max_header_bytes + kBodyBufferBytes;
  buf_ = std::make_unique<char[]>(buf_cap_);
  fields_.reserve(32);
  out_.reserve(512);
  extra_headers_.reserve(256);
}

Connection::~Connection() { close(fd_); }

std::string_view Connection::header(std::string_view name) const {
  for (const auto& f : fields_) {
    if (IEquals(f.name, name)) return f.value;
  }
  return {};
}

void Connection::ResetForRequest() {
  // Move pipelined bytes of the next request to the front: header views point into buf_ and must
  // stay put while a request is handled, so this is the only place buf_ is compacted wholesale.
  if (buf_pos_ > 0) {
    std::memmove(buf_.get(), buf_.get() + buf_pos_, buf_len_ - buf_pos_);
    buf_len_ -= buf_pos_;
    buf_pos_ = 0;
  }
  fields_.clear();
  parser_.emplace();
  parser_->fields = &fields_;
  parser_->header_limit(
      static_cast<uint32_t>(std::min<size_t>(server_.options().max_header_bytes, UINT32_MAX)));
  // Not boost::none: Beast 1.74 compares Content-Length against the optional and would reject every
  // body. The server enforces max_body_bytes itself in ReadBody.
  parser_->body_limit(std::numeric_limits<uint64_t>::max());
  parser_->eager(false);
  declared_length_.reset();
  chunked_ = false;
  body_remaining_ = 0;
  body_read_ = 0;
  body_done_ = true;
  body_failed_ = false;
  body_late_ = false;
  body_start_.reset();
  if (body_timer_set_) {
    SetTimeout(fd_, SO_RCVTIMEO, server_.options().idle_timeout);
    body_timer_set_ = false;
  }
  expect_continue_ = false;
  head_request_ = false;
  status_ = 200;
  extra_headers_.clear();
  started_ = false;
  finished_ = false;
  keep_alive_ = false;
  handler_close_ = false;
  stream_chunked_ = false;
  stream_remaining_.reset();
}

ssize_t Connection::Fill() {
  for (;;) {
    ssize_t n = recv(fd_, buf_.get() + buf_len_, buf_cap_ - buf_len_, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) buf_len_ += static_cast<size_t>(n);
    return n;
  }
}

Connection::ReadResult Connection::ReadHead() {
  const auto timeout = server_.options().idle_timeout;
  std::chrono::steady_clock::time_point deadline{};
  bool timeout_changed = false;
  bool first = true;
  ReadResult result = ReadResult::kBad;
  for (;;) {
    if (buf_pos_ < buf_len_) {
      if (first) {
        ConnState idle = ConnState::kIdle;
        if (!state_.compare_exchange_strong(idle, ConnState::kBusy)) {
          result = ReadResult::kClosed;
          break;
        }
        first = false;
      }
      beast::error_code ec;
      size_t used =
          parser_->put(boost::asio::const_buffer(buf_.get() + buf_pos_, buf_len_ - buf_pos_), ec);
      buf_pos_ += used;
      if (!ec) {
        if (parser_->is_header_done()) {
          result = ReadResult::kRequest;
          break;
        }
        continue;
      }
      if (ec == bhttp::error::header_limit) {
        result = ReadResult::kHeaderTooLarge;
        break;
      }
      if (ec != bhttp::error::need_more) {
        result = ReadResult::kBad;
        break;
      }
      if (buf_len_ == buf_cap_) {
        result = ReadResult::kHeaderTooLarge;
        break;
      }
    }
    // The whole header block must arrive within idle_timeout of its first byte (slowloris).
    if (!first) {
      auto now = std::chrono::steady_clock::now();
      if (deadline == std::chrono::steady_clock::time_point{}) deadline = now + timeout;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      if (left.count() <= 0) {
        result = ReadResult::kTimeout;
        break;
      }
      SetTimeout(fd_, SO_RCVTIMEO, left);
      timeout_changed = true;
    }
    ssize_t n = Fill();
    if (n == 0) {
      // EOF between requests is a normal close; EOF inside a request head is a truncated request.
      result = first ? ReadResult::kClosed : ReadResult::kBad;
      break;
    }
    if (n < 0) {
      bool timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
      result = timed_out && !first ? ReadResult::kTimeout : ReadResult::kClosed;
      break;
    }
  }
  if (timeout_changed) SetTimeout(fd_, SO_RCVTIMEO, timeout);
  return result;
}

void Connection::Serve() {
  const auto& opts = server_.options();
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  SetTimeout(fd_, SO_RCVTIMEO, opts.idle_timeout);
  SetTimeout(fd_, SO_SNDTIMEO, opts.idle_timeout);

  for (;;) {
    ResetForRequest();
    state_.store(ConnState::kIdle);
    if (server_.stopping()) return;
    ReadResult r = ReadHead();
    if (r == ReadResult::kClosed || r == ReadResult::kTimeout) return;
    if (r == ReadResult::kHeaderTooLarge) {
      SendSimple(431, "request header fields too large\n");
      return;
    }
    if (r == ReadResult::kBad || parser_->target.empty() ||
        (parser_->has_transfer_encoding && !parser_->chunked())) {
      SendSimple(400, "malformed request\n");
      return;
    }

    // The request head is complete.
    body_base_ = buf_pos_;
    http10_ = parser_->version < 11;
    client_keep_alive_ = parser_->keep_alive();
    head_request_ = parser_->method == "HEAD";
    if (parser_->chunked()) {
      chunked_ = true;
      body_done_ = false;
    } else if (auto cl = parser_->content_length()) {
      declared_length_ = *cl;
      body_remaining_ = *cl;
      body_done_ = *cl == 0;
    }
    if (!body_done_ && !http10_) {
      std::string_view expect = header("Expect");
      expect_continue_ = IEquals(expect, "100-continue");
    }

    try {
      server_.handler()(*this, *this);
    } catch (...) {
      if (!started_) {
        SendSimple(500, "internal error\n");
      } else {
        broken_ = true;
      }
    }
    if (broken_) return;
    if (!started_) {
      status_ = 500;
      extra_headers_.clear();
      (void)Send("handler did not respond\n");
    } else if (!finished_) {
      return;  // Begin without End: the client sees a truncated response.
    }
    if (broken_) return;
    if (!keep_alive_) {
      if (!body_done_) LingeringClose();
      return;
    }
    if (!body_done_ && !DrainBody()) return;
  }
}

void Connection::SendSimple(int code, std::string_view body) {
  status_ = code;
  extra_headers_.clear();
  handler_close_ = true;
  if (Send(body).ok()) LingeringClose();
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

void Connection::DecideKeepAlive() {
  keep_alive_ = client_keep_alive_ && !handler_close_ && !server_.stopping() && !body_failed_;
  if (keep_alive_ && !body_done_) {
    // Reuse the connection only if the rest of the body is small and actually coming: a client
    // that waits for 100 Continue we never sent may not send it at all.
    if (chunked_ || expect_continue_ || body_remaining_ > kDrainLimit) keep_alive_ = false;
  }
}

void Connection::BuildHead(std::optional<uint64_t> length) {
  // A body that came too slowly is the client's fault whatever the handler made of the failed
  // read (a store error, a 5xx): say so.
  if (body_late_ && status_ >= 400) status_ = 408;
  DecideKeepAlive();
  out_.clear();
  out_.append("HTTP/1.1 ");
  AppendUint(out_, static_cast<uint64_t>(status_));
  out_.push_back(' ');
  out_.append(ReasonPhrase(status_));
  out_.append("\r\nServer: ");
  out_.append(server_.options().server_name);
  out_.append("\r\n");
  out_.append(DateHeader());
  const bool no_body = status_ == 204 || status_ == 304 || (status_ >= 100 && status_ < 200);
  if (!no_body) {
    if (length) {
      out_.append("Content-Length: ");
      AppendUint(out_, *length);
      out_.append("\r\n");
    } else if (!http10_) {
      out_.append("Transfer-Encoding: chunked\r\n");
      stream_chunked_ = !head_request_;
    } else {
      keep_alive_ = false;  // HTTP/1.0 without a length: the body ends at connection close
    }
  }
  out_.append(extra_headers_);
  if (!keep_alive_) {
    out_.append("Connection: close\r\n");
  } else if (http10_) {
    out_.append("Connection: keep-alive\r\n");
  }
  out_.append("\r\n");
  started_ = true;
}

void Connection::SetHeader(std::string_view name, std::string_view value) {
  if (started_ || name.empty() || HasCrLf(name) || HasCrLf(value) ||
      name.find(':') != std::string_view::npos) {
    return;
  }
  if (IEquals(name, "Content-Length") || IEquals(name, "Transfer-Encoding") ||
      IEquals(name, "Date") || IEquals(name, "Server")) {
    return;
  }
  if (IEquals(name, "Connection")) {
    if (IEquals(value, "close")) handler_close_ = true;
    return;
  }
  extra_headers_.append(name);
  extra_headers_.append(": ");
  extra_headers_.append(value);
  extra_headers_.append("\r\n");
}

Status Connection::Broken(std::string_view what) {
  int err = errno;
  broken_ = true;
  shutdown(fd_, SHUT_RDWR);
  return Unavailable(std::string(what) + ": " + std::strerror(err));
}

Status Connection::Send(std::string_view body) {
  if (started_) return FailedPrecondition("response already started");
  BuildHead(body.size());
  finished_ = true;
  iovec iov[2];
  iov[0] = {out_.data(), out_.size()};
  int count = 1;
  const bool no_body = status_ == 204 || status_ == 304;
  if (!head_request_ && !no_body && !body.empty()) {
    iov[1] = {const_cast<char*>(body.data()), body.size()};
    count = 2;
  }
  if (!WriteAllV(fd_, iov, count)) return Broken("send response");
  return Status::Ok();
}

Status Connection::SendFile(int fd, uint64_t offset, uint64_t length) {
  if (started_) return FailedPrecondition("response already started");
  BuildHead(length);
  finished_ = true;
  if (head_request_ || length == 0) {
    if (!WriteAll(fd_, out_)) return Broken("send response");
    return Status::Ok();
  }
  // MSG_MORE holds the header back so it leaves in the same segment as the first file bytes.
  if (!WriteAll(fd_, out_, MSG_MORE)) return Broken("send response");
  auto off = static_cast<off_t>(offset);
  uint64_t left = length;
  while (left > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(left, 1ull << 30));
    ssize_t n = sendfile(fd_, fd, &off, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Broken("sendfile");
    }
    if (n == 0) {
      // The file is shorter than promised: never let the client take a short body as complete.
      broken_ = true;
      shutdown(fd_, SHUT_RDWR);
      return DataLoss("file shorter than the response length");
    }
    left -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status Connection::Begin(std::optional<uint64_t> length) {
  if (started_) return FailedPrecondition("response already started");
  BuildHead(length);
  stream_remaining_ = length;
  if (!WriteAll(fd_, out_)) return Broken("send response");
  return Status::Ok();
}

Status Connection::Write(std::string_view data) {
  if (!started_ || finished_) return FailedPrecondition("Write outside Begin/End");
  if (broken_) return Unavailable("connection closed");
  if (stream_remaining_) {
    if (data.size() > *stream_remaining_) {
      Abort();
      return Internal("response body longer than its Content-Length");
    }
    *stream_remaining_ -= data.size();
  }
  if (head_request_ || data.empty()) return Status::Ok();
  if (stream_chunked_) {
    char size_line[24];
    auto r = std::to_chars(size_line, size_line + 20, data.size(), 16);
    *r.ptr++ = '\r';
    *r.ptr++ = '\n';
    iovec iov[3] = {{size_line, static_cast<size_t>(r.ptr - size_line)},
                    {const_cast<char*>(data.data()), data.size()},
                    {const_cast<char*>("\r\n"), 2}};
    if (!WriteAllV(fd_, iov, 3)) return Broken("send body");
    return Status::Ok();
  }
  if (!WriteAll(fd_, data)) return Broken("send body");
  return Status::Ok();
}

Status Connection::End() {
  if (!started_ || finished_) return FailedPrecondition("End outside Begin");
  if (broken_) return Unavailable("connection closed");
  if (stream_remaining_ && *stream_remaining_ != 0 && !head_request_) {
    Abort();
    return Internal("response body shorter than its Content-Length");
  }
  finished_ = true;
  if (stream_chunked_ && !WriteAll(fd_, "0\r\n\r\n")) return Broken("send body");
  if (!stream_chunked_ && !stream_remaining_ && !head_request_) {
    // HTTP/1.0 close-delimited body.
    broken_ = true;
    shutdown(fd_, SHUT_WR);
  }
  return Status::Ok();
}

void Connection::Abort() {
  broken_ = true;
  // The connection is closed with an RST (not a FIN) once the handler returns, so the client
  // cannot mistake a truncated body for a complete one.
  linger l{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

Result<size_t> Connection::ReadBody(std::span<char> buf) {
  if (body_late_) return DeadlineExceeded("request body arrived too slowly");
  if (body_failed_) return Unavailable("request body unavailable");
  if (body_done_ || buf.empty()) return size_t{0};
  if (!body_start_) body_start_ = std::chrono::steady_clock::now();
  const uint64_t max = server_.options().max_body_bytes;
  if (max > 0 && declared_length_ && *declared_length_ > max) {
    body_failed_ = true;
    return TooLarge("request body exceeds " + std::to_string(max) + " bytes");
  }
  if (expect_continue_) {
    expect_continue_ = false;
    if (!started_ && !WriteAll(fd_, "HTTP/1.1 100 Continue\r\n\r\n")) {
      body_failed_ = true;
      return Broken("send 100 Continue");
    }
  }
  if (chunked_) return ReadChunked(buf);

  size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), body_remaining_));
  size_t n;
  if (buf_pos_ < buf_len_) {
    n = std::min(want, buf_len_ - buf_pos_);
    std::memcpy(buf.data(), buf_.get() + buf_pos_, n);
    buf_pos_ += n;
  } else {
    // Nothing buffered: read straight into the caller's buffer.
    if (!ArmBodyTimer()) return BodyLate();
    ssize_t r;
    do {
      r = recv(fd_, buf.data(), want, 0);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) {
      int err = errno;
      if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK) && !ArmBodyTimer()) return BodyLate();
      body_failed_ = true;
      if (r == 0) return Unavailable("client closed the connection mid-body");
      return Unavailable(std::string("reading request body: ") + std::strerror(err));
    }
    n = static_cast<size_t>(r);
  }
  body_remaining_ -= n;
  body_read_ += n;
  if (body_remaining_ == 0) body_done_ = true;
  return n;
}

Result<size_t> Connection::ReadChunked(std::span<char> buf) {
  const uint64_t max = server_.options().max_body_bytes;
  for (;;) {
    if (buf_pos_ < buf_len_) {
      parser_->sink = buf.data();
      parser_->sink_len = 0;
      parser_->sink_cap = buf.size();
      beast::error_code ec;
      size_t used =
          parser_->put(boost::asio::const_buffer(buf_.get() + buf_pos_, buf_len_ - buf_pos_), ec);
      buf_pos_ += used;
      size_t got = parser_->sink_len;
      parser_->sink = nullptr;
      if (ec && ec != bhttp::error::need_more) {
        body_failed_ = true;
        handler_close_ = true;
        return InvalidArgument("malformed chunked request body");
      }
      if (parser_->is_done()) body_done_ = true;
      if (got > 0) {
        body_read_ += got;
        if (max > 0 && body_read_ > max) {
          body_failed_ = true;
          return TooLarge("request body exceeds " + std::to_string(max) + " bytes");
        }
        return got;
      }
      if (body_done_) return size_t{0};
      if (used > 0 && !ec) continue;  // consumed a chunk header; parse on
    }
    // Need more bytes: keep the header block in place, compact the body area behind it.
    if (buf_pos_ > body_base_) {
      std::memmove(buf_.get() + body_base_, buf_.get() + buf_pos_, buf_len_ - buf_pos_);
      buf_len_ -= buf_pos_ - body_base_;
      buf_pos_ = body_base_;
    }
    if (buf_len_ == buf_cap_) {
      body_failed_ = true;
      handler_close_ = true;
      return InvalidArgument("chunk header too long");
    }
    if (!ArmBodyTimer()) return BodyLate();
    ssize_t n = Fill();
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !ArmBodyTimer()) return BodyLate();
      body_failed_ = true;
      return Unavailable(n == 0 ? "client closed the connection mid-body"
                                : "reading request body timed out or failed");
    }
  }
}

bool Connection::ArmBodyTimer() {
  const ServerOptions& o = server_.options();
  if (o.body_timeout.count() <= 0 && o.min_body_rate == 0) return true;
  using std::chrono::milliseconds;
  const auto now = std::chrono::steady_clock::now();
  const auto start = body_start_.value_or(now);
  auto late_at = now + o.idle_timeout;
  if (o.body_timeout.count() > 0) late_at = std::min(late_at, start + o.body_timeout);
  if (o.min_body_rate > 0) {
    // body_read_ bytes are enough until start + grace + body_read_ / rate.
    auto earned = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(static_cast<double>(body_read_) /
                                      static_cast<double>(o.min_body_rate)));
    late_at = std::min(late_at, start + o.min_body_rate_grace + earned);
  }
  if (late_at <= now) return false;
  // Rounded up, so the receive timeout never fires before the body is actually late.
  auto left = std::chrono::ceil<milliseconds>(late_at - now);
  SetTimeout(fd_, SO_RCVTIMEO, left);
  body_timer_set_ = true;
  return true;
}

Status Connection::BodyLate() {
  body_late_ = true;
  body_failed_ = true;
  const ServerOptions& o = server_.options();
  std::string why = "request body too slow: " + std::to_string(body_read_) + " bytes";
  if (declared_length_) why += " of " + std::to_string(*declared_length_);
  why += " received (limits: body within " + std::to_string(o.body_timeout.count()) +
         " ms, at least " + std::to_string(o.min_body_rate) + " bytes/s)";
  return DeadlineExceeded(why);
}

bool Connection::DrainBody() {
  char scratch[8192];
  while (!body_done_) {
    auto r = ReadBody(scratch);
    if (!r.ok() || *r == 0) return body_done_;
  }
  return true;
}

Status ServerImpl::Listen() {
  std::string_view listen = options_.listen;
  size_t colon = listen.rfind(':');
  if (colon == std::string_view::npos) return InvalidArgument("listen address needs host:port");
  std::string host(listen.substr(0, colon));
  std::string port(listen.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return InvalidArgument("cannot resolve listen address " + options_.listen + ": " +
                           gai_strerror(rc));
  }
  Status last = Unavailable("no usable address for " + options_.listen);
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = ErrnoStatus(errno, "socket");
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      last = ErrnoStatus(errno, "bind " + options_.listen);
      close(fd);
      continue;
    }
    if (::listen(fd, 1024) != 0) {
      last = ErrnoStatus(errno, "listen");
      close(fd);
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    listen_fd_ = fd;
    break;
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) return last;
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return ErrnoStatus(errno, "eventfd");
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return Status::Ok();
}

std::string PeerAddress(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
    port = ntohs(sin->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
    port = ntohs(sin6->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "unknown";
}

void ServerImpl::AcceptLoop() {
  pollfd pfds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  for (;;) {
    int rc = poll(pfds, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (pfds[1].revents != 0 || stopping()) return;
    if ((pfds[0].revents & POLLIN) == 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: back off instead of spinning on a ready listener.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      continue;
    }
    if (active_.load() >= options_.max_connections) {
      Reject(fd, kBusy);
      continue;
    }
    std::string remote = PeerAddress(ss);
    if (options_.max_connections_per_client > 0) {
      std::lock_guard lock(clients_mu_);
      int& held = clients_[std::string(ClientIp(remote))];
      if (held >= options_.max_connections_per_client) {
        Reject(fd, kTooMany);
        continue;
      }
      ++held;
    }
    active_.fetch_add(1);
    Dispatch(fd, std::move(remote));
  }
}

void ServerImpl::ReleaseClient(std::string_view remote) {
  if (options_.max_connections_per_client <= 0) return;
  std::lock_guard lock(clients_mu_);
  auto it = clients_.find(std::string(ClientIp(remote)));
  if (it != clients_.end() && --it->second <= 0) clients_.erase(it);
}

void ServerImpl::Reject(int fd, std::string_view response) {
  // Read what already arrived so close() does not turn into a reset that could destroy the 503
  // before the client reads it.
  char scratch[4096];
  while (recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT) > 0) {
  }
  (void)send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  shutdown(fd, SHUT_WR);
  close(fd);
}

void ServerImpl::Dispatch(int fd, std::string remote) {
  std::unique_lock lock(pool_mu_);
  for (auto& t : finished_) t.join();
  finished_.clear();
  if (idle_workers_ > static_cast<int>(pending_.size())) {
    pending_.push_back({fd, std::move(remote)});
    pool_cv_.notify_one();
    return;
  }
  workers_.emplace_back();
  auto it = std::prev(workers_.end());
  *it = std::thread(
      [this, it, fd, r = std::move(remote)]() mutable { WorkerLoop(it, fd, std::move(r)); });
}

void ServerImpl::WorkerLoop(std::list<std::thread>::iterator self, int fd, std::string remote) {
  // Idle workers beyond this many exit after a while; the rest wait for the next connection.
  constexpr int kKeepIdle = 16;
  for (;;) {
    {
      Connection conn(*this, fd, std::move(remote));
      Register(&conn);
      if (stopping()) {
        conn.state().store(ConnState::kClosing);
      } else {
        conn.Serve();
      }
      Unregister(&conn);
      ReleaseClient(conn.remote_address());
    }
    active_.fetch_sub(1);
    std::unique_lock lock(pool_mu_);
    ++idle_workers_;
    auto has_work = [&] { return pool_stopping_ || !pending_.empty(); };
    if (!pool_cv_.wait_for(lock, std::chrono::seconds(30), has_work) &&
        idle_workers_ <= kKeepIdle) {
      pool_cv_.wait(lock, has_work);
    }
    --idle_workers_;
    if (!pending_.empty()) {
      fd = pending_.back().fd;
      remote = std::move(pending_.back().remote);
      pending_.pop_back();
      continue;
    }
    if (!pool_stopping_) {
      // Retire: the next Dispatch (or Stop) joins this thread.
      finished_.push_back(std::move(*self));
      workers_.erase(self);
    }
    return;
  }
}

void ServerImpl::Stop(std::chrono::milliseconds grace) {
  std::call_once(stop_once_, [&] {
    stopping_.store(true);
    if (accept_thread_.joinable()) {
      uint64_t one = 1;
      (void)!write(wake_fd_, &one, sizeof(one));
      accept_thread_.join();
    }
    if (listen_fd_ >= 0) close(listen_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
    listen_fd_ = wake_fd_ = -1;

    // Connections waiting for their next request are closed now; those mid-request get `grace`
    // to finish (they close after responding because stopping() is set).
    auto close_idle = [&] {
      for (Connection* c : conns_) {
        ConnState idle = ConnState::kIdle;
        if (c->state().compare_exchange_strong(idle, ConnState::kClosing)) {
          shutdown(c->fd(), SHUT_RDWR);
        }
      }
    };
    {
      std::unique_lock lock(conns_mu_);
      auto deadline = std::chrono::steady_clock::now() + grace;
      close_idle();
      while (!conns_.empty()) {
        if (conns_cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() +
                                                              std::chrono::milliseconds(50))) ==
                std::cv_status::timeout &&
            std::chrono::steady_clock::now() >= deadline) {
          break;
        }
        close_idle();  // connections that finished a request since
      }
      for (Connection* c : conns_) {
        c->state().store(ConnState::kClosing);
        shutdown(c->fd(), SHUT_RDWR);
      }
    }

    std::list<std::thread> workers;
    std::vector<std::thread> finished;
    {
      std::lock_guard lock(pool_mu_);
      pool_stopping_ = true;
      pool_cv_.notify_all();
      workers.swap(workers_);
      finished.swap(finished_);
      for (auto& p : pending_) close(p.fd);
      pending_.clear();
    }
    for (auto& t : finished) t.join();
    for (auto& t : workers) t.join();
  });
}

}  // namespace

std::string_view Request::client_ip() const { return ClientIp(remote_address()); }

Result<std::unique_ptr<Server>> Server::Start(ServerOptions options, Handler handler) {
  if (!handler) return InvalidArgument("server needs a handler");
  if (options.max_connections <= 0) return InvalidArgument("max_connections must be positive");
  if (options.max_connections_per_client < 0) {
    return InvalidArgument("max_connections_per_client must not be negative");
  }
  // sendfile(2) has no MSG_NOSIGNAL: a client that resets mid-body would kill the process with
  // SIGPIPE. Ignore it unless the program installed its own handler.
  struct sigaction old_action {};
  if (sigaction(SIGPIPE, nullptr, &old_action) == 0 && old_action.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
  auto server = std::make_unique<ServerImpl>(std::move(options), std::move(handler));
  BC_RETURN_IF_ERROR(server->Listen());
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace buildcache::http
