#include "operator/pki/certs.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace buildcache::pki {

namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PKeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;

constexpr auto kBackdate = std::chrono::hours(1);

Status SslError(const std::string& what) {
  unsigned long err = ERR_get_error();
  char buf[256] = {};
  if (err != 0) ERR_error_string_n(err, buf, sizeof(buf));
  ERR_clear_error();
  return Internal(what + (err != 0 ? std::string(": ") + buf : ""));
}

std::string ToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string ToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

X509Ptr ParseCert(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return cert;
}

PKeyPtr ParseKey(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PKeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return key;
}

Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return SslError("certificate extension " + value);
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? Status::Ok() : SslError("adding certificate extension");
}

// A certificate for `key` with a random serial and the validity window, subject CN=cn. Issuer and
// signature are set by the caller.
Result<X509Ptr> NewCert(EVP_PKEY* key, const std::string& cn, SystemTime not_before,
                        std::chrono::seconds validity) {
  X509Ptr cert(X509_new());
  if (!cert) return SslError("X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return SslError("RAND_bytes");
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  ASN1_INTEGER* sn = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  if (sn == nullptr) return SslError("serial number");
  time_t start = std::chrono::system_clock::to_time_t(not_before - kBackdate);
  time_t end = std::chrono::system_clock::to_time_t(not_before + validity);
  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), start) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), end) == nullptr) {
    return SslError("validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  if (X509_set_pubkey(cert.get(), key) != 1) return SslError("X509_set_pubkey");
  return cert;
}

Result<PKeyPtr> NewKey() {
  PKeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return SslError("EVP_EC_gen");
  return key;
}

}  // namespace

Result<KeyPair> GenerateCa(const std::string& common_name, SystemTime not_before,
                           std::chrono::seconds validity) {
  BC_ASSIGN_OR_RETURN(PKeyPtr key, NewKey());
  BC_ASSIGN_OR_RETURN(X509Ptr cert, NewCert(key.get(), common_name, not_before, validity));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  BC_RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE"));
  BC_RETURN_IF_ERROR(
      AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  BC_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) return SslError("signing the CA");
  return KeyPair{ToPem(cert.get()), ToPem(key.get())};
}

namespace {

Result<KeyPair> GenerateLeaf(const KeyPair& ca, const std::vector<std::string>& dns_names,
                             const std::vector<std::string>& ip_addresses, SystemTime not_before,
                             std::chrono::seconds validity, const char* extended_usage) {
  if (dns_names.empty() && ip_addresses.empty()) {
    return InvalidArgument("a serving certificate needs a DNS name or an IP address");
  }
  X509Ptr ca_cert = ParseCert(ca.cert_pem);
  PKeyPtr ca_key = ParseKey(ca.key_pem);
  if (!ca_cert || !ca_key) return InvalidArgument("the CA certificate or key does not parse");
  BC_ASSIGN_OR_RETURN(PKeyPtr key, NewKey());
  const std::string& cn = dns_names.empty() ? ip_addresses.front() : dns_names.front();
  BC_ASSIGN_OR_RETURN(X509Ptr cert, NewCert(key.get(), cn, not_before, validity));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  std::string san;
  for (const std::string& d : dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const std::string& ip : ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
  BC_RETURN_IF_ERROR(AddExtension(cert.get(), ca_cert.get(), NID_subject_alt_name, san));
  BC_RETURN_IF_ERROR(AddExtension(cert.get(), ca_cert.get(), NID_basic_constraints, "CA:FALSE"));
  BC_RETURN_IF_ERROR(AddExtension(cert.get(), ca_cert.get(), NID_key_usage,
                                  "critical,digitalSignature,keyEncipherment"));
  BC_RETURN_IF_ERROR(AddExtension(cert.get(), ca_cert.get(), NID_ext_key_usage, extended_usage));
  BC_RETURN_IF_ERROR(
      AddExtension(cert.get(), ca_cert.get(), NID_authority_key_identifier, "keyid:always"));
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) == 0) {
    return SslError("signing the leaf certificate");
  }
  return KeyPair{ToPem(cert.get()), ToPem(key.get())};
}

}  // namespace

Result<KeyPair> GenerateServingCert(const KeyPair& ca, const std::vector<std::string>& dns_names,
                                    const std::vector<std::string>& ip_addresses,
                                    SystemTime not_before, std::chrono::seconds validity) {
  return GenerateLeaf(ca, dns_names, ip_addresses, not_before, validity, "serverAuth");
}

Result<KeyPair> GeneratePeerCert(const KeyPair& ca, const std::vector<std::string>& dns_names,
                                 SystemTime not_before, std::chrono::seconds validity) {
  return GenerateLeaf(ca, dns_names, {}, not_before, validity, "serverAuth,clientAuth");
}

Result<SystemTime> CertNotAfter(const std::string& pem) {
  X509Ptr cert = ParseCert(pem);
  if (!cert) return InvalidArgument("not a PEM certificate");
  struct tm tm = {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) {
    return InvalidArgument("certificate notAfter does not parse");
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

bool CertMatches(const std::string& cert_pem, const std::string& ca_cert_pem,
                 const std::vector<std::string>& dns_names,
                 const std::vector<std::string>& ip_addresses) {
  X509Ptr cert = ParseCert(cert_pem);
  X509Ptr ca = ParseCert(ca_cert_pem);
  if (!cert || !ca) return false;
  StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca.get());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr);
  // Expiry is the caller's business (it renews ahead of time with its own clock).
  X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_NO_CHECK_TIME);
  bool verified = X509_verify_cert(ctx.get()) == 1;
  ERR_clear_error();
  if (!verified) return false;
  for (const std::string& d : dns_names) {
    if (X509_check_host(cert.get(), d.c_str(), d.size(), 0, nullptr) != 1) return false;
  }
  for (const std::string& ip : ip_addresses) {
    if (X509_check_ip_asc(cert.get(), ip.c_str(), 0) != 1) return false;
  }
  return true;
}

}  // namespace buildcache::pki
