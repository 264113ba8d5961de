#pragma once

// Builds small zip archives in memory for tests: stored or deflated entries, optionally as zip64.
// Header-only; for tests only.

#include <zlib.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace buildcache::goproxy::testing {

struct ZipEntry {
  std::string name;
  std::string content;
  bool deflate = true;
  // Sizes and CRC-32 after the data (general purpose flag bit 3), as Go's archive/zip writes
  // them: in a data descriptor with its signature, or without one.
  enum class Descriptor { kNone, kSigned, kUnsigned };
  Descriptor descriptor = Descriptor::kNone;
  // With deflate: these bytes as the entry's compressed data (a DEFLATE stream of content)
  // instead of zlib's compression of content.
  std::string deflated = "";
};

inline void Put16(std::string* out, uint32_t v) {
  out->push_back(static_cast<char>(v & 0xff));
  out->push_back(static_cast<char>((v >> 8) & 0xff));
}
inline void Put32(std::string* out, uint32_t v) {
  Put16(out, v & 0xffff);
  Put16(out, v >> 16);
}
inline void Put64(std::string* out, uint64_t v) {
  Put32(out, static_cast<uint32_t>(v));
  Put32(out, static_cast<uint32_t>(v >> 32));
}

inline std::string RawDeflate(std::string_view data) {
  z_stream z{};
  deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 16, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A zip archive of the entries. zip64 writes the zip64 end records and 0xffffffff placeholders
// with zip64 extra fields in the central directory, as large archives have. `prefix` comes first
// (offsets count it), e.g. another archive's local entries that this directory does not list.
inline std::string BuildZip(const std::vector<ZipEntry>& entries, bool zip64 = false,
                            std::string prefix = "") {
  std::string out = std::move(prefix), central;
  for (const ZipEntry& e : entries) {
    std::string data =
        !e.deflate ? e.content : (e.deflated.empty() ? RawDeflate(e.content) : e.deflated);
    uint32_t crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(e.content.data()),
                                               static_cast<uInt>(e.content.size())));
    uint64_t offset = out.size();
    const bool after = e.descriptor != ZipEntry::Descriptor::kNone;
    const uint32_t flags = after ? 0x8 : 0;
    Put32(&out, 0x04034b50);
    Put16(&out, 20);
    Put16(&out, flags);
    Put16(&out, e.deflate ? 8 : 0);
    Put32(&out, 0);
    Put32(&out, after ? 0 : crc);
    Put32(&out, after ? 0 : static_cast<uint32_t>(data.size()));
    Put32(&out, after ? 0 : static_cast<uint32_t>(e.content.size()));
    Put16(&out, static_cast<uint32_t>(e.name.size()));
    Put16(&out, 0);
    out += e.name;
    out += data;
    if (after) {
      if (e.descriptor == ZipEntry::Descriptor::kSigned) Put32(&out, 0x08074b50);
      Put32(&out, crc);
      Put32(&out, static_cast<uint32_t>(data.size()));
      Put32(&out, static_cast<uint32_t>(e.content.size()));
    }

    std::string extra;
    if (zip64) {
      Put16(&extra, 0x0001);
      Put16(&extra, 24);
      Put64(&extra, e.content.size());
      Put64(&extra, data.size());
      Put64(&extra, offset);
    }
    Put32(&central, 0x02014b50);
    Put16(&central, 45);
    Put16(&central, zip64 ? 45 : 20);
    Put16(&central, flags);
    Put16(&central, e.deflate ? 8 : 0);
    Put32(&central, 0);
    Put32(&central, crc);
    Put32(&central, zip64 ? 0xffffffff : static_cast<uint32_t>(data.size()));
    Put32(&central, zip64 ? 0xffffffff : static_cast<uint32_t>(e.content.size()));
    Put16(&central, static_cast<uint32_t>(e.name.size()));
    Put16(&central, static_cast<uint32_t>(extra.size()));
    Put16(&central, 0);
    Put16(&central, 0);
    Put16(&central, 0);
    Put32(&central, 0);
    Put32(&central, zip64 ? 0xffffffff : static_cast<uint32_t>(offset));
    central += e.name;
    central += extra;
  }
  uint64_t cd_offset = out.size();
  out += central;
  if (zip64) {
    uint64_t rec = out.size();
    Put32(&out, 0x06064b50);
    Put64(&out, 44);
    Put16(&out, 45);
    Put16(&out, 45);
    Put32(&out, 0);
    Put32(&out, 0);
    Put64(&out, entries.size());
    Put64(&out, entries.size());
    Put64(&out, central.size());
    Put64(&out, cd_offset);
    Put32(&out, 0x07064b50);
    Put32(&out, 0);
    Put64(&out, rec);
    Put32(&out, 1);
  }
  Put32(&out, 0x06054b50);
  Put16(&out, 0);
  Put16(&out, 0);
  Put16(&out, zip64 ? 0xffff : static_cast<uint32_t>(entries.size()));
  Put16(&out, zip64 ? 0xffff : static_cast<uint32_t>(entries.size()));
  Put32(&out, zip64 ? 0xffffffff : static_cast<uint32_t>(central.size()));
  Put32(&out, zip64 ? 0xffffffff : static_cast<uint32_t>(cd_offset));
  Put16(&out, 0);
  return out;
}

}  // namespace buildcache::goproxy::testing
