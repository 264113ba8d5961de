#include "operator/pki/certs.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <thread>

#include "common/kube/api_error.h"
#include "common/kube/config.h"
#include "common/kube/testing/memory_kube_client.h"
#include "operator/webhook/cert_manager.h"

namespace buildcache::webhook {
namespace {

using namespace std::chrono_literals;
using kube::Json;

const SystemTime kT0 = std::chrono::system_clock::from_time_t(1'800'000'000);

TEST(CertsTest, ServingCertVerifiesAgainstItsCaAndCoversItsNames) {
  Result<KeyPair> ca = GenerateCa("test-ca", kT0, 24h * 3650);
  ASSERT_TRUE(ca.ok()) << ca.status().ToString();
  Result<KeyPair> serving = GenerateServingCert(*ca, {"hook.ns.svc", "hook.ns.svc.cluster.local"},
                                                {"127.0.0.1"}, kT0, 24h * 365);
  ASSERT_TRUE(serving.ok()) << serving.status().ToString();
  EXPECT_TRUE(CertMatches(serving->cert_pem, ca->cert_pem, {"hook.ns.svc"}, {"127.0.0.1"}));
  EXPECT_FALSE(CertMatches(serving->cert_pem, ca->cert_pem, {"other.ns.svc"}, {}));
  EXPECT_FALSE(CertMatches(serving->cert_pem, ca->cert_pem, {}, {"10.0.0.1"}));
  Result<KeyPair> other_ca = GenerateCa("other", kT0, 24h);
  ASSERT_TRUE(other_ca.ok());
  EXPECT_FALSE(CertMatches(serving->cert_pem, other_ca->cert_pem, {"hook.ns.svc"}, {}));
  EXPECT_EQ(*CertNotAfter(serving->cert_pem), kT0 + 24h * 365);
  EXPECT_EQ(*CertNotAfter(ca->cert_pem), kT0 + 24h * 3650);
}

TEST(CertsTest, GarbageIsRejected) {
  EXPECT_FALSE(CertNotAfter("not pem").ok());
  EXPECT_FALSE(GenerateServingCert({"x", "y"}, {"a"}, {}, kT0, 1h).ok());
  Result<KeyPair> ca = GenerateCa("test-ca", kT0, 24h);
  ASSERT_TRUE(ca.ok());
  EXPECT_FALSE(GenerateServingCert(*ca, {}, {}, kT0, 1h).ok());
}

// Secrets and MutatingWebhookConfigurations, with resourceVersions.
using MemoryKube = kube::testing::MemoryKubeClient;

class CertManagerTest : public ::testing::Test {
 protected:
  CertManagerTest() {
    kube.objects["mutatingwebhookconfigurations//buildcache"] = {
        {"apiVersion", "admissionregistration.k8s.io/v1"},
        {"kind", "MutatingWebhookConfiguration"},
        {"metadata", {{"name", "buildcache"}, {"resourceVersion", "0"}}},
        {"webhooks",
         {{{"name", "pods.buildcache.io"},
           {"clientConfig",
            {{"service", {{"name", "buildcache-webhook"}, {"namespace", "bc"}}}}}}}}};
    options.ns = "bc";
    options.dns_names = {"buildcache-webhook.bc.svc"};
    options.ca_validity = 24h * 3650;
    options.serving_validity = 24h * 365;
    options.renew_before = 24h * 30;
    options.clock = [this] { return now; };
  }
  Json Secret() { return kube.objects.at("secrets/bc/buildcache-webhook-tls"); }
  std::string SecretField(const char* key) {
    return *kube::Base64Decode(Secret()["data"].value(key, ""));
  }
  std::string CaBundle() {
    return *kube::Base64Decode(
        kube.objects.at("mutatingwebhookconfigurations//buildcache")["webhooks"][0]["clientConfig"]
            .value("caBundle", ""));
  }

  MemoryKube kube;
  CertManagerOptions options;
  SystemTime now = kT0;
};

TEST_F(CertManagerTest, FirstSyncCreatesTheSecretAndSetsTheCaBundle) {
  CertManager certs(&kube, options);
  EXPECT_FALSE(certs.Current().ok());
  ASSERT_TRUE(certs.Sync().ok());
  EXPECT_EQ(Secret()["type"], "kubernetes.io/tls");
  std::string ca = SecretField("ca.crt");
  EXPECT_EQ(CaBundle(), ca);
  Result<http::TlsCredentials> current = certs.Current();
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->cert_pem, SecretField("tls.crt"));
  EXPECT_TRUE(CertMatches(current->cert_pem, ca, options.dns_names, {}));
}

TEST_F(CertManagerTest, SteadyStateWritesNothing) {
  CertManager certs(&kube, options);
  ASSERT_TRUE(certs.Sync().ok());
  int writes = kube.writes;
  now += 24h * 300;
  ASSERT_TRUE(certs.Sync().ok());
  // Another replica adopts the same Secret.
  CertManager other(&kube, options);
  ASSERT_TRUE(other.Sync().ok());
  EXPECT_EQ(kube.writes, writes);
  EXPECT_EQ(other.Current()->cert_pem, certs.Current()->cert_pem);
}

TEST_F(CertManagerTest, ServingCertIsRenewedBeforeItExpiresWithTheSameCa) {
  CertManager certs(&kube, options);
  ASSERT_TRUE(certs.Sync().ok());
  std::string ca = SecretField("ca.crt");
  std::string old_cert = certs.Current()->cert_pem;
  now += 24h * 340;  // 25 days left < renew_before
  ASSERT_TRUE(certs.Sync().ok());
  EXPECT_NE(certs.Current()->cert_pem, old_cert);
  EXPECT_EQ(SecretField("ca.crt"), ca);
  EXPECT_EQ(*CertNotAfter(certs.Current()->cert_pem), now + options.serving_validity);
}

TEST_F(CertManagerTest, CaIsReplacedBeforeItExpiresAndTheOldOneStaysTrusted) {
  CertManager certs(&kube, options);
  ASSERT_TRUE(certs.Sync().ok());
  std::string old_ca = SecretField("ca.crt");
  now += 24h * 3640;  // 10 days left
  ASSERT_TRUE(certs.Sync().ok());
  std::string new_ca = SecretField("ca.crt");
  EXPECT_NE(new_ca, old_ca);
  EXPECT_EQ(CaBundle(), new_ca + old_ca);
  EXPECT_TRUE(CertMatches(certs.Current()->cert_pem, new_ca, options.dns_names, {}));
  now += 24h * 11;  // the old CA has expired: it leaves the bundle
  ASSERT_TRUE(certs.Sync().ok());
  EXPECT_EQ(CaBundle(), new_ca);
}

TEST_F(CertManagerTest, NewNamesGetANewServingCert) {
  CertManager certs(&kube, options);
  ASSERT_TRUE(certs.Sync().ok());
  options.ip_addresses = {"127.0.0.1"};
  CertManager moved(&kube, options);
  ASSERT_TRUE(moved.Sync().ok());
  EXPECT_TRUE(CertMatches(moved.Current()->cert_pem, SecretField("ca.crt"), options.dns_names,
                          {"127.0.0.1"}));
}

TEST_F(CertManagerTest, MissingWebhookConfigurationIsAnErrorToRetry) {
  kube.objects.erase("mutatingwebhookconfigurations//buildcache");
  CertManager certs(&kube, options);
  EXPECT_EQ(certs.Sync().code(), StatusCode::kNotFound);
  EXPECT_TRUE(certs.Current().ok());  // serving can start anyway
}

TEST_F(CertManagerTest, RunRetriesUntilTheWebhookConfigurationExistsAndStopsOnRequest) {
  const std::string key = "mutatingwebhookconfigurations//buildcache";
  Json config = kube.At(key);
  kube.objects.erase(key);
  CertManager certs(&kube, options);
  std::jthread runner([&](std::stop_token stop) { certs.Run(stop, 1h, 1s); });
  std::this_thread::sleep_for(100ms);
  kube.Put(key, config);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (kube.At(key)["webhooks"][0]["clientConfig"].value("caBundle", "").empty()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "caBundle never set";
    std::this_thread::sleep_for(50ms);
  }
  auto start = std::chrono::steady_clock::now();
  runner.request_stop();
  runner.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

}  // namespace
}  // namespace buildcache::webhook
