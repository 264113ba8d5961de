#include "operator/webhook/webhook_server.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fstream>
#include <mutex>

#include "operator/webhook/cert_manager.h"

namespace buildcache::webhook {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace bhttp = boost::beast::http;

class EmptyLookup : public CacheLookup {
 public:
  Result<api::BuildCache> GetBuildCache(const std::string&, const std::string& name) override {
    return NotFound("buildcaches " + name);
  }
  Result<std::map<std::string, std::string>> NamespaceLabels(const std::string&) override {
    return std::map<std::string, std::string>{};
  }
};

struct Reply {
  int status = 0;
  std::string body;
  std::string peer_cert_cn;
};

// One HTTPS request to 127.0.0.1:port, verifying the server against ca_pem. Fails the test (and
// returns status 0) when the handshake does not verify.
Reply Request(uint16_t port, const std::string& ca_pem, const std::string& method,
              const std::string& target, const std::string& body) {
  asio::io_context io;
  ssl::context ctx(ssl::context::tls_client);
  ctx.add_certificate_authority(asio::buffer(ca_pem));
  ctx.set_verify_mode(ssl::verify_peer);
  ssl::stream<asio::ip::tcp::socket> stream(io, ctx);
  boost::system::error_code ec;
  stream.next_layer().connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) {
    ADD_FAILURE() << "connect: " << ec.message();
    return {};
  }
  SSL_set1_host(stream.native_handle(), "127.0.0.1");
  stream.handshake(ssl::stream_base::client, ec);
  if (ec) {
    ADD_FAILURE() << "handshake: " << ec.message();
    return {};
  }
  bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  bhttp::write(stream, req, ec);
  boost::beast::flat_buffer buffer;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(stream, buffer, res, ec);
  if (ec) {
    ADD_FAILURE() << "read: " << ec.message();
    return {};
  }
  return {static_cast<int>(res.result_int()), res.body(), ""};
}

class WebhookServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto now = std::chrono::system_clock::now();
    ca = *GenerateCa("test", now, 24h);
    KeyPair serving = *GenerateServingCert(ca, {}, {"127.0.0.1"}, now, 24h);
    creds = {serving.cert_pem, serving.key_pem};
    WebhookServerOptions options;
    options.listen = "127.0.0.1:0";
    options.credentials = [this]() -> Result<http::TlsCredentials> {
      std::lock_guard lock(mu);
      return creds;
    };
    auto started = WebhookServer::Start(std::move(options), &lookup, nullptr);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server = std::move(*started);
  }

  KeyPair ca;
  std::mutex mu;
  http::TlsCredentials creds;
  EmptyLookup lookup;
  std::unique_ptr<WebhookServer> server;
};

TEST_F(WebhookServerTest, HealthzAnswersOverTls) {
  Reply r = Request(server->port(), ca.cert_pem, "GET", "/healthz", "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(Request(server->port(), ca.cert_pem, "GET", "/nope", "").status, 404);
}

TEST_F(WebhookServerTest, MutatePodsAnswersEveryReviewWithAllowed) {
  Json review = {{"apiVersion", "admission.k8s.io/v1"},
                 {"kind", "AdmissionReview"},
                 {"request",
                  {{"uid", "abc"},
                   {"namespace", "ns"},
                   {"object",
                    {{"metadata", {{"annotations", {{"buildcache.io/cache", "x"}}}}},
                     {"spec", {{"containers", Json::array()}}}}}}}};
  Reply r = Request(server->port(), ca.cert_pem, "POST", "/mutate-pods", review.dump());
  ASSERT_EQ(r.status, 200);
  Json answer = Json::parse(r.body);
  EXPECT_EQ(answer["response"]["uid"], "abc");
  EXPECT_TRUE(answer["response"]["allowed"].get<bool>());
  EXPECT_EQ(answer["response"]["warnings"].size(), 1u);

  r = Request(server->port(), ca.cert_pem, "POST", "/mutate-pods", "{not json");
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(Json::parse(r.body)["response"]["allowed"].get<bool>());
}

TEST(HandleWebhookRequestTest, CountsEachReviewByResult) {
  metrics::Registry registry;
  WebhookMetrics metrics(registry);
  EmptyLookup lookup;
  http::TlsRequest request{"POST", "/mutate-pods", "application/json", "{}"};
  HandleWebhookRequest(request, lookup, nullptr, &metrics);
  request.body = R"({"request":{"uid":"u","operation":"CREATE","object":{"metadata":{}}}})";
  HandleWebhookRequest(request, lookup, nullptr, &metrics);
  HandleWebhookRequest(request, lookup, nullptr, &metrics);
  EXPECT_EQ(metrics.admissions.With({"failed"}).Value(), 1);
  EXPECT_EQ(metrics.admissions.With({"not_requested"}).Value(), 2);
  std::string text = registry.Render();
  EXPECT_NE(text.find("buildcache_webhook_admission_duration_seconds_count 3"), std::string::npos)
      << text;
  // /healthz and unknown paths are not reviews.
  HandleWebhookRequest({"GET", "/healthz", "", ""}, lookup, nullptr, &metrics);
  EXPECT_EQ(metrics.admission_duration.With().Snap().count, 3u);
}

TEST_F(WebhookServerTest, RotatedCertificatesAreServedToNewConnections) {
  auto now = std::chrono::system_clock::now();
  KeyPair new_ca = *GenerateCa("rotated", now, 24h);
  KeyPair serving = *GenerateServingCert(new_ca, {}, {"127.0.0.1"}, now, 24h);
  {
    std::lock_guard lock(mu);
    creds = {serving.cert_pem, serving.key_pem};
  }
  EXPECT_EQ(Request(server->port(), new_ca.cert_pem, "GET", "/healthz", "").status, 200);
}

TEST_F(WebhookServerTest, StopEndsIdleConnections) {
  asio::io_context io;
  asio::ip::tcp::socket idle(io);
  idle.connect({asio::ip::make_address("127.0.0.1"), server->port()});
  auto start = std::chrono::steady_clock::now();
  server->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(FileCredentialsTest, CertManagerModeServesTheMountedFiles) {
  auto now = std::chrono::system_clock::now();
  KeyPair ca = *GenerateCa("cert-manager", now, 24h);
  KeyPair serving = *GenerateServingCert(ca, {}, {"127.0.0.1"}, now, 24h);
  std::string dir = ::testing::TempDir();
  auto write = [](const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  };
  write(dir + "/tls.crt", serving.cert_pem);
  write(dir + "/tls.key", serving.key_pem);
  EmptyLookup lookup;
  WebhookServerOptions options;
  options.listen = "127.0.0.1:0";
  options.credentials = FileCredentials(dir + "/tls.crt", dir + "/tls.key");
  auto server = WebhookServer::Start(std::move(options), &lookup, nullptr);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ(Request((*server)->port(), ca.cert_pem, "GET", "/healthz", "").status, 200);
  // A renewed certificate (as cert-manager writes it) is used by the next connection.
  KeyPair ca2 = *GenerateCa("cert-manager-2", now, 24h);
  KeyPair renewed = *GenerateServingCert(ca2, {}, {"127.0.0.1"}, now, 48h);
  write(dir + "/tls.crt", renewed.cert_pem);
  write(dir + "/tls.key", renewed.key_pem);
  EXPECT_EQ(Request((*server)->port(), ca2.cert_pem, "GET", "/healthz", "").status, 200);
  EXPECT_FALSE(FileCredentials(dir + "/missing.crt", dir + "/tls.key")().ok());
}

}  // namespace
}  // namespace buildcache::webhook
