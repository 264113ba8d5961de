#pragma once

// The go command's "h1:" hashes, as go.sum lines and checksum-database records carry them:
//
//   h1 = "h1:" + base64(SHA-256(for each file, sorted by name: "<sha256 hex>  <name>\n"))
//
// A module zip hashes every entry under its own name ("<module>@<version>/<file>"); a go.mod
// hashes as the single file "go.mod".

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "common/status/status.h"
#include "common/zip/zip_reader.h"

namespace buildcache::goproxy {

class ZipStreamHasher;  // zip_stream_hasher.h

// Reads up to buf.size() bytes at offset; 0 at the end (BlobReader::ReadAt has this shape).
using ReadAtFn = zip::ReadAtFn;

// The h1 hash of a go.mod file's content.
std::string HashGoMod(std::string_view content);

struct ZipLimits {
  // Largest total of uncompressed bytes; the go command refuses module zips beyond 500 MiB.
  uint64_t max_uncompressed = uint64_t{500} << 20;
  uint64_t max_entries = 1'000'000;
};

// The h1 hash of a zip archive of `size` bytes read through read_at. Reads the central directory
// (zip64 included), inflates each entry (stored or deflated) and checks its CRC-32 and length.
// kDataLoss for a malformed or inconsistent archive, an unsupported compression method or
// encryption, duplicate names, a name with a newline, or more than the limits allow; a read
// error is passed on. With `streamed` (a hasher that was fed this archive's bytes as they
// arrived), an entry it hashed is not read again (ZipStreamHasher::HashOf says which).
Result<std::string> HashZip(const ReadAtFn& read_at, uint64_t size, const ZipLimits& limits = {},
                            const ZipStreamHasher* streamed = nullptr);

}  // namespace buildcache::goproxy
