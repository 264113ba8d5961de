// Byte-level helpers the HTTP server's parts share: socket writes that retry partial sends,
// receive timeouts, and the small pieces of HTTP/1.1 wire text (reason phrases, the Date header).
// Internal to common/http; not part of the server's interface.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace buildcache::http::server_internal {

// An unread request body up to this size is read and discarded after the response so the
// connection can be reused; a larger remainder closes the connection instead.
inline constexpr uint64_t kDrainLimit = 64 * 1024;
// Room for body bytes in the connection buffer beyond the largest header block.
inline constexpr size_t kBodyBufferBytes = 16 * 1024;
// Request header fields kept per request; more is a 431 like an oversized header block.
inline constexpr size_t kMaxFields = 256;

// ASCII case-insensitive equality (header names, "close", "100-continue").
bool IEquals(std::string_view a, std::string_view b);

// "OK", "Not Found", ...; "Unknown" for codes the server has no phrase for.
std::string_view ReasonPhrase(int code);

// "Date: Tue, 15 Nov 1994 08:12:31 GMT\r\n", recomputed at most once a second per thread. The view
// stays valid on this thread until the next call.
std::string_view DateHeader();

// Appends v in decimal.
void AppendUint(std::string& out, uint64_t v);

// True when s holds CR or LF (a header name or value that would split the response).
bool HasCrLf(std::string_view s);

// Sets SO_RCVTIMEO or SO_SNDTIMEO (`option`) of fd; a non-positive t counts as 1 ms.
void SetTimeout(int fd, int option, std::chrono::milliseconds t);

// Writes all of iov (modified in place), retrying partial writes. False on error or timeout.
bool WriteAllV(int fd, iovec* iov, int count);
// Writes all of data with send(2) (MSG_NOSIGNAL plus `flags`). False on error or timeout.
bool WriteAll(int fd, std::string_view data, int flags = 0);

}  // namespace buildcache::http::server_internal
