#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace buildcache::store {

// A SHA-256 digest: the address of a blob.
class Digest {
 public:
  Digest() { bytes_.fill(0); }
  explicit Digest(const std::array<uint8_t, 32>& bytes) : bytes_(bytes) {}

  // Parses 64 lowercase or uppercase hex characters.
  static std::optional<Digest> FromHex(std::string_view hex);
  // Digest of a whole buffer.
  static Digest Of(std::string_view data);

  std::string Hex() const;
  const std::array<uint8_t, 32>& bytes() const { return bytes_; }
  std::string_view raw() const {
    return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
  }

  friend bool operator==(const Digest&, const Digest&) = default;
  // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads the defaulted <=>.
  friend auto operator<=>(const Digest&, const Digest&) = default;

 private:
  std::array<uint8_t, 32> bytes_;
};

// Incremental SHA-256 (OpenSSL EVP underneath).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::string_view data);
  Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct DigestHash {
  size_t operator()(const Digest& d) const {
    size_t h;
    static_assert(sizeof(h) <= 32);
    __builtin_memcpy(&h, d.bytes().data(), sizeof(h));
    return h;
  }
};

}  // namespace buildcache::store
