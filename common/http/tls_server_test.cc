#include "common/http/tls_server.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>

namespace buildcache::http {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace bhttp = boost::beast::http;

// A self-signed certificate for 127.0.0.1, made here so this test needs nothing but OpenSSL.
TlsCredentials SelfSigned() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(cert, X509_get_subject_name(cert));
  X509_set_pubkey(cert, key);
  X509_sign(cert, key, EVP_sha256());
  auto pem = [](auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<size_t>(n));
    BIO_free(bio);
    return out;
  };
  TlsCredentials creds{pem([&](BIO* b) { PEM_write_bio_X509(b, cert); }), pem([&](BIO* b) {
                         PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
                       })};
  X509_free(cert);
  EVP_PKEY_free(key);
  return creds;
}

class TlsServerTest : public ::testing::Test {
 protected:
  void Start(TlsServerOptions options) {
    options.credentials = [this]() -> Result<TlsCredentials> { return creds; };
    auto started = TlsServer::Start(std::move(options), [](const TlsRequest& r) {
      return TlsResponse{200, "text/plain", r.method + " " + r.target + " " + r.body};
    });
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server = std::move(*started);
  }

  // A request over a verified connection; returns the status (0 on a transport failure).
  int Send(const std::string& body, std::string* answer = nullptr) {
    asio::io_context io;
    ssl::context ctx(ssl::context::tls_client);
    ctx.add_certificate_authority(asio::buffer(creds.cert_pem));
    ctx.set_verify_mode(ssl::verify_peer);
    ssl::stream<asio::ip::tcp::socket> stream(io, ctx);
    boost::system::error_code ec;
    stream.next_layer().connect({asio::ip::make_address("127.0.0.1"), server->port()}, ec);
    if (!ec) stream.handshake(ssl::stream_base::client, ec);
    if (ec) return 0;
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/x", 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.body() = body;
    req.prepare_payload();
    bhttp::write(stream, req, ec);
    boost::beast::flat_buffer buffer;
    bhttp::response<bhttp::string_body> res;
    bhttp::read(stream, buffer, res, ec);
    if (ec) return 0;
    if (answer) *answer = res.body();
    return static_cast<int>(res.result_int());
  }

  TlsCredentials creds = SelfSigned();
  std::unique_ptr<TlsServer> server;
};

TEST_F(TlsServerTest, ServesRequestsOverVerifiedTls) {
  Start({});
  std::string answer;
  EXPECT_EQ(Send("hello", &answer), 200);
  EXPECT_EQ(answer, "POST /x hello");
}

TEST_F(TlsServerTest, OversizedBodyGets413) {
  TlsServerOptions options;
  options.max_body_bytes = 10;
  Start(options);
  EXPECT_EQ(Send(std::string(100, 'x')), 413);
}

TEST_F(TlsServerTest, SilentClientIsDisconnectedAfterTheTimeout) {
  TlsServerOptions options;
  options.io_timeout = 300ms;
  Start(options);
  asio::io_context io;
  asio::ip::tcp::socket silent(io);
  silent.connect({asio::ip::make_address("127.0.0.1"), server->port()});
  auto start = std::chrono::steady_clock::now();
  char byte;
  boost::system::error_code ec;
  silent.read_some(asio::buffer(&byte, 1), ec);  // returns when the server closes
  EXPECT_TRUE(ec);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(Send("still serving"), 200);
}

TEST_F(TlsServerTest, UnusableCredentialsFailStart) {
  TlsServerOptions options;
  options.credentials = []() -> Result<TlsCredentials> {
    return TlsCredentials{"not a cert", "not a key"};
  };
  EXPECT_FALSE(TlsServer::Start(options, [](const TlsRequest&) { return TlsResponse{}; }).ok());
  options.credentials = []() -> Result<TlsCredentials> { return NotFound("no file"); };
  EXPECT_FALSE(TlsServer::Start(options, [](const TlsRequest&) { return TlsResponse{}; }).ok());
  options.credentials = [this]() -> Result<TlsCredentials> { return creds; };
  options.listen = "127.0.0.1:99999";
  EXPECT_FALSE(TlsServer::Start(options, [](const TlsRequest&) { return TlsResponse{}; }).ok());
}

}  // namespace
}  // namespace buildcache::http
