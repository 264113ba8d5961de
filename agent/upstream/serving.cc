#include "agent/upstream/serving.h"

#include <algorithm>
#include <memory>
#include <span>

#include "agent/store/digest.h"
#include "common/http/status_http.h"

namespace buildcache::upstream {
namespace {

constexpr size_t kIoBufferBytes = size_t{256} * 1024;

// A per-thread scratch buffer: the server runs one thread per connection.
std::span<char> IoBuffer() {
  thread_local std::unique_ptr<char[]> buf(new char[kIoBufferBytes]);
  return {buf.get(), kIoBufferBytes};
}

}  // namespace

Status SendBlob(store::BlobReader& reader, http::Response& response) {
  const uint64_t size = reader.info().size;
  if (reader.fd() >= 0) {
    Status s = response.SendFile(reader.fd(), 0, size);
    if (!s.ok() && response.started()) response.Abort();
    return s;
  }
  std::span<char> buf = IoBuffer();
  if (size <= buf.size()) {
    // Small blobs: read first, so a short read can still be answered with an error.
    uint64_t got = 0;
    while (got < size) {
      BC_ASSIGN_OR_RETURN(size_t n, reader.ReadAt(got, buf.subspan(got, size - got)));
      if (n == 0) return DataLoss("blob shorter than its recorded size");
      got += n;
    }
    return response.Send({buf.data(), size});
  }
  Status s = response.Begin(size);
  for (uint64_t offset = 0; s.ok() && offset < size;) {
    auto n = reader.ReadAt(offset, buf.subspan(0, std::min<uint64_t>(buf.size(), size - offset)));
    if (!n.ok()) {
      s = n.status();
    } else if (*n == 0) {
      s = DataLoss("blob shorter than its recorded size");
    } else {
      s = response.Write({buf.data(), *n});
      offset += *n;
    }
  }
  if (s.ok()) s = response.End();
  if (!s.ok()) response.Abort();
  return s;
}

void ServeImmutableBlob(store::BlobStore& store, http::Response& response, const std::string& key,
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
  if ((*reader)->origin() != "local")
    response.SetHeader("X-Buildcache-Source", (*reader)->origin());
  if (Status s = SendBlob(**reader, response); !s.ok() && !response.started()) {
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
  response.SetHeader("X-Buildcache-Source", source);
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
