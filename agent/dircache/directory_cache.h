#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include "agent/dircache/directory_index.h"
#include "agent/dircache/peer_directory.h"
#include "agent/dircache/tree_watcher.h"
#include "agent/store/blob_store.h"
#include "common/base/thread_annotations.h"
#include "common/fs/atomic_file.h"
#include "common/fs/dir_reader.h"
#include "common/status/status.h"

namespace buildcache::dircache {

// Called from the watcher and sync threads, for metrics. Each member may be empty. `dir` is
// directories[].name.
struct DirCacheObserver {
  std::function<void(const std::string& dir, uint64_t bytes)> on_indexed;
  std::function<void(const std::string& dir, uint64_t bytes)> on_pulled;
  std::function<void(const std::string& dir)> on_pull_failed;  // every peer failed or bad data
  std::function<void(const std::string& dir)> on_conflict;
  std::function<void(const std::string& dir, uint64_t bytes)> on_evicted;
  // Live files and their bytes after every change.
  std::function<void(const std::string& dir, uint64_t files, uint64_t bytes)> on_usage;
  // Seconds since the oldest peer entry this agent wants but has not applied was first seen (0
  // when nothing is outstanding); after every sync round.
  std::function<void(const std::string& dir, double seconds)> on_sync_lag;
  // Hydration progress (all directories together), after every file and at the end.
  std::function<void(uint64_t files, uint64_t bytes, uint64_t target_bytes)> on_hydration;
};

struct DirectoryCacheOptions {
  std::string name;       // peers match directories on it
  std::string root;       // absolute path of the directory; created if missing
  uint64_t max_size = 0;  // bytes of live files; least recently used are removed beyond it
  // A file closed after writing (or renamed into place) counts as complete once it has been
  // unchanged this long.
  std::chrono::milliseconds settle{2000};
  // The safety net under inotify (which drops events when its queue overflows): a full walk of
  // the tree this often, and at once after an overflow.
  std::chrono::milliseconds rescan_interval{300000};
  // A walk stops after this many entries (logged), so a runaway tree cannot stall the watcher.
  size_t max_scan_entries = 2'000'000;
  // Locally deleted (path, digest) pairs remembered so sync does not pull them again; the oldest
  // are forgotten beyond this many.
  size_t max_tombstones = 100'000;
  // A deleted entry stays listed (so peers syncing incrementally drop their copy of the entry)
  // this long after the deletion, then it is pruned from memory; a peer whose cursor is older than
  // the newest pruned deletion is answered with a full listing instead (Manifest::full).
  std::chrono::milliseconds deleted_retention{600000};
  // One manifest page holds at most this many entries, and stops early once its paths pass
  // manifest_page_bytes (so a page stays far below gRPC's 4 MiB message limit).
  size_t manifest_page_entries = 10'000;
  size_t manifest_page_bytes = 1 << 20;
  // Permissions of the root (when this agent owns it) and of every directory a pull creates. The
  // default lets CI pods of any uid add, replace and trim files (the agent runs without
  // CAP_CHOWN, so it cannot give directories to the pods' uid instead). Pulled files keep their
  // entry's mode plus read for everyone.
  mode_t dir_mode = 0777;
  // Tests only: called by Pull after the target's parent directories are open and before the
  // temporary file is created in them (the window of a check-then-use race).
  std::function<void()> test_after_parents;
  // Tests only: makes the tree watcher (empty: inotify, InotifyTreeWatcher), and whether Start
  // runs the watcher thread (false: the test calls Step itself, e.g. with a ManualTreeWatcher).
  std::function<std::unique_ptr<TreeWatcher>()> new_watcher;
  bool watcher_thread = true;
};

// One node directory replicated between agents.
//
// The watcher thread (Start) follows the tree with a TreeWatcher (inotify): a file closed after
// writing (IN_CLOSE_WRITE) or renamed into place (IN_MOVED_TO) and then unchanged (size, mtime,
// inode) for `settle` is indexed: copied into the BlobStore under "dir/<name>/<path>" (peers fetch
// it by digest with OpenDigest, so a file the pod deletes stays fetchable until the store evicts
// it) and listed in the manifest. Temporary and lock files (IsIgnoredPath) are never indexed. A
// file still open for writing (seen modified, not yet closed) is skipped by the rescan as well.
//
// Generations start at the wall clock in microseconds when the cache is opened and increase with
// every change, so a peer's incremental cursor stays meaningful across restarts of this agent. An
// entry takes a new generation when it appears, when its digest or mode changes and when it is
// deleted, whether a pod wrote it or it was pulled (DirectoryIndex has the rule).
//
// Deletions: a file deleted here (by a pod, or by the quota) is listed as deleted and its (path,
// digest) remembered, so sync never pulls that content back in a loop; peers keep their copies.
// A different digest for the path is pulled again. The remembered deletions are kept in the store
// (key "dirmeta/<name>/tombstones", written at most every few seconds and at Stop) and read back
// by Open, so a restarted agent does not hydrate them again either; a deletion made while the
// agent is not running is not seen, and the last few seconds of deletions before a crash may be
// forgotten.
//
// Paths: the root is opened once; every path below it is resolved beneath that descriptor without
// following a symlink in any component (beneath.h), so a pod that swaps a directory for a link
// cannot make the cache stat, read, index, write or delete anything outside the root. The watches
// of a directory are dropped when it is moved or deleted (a move to an ignored name included) and
// added again under its new name.
//
// Deleted entries stay listed for deleted_retention, then are pruned from memory (see
// GetManifest for peers whose cursor is older); the remembered (path, digest) deletions above are
// kept apart from them.
//
// Thread-safe: Pull, GetManifest and EnforceQuota may be called from any thread while the
// watcher runs.
class DirectoryCache {
 public:
  // What Pull would do with a peer's entry.
  enum class Plan {
    kPull,      // not here: pull it
    kPresent,   // the same content is here already
    kConflict,  // a different file exists at the path: never overwritten
    kDeleted,   // deleted here before: not pulled again
    kBusy,      // a local file at the path is not indexed yet: decided once it is
    kRejected,  // unsafe or ignored path, or a deleted entry
  };

  // Creates the root if needed and indexes nothing yet (Start does). The store must outlive the
  // cache.
  static Result<std::unique_ptr<DirectoryCache>> Open(DirectoryCacheOptions options,
                                                      store::BlobStore& store,
                                                      DirCacheObserver observer = {});
  ~DirectoryCache();

  // Starts the watcher thread: watches the tree, then walks it (existing files settle like new
  // ones). Stop is idempotent and joins the thread.
  Status Start();
  void Stop();
  // One round of the watcher thread's loop: waits for tree events up to max_wait (less when a
  // settling file or the periodic rescan is due sooner), handles them, rescans when due (at once
  // after an overflow), indexes the files that settled, and saves the remembered deletions and
  // prunes old ones every few seconds. Called by the watcher thread, or by a test that started
  // the cache with watcher_thread false (never both).
  void Step(std::chrono::milliseconds max_wait);

  const std::string& name() const { return options_.name; }
  const DirectoryCacheOptions& options() const { return options_; }

  // Entries changed after since_generation, oldest change first; with since_generation 0, a
  // listing of the live entries (no deletions) changed after listing_after. At most one page
  // (manifest_page_entries / manifest_page_bytes): when the page is cut, `more` is set and
  // `generation` is where the next page starts (ask with since_generation = generation, or for a
  // listing with listing_after = generation); otherwise `generation` is the cursor for the next
  // incremental request. When since_generation is older than the newest pruned deletion, the
  // answer is the first page of a listing with `full` set.
  Manifest GetManifest(uint64_t since_generation, uint64_t listing_after = 0);

  // Forgets deleted entries older than deleted_retention (the watcher runs it every few
  // seconds). Returns how many were pruned.
  size_t PruneDeleted();
  // Entries held in memory, live and deleted.
  size_t tracked_entries();

  // Bytes and count of live indexed files.
  uint64_t used_bytes();
  uint64_t live_files();

  Plan Classify(const ManifestEntry& entry);
  // Counts and logs a conflict with a peer's entry, once per path and digest.
  void NoteConflict(const ManifestEntry& entry);

  // Streams a blob from a peer (see PeerDirectory::FetchBlob); returns the fetch's status.
  using Fetch = std::function<Status(const std::function<Status(std::string_view)>& sink)>;

  // Makes a peer's entry a file here: the fetched bytes stream into the store (which verifies
  // them against the digest) and into a temporary file beside the target at once (a blob the
  // store already has is copied from it instead); once the store accepted them the file is given
  // the entry's mode, fsynced and renamed into place without replacing anything (renameat2
  // RENAME_NOREPLACE), so a pod sees the whole, verified file or none. Returns OK when pulled,
  // kAlreadyExists when the same content is here, kFailedPrecondition for a conflict (counted
  // once per path and digest) or a deletion here, kUnavailable while a local file at the path is
  // still settling, kInvalidArgument for a rejected entry, kDataLoss / kNotFound / kCancelled from
  // the fetch, or a file system error; on any error no file is left behind. `cancelled` is polled
  // while streaming.
  Status Pull(const ManifestEntry& entry, const Fetch& fetch,
              const std::function<bool()>& cancelled = {});

  // Removes least recently used files (by max(atime, mtime) at the time of the call) until the
  // live bytes fit max_size. Returns the number of files removed. Also run by the watcher after
  // indexing.
  size_t EnforceQuota();

  // The walk the watcher runs periodically (tests use it to catch up deterministically):
  // unknown and changed files start settling, vanished ones are marked deleted.
  void Rescan();
  // Indexes the settling files whose time has come and that did not change meanwhile (the
  // watcher runs it; tests call it to catch up without waiting). Files this agent may not read
  // are skipped with a warning (at most one line a minute, with the number skipped).
  void ProcessDue();

 private:
  using Clock = std::chrono::steady_clock;
  struct Pending {
    Clock::time_point due;
    Fingerprint fp;
  };

  DirectoryCache(DirectoryCacheOptions options, store::BlobStore& store, DirCacheObserver observer);

  void WatchLoop();
  // Watches the directory rel and every directory below it; with discover_files, the files found
  // start settling (they may have been written before the watch existed).
  void AddWatchTree(const std::string& rel, bool discover_files);
  // Walks the tree from the directory `start` without following links, skipping ignored paths,
  // stopping after max_scan_entries entries: on_dir(rel, reader) for every directory opened (false:
  // neither its entries nor anything below it are visited), on_file(rel, reader, entry) for every
  // other entry. Returns false when the walk was cut short.
  bool WalkTree(
      const std::string& start,
      const std::function<bool(const std::string&, fs::DirReader&)>& on_dir,
      const std::function<void(const std::string&, fs::DirReader&, const fs::DirEntry&)>& on_file);
  void HandleEvents(const std::vector<TreeEvent>& events);
  // Logs (at most once a minute per kind, with the count since the last line) a file or directory
  // skipped because this agent may not read it, or a pull that may not write into a directory.
  enum class Denied { kRead = 0, kWrite = 1 };
  void NoteDenied(Denied kind, const std::string& rel, const std::string& error);
  void IndexFile(const std::string& rel, const Fingerprint& seen);
  // Pull's steps: the plan as a status (OK: pull), the bytes into the temporary file, and the
  // listing of the file once it is in place (fd: the file written).
  Status CheckPullPlan(const ManifestEntry& e);
  Status WritePulledBytes(const ManifestEntry& e, const Fetch& fetch,
                          const std::function<bool()>& cancelled, fs::AtomicFile& out);
  void IndexPulled(const ManifestEntry& e, int fd) REQUIRES(pull_mu_);
  void MarkDeletedLocked(const std::string& rel) REQUIRES(mu_);
  void MarkTreeDeletedLocked(const std::string& rel_dir) REQUIRES(mu_);
  void LoadTombstones();
  // Writes the remembered deletions to the store if they changed since the last write.
  void SaveTombstones();
  std::string TombstonesKey() const { return "dirmeta/" + options_.name + "/tombstones"; }
  void ReportUsageLocked() REQUIRES(mu_);
  std::string StoreKey(const std::string& rel) const;
  // Stats a regular file beneath the root without following links; false for anything else.
  bool StatFile(const std::string& rel, Fingerprint* fp, int64_t* last_use_ms, uint32_t* mode);
  static void FromStat(const struct stat& st, Fingerprint* fp, int64_t* last_use_ms,
                       uint32_t* mode);

  const DirectoryCacheOptions options_;
  store::BlobStore& store_;
  const DirCacheObserver observer_;

  // Serialises writes into the tree by Pull (temp names, rename checks) with quota removals.
  // Taken before mu_.
  Mutex pull_mu_ ACQUIRED_BEFORE(mu_);
  Mutex mu_;
  DirectoryIndex index_ GUARDED_BY(mu_);
  std::map<std::string, Pending> pending_ GUARDED_BY(mu_);  // settling, by path
  std::set<std::string> writing_ GUARDED_BY(mu_);           // modified, not closed yet
  std::set<std::pair<std::string, store::Digest>> conflicts_ GUARDED_BY(mu_);  // counted already

  int root_fd_ = -1;  // the root, opened once: every path is resolved beneath it
  Mutex denied_mu_;
  Clock::time_point denied_logged_[2] GUARDED_BY(denied_mu_);
  uint64_t denied_count_[2] GUARDED_BY(denied_mu_) = {0, 0};  // since the last warning, by Denied

  // Set by Start before the watcher thread exists; used by that thread (or the test calling
  // Step), and by Stop to wake it (TreeWatcher::Wake is thread-safe).
  std::unique_ptr<TreeWatcher> watcher_;
  Clock::time_point next_rescan_;  // the watcher thread's (or Step caller's) alone
  Clock::time_point next_save_;    // likewise
  std::atomic<bool> rescan_now_{false};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace buildcache::dircache
