#pragma once

// Answering clients from what the agent holds: stored blobs, and documents derived from upstream
// ones. Shared by the front ends so every protocol sends the same headers the same way.

#include <string>
#include <string_view>

#include "agent/store/blob_store.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::upstream {

// Sends the blob `reader` holds as the whole response body, with its Content-Length: by
// sendfile(2) when the store gives a file descriptor (a warm hit never copies the bytes through
// user space), else read and written in pieces. The status (200 unless set) and the headers the
// caller set before are sent with it. Returns OK when the whole body was sent. On a failure
// before anything was sent the response is untouched, so the caller can still answer with an
// error; once the body has started, a failure (the client went away, the blob came up short)
// aborts the connection so the client never takes a truncated body for a complete one.
Status SendBlob(store::BlobReader& reader, http::Response& response);

// Opens `key` and sends it as SendBlob does, with Content-Type and
// "Cache-Control: public, max-age=31536000, immutable" (stored blobs under these keys never
// change). A key that cannot be opened is answered with http::SendError. X-Buildcache-Source is
// the caller's, or "peer" when the store pulled the blob from a peer for this read.
void ServeImmutableBlob(store::BlobStore& store, http::Response& response, const std::string& key,
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
