#pragma once

// A streaming multipart/form-data parser (RFC 7578): the body is fed in pieces of any size and
// part contents are handed on as they arrive, so a large file part never has to be buffered.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::pypi {

// The Content-Disposition of one part.
struct PartHeader {
  std::string name;      // the form field name
  std::string filename;  // "" for plain fields
  bool has_filename = false;
  std::string content_type;
};

struct MultipartCallbacks {
  // A part begins. A non-OK status stops the parse and is returned by Feed.
  std::function<Status(const PartHeader&)> on_part;
  // Bytes of the current part, in order (possibly in many pieces, possibly empty ones).
  std::function<Status(std::string_view)> on_data;
  // The current part is complete.
  std::function<Status()> on_part_end;
};

// Extracts the boundary parameter from a multipart/form-data Content-Type; kInvalidArgument when
// the type is not multipart/form-data or the boundary is missing or longer than 70 characters.
Result<std::string> MultipartBoundary(std::string_view content_type);

// Parses one multipart body. Not thread-safe; one instance per body. Memory use is bounded by the
// largest piece fed plus the boundary and the header block limit.
class MultipartParser {
 public:
  MultipartParser(std::string boundary, MultipartCallbacks callbacks);

  // Consumes the next piece of the body. kInvalidArgument on malformed input (a part header
  // block over 16 KiB, a part without a form-data Content-Disposition, garbage after a
  // boundary); a callback's status as it returned it. After an error the parser is unusable.
  Status Feed(std::string_view data);

  // The body ended: OK only when the closing boundary was seen.
  Status Finish();

 private:
  enum class State { kPreamble, kAfterBoundary, kHeaders, kBody, kDone, kFailed };

  Status Process();
  Status ParseHeaders(std::string_view block);
  Status Fail(Status status);

  const std::string delimiter_;  // "\r\n--" + boundary
  MultipartCallbacks callbacks_;
  State state_ = State::kPreamble;
  std::string buf_;
};

}  // namespace buildcache::pypi
