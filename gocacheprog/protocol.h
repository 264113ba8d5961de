#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status/status.h"
#include "common/text/base64.h"
#include "common/text/quote.h"

// The go command's GOCACHEPROG protocol (Go 1.24+, cmd/go/internal/cacheprog): one JSON object per
// line in each direction. Requests carry an ID the response echoes; a "put" whose BodySize is
// positive is followed by one more line holding the body as a base64 JSON string.
namespace buildcache::gocacheprog {

struct Request {
  int64_t id = 0;
  std::string command;    // "get", "put", "close" (others are answered with an error)
  std::string action_id;  // raw bytes (32 for SHA-256), empty if absent
  std::string output_id;  // raw bytes, empty if absent
  int64_t body_size = 0;
};

struct Response {
  int64_t id = 0;
  std::string err;              // non-empty: the request failed (never used for a miss)
  bool known_commands = false;  // the start-up message: KnownCommands get, put, close
  bool miss = false;
  std::string output_id;  // raw bytes
  int64_t size = 0;
  std::optional<int64_t> time_unix_nanos;  // when the entry was put
  std::string disk_path;
};

// Parses one request line. Unknown fields are ignored; malformed JSON or wrongly typed known
// fields are an InvalidArgument.
Result<Request> ParseRequest(std::string_view line);

// Parses the body line that follows a put: a JSON string of standard base64. Returns the decoded
// bytes.
Result<std::string> ParseBodyLine(std::string_view line);

// One response as a JSON line (with the trailing '\n').
std::string EncodeResponse(const Response& response);

// Standard base64 (RFC 4648 section 4, with padding): encoded by common/text; decoded strictly
// (no whitespace, length a multiple of 4), as the go command writes it.
using text::Base64Encode;
Result<std::string> Base64Decode(std::string_view text);

// Lowercase hex of raw bytes (common/text), and back (nullopt unless 2n hex digits).
inline std::string Hex(std::string_view bytes) { return text::ToHex(bytes); }
std::optional<std::string> Unhex(std::string_view hex);

// RFC 3339 UTC time with nanoseconds, as Go's time.Time marshals it.
std::string Rfc3339Nanos(int64_t unix_nanos);

}  // namespace buildcache::gocacheprog
