#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "agent/store/blob_store.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::replication {

// The hand-over between a pull of one key from peer agents (a thread writing the bytes into the
// local store) and the reader that answers the Open which started it, so the client is served
// while the pull is still running instead of after it was stored.
//
// What a reader may hand out, and when:
// - An object no larger than the window is held in memory and released only once the whole of it
//   matched the announced digest: a corrupt or dying peer costs the client nothing (the pull goes
//   on to the next owner). It is released before the store has made it durable.
// - A larger object streams through a bounded window as it arrives, except its last byte, which
//   is held back until the content is verified: a client can never take wrong bytes for a whole
//   object. If the pull has to start over after the reader took bytes (a peer sent a corrupt
//   object), the reader fails with that error and the pull goes on for the store alone.
// - Bytes that fell out of the window (the reader is slower than the peer, or rereads) are read
//   from the local store once the pull has committed.
//
// Bytes all windows together may hold, so many concurrent pulls cannot pile up memory: a window
// that cannot get more from the budget is dropped, and its reader reads from the store after
// the commit instead. Thread-safe.
class WindowBudget {
 public:
  explicit WindowBudget(uint64_t bytes) : left_(static_cast<int64_t>(bytes)) {}
  bool Take(uint64_t n) {
    int64_t left = left_.load();
    do {
      if (left < static_cast<int64_t>(n)) return false;
    } while (!left_.compare_exchange_weak(left, left - static_cast<int64_t>(n)));
    return true;
  }
  void Give(uint64_t n) { left_ += static_cast<int64_t>(n); }
  uint64_t left() const { return static_cast<uint64_t>(left_.load()); }

 private:
  std::atomic<int64_t> left_;
};

// Thread-safe: one producer (the pull) and one reader.
class PullStream {
 public:
  // budget may be nullptr (no shared bound).
  explicit PullStream(size_t window_bytes, std::shared_ptr<WindowBudget> budget = nullptr)
      : window_limit_(window_bytes), budget_(std::move(budget)) {}
  ~PullStream();

  // --- the pulling thread
  // The object about to be appended (the first one, or a new one after Restart).
  void Announce(const store::BlobInfo& info);
  // The next bytes of the announced object, in order.
  void Append(std::string_view data);
  // Every byte was appended and the content matched the announced digest.
  void Verified();
  // The bytes appended so far are void (the object failed verification); the pull starts over.
  void Restart(const Status& why);
  // The pull is over: OK when the object is committed in the local store.
  void Finish(Status result);

  // --- the Open that started the pull
  // Waits until a reader can be made (the object is verified, or announced and streamable), or
  // returns the pull's final error.
  Result<store::BlobInfo> WaitReadable();
  // The reader for the object WaitReadable announced; reads fall back to `local` (by digest) for
  // bytes no longer in the window. At most one per stream.
  std::unique_ptr<store::BlobReader> NewReader(std::shared_ptr<PullStream> self,
                                               store::BlobStore& local);

  // The pull was started by someone who will not read it (a Stat): nothing is kept in memory.
  void NoReader() { ReaderGone(); }

  // --- anyone
  // Waits for Finish and returns its result.
  Status WaitDone();

 private:
  class Reader;
  // Copies up to buf.size() bytes at offset out of the window once they may be released; 0 at the
  // end; kUnavailable (with *fallback set) when they must come from the committed blob instead.
  Result<size_t> ReadAt(uint64_t offset, std::span<char> buf, bool* fallback) EXCLUDES(mu_);
  void ReaderGone() EXCLUDES(mu_);
  bool Streams() const REQUIRES(mu_) { return info_.size > window_limit_; }
  void DropWindow() REQUIRES(mu_);
  void PopFront() REQUIRES(mu_);  // drops the oldest chunk of the window

  const size_t window_limit_;
  const std::shared_ptr<WindowBudget> budget_;
  Mutex mu_;
  CondVar cv_;
  bool announced_ GUARDED_BY(mu_) = false;
  store::BlobInfo info_ GUARDED_BY(mu_);
  bool verified_ GUARDED_BY(mu_) = false;
  bool done_ GUARDED_BY(mu_) = false;
  Status result_ GUARDED_BY(mu_);
  bool opened_ GUARDED_BY(mu_) = false;       // a reader was handed out
  bool reader_gone_ GUARDED_BY(mu_) = false;  // ... and destroyed
  uint64_t taken_ GUARDED_BY(mu_) = 0;        // bytes the reader has been given (furthest offset)
  Status reader_error_ GUARDED_BY(mu_);  // set when the reader can no longer be answered correctly
  // The window: chunks in order, covering [window_start_, appended_).
  std::deque<std::string> window_ GUARDED_BY(mu_);
  uint64_t window_start_ GUARDED_BY(mu_) = 0;
  uint64_t window_bytes_ GUARDED_BY(mu_) = 0;
  // false once bytes were dropped before the reader took them
  bool window_valid_ GUARDED_BY(mu_) = true;
  uint64_t appended_ GUARDED_BY(mu_) = 0;
};

}  // namespace buildcache::replication
