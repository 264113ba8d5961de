#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status/status.h"

namespace buildcache::pki {

// X.509 certificates made with the OpenSSL C API: a self-signed CA, serving certificates it signs
// (the webhook's HTTPS server) and peer certificates (agents, which are server and client of each
// other). Keys are ECDSA P-256. No OpenSSL type leaves certs.cc.

using SystemTime = std::chrono::system_clock::time_point;

// A certificate and its private key, PEM.
struct KeyPair {
  std::string cert_pem{};
  std::string key_pem{};
};

// A self-signed CA certificate (basicConstraints CA:TRUE, keyCertSign) valid from `not_before`
// (backdated by an hour for clock skew) for `validity`.
Result<KeyPair> GenerateCa(const std::string& common_name, SystemTime not_before,
                           std::chrono::seconds validity);

// A serving certificate (serverAuth) for the DNS names and IP addresses (as subjectAltNames),
// signed by `ca`. The common name is the first DNS name, else the first address.
Result<KeyPair> GenerateServingCert(const KeyPair& ca, const std::vector<std::string>& dns_names,
                                    const std::vector<std::string>& ip_addresses,
                                    SystemTime not_before, std::chrono::seconds validity);

// Like GenerateServingCert, but usable on both ends of mutual TLS (extended key usage serverAuth
// and clientAuth): what agents present to each other.
Result<KeyPair> GeneratePeerCert(const KeyPair& ca, const std::vector<std::string>& dns_names,
                                 SystemTime not_before, std::chrono::seconds validity);

// notAfter of the first certificate in `pem`.
Result<SystemTime> CertNotAfter(const std::string& pem);

// Whether `cert_pem` was issued by (and verifies against) `ca_cert_pem`, and covers every name
// and address asked for.
bool CertMatches(const std::string& cert_pem, const std::string& ca_cert_pem,
                 const std::vector<std::string>& dns_names,
                 const std::vector<std::string>& ip_addresses);

}  // namespace buildcache::pki
