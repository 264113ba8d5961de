#pragma once

// Answering clients from what the agent holds: stored blobs, and documents derived from upstream
// ones. Shared by the front ends so every protocol sends the same headers the same way.

#include <cstdint>
#include <string>
#include <string_view>

#include "agent/store/blob_store.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::upstream {

// The part of a stored blob that answers a request (RFC 9110 section 14): the whole body, one
// byte range of it, or nothing because the range asked for lies past its end.
struct ByteRange {
  enum class Kind { kWhole, kPartial, kUnsatisfiable };
  Kind kind = Kind::kWhole;
  uint64_t first = 0;  // kPartial: offsets of the first and the last byte sent, inclusive
  uint64_t last = 0;
  uint64_t size = 0;  // the whole blob's size

  // 200, 206 or 416.
  int status() const;
  // Body bytes the answer carries.
  uint64_t length() const;
};

// Resolves a Range header value against a body of `size` bytes. One range of unit "bytes" is
// honoured: "a-b" (b clamped to the end), "a-" and the suffix "-n" (the last n bytes). An empty,
// malformed or multi-range header, or another unit, asks for the whole body (a server may ignore
// Range; multi-range answers are not built). A range that starts at or past the end, or the
// suffix "-0", is kUnsatisfiable.
ByteRange ParseByteRange(std::string_view header, uint64_t size);

// The range a request asks of a `size`-byte blob: ParseByteRange of its Range header for a GET
// without If-Range (the agent keeps no validator for blobs, so a conditional range gets the whole
// body, as RFC 9110 requires), else the whole body (HEAD, other methods).
ByteRange RequestedRange(const http::Request& request, uint64_t size);

// Sends the blob `reader` holds as the whole response body, with its Content-Length: by
// sendfile(2) when the store gives a file descriptor (a warm hit never copies the bytes through
// user space), else read and written in pieces. The status (200 unless set) and the headers the
// caller set before are sent with it. Returns OK when the whole body was sent. On a failure
// before anything was sent the response is untouched, so the caller can still answer with an
// error; once the body has started, a failure (the client went away, the blob came up short)
// aborts the connection so the client never takes a truncated body for a complete one.
Status SendBlob(store::BlobReader& reader, http::Response& response);

// As SendBlob, answering `range` (from RequestedRange with the blob's size) and announcing
// "Accept-Ranges: bytes": kWhole as SendBlob; kPartial as 206 with Content-Range and only those
// bytes; kUnsatisfiable as 416 with "Content-Range: bytes */SIZE" and a short text body. For
// every blob the agent serves to a client, so range readers (uv's metadata look-ups) never fetch
// a whole wheel for a few kilobytes. On a failure before anything was sent, only the status and
// the range headers have been set; the caller's error answer replaces the status.
Status SendBlob(store::BlobReader& reader, const ByteRange& range, http::Response& response);

// Opens `key` and sends it as SendBlob does (honouring the request's range), with Content-Type
// and "Cache-Control: public, max-age=31536000, immutable" (stored blobs under these keys never
// change). A key that cannot be opened is answered with http::SendError. X-Buildcache-Source is
// the caller's, or "peer" when the store pulled the blob from a peer for this read.
void ServeImmutableBlob(store::BlobStore& store, const http::Request& request,
                        http::Response& response, const std::string& key,
                        std::string_view content_type);

// A strong ETag of the body: a quoted 32-hex-digit prefix of its SHA-256.
std::string StrongEtag(std::string_view body);

// Sends a document that clients must revalidate on every use (the agent revalidates upstream on
// its own TTL, and a page may change without the upstream changing, e.g. wheel-house uploads):
// ETag, "Cache-Control: max-age=0, must-revalidate" and X-Buildcache-Source (`source`); a
// request whose If-None-Match names the ETag gets 304 without a body, any other 200 with
// Content-Type and the body. Headers the caller set before (e.g. Vary) are kept.
void SendRevalidatedDocument(http::Request& request, http::Response& response,
                             std::string_view body, std::string_view etag,
                             std::string_view content_type, std::string_view source);

}  // namespace buildcache::upstream
