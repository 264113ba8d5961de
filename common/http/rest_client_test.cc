// RestClient against a real HTTPS server on loopback (Boost.Asio + OpenSSL in this process), with
// certificates made by the openssl command line tool for each run.

#include "common/http/rest_client.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/buffers_iterator.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace buildcache::http {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A CA, a second CA nobody trusts, server certificates for 127.0.0.1 and for another name, and
// a client certificate, made once for the whole test binary.
class Pki {
 public:
  Pki() {
    char tmpl[] = "/tmp/bc-rest-client-XXXXXX";
    const char* dir = mkdtemp(tmpl);
    if (dir == nullptr) return;
    dir_ = dir;
    ok_ = MakeCa("ca") && MakeCa("other-ca") &&
          MakeLeaf("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1", "serverAuth") &&
          MakeLeaf("wrong-name", "ca", "subjectAltName=DNS:elsewhere.example.internal",
                   "serverAuth") &&
          MakeLeaf("client", "ca", "", "clientAuth") &&
          MakeLeaf("stranger", "other-ca", "", "clientAuth");
  }
  ~Pki() {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  bool ok() const { return ok_; }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Read(const std::string& name) const {
    std::ifstream in(Path(name));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  bool Run(const std::string& command) {
    std::string full = "cd '" + dir_ + "' && " + command + " >>openssl.log 2>&1";
    return std::system(full.c_str()) == 0;
  }
  bool MakeCa(const std::string& name) {
    return Run(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
        name + ".key -out " + name + ".crt -days 2 -subj '/CN=rest client test " + name +
        "' -addext basicConstraints=critical,CA:TRUE -addext "
        "keyUsage=critical,keyCertSign,cRLSign");
  }
  bool MakeLeaf(const std::string& name, const std::string& ca, const std::string& san,
                const std::string& usage) {
    std::ofstream(Path(name + ".ext"))
        << san << "\nbasicConstraints=CA:FALSE\n"
        << "keyUsage=digitalSignature\nextendedKeyUsage=" << usage << "\n";
    return Run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " +
               name + ".key -out " + name + ".csr -subj '/CN=" + name + "'") &&
           Run("openssl x509 -req -in " + name + ".csr -CA " + ca + ".crt -CAkey " + ca +
               ".key -CAcreateserial -out " + name + ".crt -days 2 -extfile " + name + ".ext");
  }

  std::string dir_;
  bool ok_ = false;
};

const Pki& TestPki() {
  static const Pki* pki = new Pki();
  return *pki;
}

struct ServerRequest {
  std::string method, target, body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string client_cn;                       // "" without a client certificate
};

// Writes one response on a server connection.
class Responder {
 public:
  explicit Responder(ssl::stream<tcp::socket>* stream) : stream_(stream) {}
  void Send(int status, const std::string& body, const std::string& extra_headers = "") {
    Write("HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body);
  }
  void StartChunked(int status) {
    Write("HTTP/1.1 " + std::to_string(status) + " X\r\nTransfer-Encoding: chunked\r\n\r\n");
  }
  void Chunk(const std::string& data) {
    char size[32];
    snprintf(size, sizeof(size), "%zx\r\n", data.size());
    Write(size + data + "\r\n");
  }
  void EndChunked() { Write("0\r\n\r\n"); }
  bool ok() const { return ok_; }

 private:
  void Write(const std::string& data) {
    boost::system::error_code ec;
    asio::write(*stream_, asio::buffer(data), ec);
    if (ec) ok_ = false;
  }
  ssl::stream<tcp::socket>* stream_;
  bool ok_ = true;
};

// A small HTTPS/1.1 server with keep-alive; each connection gets its own thread.
class TlsServer {
 public:
  using Handler = std::function<void(const ServerRequest&, Responder&)>;

  TlsServer(const std::string& cert_name, bool require_client_cert, Handler handler)
      : ctx_(ssl::context::tls_server), acceptor_(io_), handler_(std::move(handler)) {
    const Pki& pki = TestPki();
    ctx_.use_certificate_chain_file(pki.Path(cert_name + ".crt"));
    ctx_.use_private_key_file(pki.Path(cert_name + ".key"), ssl::context::pem);
    ctx_.load_verify_file(pki.Path("ca.crt"));
    ctx_.set_verify_mode(require_client_cert ? ssl::verify_peer | ssl::verify_fail_if_no_peer_cert
                                             : ssl::verify_peer);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~TlsServer() {
    stop_ = true;
    {
      asio::io_context io;
      tcp::socket s(io);
      boost::system::error_code ec;
      s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    }
    accept_thread_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);  // wakes connection threads blocked in reads
    }
    for (auto& t : threads_) t.join();
  }

  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  int handshake_failures() const { return handshake_failures_; }

 private:
  void AcceptLoop() {
    while (!stop_) {
      tcp::socket sock(io_);
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      if (ec || stop_) continue;
      std::lock_guard lock(mu_);
      fds_.push_back(sock.native_handle());
      threads_.emplace_back([this, s = std::move(sock)]() mutable { Serve(std::move(s)); });
    }
  }

  void Serve(tcp::socket sock) {
    ssl::stream<tcp::socket> stream(std::move(sock), ctx_);
    boost::system::error_code ec;
    stream.handshake(ssl::stream_base::server, ec);
    if (ec) {
      ++handshake_failures_;
      return;
    }
    std::string client_cn;
    if (X509* peer = SSL_get_peer_certificate(stream.native_handle())) {
      char cn[256] = {};
      X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
      client_cn = cn;
      X509_free(peer);
    }
    asio::streambuf buf;
    while (!stop_) {
      size_t n = asio::read_until(stream, buf, "\r\n\r\n", ec);
      if (ec) return;
      std::string head(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
      buf.consume(n);
      ServerRequest req;
      req.client_cn = client_cn;
      size_t line_end = head.find("\r\n");
      std::string first = head.substr(0, line_end);
      size_t sp1 = first.find(' '), sp2 = first.rfind(' ');
      req.method = first.substr(0, sp1);
      req.target = first.substr(sp1 + 1, sp2 - sp1 - 1);
      size_t pos = line_end + 2;
      while (pos < head.size()) {
        size_t end = head.find("\r\n", pos);
        std::string line = head.substr(pos, end - pos);
        pos = end + 2;
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        req.headers[name] = value;
      }
      size_t length =
          req.headers.count("content-length") ? std::stoul(req.headers["content-length"]) : 0;
      if (buf.size() < length) {
        asio::read(stream, buf, asio::transfer_exactly(length - buf.size()), ec);
      }
      if (ec) return;
      req.body.assign(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + length);
      buf.consume(length);
      Responder responder(&stream);
      handler_(req, responder);
      if (!responder.ok()) return;
    }
  }

  asio::io_context io_;
  ssl::context ctx_;
  tcp::acceptor acceptor_;
  Handler handler_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> handshake_failures_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
};

// Records requests and answers 200 with the body "ok".
struct Recorder {
  std::mutex mu;
  std::vector<ServerRequest> seen;
  TlsServer::Handler handler() {
    return [this](const ServerRequest& req, Responder& out) {
      {
        std::lock_guard lock(mu);
        seen.push_back(req);
      }
      out.Send(200, "ok", "Content-Type: text/plain\r\n");
    };
  }
  ServerRequest last() {
    std::lock_guard lock(mu);
    return seen.back();
  }
};

RestClientOptions Options(const std::string& url) {
  RestClientOptions o;
  o.base_url = url;
  o.ca_file = TestPki().Path("ca.crt");
  return o;
}

std::unique_ptr<RestClient> MustCreate(RestClientOptions options) {
  auto client = RestClient::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(*client) : nullptr;
}

class RestClientTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(TestPki().ok()) << "openssl failed; see its log"; }
};

TEST_F(RestClientTest, GetOverVerifiedTlsReturnsStatusHeadersAndBody) {
  Recorder rec;
  TlsServer server("server", false, rec.handler());
  auto client = MustCreate(Options(server.url()));
  auto resp = client->Do({.method = "GET", .target = "/api/v1?x=1"});
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, "ok");
  EXPECT_EQ(resp->header("content-type"), "text/plain");
  EXPECT_EQ(rec.last().target, "/api/v1?x=1");
  EXPECT_EQ(rec.last().headers["user-agent"], "buildcache");
  EXPECT_EQ(rec.last().headers.count("authorization"), 0u);
}

TEST_F(RestClientTest, CaAsPemDataWorksLikeAFile) {
  Recorder rec;
  TlsServer server("server", false, rec.handler());
  RestClientOptions o;
  o.base_url = server.url();
  o.ca_pem = TestPki().Read("ca.crt");
  auto resp = MustCreate(o)->Do({.target = "/"});
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
}

TEST_F(RestClientTest, ServerSignedByAnotherCaIsRejected) {
  Recorder rec;
  TlsServer server("server", false, rec.handler());
  RestClientOptions o = Options(server.url());
  o.ca_file = TestPki().Path("other-ca.crt");
  auto resp = MustCreate(o)->Do({.target = "/"});
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), StatusCode::kUnavailable) << resp.status().ToString();
  EXPECT_TRUE(rec.seen.empty());
}

TEST_F(RestClientTest, WithoutACaOnlySystemCasAreTrusted) {
  Recorder rec;
  TlsServer server("server", false, rec.handler());
  RestClientOptions o;
  o.base_url = server.url();
  auto resp = MustCreate(o)->Do({.target = "/"});
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), StatusCode::kUnavailable);
}

TEST_F(RestClientTest, CertificateForAnotherHostIsRejected) {
  Recorder rec;
  TlsServer server("wrong-name", false, rec.handler());
  auto resp = MustCreate(Options(server.url()))->Do({.target = "/"});
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), StatusCode::kUnavailable) << resp.status().ToString();
  EXPECT_TRUE(rec.seen.empty());
}

TEST_F(RestClientTest, ClientCertificateFromFilesIsPresented) {
  Recorder rec;
  TlsServer server("server", true, rec.handler());
  RestClientOptions o = Options(server.url());
  o.client_cert_file = TestPki().Path("client.crt");
  o.client_key_file = TestPki().Path("client.key");
  auto resp = MustCreate(o)->Do({.target = "/"});
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(rec.last().client_cn, "client");
}

TEST_F(RestClientTest, ClientCertificateFromPemData) {
  Recorder rec;
  TlsServer server("server", true, rec.handler());
  RestClientOptions o = Options(server.url());
  o.client_cert_pem = TestPki().Read("client.crt");
  o.client_key_pem = TestPki().Read("client.key");
  auto resp = MustCreate(o)->Do({.target = "/"});
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(rec.last().client_cn, "client");
}

TEST_F(RestClientTest, ServerRequiringACertificateRefusesAClientWithout) {
  Recorder rec;
  TlsServer server("server", true, rec.handler());
  auto resp = MustCreate(Options(server.url()))->Do({.target = "/"});
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(rec.seen.empty());
}

TEST_F(RestClientTest, KeyThatDoesNotMatchTheCertificateIsRejectedAtCreate) {
  RestClientOptions o = Options("https://127.0.0.1:1");
  o.client_cert_file = TestPki().Path("client.crt");
  o.client_key_file = TestPki().Path("stranger.key");
  auto client = RestClient::Create(o);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(client.status().message().find("does not match"), std::string::npos);
}

TEST_F(RestClientTest, BadOptionsAreRejectedAtCreate) {
  auto missing_ca = Options("https://127.0.0.1:1");
  missing_ca.ca_file = "/nonexistent/ca.crt";
  EXPECT_EQ(RestClient::Create(missing_ca).status().code(), StatusCode::kNotFound);

  auto garbage_ca = Options("https://127.0.0.1:1");
  garbage_ca.ca_file.clear();
  garbage_ca.ca_pem = "not a certificate";
  EXPECT_EQ(RestClient::Create(garbage_ca).status().code(), StatusCode::kInvalidArgument);

  auto cert_without_key = Options("https://127.0.0.1:1");
  cert_without_key.client_cert_file = TestPki().Path("client.crt");
  EXPECT_EQ(RestClient::Create(cert_without_key).status().code(), StatusCode::kInvalidArgument);

  EXPECT_EQ(RestClient::Create(Options("ftp://127.0.0.1")).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(RestClient::Create(Options("https://")).status().code(), StatusCode::kInvalidArgument);

  RestClientOptions plain;
  plain.base_url = "http://127.0.0.1:1";
  plain.bearer_token = "secret";
  auto refused = RestClient::Create(plain);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("only sent over https"), std::string::npos);
}

TEST_F(RestClientTest, BearerTokenIsSent) {
  Recorder rec;
  TlsServer server("server", false, rec.handler());
  RestClientOptions o = Options(server.url());
  o.bearer_token = "static-token";
  ASSERT_TRUE(MustCreate(o)->Do({.target = "/"}).ok());
  EXPECT_EQ(rec.last().headers["authorization"], "Bearer static-token");
}

TEST_F(RestClientTest, RotatedTokenFileIsReadAgain) {
  Recorder rec;
  TlsServer server("server", false, rec.handler());
  std::string dir = TestPki().Path("token-rotation");
  std::filesystem::create_directories(dir);
  std::string path = dir + "/token";
  std::ofstream(path) << "first-token\n";
  RestClientOptions o = Options(server.url());
  o.bearer_token = "ignored-when-a-file-is-set";
  o.bearer_token_file = path;
  auto client = MustCreate(o);
  ASSERT_TRUE(client->Do({.target = "/"}).ok());
  EXPECT_EQ(rec.last().headers["authorization"], "Bearer first-token");

  // The kubelet replaces the file atomically; do the same.
  std::ofstream(path + ".new") << "second-token";
  std::filesystem::rename(path + ".new", path);
  ASSERT_TRUE(client->Do({.target = "/"}).ok());
  EXPECT_EQ(rec.last().headers["authorization"], "Bearer second-token");

  // A vanished file keeps the last token rather than sending none.
  std::filesystem::remove(path);
  ASSERT_TRUE(client->Do({.target = "/"}).ok());
  EXPECT_EQ(rec.last().headers["authorization"], "Bearer second-token");
}

TEST_F(RestClientTest, MissingTokenFileFailsAtCreate) {
  RestClientOptions o = Options("https://127.0.0.1:1");
  o.bearer_token_file = "/nonexistent/token";
  EXPECT_EQ(RestClient::Create(o).status().code(), StatusCode::kNotFound);
}

TEST_F(RestClientTest, MethodHeadersAndBodyAreSent) {
  Recorder rec;
  TlsServer server("server", false, rec.handler());
  auto client = MustCreate(Options(server.url()));
  auto resp = client->Do({.method = "PATCH",
                          .target = "/apis/x/v1/things/a",
                          .headers = {{"Content-Type", "application/merge-patch+json"},
                                      {"Accept", "application/json"}},
                          .body = R"({"spec":{"a":1}})"});
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  ServerRequest req = rec.last();
  EXPECT_EQ(req.method, "PATCH");
  EXPECT_EQ(req.body, R"({"spec":{"a":1}})");
  EXPECT_EQ(req.headers["content-type"], "application/merge-patch+json");
  EXPECT_EQ(req.headers["accept"], "application/json");
}

TEST_F(RestClientTest, ErrorStatusIsAResponseNotAFailure) {
  TlsServer server("server", false, [](const ServerRequest&, Responder& out) {
    out.Send(404, R"({"kind":"Status","reason":"NotFound"})");
  });
  auto resp = MustCreate(Options(server.url()))->Do({.target = "/missing"});
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status, 404);
  EXPECT_EQ(resp->body, R"({"kind":"Status","reason":"NotFound"})");
}

TEST_F(RestClientTest, ConnectionRefusedIsUnavailable) {
  uint16_t port;
  {
    asio::io_context io;
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }
  auto resp = MustCreate(Options("https://127.0.0.1:" + std::to_string(port)))->Do({.target = "/"});
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), StatusCode::kUnavailable);
}

TEST_F(RestClientTest, SilentServerTimesOut) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  TlsServer server("server", false,
                   [released](const ServerRequest&, Responder&) { released.wait_for(10s); });
  auto client = MustCreate(Options(server.url()));
  auto start = std::chrono::steady_clock::now();
  auto resp = client->Do({.target = "/slow", .timeout = 300ms});
  release.set_value();
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), StatusCode::kDeadlineExceeded) << resp.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

// The server sends the second part only after the client has seen the first, so the test can
// only pass if lines are delivered as they arrive rather than when the body ends.
TEST_F(RestClientTest, StreamDeliversLinesAsTheyArrive) {
  std::promise<void> first_seen;
  std::shared_future<void> seen = first_seen.get_future().share();
  TlsServer server("server", false, [seen](const ServerRequest&, Responder& out) {
    out.StartChunked(200);
    out.Chunk("{\"n\":1}\n{\"n\":");
    if (seen.wait_for(10s) != std::future_status::ready) return;
    out.Chunk("2}\r\n{\"n\":3}");
    out.EndChunked();
  });
  auto client = MustCreate(Options(server.url()));
  std::vector<std::string> lines;
  auto resp = client->StreamLines({.target = "/watch"}, [&](std::string_view line) {
    lines.emplace_back(line);
    if (lines.size() == 1) first_seen.set_value();
    return true;
  });
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(lines, (std::vector<std::string>{R"({"n":1})", R"({"n":2})", R"({"n":3})"}));
}

TEST_F(RestClientTest, StreamEndsWhenTheHandlerSaysSo) {
  TlsServer server("server", false, [](const ServerRequest&, Responder& out) {
    out.StartChunked(200);
    for (int i = 0; i < 100 && out.ok(); ++i) {
      out.Chunk("line " + std::to_string(i) + "\n");
      std::this_thread::sleep_for(10ms);
    }
    out.EndChunked();
  });
  auto client = MustCreate(Options(server.url()));
  int count = 0;
  auto resp = client->StreamLines({.target = "/"}, [&](std::string_view) { return ++count < 3; });
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(count, 3);
}

TEST_F(RestClientTest, StopRequestCancelsAStream) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  TlsServer server("server", false, [released](const ServerRequest&, Responder& out) {
    out.StartChunked(200);
    out.Chunk("hello\n");
    released.wait_for(10s);  // then nothing more: the client must not wait for it
  });
  auto client = MustCreate(Options(server.url()));
  std::stop_source stop;
  auto start = std::chrono::steady_clock::now();
  auto resp = client->StreamLines(
      {.target = "/", .timeout = 30'000ms},
      [&](std::string_view) {
        std::thread([&stop] {
          std::this_thread::sleep_for(100ms);
          stop.request_stop();
        }).detach();
        return true;
      },
      stop.get_token());
  release.set_value();
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), StatusCode::kCancelled) << resp.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST_F(RestClientTest, AlreadyStoppedTokenFailsFast) {
  std::stop_source stop;
  stop.request_stop();
  auto client = MustCreate(Options("https://127.0.0.1:1"));
  EXPECT_EQ(client->Do({.target = "/"}, stop.get_token()).status().code(), StatusCode::kCancelled);
}

TEST_F(RestClientTest, ErrorResponseOfAStreamIsReadWhole) {
  TlsServer server("server", false, [](const ServerRequest&, Responder& out) {
    out.Send(410, R"({"kind":"Status","code":410})");
  });
  auto client = MustCreate(Options(server.url()));
  int calls = 0;
  auto resp = client->StreamLines({.target = "/"}, [&](std::string_view) { return ++calls, true; });
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->status, 410);
  EXPECT_EQ(resp->body, R"({"kind":"Status","code":410})");
  EXPECT_EQ(calls, 0);
}

TEST_F(RestClientTest, ConcurrentRequestsShareOneClient) {
  Recorder rec;
  TlsServer server("server", false, rec.handler());
  auto client = MustCreate(Options(server.url()));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto resp = client->Do({.target = "/"});
        if (resp.ok() && resp->status == 200) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 40);
}

TEST(LineSplitterTest, SplitsAcrossChunksAndStripsCarriageReturns) {
  LineSplitter splitter(100);
  std::vector<std::string> lines;
  LineHandler collect = [&](std::string_view l) { return lines.emplace_back(l), true; };
  bool too_long = false;
  EXPECT_TRUE(splitter.Feed("ab", collect, &too_long));
  EXPECT_TRUE(splitter.Feed("c\r\nd\n\nef", collect, &too_long));
  EXPECT_TRUE(splitter.Finish(collect));
  EXPECT_EQ(lines, (std::vector<std::string>{"abc", "d", "", "ef"}));
}

TEST(LineSplitterTest, OverlongLineIsReported) {
  LineSplitter splitter(4);
  bool too_long = false;
  LineHandler ignore = [](std::string_view) { return true; };
  EXPECT_TRUE(splitter.Feed("abc", ignore, &too_long));
  EXPECT_FALSE(splitter.Feed("defg\n", ignore, &too_long));
  EXPECT_TRUE(too_long);
}

TEST(UrlEncodeTest, EncodesAllButUnreserved) {
  EXPECT_EQ(UrlEncode("app=web,tier!=db"), "app%3Dweb%2Ctier%21%3Ddb");
  EXPECT_EQ(UrlEncode("a-b.c_d~e"), "a-b.c_d~e");
  EXPECT_EQ(UrlEncode("a b/c"), "a%20b%2Fc");
}

}  // namespace
}  // namespace buildcache::http
