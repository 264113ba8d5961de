#include "agent/upstream/serving.h"

#include <strings.h>

#include <algorithm>
#include <charconv>
#include <memory>
#include <optional>
#include <span>

#include "agent/store/digest.h"
#include "common/http/headers.h"
#include "common/http/status_http.h"

namespace buildcache::upstream {
namespace {

constexpr size_t kIoBufferBytes = size_t{256} * 1024;

// A per-thread scratch buffer: the server runs one thread per connection.
std::span<char> IoBuffer() {
  thread_local std::unique_ptr<char[]> buf(new char[kIoBufferBytes]);
  return {buf.get(), kIoBufferBytes};
}

// A decimal byte position: digits only, no sign, no overflow.
std::optional<uint64_t> ParsePosition(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Sends `length` bytes of the blob from `offset` as the body.
Status SendBlobBytes(store::BlobReader& reader, uint64_t offset, uint64_t length,
                     http::Response& response) {
  if (reader.fd() >= 0) {
    Status s = response.SendFile(reader.fd(), offset, length);
    if (!s.ok() && response.started()) response.Abort();
    return s;
  }
  std::span<char> buf = IoBuffer();
  if (length <= buf.size()) {
    // Small bodies: read first, so a short read can still be answered with an error.
    uint64_t got = 0;
    while (got < length) {
      BC_ASSIGN_OR_RETURN(size_t n, reader.ReadAt(offset + got, buf.subspan(got, length - got)));
      if (n == 0) return DataLoss("blob shorter than its recorded size");
      got += n;
    }
    return response.Send({buf.data(), length});
  }
  Status s = response.Begin(length);
  for (uint64_t done = 0; s.ok() && done < length;) {
    auto n =
        reader.ReadAt(offset + done, buf.subspan(0, std::min<uint64_t>(buf.size(), length - done)));
    if (!n.ok()) {
      s = n.status();
    } else if (*n == 0) {
      s = DataLoss("blob shorter than its recorded size");
    } else {
      s = response.Write({buf.data(), *n});
      done += *n;
    }
  }
  if (s.ok()) s = response.End();
  if (!s.ok()) response.Abort();
  return s;
}

}  // namespace

int ByteRange::status() const {
  switch (kind) {
    case Kind::kWhole:
      return 200;
    case Kind::kPartial:
      return 206;
    case Kind::kUnsatisfiable:
      return 416;
  }
  return 200;
}

uint64_t ByteRange::length() const {
  switch (kind) {
    case Kind::kWhole:
      return size;
    case Kind::kPartial:
      return last - first + 1;
    case Kind::kUnsatisfiable:
      return 0;
  }
  return 0;
}

ByteRange ParseByteRange(std::string_view header, uint64_t size) {
  ByteRange whole{.size = size};
  std::string_view spec = TrimSpace(header);
  constexpr std::string_view kUnit = "bytes=";
  if (spec.size() < kUnit.size() || strncasecmp(spec.data(), kUnit.data(), kUnit.size()) != 0) {
    return whole;
  }
  spec = TrimSpace(spec.substr(kUnit.size()));
  if (spec.find(',') != std::string_view::npos) return whole;  // multi-range: the whole body
  const size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return whole;
  const std::string_view first_text = TrimSpace(spec.substr(0, dash));
  const std::string_view last_text = TrimSpace(spec.substr(dash + 1));
  ByteRange r{.kind = ByteRange::Kind::kPartial, .size = size};
  if (first_text.empty()) {
    // "-n": the last n bytes.
    auto suffix = ParsePosition(last_text);
    if (!suffix) return whole;
    if (*suffix == 0 || size == 0) return {.kind = ByteRange::Kind::kUnsatisfiable, .size = size};
    r.first = size - std::min(*suffix, size);
    r.last = size - 1;
    return r;
  }
  auto first = ParsePosition(first_text);
  if (!first) return whole;
  std::optional<uint64_t> last;
  if (!last_text.empty()) {
    last = ParsePosition(last_text);
    if (!last || *last < *first) return whole;
  }
  if (*first >= size) return {.kind = ByteRange::Kind::kUnsatisfiable, .size = size};
  r.first = *first;
  r.last = last ? std::min(*last, size - 1) : size - 1;
  return r;
}

ByteRange RequestedRange(const http::Request& request, uint64_t size) {
  if (request.method() != "GET" || !request.header("If-Range").empty()) {
    return ByteRange{.size = size};
  }
  return ParseByteRange(request.header("Range"), size);
}

Status SendBlob(store::BlobReader& reader, http::Response& response) {
  return SendBlobBytes(reader, 0, reader.info().size, response);
}

Status SendBlob(store::BlobReader& reader, const ByteRange& range, http::Response& response) {
  const uint64_t size = reader.info().size;
  response.SetHeader("Accept-Ranges", "bytes");
  switch (range.kind) {
    case ByteRange::Kind::kWhole:
      return SendBlobBytes(reader, 0, size, response);
    case ByteRange::Kind::kPartial:
      if (range.size != size || range.last >= size || range.first > range.last) {
        return Internal("byte range resolved against another size");
      }
      response.SetStatus(206);
      response.SetHeader("Content-Range", "bytes " + std::to_string(range.first) + "-" +
                                              std::to_string(range.last) + "/" +
                                              std::to_string(size));
      return SendBlobBytes(reader, range.first, range.length(), response);
    case ByteRange::Kind::kUnsatisfiable:
      response.SetStatus(416);
      response.SetHeader("Content-Range", "bytes */" + std::to_string(size));
      response.SetHeader("Content-Type", "text/plain; charset=utf-8");
      return response.Send("range not satisfiable\n");
  }
  return Internal("unknown byte range kind");
}

void ServeImmutableBlob(store::BlobStore& store, const http::Request& request,
                        http::Response& response, const std::string& key,
                        std::string_view content_type) {
  auto reader = store.Open(key);
  if (!reader.ok()) {
    http::SendError(response, reader.status());
    return;
  }
  response.SetStatus(200);
  response.SetHeader("Content-Type", content_type);
  response.SetHeader("Cache-Control", "public, max-age=31536000, immutable");
  // A blob a replicating store just pulled for this read is a peer hit, whatever the caller set.
  if ((*reader)->origin() != "local") response.SetHeader(http::kSourceHeader, (*reader)->origin());
  const ByteRange range = RequestedRange(request, (*reader)->info().size);
  if (Status s = SendBlob(**reader, range, response); !s.ok() && !response.started()) {
    http::SendError(response, s);
  }
}

std::string StrongEtag(std::string_view body) {
  return "\"" + store::Digest::Of(body).Hex().substr(0, 32) + "\"";
}

void SendRevalidatedDocument(http::Request& request, http::Response& response,
                             std::string_view body, std::string_view etag,
                             std::string_view content_type, std::string_view source) {
  response.SetHeader("ETag", etag);
  response.SetHeader("Cache-Control", "max-age=0, must-revalidate");
  response.SetHeader(http::kSourceHeader, source);
  if (request.header("If-None-Match").find(etag) != std::string_view::npos) {
    response.SetStatus(304);
    (void)response.Send({});
    return;
  }
  response.SetStatus(200);
  response.SetHeader("Content-Type", content_type);
  (void)response.Send(body);
}

}  // namespace buildcache::upstream
