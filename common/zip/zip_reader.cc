#include "common/zip/zip_reader.h"

#include <zlib.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "common/zip/zip_format.h"

namespace buildcache::zip {
namespace {

using namespace format;  // the format's signatures, sizes and Le16/32/64

constexpr size_t kMaxComment = 0xffff;
constexpr size_t kChunk = 64 * 1024;

Status Malformed(std::string what) { return DataLoss("malformed zip: " + std::move(what)); }

// Reads exactly buf.size() bytes at offset.
Status ReadFull(const ReadAtFn& read_at, uint64_t offset, std::span<char> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    BC_ASSIGN_OR_RETURN(size_t n, read_at(offset + done, buf.subspan(done)));
    if (n == 0) return Malformed("truncated");
    done += n;
  }
  return Status::Ok();
}

struct Directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
};

Result<Directory> FindDirectory(const ReadAtFn& read_at, uint64_t size) {
  if (size < kEocdSize) return Malformed("too short");
  size_t tail_len = static_cast<size_t>(std::min<uint64_t>(size, kEocdSize + kMaxComment));
  std::string tail(tail_len, '\0');
  uint64_t tail_start = size - tail_len;
  BC_RETURN_IF_ERROR(ReadFull(read_at, tail_start, tail));
  std::optional<size_t> eocd;
  for (size_t i = tail_len - kEocdSize + 1; i-- > 0;) {
    if (Le32(&tail[i]) == kEocdSignature && i + kEocdSize + Le16(&tail[i + 20]) == tail_len) {
      eocd = i;
      break;
    }
  }
  if (!eocd) return Malformed("no end of central directory record");
  const char* e = &tail[*eocd];
  if (Le16(e + 4) != 0 || Le16(e + 6) != 0) return Malformed("multi-disk archive");
  Directory d{Le16(e + 10), Le32(e + 16), Le32(e + 12)};
  uint64_t eocd_offset = tail_start + *eocd;
  if (d.entries == 0xffff || d.offset == 0xffffffff || d.size == 0xffffffff) {
    if (eocd_offset < kZip64LocatorSize) return Malformed("no zip64 locator");
    char loc[kZip64LocatorSize];
    BC_RETURN_IF_ERROR(ReadFull(read_at, eocd_offset - kZip64LocatorSize, loc));
    if (Le32(loc) != kZip64LocatorSignature) return Malformed("no zip64 locator");
    uint64_t rec_offset = Le64(loc + 8);
    if (rec_offset > eocd_offset - kZip64LocatorSize - kZip64EocdSize) {
      return Malformed("bad zip64 record offset");
    }
    char rec[kZip64EocdSize];
    BC_RETURN_IF_ERROR(ReadFull(read_at, rec_offset, rec));
    if (Le32(rec) != kZip64EocdSignature) return Malformed("no zip64 end record");
    d = {Le64(rec + 32), Le64(rec + 48), Le64(rec + 40)};
    eocd_offset = rec_offset;
  }
  if (d.offset > eocd_offset || d.size > eocd_offset - d.offset) {
    return Malformed("central directory out of bounds");
  }
  return d;
}

// Applies a zip64 extended-information extra field to the values that overflowed.
Status ApplyZip64(std::string_view extra, Entry* e, bool size_max, bool comp_max, bool off_max) {
  while (extra.size() >= 4) {
    uint16_t id = Le16(extra.data());
    uint16_t len = Le16(extra.data() + 2);
    if (len > extra.size() - 4) return Malformed("bad extra field");
    std::string_view body = extra.substr(4, len);
    if (id == 0x0001) {
      auto take = [&](uint64_t* v) -> Status {
        if (body.size() < 8) return Malformed("short zip64 field");
        *v = Le64(body.data());
        body.remove_prefix(8);
        return Status::Ok();
      };
      if (size_max) BC_RETURN_IF_ERROR(take(&e->uncompressed));
      if (comp_max) BC_RETURN_IF_ERROR(take(&e->compressed));
      if (off_max) BC_RETURN_IF_ERROR(take(&e->local_offset));
      return Status::Ok();
    }
    extra.remove_prefix(4 + len);
  }
  if (size_max || comp_max || off_max) return Malformed("missing zip64 field");
  return Status::Ok();
}

}  // namespace

ReadAtFn ReadAtBytes(std::string_view bytes) {
  return [bytes](uint64_t offset, std::span<char> buf) -> Result<size_t> {
    if (offset >= bytes.size()) return size_t{0};
    size_t n = std::min<uint64_t>(buf.size(), bytes.size() - offset);
    std::copy_n(bytes.data() + offset, n, buf.data());
    return n;
  };
}

Result<std::vector<Entry>> ReadDirectory(const ReadAtFn& read_at, uint64_t size,
                                         uint64_t max_entries) {
  BC_ASSIGN_OR_RETURN(Directory d, FindDirectory(read_at, size));
  if (d.entries > max_entries) return DataLoss("zip has too many files");
  if (d.size > (uint64_t{1} << 32)) return Malformed("central directory too large");
  std::string cd(static_cast<size_t>(d.size), '\0');
  BC_RETURN_IF_ERROR(ReadFull(read_at, d.offset, cd));
  std::vector<Entry> out;
  out.reserve(static_cast<size_t>(std::min<uint64_t>(d.entries, 65536)));
  size_t pos = 0;
  for (uint64_t i = 0; i < d.entries; ++i) {
    if (cd.size() - pos < kCentralSize) return Malformed("truncated central directory");
    const char* h = cd.data() + pos;
    if (Le32(h) != kCentralSignature) return Malformed("bad central directory entry");
    size_t name_len = Le16(h + 28), extra_len = Le16(h + 30), comment_len = Le16(h + 32);
    if (cd.size() - pos - kCentralSize < name_len + extra_len + comment_len) {
      return Malformed("truncated central directory");
    }
    Entry e;
    e.flags = Le16(h + 8);
    e.method = Le16(h + 10);
    e.crc = Le32(h + 16);
    e.compressed = Le32(h + 20);
    e.uncompressed = Le32(h + 24);
    e.local_offset = Le32(h + 42);
    e.name.assign(h + kCentralSize, name_len);
    BC_RETURN_IF_ERROR(ApplyZip64(std::string_view(h + kCentralSize + name_len, extra_len), &e,
                                  e.uncompressed == 0xffffffff, e.compressed == 0xffffffff,
                                  e.local_offset == 0xffffffff));
    out.push_back(std::move(e));
    pos += kCentralSize + name_len + extra_len + comment_len;
  }
  return out;
}

// Streams one entry's uncompressed bytes into sha; checks its length and CRC-32.
Status ReadEntry(const ReadAtFn& read_at, uint64_t size, const Entry& e,
                 const std::function<Status(std::string_view)>& sink) {
  if (e.flags & 0x1) return DataLoss("encrypted entry in zip: " + e.name);
  if (e.method != 0 && e.method != 8) {
    return DataLoss("unsupported compression method " + std::to_string(e.method) + " for " +
                    e.name);
  }
  if (e.local_offset > size || size - e.local_offset < kLocalSize) {
    return Malformed("local header out of bounds");
  }
  char local[kLocalSize];
  BC_RETURN_IF_ERROR(ReadFull(read_at, e.local_offset, local));
  if (Le32(local) != kLocalSignature) return Malformed("bad local header for " + e.name);
  uint64_t data = e.local_offset + kLocalSize + Le16(local + 26) + Le16(local + 28);
  if (data > size || e.compressed > size - data) return Malformed("entry out of bounds");
  if (e.method == 0 && e.compressed != e.uncompressed) return Malformed("stored size mismatch");

  z_stream z{};
  bool inflating = e.method == 8;
  if (inflating && inflateInit2(&z, -MAX_WBITS) != Z_OK) return Internal("inflateInit2 failed");
  std::unique_ptr<z_stream, void (*)(z_stream*)> guard(inflating ? &z : nullptr,
                                                       [](z_stream* s) { inflateEnd(s); });
  std::vector<char> in(kChunk), out(kChunk);
  uLong crc = crc32(0L, Z_NULL, 0);
  uint64_t produced = 0;
  uint64_t remaining = e.compressed;
  bool ended = !inflating;
  auto emit = [&](const char* p, size_t n) -> Status {
    produced += n;
    if (produced > e.uncompressed) return Malformed("entry longer than recorded: " + e.name);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(p), static_cast<uInt>(n));
    BC_RETURN_IF_ERROR(sink({p, n}));
    return Status::Ok();
  };
  uint64_t offset = data;
  while (remaining > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(remaining, in.size()));
    BC_RETURN_IF_ERROR(ReadFull(read_at, offset, {in.data(), want}));
    offset += want;
    remaining -= want;
    if (!inflating) {
      BC_RETURN_IF_ERROR(emit(in.data(), want));
      continue;
    }
    if (ended) return Malformed("data after the end of a deflate stream: " + e.name);
    z.next_in = reinterpret_cast<Bytef*>(in.data());
    z.avail_in = static_cast<uInt>(want);
    while (z.avail_in > 0 && !ended) {
      z.next_out = reinterpret_cast<Bytef*>(out.data());
      z.avail_out = static_cast<uInt>(out.size());
      int rc = inflate(&z, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END) return Malformed("bad deflate data in " + e.name);
      BC_RETURN_IF_ERROR(emit(out.data(), out.size() - z.avail_out));
      ended = rc == Z_STREAM_END;
      if (rc == Z_OK && z.avail_out != 0 && z.avail_in == 0) break;
    }
    if (ended && z.avail_in > 0) return Malformed("data after the end of a deflate stream");
  }
  // Drain what zlib still holds once all input was given.
  while (inflating && !ended) {
    z.next_in = nullptr;
    z.avail_in = 0;
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    int rc = inflate(&z, Z_FINISH);
    if (rc != Z_STREAM_END && (rc != Z_BUF_ERROR || z.avail_out != 0)) {
      return Malformed("truncated deflate data in " + e.name);
    }
    BC_RETURN_IF_ERROR(emit(out.data(), out.size() - z.avail_out));
    ended = rc == Z_STREAM_END;
  }
  if (produced != e.uncompressed) return Malformed("entry shorter than recorded: " + e.name);
  if (static_cast<uint32_t>(crc) != e.crc) return Malformed("CRC-32 mismatch in " + e.name);
  return Status::Ok();
}

}  // namespace buildcache::zip
