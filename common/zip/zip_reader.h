#pragma once

// Reading zip archives through a positioned reader (a store blob, a file, bytes in memory): the
// central directory (zip64 included) and the uncompressed bytes of stored or deflated entries,
// checked against their recorded length and CRC-32. Archives come from untrusted sources (module
// proxies, package indexes, builds), so every offset and length is checked before it is used.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status/status.h"

namespace buildcache::zip {

// Reads up to buf.size() bytes at offset; 0 at the end (BlobReader::ReadAt has this shape).
using ReadAtFn = std::function<Result<size_t>(uint64_t offset, std::span<char> buf)>;

// A ReadAtFn over bytes in memory (which must outlive it).
ReadAtFn ReadAtBytes(std::string_view bytes);

// One entry of the central directory.
struct Entry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc = 0;
  uint64_t compressed = 0;
  uint64_t uncompressed = 0;
  uint64_t local_offset = 0;
};

// The central directory of an archive of `size` bytes. kDataLoss for a malformed archive or more
// than max_entries entries; a read error is passed on.
Result<std::vector<Entry>> ReadDirectory(const ReadAtFn& read_at, uint64_t size,
                                         uint64_t max_entries);

// Streams one entry's uncompressed bytes to sink, checking its length and CRC-32 at the end (so
// a sink must not act on the bytes before this returns OK). kDataLoss for encryption, an
// unsupported compression method, bad deflate data or a length or CRC mismatch; a sink's error
// is passed on.
Status ReadEntry(const ReadAtFn& read_at, uint64_t size, const Entry& entry,
                 const std::function<Status(std::string_view)>& sink);

}  // namespace buildcache::zip
