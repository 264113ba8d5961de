#pragma once

#include <chrono>
#include <functional>
#include <stop_token>
#include <string>
#include <vector>

#include "common/base/thread_annotations.h"
#include "common/http/tls_server.h"
#include "common/kube/kube_client.h"
#include "common/status/status.h"
#include "operator/pki/certs.h"

namespace buildcache::webhook {

// The certificate functions live in operator/pki (the controllers issue peer certificates too).
using pki::CertMatches;
using pki::CertNotAfter;
using pki::GenerateCa;
using pki::GenerateServingCert;
using pki::KeyPair;
using pki::SystemTime;

using Clock = std::function<SystemTime()>;

struct CertManagerOptions {
  // The Secret (type kubernetes.io/tls) holding the CA and the serving certificate:
  // ca.crt/ca.key, tls.crt/tls.key, and ca-previous.crt while a replaced CA may still be trusted.
  std::string ns{};
  std::string secret_name = "buildcache-webhook-tls";
  // The MutatingWebhookConfiguration whose webhooks' clientConfig.caBundle is kept current ("" to
  // leave it alone).
  std::string webhook_configuration = "buildcache";
  // What the serving certificate covers: the webhook Service's DNS names
  // ("buildcache-webhook.<ns>.svc") and/or addresses.
  std::vector<std::string> dns_names{};
  std::vector<std::string> ip_addresses{};
  std::chrono::seconds ca_validity{std::chrono::hours(24 * 365 * 10)};
  std::chrono::seconds serving_validity{std::chrono::hours(24 * 365)};
  // A certificate expiring within this time is replaced.
  std::chrono::seconds renew_before{std::chrono::hours(24 * 30)};
  Clock clock = [] { return std::chrono::system_clock::now(); };
};

// Keeps the webhook's serving certificate in a Secret and the CA bundle of its
// MutatingWebhookConfiguration current: creates a CA and a serving certificate when the Secret
// does not exist, reissues the serving certificate (same CA) when it nears expiry or does not
// cover the configured names, and replaces the CA when it nears expiry, keeping the previous CA
// in the bundle until it expires so the API server trusts both the old and the new certificate
// while replicas switch over. Several replicas may run it: writes carry the resourceVersion they
// read, and a conflict is retried from a fresh read on the next Sync.
//
// Thread-safe. Call Sync at start (before serving) and then periodically (hourly is plenty).
class CertManager {
 public:
  CertManager(kube::KubeClient* client, CertManagerOptions options);

  // One pass: read the Secret, renew what needs renewing, write the Secret, then patch the
  // webhook configuration's caBundle where it differs. Returns the first error.
  Status Sync();

  // Calls Sync now and then every `interval` (every `retry` after a failure, which is logged)
  // until stop is requested. Blocks; run it on its own thread.
  void Run(std::stop_token stop, std::chrono::seconds interval = std::chrono::hours(1),
           std::chrono::seconds retry = std::chrono::seconds(10));

  // The serving certificate and key the last successful Sync found or made; kUnavailable before
  // that. Usable as an http::CredentialsSource.
  Result<http::TlsCredentials> Current() const;
  // The PEM CA bundle written into caBundle ("" before the first Sync).
  std::string CaBundle() const;

 private:
  Status SyncSecret();
  Status SyncWebhookConfiguration(const std::string& bundle);

  kube::KubeClient* client_;
  const CertManagerOptions options_;
  mutable Mutex mu_;
  http::TlsCredentials current_ GUARDED_BY(mu_);
  std::string bundle_ GUARDED_BY(mu_);
};

// Serving credentials read from files (mounted from a cert-manager Certificate's Secret), read
// again on every call so a renewed certificate is picked up.
http::CredentialsSource FileCredentials(std::string cert_file, std::string key_file);

}  // namespace buildcache::webhook
