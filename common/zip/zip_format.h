#pragma once

// The zip format's record signatures and fixed sizes (APPNOTE.TXT 4.3), and its little-endian
// integers: shared by the positioned reader (zip_reader.h) and readers that follow an archive
// as it streams past (goproxy's ZipStreamHasher).

#include <cstddef>
#include <cstdint>

namespace buildcache::zip::format {

constexpr uint32_t kLocalSignature = 0x04034b50;
constexpr uint32_t kCentralSignature = 0x02014b50;
constexpr uint32_t kDescriptorSignature = 0x08074b50;
constexpr uint32_t kEocdSignature = 0x06054b50;
constexpr uint32_t kZip64EocdSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr size_t kLocalSize = 30;
constexpr size_t kCentralSize = 46;
constexpr size_t kEocdSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EocdSize = 56;

inline uint16_t Le16(const char* p) {
  auto u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint16_t>(u[0] | (u[1] << 8));
}
inline uint32_t Le32(const char* p) {
  return static_cast<uint32_t>(Le16(p)) | (static_cast<uint32_t>(Le16(p + 2)) << 16);
}
inline uint64_t Le64(const char* p) {
  return static_cast<uint64_t>(Le32(p)) | (static_cast<uint64_t>(Le32(p + 4)) << 32);
}

}  // namespace buildcache::zip::format
