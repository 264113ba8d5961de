#include "operator/pki/tls_secret.h"

#include <gtest/gtest.h>

#include <chrono>

#include "common/kube/config.h"

namespace buildcache::pki {
namespace {

using namespace std::chrono_literals;

const SystemTime kT0 = SystemTime{} + 24h * 365 * 56;

TEST(TlsSecretTest, WhatIsWrittenReadsBack) {
  TlsSecretData data{
      .ca = {"CA CERT", "CA KEY"}, .previous_ca = "OLD CA", .leaf = {"LEAF CERT", "LEAF KEY"}};
  kube::Json secret = TlsSecret({{"name", "s"}, {"namespace", "ns"}}, "kubernetes.io/tls", data);
  EXPECT_EQ(secret["kind"], "Secret");
  EXPECT_EQ(secret["type"], "kubernetes.io/tls");
  EXPECT_EQ(secret["metadata"]["name"], "s");
  EXPECT_EQ(secret["data"][kCaCertKey], kube::Base64Encode("CA CERT"));
  EXPECT_EQ(secret["data"][kTlsKeyKey], kube::Base64Encode("LEAF KEY"));
  TlsSecretData back = ReadTlsSecret(secret);
  EXPECT_EQ(back.ca.cert_pem, "CA CERT");
  EXPECT_EQ(back.ca.key_pem, "CA KEY");
  EXPECT_EQ(back.previous_ca, "OLD CA");
  EXPECT_EQ(back.leaf.cert_pem, "LEAF CERT");
  EXPECT_EQ(back.leaf.key_pem, "LEAF KEY");
}

TEST(TlsSecretTest, EmptyFieldsAreLeftOut) {
  kube::Json data = TlsSecretDataJson({.ca = {.cert_pem = "BUNDLE"}, .leaf = {"C", "K"}});
  EXPECT_EQ(data.size(), 3u) << data.dump();
  EXPECT_FALSE(data.contains(kCaKeyKey));
  EXPECT_FALSE(data.contains(kPreviousCaKey));
}

TEST(TlsSecretTest, MissingOrBrokenSecretsReadAsEmpty) {
  EXPECT_EQ(ReadTlsSecret(kube::Json()).ca.cert_pem, "");
  EXPECT_EQ(ReadTlsSecret(kube::Json::array()).leaf.key_pem, "");
  kube::Json broken = {{"data", {{kCaCertKey, "%%% not base64 %%%"}, {kTlsCertKey, 7}}}};
  TlsSecretData read = ReadTlsSecret(broken);
  EXPECT_EQ(read.ca.cert_pem, "");
  EXPECT_EQ(read.leaf.cert_pem, "");
}

TEST(TlsSecretTest, ExpiresWithin) {
  Result<KeyPair> ca = GenerateCa("test-ca", kT0, 24h * 10);
  ASSERT_TRUE(ca.ok()) << ca.status().ToString();
  EXPECT_FALSE(ExpiresWithin(ca->cert_pem, kT0, 24h));
  EXPECT_TRUE(ExpiresWithin(ca->cert_pem, kT0, 24h * 11));
  EXPECT_TRUE(ExpiresWithin(ca->cert_pem, kT0 + 24h * 10, 0s));
  EXPECT_TRUE(ExpiresWithin("not a certificate", kT0, 0s)) << "unreadable counts as expiring";
}

}  // namespace
}  // namespace buildcache::pki
