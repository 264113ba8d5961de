#include "common/http/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <optional>

#include "common/net/host_port.h"

namespace buildcache::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Bounds a send that blocks part-way after WaitReady found some room (the kernel returns what
// it sent); everything else is bounded by WaitReady.
void SetSendTimeout(int fd, std::chrono::milliseconds t) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Waits until fd is ready for `events`; false with ec set (timed_out, or poll's error) if not
// within timeout.
bool WaitReady(int fd, short events, std::chrono::milliseconds timeout, beast::error_code& ec) {
  pollfd p{fd, events, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  if (r == 0) {
    ec = asio::error::timed_out;
    return false;
  }
  if (r < 0) {
    ec = beast::error_code(errno, beast::system_category());
    return false;
  }
  return true;
}

// The socket with every read and write bounded by a timeout. asio's blocking operations wait
// without limit when a recv or send reports EAGAIN, so socket timeouts alone bound nothing: each
// operation first polls for readiness here. Satisfies Beast's SyncReadStream and
// SyncWriteStream.
class TimedSocket {
 public:
  TimedSocket(tcp::socket& socket, std::chrono::milliseconds timeout)
      : socket_(socket), timeout_(timeout) {}

  template <class MutableBuffers>
  size_t read_some(const MutableBuffers& buffers, beast::error_code& ec) {
    if (!Wait(POLLIN, ec)) return 0;
    return socket_.read_some(buffers, ec);
  }
  template <class MutableBuffers>
  size_t read_some(const MutableBuffers& buffers) {
    beast::error_code ec;
    size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  template <class ConstBuffers>
  size_t write_some(const ConstBuffers& buffers, beast::error_code& ec) {
    if (!Wait(POLLOUT, ec)) return 0;
    return socket_.write_some(buffers, ec);
  }
  template <class ConstBuffers>
  size_t write_some(const ConstBuffers& buffers) {
    beast::error_code ec;
    size_t n = write_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

 private:
  bool Wait(short events, beast::error_code& ec) {
    return WaitReady(socket_.native_handle(), events, timeout_, ec);
  }

  tcp::socket& socket_;
  std::chrono::milliseconds timeout_;
};

// Connects within `timeout` (asio's blocking connect waits without limit for a silent peer).
void ConnectWithin(tcp::socket& socket, const tcp::endpoint& endpoint,
                   std::chrono::milliseconds timeout, beast::error_code& ec) {
  socket.non_blocking(true, ec);
  if (ec) return;
  socket.connect(endpoint, ec);
  if (ec == asio::error::in_progress || ec == asio::error::would_block) {
    if (!WaitReady(socket.native_handle(), POLLOUT, timeout, ec)) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
      err = errno;
    }
    ec = err == 0 ? beast::error_code() : beast::error_code(err, beast::system_category());
  }
  if (ec) return;
  socket.non_blocking(false, ec);
}

}  // namespace

std::string_view ClientResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (IEquals(k, name)) return v;
  }
  return {};
}

struct Client::Impl {
  std::string host;
  std::string port;
  ClientOptions options;
  asio::io_context io;
  std::optional<tcp::socket> socket;
  beast::flat_buffer buffer;

  Status Connect() {
    beast::error_code ec;
    tcp::resolver resolver(io);
    auto endpoints = resolver.resolve(host, port, ec);
    if (ec) return Unavailable("resolve " + host + ": " + ec.message());
    socket.emplace(io);
    for (const auto& ep : endpoints) {
      socket->open(ep.endpoint().protocol(), ec);
      if (ec) continue;
      SetSendTimeout(socket->native_handle(), options.timeout);
      ConnectWithin(*socket, ep.endpoint(), options.timeout, ec);
      if (!ec) break;
      socket->close();
    }
    if (ec) {
      socket.reset();
      return Unavailable("connect " + host + ":" + port + ": " + ec.message());
    }
    socket->set_option(tcp::no_delay(true), ec);
    buffer.clear();
    return Status::Ok();
  }

  // Returns the response, or a status; *sent_nothing tells whether a retry is safe.
  Result<ClientResponse> Once(std::string_view method, std::string_view target,
                              const HeaderList& headers, std::string_view body, bool* got_nothing) {
    *got_nothing = true;
    bhttp::request<bhttp::string_body> req;
    req.method_string(beast::string_view(method.data(), method.size()));
    req.target(beast::string_view(target.data(), target.size()));
    req.version(11);
    req.set(bhttp::field::host, host + ":" + port);
    bool has_length = false;
    for (const auto& [k, v] : headers) {
      if (IEquals(k, "Content-Length") || IEquals(k, "Transfer-Encoding")) has_length = true;
      req.insert(beast::string_view(k.data(), k.size()), beast::string_view(v.data(), v.size()));
    }
    req.body().assign(body.data(), body.size());
    if (!has_length && (!body.empty() || method == "PUT" || method == "POST")) {
      req.content_length(body.size());
    }
    beast::error_code ec;
    TimedSocket stream(*socket, options.timeout);
    bhttp::write(stream, req, ec);
    if (ec) return Unavailable("send request: " + ec.message());

    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(options.max_body_bytes);
    if (method == "HEAD") parser.skip(true);
    bhttp::read_header(stream, buffer, parser, ec);
    if (!ec) {
      *got_nothing = false;
      bhttp::read(stream, buffer, parser, ec);
    }
    if (ec == bhttp::error::body_limit) return TooLarge("response body too large");
    if (ec) return Unavailable("read response: " + ec.message());
    auto& msg = parser.get();
    ClientResponse out;
    out.status = static_cast<int>(msg.result_int());
    for (const auto& f : msg) {
      out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    }
    out.body = std::move(msg.body());
    if (!msg.keep_alive()) {
      beast::error_code ignored;
      socket->close(ignored);
      socket.reset();
    }
    return out;
  }
};

Client::Client(std::string host, uint16_t port, ClientOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  impl_->host = std::move(host);
  impl_->port = std::to_string(port);
  impl_->options = options;
}

Client::~Client() = default;

void Client::Close() {
  if (impl_->socket) {
    beast::error_code ignored;
    impl_->socket->close(ignored);
    impl_->socket.reset();
  }
}

Result<ClientResponse> Client::Fetch(std::string_view method, std::string_view target,
                                     const HeaderList& headers, std::string_view body) {
  try {
    for (int attempt = 0;; ++attempt) {
      bool reused = impl_->socket.has_value();
      if (!reused) BC_RETURN_IF_ERROR(impl_->Connect());
      bool got_nothing = false;
      auto r = impl_->Once(method, target, headers, body, &got_nothing);
      if (r.ok()) return r;
      Close();
      // The server may close an idle kept-alive connection just as we reuse it.
      if (!(reused && got_nothing && attempt == 0)) return r;
    }
  } catch (const std::exception& e) {
    Close();
    return Internal(std::string("http client: ") + e.what());
  }
}

Result<ClientResponse> Fetch(std::string_view method, std::string_view url,
                             const HeaderList& headers, std::string_view body,
                             ClientOptions options) {
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) return InvalidArgument("only http:// URLs are supported");
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view target = slash == std::string_view::npos ? "/" : rest.substr(slash);
  Result<net::HostPort> address = net::HostPort::ParseWithDefaultPort(authority, 80);
  if (!address.ok()) return address.status().WithContext("URL " + std::string(url));
  Client client(address->host(), address->port(), options);
  return client.Fetch(method, target, headers, body);
}

}  // namespace buildcache::http
