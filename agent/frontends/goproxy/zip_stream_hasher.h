#pragma once

// Hashing a module zip's files while the zip streams past, so its h1 hash is ready soon after the
// last byte instead of inflating the whole archive again once it has arrived.

#include <zlib.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent/store/digest.h"
#include "common/zip/zip_reader.h"

namespace buildcache::goproxy {

// Follows the local file headers of a zip archive as its bytes arrive in order (Update) and
// hashes each entry's uncompressed content (stored, or deflated with or without a data
// descriptor). This is a speculation, never a verdict: the central directory at the end of the
// archive is what names and places the files (and what the go command reads), so HashZip uses a
// hash from here only for a central-directory entry whose local header this hasher parsed at the
// same offset, with the same method, compressed and uncompressed size and CRC-32 (the same bytes
// through the same decoder: the same content), and reads every other entry from the archive. An
// archive this hasher cannot follow (encrypted or unknown entries, a stored entry with a data
// descriptor, anything malformed) just leaves the rest to HashZip. Work is bounded by
// max_uncompressed bytes of output, after which it stops. Not thread-safe.
class ZipStreamHasher {
 public:
  explicit ZipStreamHasher(uint64_t max_uncompressed);
  ~ZipStreamHasher();
  ZipStreamHasher(const ZipStreamHasher&) = delete;
  ZipStreamHasher& operator=(const ZipStreamHasher&) = delete;

  // The archive's next bytes.
  void Update(std::string_view data);

  // The SHA-256 (hex) of `entry`'s content when this hasher hashed exactly that entry (see the
  // class comment); nullopt otherwise.
  std::optional<std::string> HashOf(const zip::Entry& entry) const;

  // Entries hashed so far, and whether the hasher gave up following the archive.
  size_t hashed() const { return done_.size(); }
  bool stopped() const { return state_ == State::kStopped; }

 private:
  enum class State { kHeader, kSkip, kInflate, kStored, kDescriptor, kEnd, kStopped };
  struct Hashed {
    uint16_t method = 0;
    uint64_t compressed = 0;
    uint64_t uncompressed = 0;
    uint32_t crc = 0;
    std::string sha256_hex;
  };

  // Consumes from `data` what the current state needs; false when it needs more bytes.
  bool Step(std::string_view& data);
  void StartEntry();
  void Output(const char* p, size_t n);
  void FinishEntry();
  void Stop();

  const uint64_t max_uncompressed_;
  State state_ = State::kHeader;
  uint64_t offset_ = 0;       // archive offset of the next byte Update gets
  std::string buf_;           // a local header or data descriptor being gathered
  uint64_t skip_ = 0;         // name and extra bytes left to skip
  uint64_t stored_left_ = 0;  // stored entry bytes left
  uint64_t total_out_ = 0;    // uncompressed bytes hashed, all entries
  // The entry being read.
  uint64_t entry_offset_ = 0;
  uint16_t flags_ = 0;
  Hashed current_;
  std::unique_ptr<store::Sha256> sha_;
  uLong crc_ = 0;
  std::unique_ptr<z_stream> z_;
  std::map<uint64_t, Hashed> done_;  // by local header offset
};

}  // namespace buildcache::goproxy
