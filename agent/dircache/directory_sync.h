#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "agent/dircache/directory_cache.h"
#include "agent/dircache/peer_directory.h"
#include "agent/store/blob_store.h"
#include "common/base/thread_annotations.h"

namespace buildcache::dircache {

struct DirectorySyncOptions {
  // How often peers' manifests are asked for (incrementally, by generation) and missing files
  // pulled.
  std::chrono::milliseconds sync_interval{10000};
  // Files pulled at the same time (sync and hydration): overlaps one file's fsyncs and round
  // trips with the next one's transfer.
  int parallel_pulls = 4;
};

struct HydrationReport {
  uint64_t files = 0;         // pulled
  uint64_t bytes = 0;         // pulled
  uint64_t target_bytes = 0;  // what was planned (the hot set within the bounds)
  uint64_t failed = 0;        // planned files that could not be pulled
  bool complete = false;      // every planned file was tried before the time ran out
  size_t peers = 0;           // live peers asked
};

// The directory caches of one agent, and their replication: answers peers' manifest requests
// (ManifestProvider), pulls what peers have and this agent lacks (sync, in a background thread),
// and hydrates a new node's directories before it reports ready.
//
// Sync, per directory: manifests are merged over live peers (the most recently used copy of a
// path wins); entries this agent lacks (DirectoryCache::Classify == kPull) are pulled hottest
// first (last use, newest first) while they fit the directory's free quota: a pull never makes
// this agent evict its own files. A peer that is no longer live is forgotten with its entries
// (and asked for a full manifest when it comes back).
//
// Thread-safe. Peers may be set once, before StartSync or Hydrate.
class DirectorySync : public ManifestProvider {
 public:
  DirectorySync(store::BlobStore& store, DirectorySyncOptions options,
                DirCacheObserver observer = {});
  ~DirectorySync() override;

  // Opens one directory cache (not started). Names must be unique.
  Status Add(DirectoryCacheOptions options);
  // Starts every directory's watcher.
  Status StartWatching();
  void SetPeers(PeerDirectory* peers);
  bool has_peers() const { return peers_ != nullptr; }
  // Runs SyncOnce every sync_interval in a background thread until Stop (not after Stop).
  void StartSync();
  // One round over every directory and live peer.
  void SyncOnce();
  // Pulls the hot set of every directory from live peers: the most recently used entries first,
  // across directories, each directory within its free quota, until max_size bytes are planned;
  // stops starting new files (and cancels the one streaming) once max_time has passed or Stop is
  // called. Logs progress and reports it to the observer.
  HydrationReport Hydrate(std::chrono::milliseconds max_time, uint64_t max_size);
  // Stops sync and every watcher; idempotent.
  void Stop();

  DirectoryCache* Find(std::string_view name);
  const std::vector<std::unique_ptr<DirectoryCache>>& caches() const { return caches_; }

  // ManifestProvider
  Result<Manifest> GetManifest(std::string_view directory, uint64_t since_generation,
                               uint64_t listing_after) override;

 private:
  struct Remote {
    std::map<std::string, ManifestEntry> entries;  // live entries of this peer, by path
    uint64_t cursor = 0;                           // generation received so far
  };
  struct Wanted {
    DirectoryCache* cache;
    ManifestEntry entry;
    std::vector<std::string> peers;  // holders of this digest, most recent first
  };

  // Refreshes remotes_ from live peers (incrementally unless full), reading every page; returns
  // the live peers.
  std::vector<std::string> RefreshManifests(bool full);
  // Reads one peer's manifest of one directory, page by page, into remotes_.
  void RefreshOne(PeerDirectory& peers, const std::string& peer, DirectoryCache& cache, bool full);
  // Applies one page of a peer's manifest; `replace` drops what was known of the peer first.
  void ApplyPage(const std::pair<std::string, std::string>& key, const std::string& dir,
                 Manifest& m, bool replace);
  // Entries to pull for one directory, hottest first, with their holders.
  std::vector<Wanted> Plan(DirectoryCache& cache);
  // Tries the holders in order; true when pulled (or found present).
  bool PullFromPeers(const Wanted& w, const std::function<bool()>& cancelled);
  // Pulls items with parallel_pulls workers, in order of the list; done is called (serialised)
  // after each. Items not started when cancelled() turns true are skipped. Returns how many were
  // tried.
  size_t PullAll(const std::vector<const Wanted*>& items, const std::function<bool()>& cancelled,
                 const std::function<void(const Wanted&, bool pulled)>& done);
  // Greedy choice of wanted entries (already hottest first) that fit each directory's free room
  // and, together, max_bytes.
  std::vector<const Wanted*> Choose(const std::vector<Wanted>& wanted, uint64_t max_bytes,
                                    uint64_t* planned_bytes);

  store::BlobStore& store_;
  const DirectorySyncOptions options_;
  const DirCacheObserver observer_;
  std::vector<std::unique_ptr<DirectoryCache>> caches_;
  std::atomic<PeerDirectory*> peers_{nullptr};

  Mutex round_mu_ ACQUIRED_BEFORE(remotes_mu_);  // one sync round or hydration at a time
  Mutex remotes_mu_;
  // (peer, directory) -> what that peer listed.
  std::map<std::pair<std::string, std::string>, Remote> remotes_ GUARDED_BY(remotes_mu_);
  // (directory, path, digest) -> when first seen in a peer manifest, for the sync lag.
  std::map<std::tuple<std::string, std::string, store::Digest>,
           std::chrono::steady_clock::time_point>
      first_seen_ GUARDED_BY(remotes_mu_);

  Mutex stop_mu_;
  CondVar stop_cv_;  // with stop_mu_: Stop wakes the sync thread's wait
  std::atomic<bool> stopping_{false};
  std::thread sync_thread_ GUARDED_BY(stop_mu_);
};

}  // namespace buildcache::dircache
