// NewHttpFetcher: Boost.Beast over plain TCP and over TLS (OpenSSL).
//
// Each connection owns a private io_context that is run on the calling thread for the duration
// of one operation, so the fetcher is blocking to its callers (front-end handlers run one thread
// per connection) while every socket operation still gets a Beast timeout. Connections are parked
// per origin after a complete keep-alive response and reused.

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agent/upstream/upstream.h"
#include "agent/upstream/url.h"
#include "common/base/thread_annotations.h"
#include "common/log/log.h"
#include "common/text/base64.h"

namespace buildcache::upstream {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr size_t kBodyBuffer = 64 * 1024;
constexpr uint32_t kHeaderLimit = 64 * 1024;
// A redirect or retried error body up to this size is read and dropped to keep the connection.
constexpr uint64_t kDiscardLimit = 64 * 1024;

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool HasForbiddenByte(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

bool IsTokenChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) << 4 | HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool IsRedirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

bool IsRetryableStatus(int status) { return status == 429 || (status >= 500 && status <= 599); }

std::string Millis(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

// One upstream connection. Used by one thread at a time (it is either parked in the pool or owned
// by the request using it).
struct Connection {
  std::string origin;
  asio::io_context io{1};
  std::optional<beast::tcp_stream> tcp;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  std::unique_ptr<char[]> body = std::make_unique<char[]>(kBodyBuffer);
  SteadyClock::time_point idle_since;
  bool session_kept = false;  // its TLS session was handed to the fetcher's session cache

  Connection() {
    // Beast reads at most the buffer's free capacity (at least 512 bytes) per socket read; without
    // room reserved a body arrives 512 bytes per read.
    buffer.reserve(kBodyBuffer);
  }

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *tcp; }

  // Starts an asynchronous operation with a completion handler and runs the io_context until it
  // completes. Beast's stream timeouts complete it with error::timeout.
  template <typename Initiate>
  beast::error_code Run(Initiate&& initiate) {
    bool done = false;
    beast::error_code result;
    initiate([&](beast::error_code ec, auto&&...) {
      result = ec;
      done = true;
    });
    io.restart();
    while (!done && io.run_one() > 0) {
    }
    if (!done) return asio::error::operation_aborted;
    return result;
  }

  // Applies f to the stream the HTTP exchange runs over.
  template <typename F>
  auto WithStream(F&& f) {
    if (tls) return f(*tls);
    return f(*tcp);
  }
};

// What one exchange on one connection came to.
struct Exchange {
  Exchange() = default;
  Exchange(Status s, bool retry = false, bool stale = false)  // NOLINT(google-explicit-constructor)
      : status(std::move(s)), retry(retry), stale(stale) {}

  Status status;          // the result when neither retry nor location is set
  bool retry = false;     // failed before the consumer saw anything; another attempt may help
  bool stale = false;     // a reused connection failed before any response byte
  std::string location;   // follow this redirect
  bool reusable = false;  // the response was read completely and the connection kept alive
};

class HttpFetcher final : public Fetcher {
 public:
  explicit HttpFetcher(FetcherOptions options) : options_(std::move(options)) {
    std::string error;
    try {
      ctx_.emplace(ssl::context::tls_client);
      SSL_CTX_set_min_proto_version(ctx_->native_handle(), TLS1_2_VERSION);
      ctx_->set_verify_mode(ssl::verify_peer);
      if (options_.ca_file.empty()) {
        ctx_->set_default_verify_paths();
      } else if (std::FILE* f = std::fopen(options_.ca_file.c_str(), "r"); f == nullptr) {
        error = std::strerror(errno);
      } else {
        std::fclose(f);
        boost::system::error_code ec;
        ctx_->load_verify_file(options_.ca_file, ec);
        if (ec) error = "no PEM certificates could be loaded";
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) {
      ctx_.reset();
      tls_error_ = "TLS trust store unusable: ca_file \"" + options_.ca_file + "\": " + error;
      log::Error("upstream tls setup failed", {{"ca_file", options_.ca_file}, {"error", error}});
    }
  }

  // Fetcher
  Status Get(std::string_view url, const FetchOptions& options,
             const std::function<Status(const UpstreamResponse&)>& on_head,
             const std::function<Status(std::string_view)>& on_data) override {
    try {
      return GetImpl(url, options, on_head, on_data);
    } catch (const std::exception& e) {
      return Internal(std::string("upstream fetch: ") + e.what());
    }
  }

 private:
  Status GetImpl(std::string_view url, const FetchOptions& options,
                 const std::function<Status(const UpstreamResponse&)>& on_head,
                 const std::function<Status(std::string_view)>& on_data) {
    BC_ASSIGN_OR_RETURN(Url current, ParseUrl(url));
    HeaderList headers;
    for (const auto& [name, value] : options.headers) {
      if (name.empty() || !std::all_of(name.begin(), name.end(), IsTokenChar) ||
          HasForbiddenByte(value)) {
        return InvalidArgument("bad request header name or value for upstream");
      }
      if (IEquals(name, "Host") || IEquals(name, "Connection") || IEquals(name, "Content-Length") ||
          IEquals(name, "Transfer-Encoding")) {
        continue;
      }
      headers.emplace_back(name, value);
    }
    const int attempts = std::max(1, options_.attempts);
    for (int hop = 0;; ++hop) {
      if (options.check_target) BC_RETURN_IF_ERROR(options.check_target(current));
      if (options.authorization) {
        BC_ASSIGN_OR_RETURN(std::optional<std::string> auth, options.authorization(current));
        std::erase_if(headers, [](const auto& h) { return IEquals(h.first, "Authorization"); });
        if (auth) {
          if (HasForbiddenByte(*auth)) return InvalidArgument("bad upstream authorization value");
          headers.emplace_back("Authorization", std::move(*auth));
        }
      }
      Exchange ex;
      for (int attempt = 1;; ++attempt) {
        ex = Once(current, headers, options, on_head, on_data, attempt == attempts);
        if (!ex.retry || attempt >= attempts) break;
        auto delay = Backoff(attempt);
        log::Warn("upstream retry", {{"url", current.Redacted()},
                                     {"attempt", attempt},
                                     {"delay_ms", static_cast<int64_t>(delay.count())},
                                     {"reason", ex.status.message()}});
        std::this_thread::sleep_for(delay);
      }
      if (ex.location.empty()) return ex.status;
      if (hop >= options.max_redirects) {
        return Unavailable("upstream " + current.Redacted() + ": more than " +
                           std::to_string(options.max_redirects) + " redirects");
      }
      auto next = ResolveReference(current, ex.location);
      if (!next.ok()) {
        return Unavailable("upstream " + current.Redacted() +
                           " sent an unusable redirect: " + next.status().message());
      }
      if (current.https && !next->https) {
        return Unavailable("upstream " + current.Redacted() + " redirected from https to http (" +
                           next->Redacted() + "); refused");
      }
      if (next->origin() != current.origin()) {
        std::erase_if(headers, [](const auto& h) {
          return IEquals(h.first, "Authorization") || IEquals(h.first, "Cookie") ||
                 IEquals(h.first, "Proxy-Authorization");
        });
      }
      current = std::move(next).value();
    }
  }

  std::chrono::milliseconds Backoff(int attempt) {
    double base = static_cast<double>(options_.backoff.count()) * std::pow(2.0, attempt - 1);
    base = std::min(base, 30'000.0);
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::uniform_real_distribution<double> jitter(base / 2, base);
    return std::chrono::milliseconds(static_cast<int64_t>(jitter(rng)));
  }

  // One attempt: a pooled or new connection, one request, and its response.
  Exchange Once(const Url& url, const HeaderList& headers, const FetchOptions& options,
                const std::function<Status(const UpstreamResponse&)>& on_head,
                const std::function<Status(std::string_view)>& on_data, bool last_attempt) {
    const auto deadline = SteadyClock::now() + options.connect_timeout;
    for (;;) {
      std::unique_ptr<Connection> conn = TakeIdle(url.origin());
      const bool reused = conn != nullptr;
      if (!reused) {
        bool permanent = false;
        const auto started = SteadyClock::now();
        auto fresh = Connect(url, deadline, options.connect_timeout, &permanent);
        if (!fresh.ok()) return {fresh.status(), !permanent};
        conn = std::move(fresh).value();
        log::Debug(
            "upstream connected",
            {{"origin", url.origin()},
             {"ms",
              std::chrono::duration<double, std::milli>(SteadyClock::now() - started).count()},
             {"tls_resumed",
              conn->tls.has_value() && SSL_session_reused(conn->tls->native_handle()) == 1}});
      }
      Exchange ex = Run(*conn, url, headers, options, on_head, on_data, last_attempt);
      if (!ex.stale) RememberSession(*conn);
      // The server may close a parked connection just as it is reused: try a fresh one.
      if (ex.stale && reused) continue;
      if (ex.reusable) Park(std::move(conn));
      return ex;
    }
  }

  Result<std::unique_ptr<Connection>> Connect(const Url& url, SteadyClock::time_point deadline,
                                              std::chrono::milliseconds timeout, bool* permanent) {
    if (url.https && !ctx_) {
      *permanent = true;
      return Unavailable(tls_error_);
    }
    auto conn = std::make_unique<Connection>();
    conn->origin = url.origin();
    beast::error_code ec;
    tcp::resolver resolver(conn->io);
    auto endpoints = resolver.resolve(url.host, std::to_string(url.port), ec);
    if (ec) return Unavailable("upstream " + url.authority() + ": resolve: " + ec.message());
    if (url.https) {
      conn->tls.emplace(conn->io, *ctx_);
    } else {
      conn->tcp.emplace(conn->io);
    }
    conn->lowest().expires_at(deadline);
    ec = conn->Run(
        [&](auto handler) { conn->lowest().async_connect(endpoints, std::move(handler)); });
    if (ec == beast::error::timeout) {
      return DeadlineExceeded("upstream " + url.authority() + ": connect timed out after " +
                              Millis(timeout));
    }
    if (ec) return Unavailable("upstream " + url.authority() + ": connect: " + ec.message());
    conn->lowest().socket().set_option(tcp::no_delay(true), ec);
    if (!url.https) return conn;

    SSL* ssl = conn->tls->native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (url.ip_literal()) {
      X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str());
    } else {
      // SNI is for names only (RFC 6066).
      SSL_set_tlsext_host_name(ssl, url.host.c_str());
      X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), url.host.size());
    }
    // Resumes the origin's last TLS session when there is one: an abbreviated handshake (no
    // certificate exchange) for every connection after the first. Sessions are kept per origin,
    // and this fetcher's single context (one trust store) verified the certificate they came from.
    if (std::shared_ptr<SSL_SESSION> session = SessionFor(conn->origin)) {
      SSL_set_session(ssl, session.get());
    }
    ec = conn->Run([&](auto handler) {
      conn->tls->async_handshake(ssl::stream_base::client, std::move(handler));
    });
    if (ec) {
      long verify = SSL_get_verify_result(ssl);
      if (verify != X509_V_OK) {
        *permanent = true;
        return Unavailable(
            "upstream " + url.authority() +
            ": TLS certificate verification failed: " + X509_verify_cert_error_string(verify));
      }
      if (ec == beast::error::timeout) {
        return DeadlineExceeded("upstream " + url.authority() + ": TLS handshake timed out after " +
                                Millis(timeout));
      }
      return Unavailable("upstream " + url.authority() + ": TLS handshake: " + ec.message());
    }
    return conn;
  }

  std::string BuildRequest(const Url& url, const HeaderList& headers) const {
    std::string req = "GET " + url.target + " HTTP/1.1\r\nHost: " + url.authority() + "\r\n";
    bool has_encoding = false;
    bool has_auth = false;
    bool has_agent = false;
    for (const auto& [name, value] : headers) {
      has_encoding |= IEquals(name, "Accept-Encoding");
      has_auth |= IEquals(name, "Authorization");
      has_agent |= IEquals(name, "User-Agent");
      req += name + ": " + value + "\r\n";
    }
    if (!has_agent) req += "User-Agent: " + options_.user_agent + "\r\n";
    if (!has_encoding) req += "Accept-Encoding: identity\r\n";
    if (!has_auth && !url.userinfo.empty()) {
      req += "Authorization: Basic " + text::Base64Encode(PercentDecode(url.userinfo)) + "\r\n";
    }
    req += "\r\n";
    return req;
  }

  Exchange Run(Connection& conn, const Url& url, const HeaderList& headers,
               const FetchOptions& options,
               const std::function<Status(const UpstreamResponse&)>& on_head,
               const std::function<Status(std::string_view)>& on_data, bool last_attempt) {
    return conn.WithStream([&](auto& stream) {
      return RunOn(stream, conn, url, headers, options, on_head, on_data, last_attempt);
    });
  }

  // About 85 lines: one request/response exchange, its steps (send, head, redirect or retry,
  // body) sharing the parser, the connection's buffer and the read deadline.
  template <typename Stream>
  Exchange RunOn(Stream& stream, Connection& conn, const Url& url, const HeaderList& headers,
                 const FetchOptions& options,
                 const std::function<Status(const UpstreamResponse&)>& on_head,
                 const std::function<Status(std::string_view)>& on_data, bool last_attempt) {
    const std::string where = "upstream " + url.Redacted();
    auto transport = [&](const beast::error_code& ec, std::string_view what) {
      if (ec == beast::error::timeout) {
        return DeadlineExceeded(where + ": " + std::string(what) + " timed out after " +
                                Millis(options.read_timeout));
      }
      return Unavailable(where + ": " + std::string(what) + ": " + ec.message());
    };

    const std::string request = BuildRequest(url, headers);
    conn.lowest().expires_after(options.read_timeout);
    beast::error_code ec = conn.Run([&](auto handler) {
      asio::async_write(stream, asio::buffer(request), std::move(handler));
    });
    if (ec) return {transport(ec, "sending request"), true, true};

    bhttp::response_parser<bhttp::buffer_body> parser;
    parser.header_limit(kHeaderLimit);
    // Not boost::none: Boost 1.74 compares the length against it and always fails.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    conn.lowest().expires_after(options.read_timeout);
    ec = conn.Run([&](auto handler) {
      bhttp::async_read_header(stream, conn.buffer, parser, std::move(handler));
    });
    if (ec) {
      Exchange ex{transport(ec, "waiting for the response head"), true};
      ex.stale = !parser.got_some() && ec != beast::error::timeout;
      return ex;
    }

    const auto& head = parser.get();
    const int status = static_cast<int>(head.result_int());
    // Reads a small unwanted body so the connection can be reused; gives up on larger ones.
    auto discard = [&](Exchange& ex) {
      uint64_t total = 0;
      while (!parser.is_done() && total <= kDiscardLimit) {
        parser.get().body().data = conn.body.get();
        parser.get().body().size = kBodyBuffer;
        conn.lowest().expires_after(options.read_timeout);
        beast::error_code rec = conn.Run([&](auto handler) {
          bhttp::async_read_some(stream, conn.buffer, parser, std::move(handler));
        });
        if (rec && rec != bhttp::error::need_buffer) return;
        total += kBodyBuffer - parser.get().body().size;
      }
      ex.reusable = parser.is_done() && parser.keep_alive();
    };

    if (IsRedirect(status)) {
      auto location = head[bhttp::field::location];
      if (!location.empty()) {
        Exchange ex;
        ex.location = std::string(location);
        discard(ex);
        return ex;
      }
    }
    if (IsRetryableStatus(status) && !last_attempt) {
      Exchange ex{Unavailable(where + " answered " + std::to_string(status)), true};
      discard(ex);
      return ex;
    }

    if (Status s = on_head(ToUpstreamResponse(parser, url)); !s.ok()) {
      // Declined (a 404 page, an error status): a body known to be small is read and dropped so
      // the connection serves the next request instead of a new connect and TLS handshake.
      Exchange ex{s};
      auto length = parser.content_length();
      if (parser.is_done() || (length && *length <= kDiscardLimit)) discard(ex);
      return ex;
    }
    while (!parser.is_done()) {
      auto& body = parser.get().body();
      body.data = conn.body.get();
      body.size = kBodyBuffer;
      conn.lowest().expires_after(options.read_timeout);
      ec = conn.Run([&](auto handler) {
        bhttp::async_read_some(stream, conn.buffer, parser, std::move(handler));
      });
      if (ec == bhttp::error::need_buffer) ec = {};
      const size_t n = kBodyBuffer - body.size;
      if (n > 0) {
        if (Status s = on_data(std::string_view(conn.body.get(), n)); !s.ok()) return {s};
      }
      if (ec) return {transport(ec, "reading the body")};
    }
    Exchange ex{Status::Ok()};
    ex.reusable = parser.keep_alive();
    return ex;
  }

  // The head on_head sees: status, headers, the length of a body that has one, the final URL.
  static UpstreamResponse ToUpstreamResponse(bhttp::response_parser<bhttp::buffer_body>& parser,
                                             const Url& url) {
    const auto& head = parser.get();
    UpstreamResponse response;
    response.status = static_cast<int>(head.result_int());
    for (const auto& field : head) {
      response.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    if (response.status >= 200 && response.status != 204 && response.status != 304) {
      if (auto length = parser.content_length()) response.content_length = *length;
    }
    response.final_url = url.ToString();
    return response;
  }

  std::unique_ptr<Connection> TakeIdle(const std::string& origin) EXCLUDES(mu_) {
    std::vector<std::unique_ptr<Connection>> expired;
    std::unique_ptr<Connection> found;
    {
      MutexLock lock(mu_);
      auto it = idle_.find(origin);
      if (it == idle_.end()) return nullptr;
      auto& list = it->second;
      const auto now = SteadyClock::now();
      while (!list.empty() && !found) {
        std::unique_ptr<Connection> c = std::move(list.back());
        list.pop_back();
        if (now - c->idle_since > options_.idle_timeout || !Quiet(*c)) {
          expired.push_back(std::move(c));
        } else {
          found = std::move(c);
        }
      }
    }
    return found;
  }

  std::shared_ptr<SSL_SESSION> SessionFor(const std::string& origin) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = sessions_.find(origin);
    return it == sessions_.end() ? nullptr : it->second;
  }

  // Keeps the connection's TLS session for the next connection to its origin. Called after a
  // response was read: TLS 1.3 servers send their session tickets after the handshake, and the
  // session is only resumable once one arrived.
  void RememberSession(Connection& conn) EXCLUDES(mu_) {
    if (!conn.tls || conn.session_kept) return;
    SSL_SESSION* live = SSL_get0_session(conn.tls->native_handle());
    if (live == nullptr || SSL_SESSION_is_resumable(live) != 1) return;
    // A copy: OpenSSL marks a connection's own session not resumable when the connection is
    // freed without a TLS shutdown (as pooled connections are).
    SSL_SESSION* copy = SSL_SESSION_dup(live);
    if (copy == nullptr) return;
    std::shared_ptr<SSL_SESSION> session(copy, SSL_SESSION_free);
    conn.session_kept = true;
    MutexLock lock(mu_);
    sessions_[conn.origin] = std::move(session);
  }

  // A parked connection with readable bytes (EOF, a reset, or junk) is not reusable.
  static bool Quiet(Connection& c) {
    if (c.buffer.size() != 0) return false;
    pollfd p{c.lowest().socket().native_handle(), POLLIN, 0};
    return poll(&p, 1, 0) == 0;
  }

  // Parks a connection whose last response was complete and kept alive.
  void Park(std::unique_ptr<Connection> conn) EXCLUDES(mu_) {
    conn->idle_since = SteadyClock::now();
    std::unique_ptr<Connection> evicted;
    MutexLock lock(mu_);
    auto& list = idle_[conn->origin];
    if (static_cast<int>(list.size()) >= options_.max_idle_per_host) {
      if (list.empty()) return;  // pooling disabled: conn closes on return
      evicted = std::move(list.front());
      list.erase(list.begin());
    }
    list.push_back(std::move(conn));
  }

  const FetcherOptions options_;
  std::optional<ssl::context> ctx_;
  std::string tls_error_;

  Mutex mu_;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Connection>>> idle_ GUARDED_BY(mu_);
  // The last resumable TLS session per origin.
  std::unordered_map<std::string, std::shared_ptr<SSL_SESSION>> sessions_ GUARDED_BY(mu_);
};

}  // namespace

std::string_view UpstreamResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (IEquals(k, name)) return v;
  }
  return {};
}

std::string UnexpectedStatusMessage(std::string_view where, int status) {
  std::string out = std::string(where) + " answered " + std::to_string(status);
  if (status == 401 || status == 407) {
    out +=
        " (the upstream wants credentials, or refused the ones sent: see the section's auth, or "
        "the BuildCache's upstreamSecretRef)";
  }
  return out;
}

std::unique_ptr<Fetcher> NewHttpFetcher(FetcherOptions options) {
  return std::make_unique<HttpFetcher>(std::move(options));
}

}  // namespace buildcache::upstream
