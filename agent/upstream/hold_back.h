#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace buildcache::upstream {

// The rule that a client can never take unverified bytes for a whole object: of an object whose
// length is announced up front, every byte but the last may be handed on as it arrives, and the
// last one only once the whole content matched its digests. (Without an announced length nothing
// is held here: the end of such a body is its chunked terminator, which the caller sends only
// after verifying.) A reader that sees the whole length therefore knows it was verified; a
// transfer aborted on a mismatch always leaves it short.
//
// ArtifactCache applies it to the body it streams to its client, PullStream
// (agent/replication/pull_stream.h) to the window a reader takes a peer's bytes from. Not
// thread-safe: its owner serializes the calls.
class HoldBack {
 public:
  explicit HoldBack(std::optional<uint64_t> length = std::nullopt) : length_(length) {}

  // The end of the bytes a reader may have been given once `received` bytes of the object arrived:
  // `received` when `verified` or the length is unknown, else at most length - 1.
  uint64_t Releasable(uint64_t received, bool verified) const;

  // Streaming use: `data` are the next bytes of the object. Returns the part of them that may go
  // out now; the rest (the last byte, when `data` ends the object) is kept for Release. Callers
  // refuse bytes past the announced length before passing them (they would be kept too).
  std::string_view Pass(std::string_view data);
  // The bytes Pass kept, to hand on once the content is verified (empty when none were kept).
  std::string_view Release() const { return held_; }

 private:
  std::optional<uint64_t> length_;
  uint64_t received_ = 0;
  std::string held_;
};

}  // namespace buildcache::upstream
