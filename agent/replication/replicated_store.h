#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "agent/replication/membership.h"
#include "agent/replication/observer.h"
#include "agent/replication/peer_client.h"
#include "agent/replication/pull_stream.h"
#include "agent/store/blob_store.h"
#include "common/base/thread_annotations.h"

namespace buildcache::replication {

struct ReplicatedStoreOptions {
  // Objects up to this size pulled for an Open are held in memory and handed to the reader once
  // verified; larger ones stream to it through a window of this size (see PullStream).
  size_t pull_window = size_t{8} << 20;
  // What the windows of all running pulls may hold together; beyond it readers wait for the
  // commit and read from the store.
  size_t pull_memory = size_t{64} << 20;
  size_t push_queue = 10000;  // pending pushes kept; beyond it new ones are dropped (counted)
  int push_attempts = 8;      // per object and owner-set, with backoff between them
  std::chrono::milliseconds push_backoff{500};  // doubled per attempt, capped at 30 s
  // Keys starting with one of these prefixes that no live owner had are not asked for again for
  // miss_ttl (0: always asked): a local miss of such a key answers NotFound without a peer round
  // trip. Meant for keys a read falls back from (the agent passes "scope/": an untrusted
  // caller's own-scope key, read before the trusted one). A commit of the key through this
  // store forgets its miss; a copy pushed here by a peer is found by the local lookup, which
  // always comes first. What the window can hide: an entry the same scope wrote through another
  // agent that does not push it here (this agent is not one of its owners), for at most miss_ttl.
  std::vector<std::string> miss_cache_prefixes;
  std::chrono::milliseconds miss_ttl{0};
  size_t miss_cache_entries = 16384;  // remembered misses; the oldest are forgotten first
  // The clock of the miss cache (tests inject one); unset: steady_clock::now.
  std::function<std::chrono::steady_clock::time_point()> now;
};

// A BlobStore decorator that makes the cluster one cache:
// - Open(key) and Stat(key) on a local miss ask the key's live owners (rendezvous hashing) in
//   order and stream the object into the local store, verified against the digest and size the
//   peer announced. Stat answers once it is stored; Open answers while it is pulled, with a reader
//   fed by the pull (PullStream: small objects once verified, large ones as they arrive with the
//   last byte held back until verified). A peer sending bad bytes is counted, logged and skipped;
//   a peer that fails part-way is left for the next owner, which continues after the bytes
//   already written. Concurrent misses of one key share one pull.
// - An object committed through NewWriter (an upload, an upstream fetch) is queued to be pushed
//   to its other owners by a background thread; failed pushes are retried with backoff.
// Everything else goes to the local store unchanged. The peer server must be given the local
// store, not this one. Thread-safe.
class ReplicatedStore : public store::BlobStore {
 public:
  ReplicatedStore(store::BlobStore& local, Cluster& cluster, PeerClient& client,
                  ReplicationObserver observer, ReplicatedStoreOptions options = {});
  ~ReplicatedStore() override;

  // Pushes queued or being retried.
  size_t PushQueueDepth();
  // Waits until no pull from peers is running (an Open's reader may be done before its pull has
  // committed the object locally).
  void WaitForPulls();

  // store::BlobStore
  Result<std::unique_ptr<store::BlobWriter>> NewWriter(std::string_view key,
                                                       const store::WriteOptions& options) override;
  Result<std::unique_ptr<store::BlobReader>> Open(std::string_view key) override;
  Result<std::unique_ptr<store::BlobReader>> OpenDigest(const store::Digest& digest) override;
  // The local store's (by digest there is nothing to pull).
  Result<std::unique_ptr<store::BlobReader>> OpenDigestForRelay(
      const store::Digest& digest) override;
  Result<store::BlobInfo> Stat(std::string_view key) override;
  bool HasDigest(const store::Digest& digest) override;
  Status Delete(std::string_view key) override;
  // The local store's move; `to` is then pushed to its other owners like a committed write.
  Status Rename(std::string_view from, std::string_view to, const store::Digest& digest) override;
  store::StoreStats Stats() override;

  void EnqueuePush(std::string key);
  // Forgets a remembered owner miss of key (a commit of it on this agent).
  void ForgetMiss(std::string_view key) EXCLUDES(misses_mu_);

 private:
  struct Push {
    std::string key;
    int attempts = 0;
    std::chrono::steady_clock::time_point due{};
  };
  // The running pull of key, or a new one (then *started is true); nullptr when no live owner
  // other than this agent could have it.
  std::shared_ptr<PullStream> StartOrJoinPull(std::string_view key, bool* started);
  // The pull's thread: asks the owners in turn; finishes the stream with OK once committed.
  void RunPull(const std::string& key, const std::shared_ptr<PullStream>& stream);
  Status PullFromOwners(const std::string& key, PullStream& stream);
  // Whether key is a miss-cached key (miss_cache_prefixes) its owners lacked within miss_ttl.
  bool RecentlyMissed(std::string_view key) EXCLUDES(misses_mu_);
  void RememberMiss(const std::string& key) EXCLUDES(misses_mu_);
  bool MissCached(std::string_view key) const;
  std::chrono::steady_clock::time_point Now() const;
  // Whether a Stat pulled key from a peer since it was last opened (and forgets it).
  bool TakePulledByStat(std::string_view key);
  static constexpr size_t kPulledUnreadLimit = 1024;
  void PushLoop();
  // OK when every live owner has the object (or it is gone locally).
  Status PushOnce(const std::string& key);

  store::BlobStore& local_;
  Cluster& cluster_;
  PeerClient& client_;
  ReplicationObserver observer_;
  ReplicatedStoreOptions options_;

  Mutex mu_;
  CondVar cv_;
  std::deque<Push> queue_ GUARDED_BY(mu_);
  size_t in_flight_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread pusher_;

  Mutex pulls_mu_;
  CondVar pulls_cv_;
  // Running pulls, by key.
  std::map<std::string, std::shared_ptr<PullStream>, std::less<>> pulls_ GUARDED_BY(pulls_mu_);
  std::shared_ptr<WindowBudget> pull_budget_;
  size_t pull_threads_ GUARDED_BY(pulls_mu_) = 0;

  // Keys a Stat pulled from a peer that no Open has read yet: that Open's reader reports origin
  // "peer" (front ends often Stat before they Open). Bounded; the oldest are forgotten first.
  Mutex pulled_mu_;
  std::deque<std::string> pulled_order_ GUARDED_BY(pulled_mu_);  // oldest first, for the bound
  std::unordered_set<std::string> pulled_unread_ GUARDED_BY(pulled_mu_);  // read on every Open

  // Owner misses of miss-cached keys: key -> when the miss expires, and the same in the order
  // remembered (for the bound; an entry whose time no longer matches the map was refreshed).
  using TimePoint = std::chrono::steady_clock::time_point;
  Mutex misses_mu_;
  std::unordered_map<std::string, TimePoint> misses_ GUARDED_BY(misses_mu_);
  std::deque<std::pair<std::string, TimePoint>> miss_order_ GUARDED_BY(misses_mu_);
};

}  // namespace buildcache::replication
