// HTTPS with Boost.Beast over Asio's OpenSSL stream, synchronously: one thread per connection.
// Blocking Asio calls ignore socket timeouts, so a sweeper thread enforces deadlines by shutting
// down the socket of a connection that overran its deadline, which fails its pending call.
#include "common/http/tls_server.h"

#include <sys/socket.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <list>
#include <thread>

#include "common/base/thread_annotations.h"
#include "common/log/log.h"
#include "common/net/host_port.h"

namespace buildcache::http {

namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

int64_t NowNanos() { return Clock::now().time_since_epoch().count(); }

Result<std::shared_ptr<ssl::context>> MakeContext(const TlsCredentials& creds) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  boost::system::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use,
                   ec);
  if (ec) return Internal("TLS options: " + ec.message());
  ctx->use_certificate_chain(asio::buffer(creds.cert_pem), ec);
  if (ec) return InvalidArgument("serving certificate: " + ec.message());
  ctx->use_private_key(asio::buffer(creds.key_pem), ssl::context::pem, ec);
  if (ec) return InvalidArgument("serving key: " + ec.message());
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return InvalidArgument("serving key does not match the certificate");
  }
  return ctx;
}

}  // namespace

struct TlsServer::Impl {
  struct Conn {
    tcp::socket socket;
    std::atomic<int64_t> deadline{0};
    std::atomic<bool> done{false};
    std::thread thread{};
    explicit Conn(tcp::socket s) : socket(std::move(s)) {}
  };

  TlsServerOptions options;
  TlsHandler handler;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  uint16_t port = 0;
  std::atomic<bool> stopping{false};
  std::thread accept_thread;
  std::thread sweeper_thread;

  Mutex mu;
  CondVar cv;  // wakes the sweeper at Stop
  std::list<std::unique_ptr<Conn>> conns GUARDED_BY(mu);
  std::shared_ptr<ssl::context> ctx GUARDED_BY(mu);
  TlsCredentials creds GUARDED_BY(mu);

  std::shared_ptr<ssl::context> CurrentContext() {
    Result<TlsCredentials> now = options.credentials();
    MutexLock lock(mu);
    if (!now.ok()) {
      log::Warn("tls credentials unavailable", {{"error", now.status().ToString()}});
      return ctx;  // keep serving the last good ones
    }
    if (ctx && now->cert_pem == creds.cert_pem && now->key_pem == creds.key_pem) return ctx;
    Result<std::shared_ptr<ssl::context>> fresh = MakeContext(*now);
    if (!fresh.ok()) {
      log::Warn("tls credentials rejected", {{"error", fresh.status().ToString()}});
      return ctx;
    }
    ctx = *fresh;
    creds = *std::move(now);
    return ctx;
  }

  void AcceptLoop() {
    while (!stopping) {
      boost::system::error_code ec;
      tcp::socket socket(io);
      acceptor.accept(socket, ec);
      if (stopping) break;
      if (ec) {
        if (ec == asio::error::invalid_argument || ec == asio::error::bad_descriptor) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // EMFILE and friends
        continue;
      }
      // A response goes out as several TLS records (headers, body): with Nagle on, the second
      // waits for the client's delayed ACK, 40 ms on Linux, on every exchange.
      socket.set_option(tcp::no_delay(true), ec);
      MutexLock lock(mu);
      if (static_cast<int>(conns.size()) >= options.max_connections) {
        socket.close(ec);
        continue;
      }
      conns.push_back(std::make_unique<Conn>(std::move(socket)));
      Conn* conn = conns.back().get();
      conn->deadline = NowNanos() + std::chrono::nanoseconds(options.io_timeout).count();
      conn->thread = std::thread([this, conn] {
        Serve(*conn);
        conn->done = true;
      });
    }
  }

  void Sweep() {
    MutexLock lock(mu);
    while (!stopping) {
      cv.WaitFor(mu, std::chrono::milliseconds(200));
      int64_t now = NowNanos();
      for (auto it = conns.begin(); it != conns.end();) {
        Conn& c = **it;
        if (c.done) {
          c.thread.join();
          it = conns.erase(it);
          continue;
        }
        if (now > c.deadline) ::shutdown(c.socket.native_handle(), SHUT_RDWR);
        ++it;
      }
    }
  }

  void Serve(Conn& conn) {
    std::shared_ptr<ssl::context> context = CurrentContext();
    if (!context) return;
    auto extend = [&] {
      conn.deadline = NowNanos() + std::chrono::nanoseconds(options.io_timeout).count();
    };
    ssl::stream<tcp::socket&> stream(conn.socket, *context);
    boost::system::error_code ec;
    stream.handshake(ssl::stream_base::server, ec);
    if (ec) {
      log::Debug("tls handshake failed", {{"error", ec.message()}});
      return;
    }
    beast::flat_buffer buffer;
    while (!stopping) {
      extend();
      bhttp::request_parser<bhttp::string_body> parser;
      parser.body_limit(options.max_body_bytes);
      bhttp::read(stream, buffer, parser, ec);
      if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
          ec == ssl::error::stream_truncated) {
        break;
      }
      TlsResponse out;
      bool keep_alive = false;
      if (ec == bhttp::error::body_limit) {
        out = {413, "text/plain", "request body too large\n"};
      } else if (ec) {
        break;
      } else {
        const auto& req = parser.get();
        TlsRequest in{std::string(req.method_string()), std::string(req.target()),
                      std::string(req[bhttp::field::content_type]), req.body()};
        out = handler(in);
        keep_alive = req.keep_alive();
      }
      bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(out.status), 11};
      res.set(bhttp::field::server, "buildcache");
      res.set(bhttp::field::content_type, out.content_type);
      res.keep_alive(keep_alive);
      res.body() = std::move(out.body);
      res.prepare_payload();
      extend();
      bhttp::write(stream, res, ec);
      if (ec || !keep_alive) break;
    }
    extend();
    stream.shutdown(ec);
  }
};

Result<std::unique_ptr<TlsServer>> TlsServer::Start(TlsServerOptions options, TlsHandler handler) {
  if (!options.credentials) return InvalidArgument("tls server: no credentials source");
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->handler = std::move(handler);
  if (!impl->CurrentContext()) {
    Result<TlsCredentials> creds = impl->options.credentials();
    if (!creds.ok()) return creds.status().WithContext("tls server");
    return InvalidArgument("tls server: the serving certificate or key cannot be used");
  }

  const std::string& listen = impl->options.listen;
  Result<net::HostPort> parsed = net::HostPort::ParseListen(listen);
  if (!parsed.ok()) return parsed.status().WithContext("tls server: listen");
  const std::string& host = parsed->host();
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) return InvalidArgument("tls server: bad listen address " + listen);
  tcp::endpoint endpoint(address, parsed->port());
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Unavailable("tls server: cannot listen on " + listen + ": " + ec.message());
  impl->port = impl->acceptor.local_endpoint(ec).port();

  Impl* raw = impl.get();
  impl->accept_thread = std::thread([raw] { raw->AcceptLoop(); });
  impl->sweeper_thread = std::thread([raw] { raw->Sweep(); });
  log::Info("tls server listening", {{"address", net::HostPort(host, impl->port).ToString()}});
  return std::unique_ptr<TlsServer>(new TlsServer(std::move(impl)));
}

TlsServer::TlsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TlsServer::~TlsServer() { Stop(); }

uint16_t TlsServer::port() const { return impl_->port; }

void TlsServer::Stop() {
  if (impl_->stopping.exchange(true)) return;
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  if (impl_->accept_thread.joinable()) impl_->accept_thread.join();
  {
    MutexLock lock(impl_->mu);
    impl_->cv.NotifyAll();
  }
  if (impl_->sweeper_thread.joinable()) impl_->sweeper_thread.join();
  // No new connections now; wake the remaining ones and wait for them.
  std::list<std::unique_ptr<Impl::Conn>> conns;
  {
    MutexLock lock(impl_->mu);
    conns.swap(impl_->conns);
  }
  for (auto& c : conns) ::shutdown(c->socket.native_handle(), SHUT_RDWR);
  for (auto& c : conns) {
    if (c->thread.joinable()) c->thread.join();
  }
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
}

}  // namespace buildcache::http
