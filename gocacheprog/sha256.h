#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace buildcache::gocacheprog {

// SHA-256 (FIPS 180-4), self-contained so the static client needs no crypto library.
// Not thread-safe per object; use one per stream.
class Sha256 {
 public:
  Sha256();
  void Update(std::string_view data);
  // The 32-byte digest; the object must not be updated afterwards.
  std::string Finish();

  static std::string Of(std::string_view data) {
    Sha256 h;
    h.Update(data);
    return h.Finish();
  }

 private:
  void Block(const unsigned char* p);

  std::array<uint32_t, 8> state_;
  unsigned char buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;
};

}  // namespace buildcache::gocacheprog
