#include "agent/store/blob_store.h"

namespace buildcache::store {

Result<KeyListing> BlobStore::ListKeys(std::string_view /*prefix*/, std::string_view /*after*/,
                                       size_t /*limit*/) {
  return FailedPrecondition("this store cannot list its keys");
}

Status BlobStore::Rename(std::string_view from, std::string_view to, const Digest& digest) {
  auto mapped = Stat(from);
  if (!mapped.ok() || mapped->digest != digest) return NotFound("no such key with that digest");
  if (from == to) return Status::Ok();
  BC_ASSIGN_OR_RETURN(std::unique_ptr<BlobReader> reader, OpenDigest(digest));
  WriteOptions options;
  options.expected_digest = digest;
  options.expected_size = reader->info().size;
  options.sync_content = false;
  BC_ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, NewWriter(to, options));
  std::string buf(256 * 1024, '\0');
  for (uint64_t offset = 0;;) {
    BC_ASSIGN_OR_RETURN(size_t n, reader->ReadAt(offset, std::span<char>(buf.data(), buf.size())));
    if (n == 0) break;
    BC_RETURN_IF_ERROR(writer->Write(std::string_view(buf.data(), n)));
    offset += n;
  }
  BC_RETURN_IF_ERROR(writer->Commit().status());
  (void)Delete(from);
  return Status::Ok();
}

Result<BlobInfo> PutBytes(BlobStore& store, std::string_view key, std::string_view data,
                          const WriteOptions& options) {
  BC_ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, store.NewWriter(key, options));
  BC_RETURN_IF_ERROR(writer->Write(data));
  return writer->Commit();
}

Result<std::string> ReadAll(BlobReader& reader) {
  std::string out;
  out.reserve(reader.info().size);
  char buf[64 * 1024];
  uint64_t offset = 0;
  for (;;) {
    BC_ASSIGN_OR_RETURN(size_t n, reader.ReadAt(offset, std::span<char>(buf, sizeof(buf))));
    if (n == 0) {
      break;
    }
    out.append(buf, n);
    offset += n;
  }
  return out;
}

namespace {

class OriginReader : public BlobReader {
 public:
  OriginReader(std::unique_ptr<BlobReader> inner, std::string_view origin)
      : inner_(std::move(inner)), origin_(origin) {}
  const BlobInfo& info() const override { return inner_->info(); }
  int fd() const override { return inner_->fd(); }
  Result<size_t> ReadAt(uint64_t offset, std::span<char> buf) override {
    return inner_->ReadAt(offset, buf);
  }
  std::string_view origin() const override { return origin_; }

 private:
  std::unique_ptr<BlobReader> inner_;
  std::string_view origin_;
};

}  // namespace

std::unique_ptr<BlobReader> WithOrigin(std::unique_ptr<BlobReader> inner, std::string_view origin) {
  return std::make_unique<OriginReader>(std::move(inner), origin);
}

}  // namespace buildcache::store
