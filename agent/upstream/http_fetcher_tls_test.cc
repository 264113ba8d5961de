// TLS tests against a real HTTPS server on loopback (Boost.Asio + OpenSSL in this process), with
// a CA and certificates made by the openssl command line tool for each run.

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <stdlib.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "agent/upstream/testing/fixture_upstream.h"
#include "agent/upstream/upstream.h"

namespace buildcache::upstream {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// Makes a CA, a second (untrusted) CA, a server certificate for localhost and 127.0.0.1, and one
// for a name no test connects to, all with the openssl CLI.
class Pki {
 public:
  Pki() {
    char tmpl[] = "/tmp/bc-upstream-tls-XXXXXX";
    const char* dir = mkdtemp(tmpl);
    if (dir == nullptr) return;
    dir_ = dir;
    ok_ = MakeCa("ca") && MakeCa("other-ca") &&
          MakeLeaf("server", "ca", "DNS:localhost,IP:127.0.0.1") &&
          MakeLeaf("wrong-name", "ca", "DNS:other.invalid");
  }
  ~Pki() {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  bool ok() const { return ok_; }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  bool Run(const std::string& command) {
    std::string full = "cd '" + dir_ + "' && " + command + " >>openssl.log 2>&1";
    return std::system(full.c_str()) == 0;
  }
  bool MakeCa(const std::string& name) {
    return Run(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
        name + ".key -out " + name + ".pem -days 2 -subj '/CN=buildcache test " + name +
        "' -addext basicConstraints=critical,CA:TRUE -addext "
        "keyUsage=critical,keyCertSign,cRLSign");
  }
  bool MakeLeaf(const std::string& name, const std::string& ca, const std::string& san) {
    std::ofstream(Path(name + ".ext"))
        << "subjectAltName=" << san
        << "\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n";
    return Run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
               name + ".key -out " + name + ".csr -subj '/CN=" + name + "'") &&
           Run("openssl x509 -req -in " + name + ".csr -CA " + ca + ".pem -CAkey " + ca +
               ".key -CAcreateserial -out " + name + ".pem -days 2 -extfile " + name + ".ext");
  }

  std::string dir_;
  bool ok_ = false;
};

// A minimal HTTPS/1.1 server: one connection at a time, answers by path; "/keep" is answered with
// keep-alive and the connection then serves further requests, everything else closes it.
class TlsServer {
 public:
  TlsServer(const std::string& cert, const std::string& key)
      : ctx_(ssl::context::tls_server), acceptor_(io_) {
    ctx_.use_certificate_chain_file(cert);
    ctx_.use_private_key_file(key, ssl::context::pem);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Loop(); });
  }
  ~TlsServer() {
    stop_ = true;
    // Wakes the blocking accept.
    asio::io_context io;
    tcp::socket s(io);
    boost::system::error_code ec;
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  std::string sni() {
    std::lock_guard<std::mutex> lock(mu_);
    return sni_;
  }
  int handshakes() const { return handshakes_; }
  // Handshakes that resumed an earlier session (abbreviated: no certificate sent).
  int resumed() const { return resumed_; }

 private:
  void Loop() {
    while (!stop_) {
      tcp::socket sock(io_);
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      if (ec || stop_) continue;
      ++handshakes_;
      ssl::stream<tcp::socket> stream(std::move(sock), ctx_);
      stream.handshake(ssl::stream_base::server, ec);
      if (ec) continue;
      if (SSL_session_reused(stream.native_handle()) == 1) ++resumed_;
      {
        const char* name = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
        std::lock_guard<std::mutex> lock(mu_);
        sni_ = name == nullptr ? "" : name;
      }
      asio::streambuf buf;
      while (!stop_ && Serve(stream, buf)) {
      }
    }
  }

  // Answers one request; true when the connection stays open for another.
  bool Serve(ssl::stream<tcp::socket>& stream, asio::streambuf& buf) {
    boost::system::error_code ec;
    size_t n = asio::read_until(stream, buf, "\r\n\r\n", ec);
    if (ec) return false;
    std::string request(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
    buf.consume(n);
    std::string path = request.substr(4, request.find(' ', 4) - 4);
    std::string reply;
    {
      if (path == "/keep") {
        reply = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept";
      } else if (path == "/hello") {
        reply = "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nhello over tls";
      } else if (path == "/to-http") {
        reply =
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/plain\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n";
      } else {
        reply = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      }
    }
    asio::write(stream, asio::buffer(reply), ec);
    return !ec && path == "/keep";
  }

  asio::io_context io_;
  ssl::context ctx_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> handshakes_{0};
  std::atomic<int> resumed_{0};
  std::mutex mu_;
  std::string sni_;
  std::thread thread_;
};

struct Got {
  Status status;
  int http_status = 0;
  std::string body;
};

Got Fetch(Fetcher& fetcher, const std::string& url) {
  Got got;
  got.status = fetcher.Get(
      url, {},
      [&](const UpstreamResponse& r) {
        got.http_status = r.status;
        return Status::Ok();
      },
      [&](std::string_view data) {
        got.body.append(data);
        return Status::Ok();
      });
  return got;
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(pki_->ok()) << "openssl CLI failed; see its log"; }

  static std::unique_ptr<Fetcher> FetcherWithCa(const std::string& ca_file) {
    FetcherOptions options;
    options.ca_file = ca_file;
    options.attempts = 3;
    options.backoff = 2000ms;  // a retried verification failure would take at least 1 s more
    return NewHttpFetcher(options);
  }

  static Pki* pki_;
};

Pki* TlsTest::pki_ = nullptr;

TEST_F(TlsTest, TrustedCaVerifiesHostNameAndSendsSni) {
  TlsServer server(pki_->Path("server.pem"), pki_->Path("server.key"));
  auto fetcher = FetcherWithCa(pki_->Path("ca.pem"));
  Got got = Fetch(*fetcher, "https://localhost:" + std::to_string(server.port()) + "/hello");
  ASSERT_TRUE(got.status.ok()) << got.status.ToString();
  EXPECT_EQ(got.http_status, 200);
  EXPECT_EQ(got.body, "hello over tls");
  EXPECT_EQ(server.sni(), "localhost");
}

TEST_F(TlsTest, IpLiteralIsVerifiedAgainstIpSubjectAltName) {
  TlsServer server(pki_->Path("server.pem"), pki_->Path("server.key"));
  auto fetcher = FetcherWithCa(pki_->Path("ca.pem"));
  Got got = Fetch(*fetcher, "https://127.0.0.1:" + std::to_string(server.port()) + "/hello");
  ASSERT_TRUE(got.status.ok()) << got.status.ToString();
  EXPECT_EQ(got.body, "hello over tls");
  EXPECT_EQ(server.sni(), "");  // no SNI for IP literals
}

TEST_F(TlsTest, UntrustedCertificateFailsClearlyWithoutRetry) {
  TlsServer server(pki_->Path("server.pem"), pki_->Path("server.key"));
  auto fetcher = FetcherWithCa(pki_->Path("other-ca.pem"));
  auto start = std::chrono::steady_clock::now();
  Got got = Fetch(*fetcher, "https://localhost:" + std::to_string(server.port()) + "/hello");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 900ms);
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status.message().find("certificate verification failed"), std::string::npos)
      << got.status.message();
  EXPECT_NE(got.status.message().find("localhost:" + std::to_string(server.port())),
            std::string::npos);
  EXPECT_EQ(got.http_status, 0);
  EXPECT_EQ(server.handshakes(), 1);
}

TEST_F(TlsTest, SystemTrustStoreDoesNotTrustThePrivateCa) {
  TlsServer server(pki_->Path("server.pem"), pki_->Path("server.key"));
  auto fetcher = FetcherWithCa("");
  Got got = Fetch(*fetcher, "https://localhost:" + std::to_string(server.port()) + "/hello");
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status.message().find("certificate verification failed"), std::string::npos)
      << got.status.message();
}

TEST_F(TlsTest, WrongHostNameFails) {
  TlsServer server(pki_->Path("wrong-name.pem"), pki_->Path("wrong-name.key"));
  auto fetcher = FetcherWithCa(pki_->Path("ca.pem"));
  Got got = Fetch(*fetcher, "https://localhost:" + std::to_string(server.port()) + "/hello");
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status.message().find("hostname mismatch"), std::string::npos)
      << got.status.message();
  EXPECT_EQ(got.body, "");
}

TEST_F(TlsTest, RedirectFromHttpsToHttpIsRefused) {
  TlsServer server(pki_->Path("server.pem"), pki_->Path("server.key"));
  auto fetcher = FetcherWithCa(pki_->Path("ca.pem"));
  Got got = Fetch(*fetcher, "https://localhost:" + std::to_string(server.port()) + "/to-http");
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status.message().find("https to http"), std::string::npos) << got.status.message();
}

// Sequential fetches over https share one kept-alive connection: one handshake for all.
TEST_F(TlsTest, SequentialFetchesReuseOneConnection) {
  TlsServer server(pki_->Path("server.pem"), pki_->Path("server.key"));
  auto fetcher = FetcherWithCa(pki_->Path("ca.pem"));
  constexpr int kFetches = 5;
  for (int i = 0; i < kFetches; ++i) {
    Got got = Fetch(*fetcher, "https://localhost:" + std::to_string(server.port()) + "/keep");
    ASSERT_TRUE(got.status.ok()) << got.status.ToString();
    EXPECT_EQ(got.body, "kept");
  }
  EXPECT_EQ(server.handshakes(), 1);
}

// A new connection to an origin resumes the TLS session of the last one (an abbreviated
// handshake: no certificate chain, one round trip less before the request on TLS 1.2).
TEST_F(TlsTest, NewConnectionsResumeTheOriginsSession) {
  TlsServer server(pki_->Path("server.pem"), pki_->Path("server.key"));
  auto fetcher = FetcherWithCa(pki_->Path("ca.pem"));
  constexpr int kFetches = 4;
  for (int i = 0; i < kFetches; ++i) {
    // "/hello" closes the connection: every fetch needs a new one.
    Got got = Fetch(*fetcher, "https://localhost:" + std::to_string(server.port()) + "/hello");
    ASSERT_TRUE(got.status.ok()) << got.status.ToString();
    EXPECT_EQ(got.body, "hello over tls");
  }
  EXPECT_EQ(server.handshakes(), kFetches);
  EXPECT_EQ(server.resumed(), kFetches - 1);
}

// A session is only offered to the origin it came from: another name for the same server
// (same address and port) gets a full handshake with its own certificate check.
TEST_F(TlsTest, SessionsAreNotSharedBetweenOrigins) {
  TlsServer server(pki_->Path("server.pem"), pki_->Path("server.key"));
  auto fetcher = FetcherWithCa(pki_->Path("ca.pem"));
  const std::string port = std::to_string(server.port());
  ASSERT_TRUE(Fetch(*fetcher, "https://localhost:" + port + "/hello").status.ok());
  ASSERT_TRUE(Fetch(*fetcher, "https://127.0.0.1:" + port + "/hello").status.ok());
  EXPECT_EQ(server.handshakes(), 2);
  EXPECT_EQ(server.resumed(), 0);
}

TEST_F(TlsTest, UnreadableCaFileIsReported) {
  auto fetcher = FetcherWithCa(pki_->Path("missing.pem"));
  Got got = Fetch(*fetcher, "https://localhost:1/hello");
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status.message().find("missing.pem"), std::string::npos) << got.status.message();
}

TEST_F(TlsTest, HttpsToAPlainHttpServerFails) {
  testing::FixtureUpstream plain;
  plain.Set("/hello", testing::Route{.body = "plain"});
  FetcherOptions options;
  options.ca_file = pki_->Path("ca.pem");
  options.attempts = 1;
  auto fetcher = NewHttpFetcher(options);
  Got got = Fetch(*fetcher, "https://127.0.0.1:" + std::to_string(plain.port()) + "/hello");
  EXPECT_EQ(got.status.code(), StatusCode::kUnavailable) << got.status.ToString();
  EXPECT_NE(got.status.message().find("TLS handshake"), std::string::npos) << got.status.message();
}

}  // namespace
}  // namespace buildcache::upstream
