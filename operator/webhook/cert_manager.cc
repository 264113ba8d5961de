#include "operator/webhook/cert_manager.h"

#include <fstream>
#include <sstream>

#include "common/kube/backoff.h"
#include "common/kube/config.h"
#include "common/kube/resource.h"
#include "common/log/log.h"
#include "operator/pki/tls_secret.h"

namespace buildcache::webhook {

namespace {

using Json = kube::Json;

using pki::ExpiresWithin;

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

CertManager::CertManager(kube::KubeClient* client, CertManagerOptions options)
    : client_(client), options_(std::move(options)) {}

Status CertManager::Sync() {
  BC_RETURN_IF_ERROR(SyncSecret());
  if (options_.webhook_configuration.empty()) return Status::Ok();
  return SyncWebhookConfiguration(CaBundle());
}

Status CertManager::SyncSecret() {
  Result<Json> read = client_->Get(kube::resources::kSecrets, options_.ns, options_.secret_name);
  bool exists = read.ok();
  if (!exists && read.status().code() != StatusCode::kNotFound) {
    return read.status().WithContext("reading the webhook certificate Secret");
  }
  Json secret = exists ? *read : Json::object();
  const SystemTime now = options_.clock();

  pki::TlsSecretData stored = pki::ReadTlsSecret(secret);
  KeyPair& ca = stored.ca;
  KeyPair& serving = stored.leaf;
  std::string& previous_ca = stored.previous_ca;
  bool changed = false;

  if (ca.cert_pem.empty() || ca.key_pem.empty() ||
      ExpiresWithin(ca.cert_pem, now, options_.renew_before)) {
    if (!ca.cert_pem.empty() && !ExpiresWithin(ca.cert_pem, now, std::chrono::seconds(0))) {
      previous_ca = ca.cert_pem;  // still valid: trusted until it expires
    }
    BC_ASSIGN_OR_RETURN(ca, GenerateCa("buildcache-webhook-ca", now, options_.ca_validity));
    serving = {};
    changed = true;
    log::Info("webhook ca created", {{"secret", options_.secret_name}});
  }
  if (!previous_ca.empty() && ExpiresWithin(previous_ca, now, std::chrono::seconds(0))) {
    previous_ca.clear();
    changed = true;
  }
  if (serving.cert_pem.empty() || serving.key_pem.empty() ||
      ExpiresWithin(serving.cert_pem, now, options_.renew_before) ||
      !CertMatches(serving.cert_pem, ca.cert_pem, options_.dns_names, options_.ip_addresses)) {
    BC_ASSIGN_OR_RETURN(serving, GenerateServingCert(ca, options_.dns_names, options_.ip_addresses,
                                                     now, options_.serving_validity));
    changed = true;
    log::Info("webhook serving certificate issued", {{"secret", options_.secret_name}});
  }

  if (changed) {
    Result<Json> written = Internal("unreachable");
    if (exists) {
      secret["data"] = pki::TlsSecretDataJson(stored);
      written = client_->Update(kube::resources::kSecrets, secret);
    } else {
      secret =
          pki::TlsSecret({{"name", options_.secret_name},
                          {"namespace", options_.ns},
                          {"labels", {{"app.kubernetes.io/managed-by", "buildcache-operator"}}}},
                         "kubernetes.io/tls", stored);
      written = client_->Create(kube::resources::kSecrets, secret);
    }
    // A conflict or AlreadyExists means another replica wrote first: the next Sync adopts it.
    if (!written.ok()) {
      return written.status().WithContext("writing the webhook certificate Secret");
    }
  }
  MutexLock lock(mu_);
  current_ = {serving.cert_pem, serving.key_pem};
  bundle_ = ca.cert_pem + previous_ca;
  return Status::Ok();
}

Status CertManager::SyncWebhookConfiguration(const std::string& bundle) {
  const std::string encoded = kube::Base64Encode(bundle);
  Result<Json> read = client_->Get(kube::resources::kMutatingWebhookConfigurations, "",
                                   options_.webhook_configuration);
  if (!read.ok()) return read.status().WithContext("reading the MutatingWebhookConfiguration");
  Json config = *read;
  bool changed = false;
  if (config.contains("webhooks") && config["webhooks"].is_array()) {
    for (Json& hook : config["webhooks"]) {
      if (!hook.is_object()) continue;
      if (kube::StringAt(hook, {"clientConfig", "caBundle"}) != encoded) {
        hook["clientConfig"]["caBundle"] = encoded;
        changed = true;
      }
    }
  }
  if (!changed) return Status::Ok();
  Result<Json> written = client_->Update(kube::resources::kMutatingWebhookConfigurations, config);
  if (!written.ok()) return written.status().WithContext("updating the caBundle");
  log::Info("webhook ca bundle updated", {{"configuration", options_.webhook_configuration}});
  return Status::Ok();
}

void CertManager::Run(std::stop_token stop, std::chrono::seconds interval,
                      std::chrono::seconds retry) {
  while (!stop.stop_requested()) {
    Status status = Sync();
    if (!status.ok()) log::Warn("webhook certificate sync failed", {{"error", status.ToString()}});
    kube::SleepFor(status.ok() ? interval : retry, stop);
  }
}

Result<http::TlsCredentials> CertManager::Current() const {
  MutexLock lock(mu_);
  if (current_.cert_pem.empty()) return Unavailable("no webhook serving certificate yet");
  return current_;
}

std::string CertManager::CaBundle() const {
  MutexLock lock(mu_);
  return bundle_;
}

http::CredentialsSource FileCredentials(std::string cert_file, std::string key_file) {
  return [cert_file, key_file]() -> Result<http::TlsCredentials> {
    BC_ASSIGN_OR_RETURN(std::string cert, ReadFile(cert_file));
    BC_ASSIGN_OR_RETURN(std::string key, ReadFile(key_file));
    return http::TlsCredentials{std::move(cert), std::move(key)};
  };
}

}  // namespace buildcache::webhook
