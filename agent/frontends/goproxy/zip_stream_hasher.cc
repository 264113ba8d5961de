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

ZipStreamHasher::ZipStreamHasher(uint64_t max_uncompressed) : max_uncompressed_(max_uncompressed) {}

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
}

void ZipStreamHasher::Update(std::string_view data) {
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
  crc_ = crc32(0L, Z_NULL, 0);
  skip_ = uint64_t{Le16(buf_, 26)} + Le16(buf_, 28);
  const uint32_t compressed = Le32(buf_, 18);
  buf_.clear();
  if ((flags_ & 0x1) != 0) return Stop();  // encrypted
  if (current_.method == 8) {
    z_ = std::make_unique<z_stream>();
    if (inflateInit2(z_.get(), -MAX_WBITS) != Z_OK) {
      z_.reset();
      return Stop();
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
  crc_ = crc32(crc_, reinterpret_cast<const Bytef*>(p), static_cast<uInt>(n));
  sha_->Update(std::string_view(p, n));
}

void ZipStreamHasher::FinishEntry() {
  current_.crc = static_cast<uint32_t>(crc_);
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
    case State::kInflate: {
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
