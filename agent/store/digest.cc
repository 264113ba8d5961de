#include "agent/store/digest.h"

#include <openssl/evp.h>

#include "common/base/check.h"
#include "common/text/quote.h"

namespace buildcache::store {
namespace {

// Fetched once: in OpenSSL 3 the implicit fetch behind EVP_sha256() costs a lookup per init.
const EVP_MD* Sha256Md() {
  static const EVP_MD* md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA2-256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
  }();
  return md;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

}  // namespace

std::optional<Digest> Digest::FromHex(std::string_view hex) {
  if (hex.size() != 64) {
    return std::nullopt;
  }
  std::array<uint8_t, 32> bytes;
  for (size_t i = 0; i < 32; ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return std::nullopt;
    }
    bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return Digest(bytes);
}

Digest Digest::Of(std::string_view data) {
  std::array<uint8_t, 32> out;
  unsigned int len = 0;
  CHECK(EVP_Digest(data.data(), data.size(), out.data(), &len, Sha256Md(), nullptr) == 1 &&
        len == out.size())
      << "SHA-256 failed";
  return Digest(out);
}

std::string Digest::Hex() const {
  return text::ToHex(std::string_view(reinterpret_cast<const char*>(bytes_.data()), bytes_.size()));
}

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  // Allocation failure or a missing SHA-256 is a broken process, not an input error.
  CHECK(impl_->ctx != nullptr && EVP_DigestInit_ex(impl_->ctx, Sha256Md(), nullptr) == 1)
      << "SHA-256 unavailable";
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::Update(std::string_view data) {
  if (data.empty()) {
    return;
  }
  CHECK(EVP_DigestUpdate(impl_->ctx, data.data(), data.size()) == 1) << "SHA-256 update failed";
}

Digest Sha256::Finish() {
  std::array<uint8_t, 32> out;
  unsigned int len = 0;
  CHECK(EVP_DigestFinal_ex(impl_->ctx, out.data(), &len) == 1 && len == out.size())
      << "SHA-256 final failed";
  // Leave the hasher reusable for a new message.
  CHECK(EVP_DigestInit_ex(impl_->ctx, Sha256Md(), nullptr) == 1) << "SHA-256 reset failed";
  return Digest(out);
}

}  // namespace buildcache::store
