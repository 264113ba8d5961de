#include "agent/frontends/goproxy/zip_stream_hasher.h"

#include <algorithm>
#include <climits>
#include <utility>

#include "common/zip/zip_format.h"

namespace buildcache::goproxy {
namespace {

using zip::format::kCentralSignature;
using zip::format::kDescriptorSignature;
using zip::format::kLocalSignature;
using zip::format::kLocalSize;

uint16_t Le16(const std::string& s, size_t at) { return zip::format::Le16(s.data() + at); }
uint32_t Le32(const std::string& s, size_t at) { return zip::format::Le32(s.data() + at); }

}  // namespace

// Failed decodes of descriptor look-alikes before an entry is inflated as it streams instead: a
// real zip has none, so this only bounds the work an archive made to mislead can cause.
constexpr int kMaxFalseEnds = 4;

ZipStreamHasher::ZipStreamHasher(uint64_t max_uncompressed, size_t whole_entry_limit)
    : max_uncompressed_(max_uncompressed), whole_entry_limit_(whole_entry_limit) {}

ZipStreamHasher::~ZipStreamHasher() {
  if (z_) inflateEnd(z_.get());
}

void ZipStreamHasher::Stop() {
  state_ = State::kStopped;
  if (z_) {
    inflateEnd(z_.get());
    z_.reset();
  }
  buf_.clear();
  whole_.clear();
  replay_.clear();
}

void ZipStreamHasher::Update(std::string_view data) {
  Feed(data);
  while (!replay_.empty() && state_ != State::kStopped && state_ != State::kEnd) {
    std::string again = std::move(replay_);
    replay_.clear();
    offset_ -= again.size();  // counted when it was first fed
    Feed(again);
  }
  replay_.clear();  // past the archive's end, or given up: nothing more to read
}

void ZipStreamHasher::Feed(std::string_view data) {
  while (!data.empty() && state_ != State::kStopped && state_ != State::kEnd) {
    const size_t before = data.size();
    const bool more = Step(data);
    offset_ += before - data.size();
    if (!more) break;
  }
}

void ZipStreamHasher::StartEntry() {
  current_ = Hashed{};
  current_.method = Le16(buf_, 8);
  flags_ = Le16(buf_, 6);
  sha_ = std::make_unique<store::Sha256>();
  crc_ = 0;
  skip_ = uint64_t{Le16(buf_, 26)} + Le16(buf_, 28);
  const uint32_t compressed = Le32(buf_, 18);
  const uint32_t uncompressed = Le32(buf_, 22);
  buf_.clear();
  if ((flags_ & 0x1) != 0) return Stop();  // encrypted
  if (current_.method == 8) {
    whole_.clear();
    searched_ = 0;
    false_ends_ = 0;
    header_compressed_.reset();
    header_uncompressed_.reset();
    if ((flags_ & 0x8) == 0 && compressed != 0xffffffff && uncompressed != 0xffffffff) {
      header_compressed_ = compressed;
      header_uncompressed_ = uncompressed;
    }
  } else if (current_.method == 0 && (flags_ & 0x8) == 0 && compressed != 0xffffffff) {
    stored_left_ = compressed;
  } else {
    return Stop();  // unknown method, or a stored entry whose length only its descriptor gives
  }
  state_ = State::kSkip;
}

void ZipStreamHasher::Output(const char* p, size_t n) {
  if (n == 0) return;
  total_out_ += n;
  if (total_out_ > max_uncompressed_) return Stop();
  current_.uncompressed += n;
  crc_ = libdeflate_crc32(crc_, p, n);
  sha_->Update(std::string_view(p, n));
}

void ZipStreamHasher::FinishEntry() {
  current_.crc = crc_;
  current_.sha256_hex = sha_->Finish().Hex();
  sha_.reset();
  if (z_) {
    inflateEnd(z_.get());
    z_.reset();
  }
  done_.emplace(entry_offset_, std::move(current_));
  state_ = (flags_ & 0x8) != 0 ? State::kDescriptor : State::kHeader;
}

bool ZipStreamHasher::Step(std::string_view& data) {
  switch (state_) {
    case State::kHeader: {
      if (buf_.empty()) entry_offset_ = offset_;
      const size_t want = (buf_.size() < 4 ? 4 : kLocalSize) - buf_.size();
      const size_t n = std::min(want, data.size());
      buf_.append(data.substr(0, n));
      data.remove_prefix(n);
      if (buf_.size() == 4) {
        const uint32_t sig = Le32(buf_, 0);
        if (sig == kCentralSignature || sig == zip::format::kEocdSignature ||
            sig == zip::format::kZip64EocdSignature) {
          state_ = State::kEnd;  // the central directory: HashZip reads it from the archive
          return false;
        }
        if (sig != kLocalSignature) {
          Stop();
          return false;
        }
      }
      if (buf_.size() == kLocalSize) StartEntry();
      return true;
    }
    case State::kSkip: {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(skip_, data.size()));
      data.remove_prefix(n);
      skip_ -= n;
      if (skip_ == 0) {
        state_ = current_.method == 8 ? State::kInflate : State::kStored;
        if (state_ == State::kStored && stored_left_ == 0) FinishEntry();
      }
      return true;
    }
    case State::kStored: {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(stored_left_, data.size()));
      Output(data.data(), n);
      if (state_ == State::kStopped) return false;
      data.remove_prefix(n);
      current_.compressed += n;
      stored_left_ -= n;
      if (stored_left_ == 0) FinishEntry();
      return true;
    }
    case State::kInflate:
      return z_ ? InflateStreaming(data) : InflateWhole(data);
    case State::kDescriptor: {
      // crc, compressed and uncompressed size, with or without a signature, 4- or 8-byte sizes:
      // the length is the one after which the next header's signature follows.
      buf_.push_back(data.front());
      data.remove_prefix(1);
      static constexpr size_t kSigned[] = {16, 24};
      static constexpr size_t kUnsigned[] = {12, 20};
      const bool signed_form = buf_.size() >= 4 && Le32(buf_, 0) == kDescriptorSignature;
      for (size_t len : signed_form ? kSigned : kUnsigned) {
        if (buf_.size() == len + 4) {
          const uint32_t next = Le32(buf_, len);
          if (next == kLocalSignature || next == kCentralSignature) {
            // The signature bytes start the next header.
            entry_offset_ = offset_ + 1 - 4;
            buf_.erase(0, len);
            state_ = State::kHeader;
            if (next == kCentralSignature) state_ = State::kEnd;
            return true;
          }
        }
      }
      if (buf_.size() >= 28) Stop();
      return true;
    }
    case State::kEnd:
    case State::kStopped:
      return false;
  }
  return false;
}

bool ZipStreamHasher::InflateStreaming(std::string_view& data) {
  char out[64 * 1024];
  const size_t n = std::min<size_t>(data.size(), UINT_MAX);
  z_->next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z_->avail_in = static_cast<uInt>(n);
  z_->next_out = reinterpret_cast<Bytef*>(out);
  z_->avail_out = sizeof(out);
  const int rc = inflate(z_.get(), Z_NO_FLUSH);
  const size_t used = n - z_->avail_in;
  const size_t produced = sizeof(out) - z_->avail_out;
  data.remove_prefix(used);
  current_.compressed += used;
  Output(out, produced);
  if (state_ == State::kStopped) return false;
  if (rc == Z_STREAM_END) {
    FinishEntry();
    return true;
  }
  if ((rc != Z_OK && rc != Z_BUF_ERROR) || (used == 0 && produced == 0)) {
    Stop();
    return false;
  }
  return true;
}

bool ZipStreamHasher::InflateWhole(std::string_view& data) {
  if (header_compressed_) {
    // The local header gives the sizes: take exactly the entry's bytes.
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(*header_compressed_ - whole_.size(), data.size()));
    whole_.append(data.substr(0, n));
    data.remove_prefix(n);
    if (whole_.size() < *header_compressed_) {
      if (whole_.size() > whole_entry_limit_) SwitchToStreaming();
      return true;
    }
    if (*header_uncompressed_ > 4 * uint64_t{whole_entry_limit_}) {
      SwitchToStreaming();
    } else if (!DecodeWhole(whole_.size(), *header_uncompressed_, std::nullopt) &&
               state_ == State::kInflate && !z_) {
      Stop();  // not what its local header says: HashZip reads the rest from the archive
    }
    return true;
  }
  // A data descriptor follows the compressed bytes: gather until one names the bytes before it.
  whole_.append(data);
  data = {};
  while (state_ == State::kInflate && !z_) {
    const size_t at = whole_.find("PK", searched_, 2);
    if (at == std::string::npos || at + 4 > whole_.size()) {
      searched_ = whole_.size() < 3 ? 0 : whole_.size() - 3;  // a signature may straddle
      break;
    }
    const uint32_t sig = Le32(whole_, at);
    if (sig == kDescriptorSignature && at + 16 > whole_.size()) {
      searched_ = at;  // decided once its sizes are here
      break;
    }
    searched_ = at + 1;
    // A signed descriptor at `at`, or an unsigned one right before the next header.
    std::optional<size_t> end;
    size_t fields = 0;
    if (sig == kDescriptorSignature) {
      end = at;
      fields = at + 4;
    } else if ((sig == kLocalSignature || sig == kCentralSignature) && at >= 12) {
      end = at - 12;
      fields = at - 12;
    }
    if (!end || Le32(whole_, fields + 4) != *end) continue;
    const uint32_t crc = Le32(whole_, fields);
    const uint64_t out = Le32(whole_, fields + 8);
    if (out > 4 * uint64_t{whole_entry_limit_}) {
      SwitchToStreaming();
      break;
    }
    if (DecodeWhole(*end, out, crc) || state_ != State::kInflate || z_) break;
    if (++false_ends_ >= kMaxFalseEnds) SwitchToStreaming();
  }
  if (state_ == State::kInflate && !z_ && whole_.size() > whole_entry_limit_) SwitchToStreaming();
  return true;
}

bool ZipStreamHasher::DecodeWhole(size_t in, uint64_t out, std::optional<uint32_t> crc) {
  if (total_out_ + out > max_uncompressed_) {
    SwitchToStreaming();  // it stops where the bound is passed, as every entry does
    return false;
  }
  if (!decompressor_) decompressor_.reset(libdeflate_alloc_decompressor());
  if (!decompressor_) {
    SwitchToStreaming();
    return false;
  }
  if (out_.size() < out) out_.resize(static_cast<size_t>(out));
  size_t used_in = 0;
  size_t used_out = 0;
  const libdeflate_result rc =
      libdeflate_deflate_decompress_ex(decompressor_.get(), whole_.data(), in, out_.data(),
                                       static_cast<size_t>(out), &used_in, &used_out);
  if (rc != LIBDEFLATE_SUCCESS || used_in != in || used_out != out) return false;
  const uint32_t content_crc = libdeflate_crc32(0, out_.data(), used_out);
  if (crc && content_crc != *crc) return false;
  total_out_ += out;
  current_.compressed = in;
  current_.uncompressed = out;
  crc_ = content_crc;
  sha_->Update(std::string_view(out_.data(), used_out));
  replay_.assign(whole_, in);  // the descriptor and what follows: read as the archive goes on
  whole_.clear();
  if (out_.size() > whole_entry_limit_) out_ = {};  // keep a large buffer for one entry only
  ++decoded_whole_;
  FinishEntry();
  return true;
}

void ZipStreamHasher::SwitchToStreaming() {
  if (z_) return;
  z_ = std::make_unique<z_stream>();
  if (inflateInit2(z_.get(), -MAX_WBITS) != Z_OK) {
    z_.reset();
    return Stop();
  }
  const std::string gathered = std::move(whole_);
  whole_.clear();
  std::string_view rest(gathered);
  while (!rest.empty() && state_ == State::kInflate && InflateStreaming(rest)) {
  }
  // Bytes past the entry's end go through the state machine again.
  if (state_ != State::kStopped && !rest.empty()) replay_.assign(rest);
}

std::optional<std::string> ZipStreamHasher::HashOf(const zip::Entry& e) const {
  auto it = done_.find(e.local_offset);
  if (it == done_.end()) return std::nullopt;
  const Hashed& h = it->second;
  if ((e.flags & 0x1) != 0 || e.method != h.method || e.compressed != h.compressed ||
      e.uncompressed != h.uncompressed || e.crc != h.crc) {
    return std::nullopt;
  }
  if (e.method == 0 && e.compressed != e.uncompressed) return std::nullopt;
  return h.sha256_hex;
}

}  // namespace buildcache::goproxy
