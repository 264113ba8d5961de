#pragma once

// Hashing a module zip's files while the zip streams past, so its h1 hash is ready soon after the
// last byte instead of inflating the whole archive again once it has arrived.

#include <libdeflate.h>
#include <zlib.h>

#include <cstddef>
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
// through a DEFLATE decoder: the same content), and reads every other entry from the archive. An
// archive this hasher cannot follow (encrypted or unknown entries, a stored entry with a data
// descriptor, anything malformed) just leaves the rest to HashZip. Work is bounded by
// max_uncompressed bytes of output, after which it stops. Not thread-safe.
//
// Inflating is most of the work (a Go module's files are several times its zip), so a deflated
// entry is decoded whole with libdeflate, about 2.5 times zlib's speed here, once its compressed
// bytes have arrived: the end is the local header's size, or else the first data descriptor
// that names the bytes before it as the entry (size and CRC-32 of the decoded content checked;
// Go's archive/zip writes a descriptor for every deflated entry). An entry that has not ended
// within whole_entry_limit compressed bytes, or would decode to more than 4 times that, is
// inflated as it streams with zlib instead.
class ZipStreamHasher {
 public:
  static constexpr size_t kDefaultWholeEntryLimit = size_t{4} << 20;

  explicit ZipStreamHasher(uint64_t max_uncompressed,
                           size_t whole_entry_limit = kDefaultWholeEntryLimit);
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
  // Of those, the deflated entries decoded whole (the rest were inflated as they streamed).
  size_t decoded_whole() const { return decoded_whole_; }
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

  struct FreeDecompressor {
    void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
  };

  // Runs the state machine over `data`; bytes it gave back (replay_) are run again after it.
  void Feed(std::string_view data);
  // Consumes from `data` what the current state needs; false when it needs more bytes.
  bool Step(std::string_view& data);
  void StartEntry();
  // A deflated entry: gathered whole, or (z_ set) inflated as it streams.
  bool InflateWhole(std::string_view& data);
  bool InflateStreaming(std::string_view& data);
  // Decodes whole_[0, in) to exactly `out` bytes; with crc, the content's CRC-32 must be it.
  // True when the entry is done (hashed); false when these bytes are not the entry (yet).
  bool DecodeWhole(size_t in, uint64_t out, std::optional<uint32_t> crc);
  // Gives up decoding whole: what was gathered goes through zlib, the rest as it streams.
  void SwitchToStreaming();
  void Output(const char* p, size_t n);
  void FinishEntry();
  void Stop();

  const uint64_t max_uncompressed_;
  const size_t whole_entry_limit_;
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
  uint32_t crc_ = 0;
  std::unique_ptr<z_stream> z_;
  // Whole-entry decoding: the entry's compressed bytes so far (and perhaps what follows them),
  // where the next descriptor search starts, the local header's sizes when it has them, and
  // bytes gathered past the entry's end, to be run through the state machine again.
  std::string whole_;
  size_t searched_ = 0;
  int false_ends_ = 0;  // descriptor look-alikes that did not decode
  size_t decoded_whole_ = 0;
  std::optional<uint64_t> header_compressed_, header_uncompressed_;
  std::string replay_;
  std::unique_ptr<libdeflate_decompressor, FreeDecompressor> decompressor_;
  std::string out_;                  // decoded content of one entry, reused
  std::map<uint64_t, Hashed> done_;  // by local header offset
};

}  // namespace buildcache::goproxy
