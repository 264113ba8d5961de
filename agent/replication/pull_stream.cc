#include "agent/replication/pull_stream.h"

#include <algorithm>
#include <cstring>

#include "agent/upstream/hold_back.h"

namespace buildcache::replication {

class PullStream::Reader : public store::BlobReader {
 public:
  Reader(std::shared_ptr<PullStream> stream, store::BlobInfo info, store::BlobStore& local)
      : stream_(std::move(stream)), info_(info), local_(local) {}
  ~Reader() override { stream_->ReaderGone(); }

  const store::BlobInfo& info() const override { return info_; }
  int fd() const override { return -1; }  // the file is not complete yet: read through ReadAt
  std::string_view origin() const override { return "peer"; }

  Result<size_t> ReadAt(uint64_t offset, std::span<char> buf) override {
    if (committed_) return committed_->ReadAt(offset, buf);
    bool fallback = false;
    auto n = stream_->ReadAt(offset, buf, &fallback);
    if (!fallback) return n;
    // Out of the window: the pull has committed the object, so the store has every byte.
    BC_ASSIGN_OR_RETURN(committed_, local_.OpenDigest(info_.digest));
    return committed_->ReadAt(offset, buf);
  }

 private:
  std::shared_ptr<PullStream> stream_;
  const store::BlobInfo info_;
  store::BlobStore& local_;
  std::unique_ptr<store::BlobReader> committed_;
};

PullStream::~PullStream() {
  MutexLock lock(mu_);
  DropWindow();
}

void PullStream::Announce(const store::BlobInfo& info) {
  {
    MutexLock lock(mu_);
    announced_ = true;
    info_ = info;
  }
  cv_.NotifyAll();
}

void PullStream::Append(std::string_view data) {
  {
    MutexLock lock(mu_);
    appended_ += data.size();
    if (window_valid_ && !reader_gone_) {
      while (!window_.empty() && window_start_ + window_.front().size() <= taken_) PopFront();
      if (window_bytes_ + data.size() > window_limit_ ||
          (budget_ != nullptr && !budget_->Take(data.size()))) {
        // The reader is behind, or every window together holds too much: the reader reads the
        // rest from the store after the commit.
        DropWindow();
      } else {
        window_.emplace_back(data);
        window_bytes_ += data.size();
      }
    }
  }
  cv_.NotifyAll();
}

void PullStream::Verified() {
  {
    MutexLock lock(mu_);
    verified_ = true;
  }
  cv_.NotifyAll();
}

void PullStream::Restart(const Status& why) {
  {
    MutexLock lock(mu_);
    if (opened_ && reader_error_.ok()) reader_error_ = why;
    announced_ = false;
    verified_ = false;
    appended_ = 0;
    DropWindow();
    window_start_ = 0;
    window_valid_ = !opened_;
  }
  cv_.NotifyAll();
}

void PullStream::Finish(Status result) {
  {
    MutexLock lock(mu_);
    done_ = true;
    result_ = std::move(result);
  }
  cv_.NotifyAll();
}

Result<store::BlobInfo> PullStream::WaitReadable() {
  MutexLock lock(mu_);
  while (!done_ && !verified_ && !(announced_ && Streams())) cv_.Wait(mu_);
  if (!verified_ && done_) {
    return result_.ok() ? Internal("peer pull ended without an object") : result_;
  }
  opened_ = true;
  return info_;
}

std::unique_ptr<store::BlobReader> PullStream::NewReader(std::shared_ptr<PullStream> self,
                                                         store::BlobStore& local) {
  store::BlobInfo info;
  {
    MutexLock lock(mu_);
    info = info_;
  }
  return std::make_unique<Reader>(std::move(self), info, local);
}

Status PullStream::WaitDone() {
  MutexLock lock(mu_);
  while (!done_) cv_.Wait(mu_);
  return result_;
}

Result<size_t> PullStream::ReadAt(uint64_t offset, std::span<char> buf, bool* fallback) {
  MutexLock lock(mu_);
  for (;;) {
    if (!reader_error_.ok()) return reader_error_;
    if (offset >= info_.size || buf.empty()) return size_t{0};
    // Small objects go out only whole and verified; large ones as they come, but the last byte
    // only once verified (HoldBack's rule).
    const uint64_t releasable =
        verified_ || Streams() ? upstream::HoldBack(info_.size).Releasable(appended_, verified_)
                               : 0;
    if (window_valid_ && offset >= window_start_ && offset < releasable) {
      while (!window_.empty() && window_start_ + window_.front().size() <= offset) PopFront();
      size_t n = 0;
      uint64_t chunk_start = window_start_;
      for (const std::string& chunk : window_) {
        const uint64_t at = offset + n;
        if (n == buf.size() || at >= releasable) break;
        if (at < chunk_start + chunk.size()) {
          const uint64_t from = at - chunk_start;
          const size_t len = static_cast<size_t>(
              std::min<uint64_t>({chunk.size() - from, buf.size() - n, releasable - at}));
          std::memcpy(buf.data() + n, chunk.data() + from, len);
          n += len;
        }
        chunk_start += chunk.size();
      }
      taken_ = std::max(taken_, offset + n);
      return n;
    }
    if (done_) {
      if (!result_.ok()) return result_;
      *fallback = true;  // committed: the store has it
      return Unavailable("read from the store");
    }
    cv_.Wait(mu_);
  }
}

void PullStream::ReaderGone() {
  MutexLock lock(mu_);
  reader_gone_ = true;
  DropWindow();
}

void PullStream::PopFront() {
  const uint64_t n = window_.front().size();
  window_start_ += n;
  window_bytes_ -= n;
  window_.pop_front();
  if (budget_ != nullptr) budget_->Give(n);
}

void PullStream::DropWindow() {
  window_.clear();
  if (budget_ != nullptr) budget_->Give(window_bytes_);
  window_bytes_ = 0;
  window_valid_ = false;
}

}  // namespace buildcache::replication
