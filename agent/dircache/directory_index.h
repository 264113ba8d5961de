#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/dircache/peer_directory.h"
#include "agent/store/digest.h"

namespace buildcache::dircache {

// What a file on disk looked like when it was seen: a change of any field means it changed.
struct Fingerprint {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint64_t ino = 0;
  bool operator==(const Fingerprint&) const = default;
};

// The in-memory index of one directory cache: the listed entries (live and deleted, by path),
// their generations, the count of live files and bytes, and the remembered (path, digest)
// deletions. It touches no file and takes no lock: DirectoryCache holds it under its mutex, and
// it is the one place that counts bytes and files and hands out generations.
//
// Generations start at the wall clock in microseconds when the index is made and increase with
// every change (never below the wall clock), so a peer's incremental cursor stays meaningful
// across restarts of this agent.
//
// The generation rule, the same for a file indexed from disk and a file pulled from a peer: an
// entry gets a new generation exactly when what a peer sees of it changes, that is when it
// becomes live, when its digest or mode changes, and when it is deleted. Putting the same content
// again (a file whose mtime a tool touched, or a pulled file the watcher then sees) updates the
// fingerprint, size and last use in place without one, so peers syncing incrementally are not
// sent an unchanged entry again. (Until this class existed a pull always took a new generation.)
class DirectoryIndex {
 public:
  using Clock = std::chrono::steady_clock;

  struct Indexed {
    ManifestEntry entry;
    uint64_t generation = 0;
    Fingerprint fp;
    Clock::time_point deleted_at;  // when entry.deleted was set
  };

  // Remembers at most max_tombstones deletions (the oldest are forgotten).
  explicit DirectoryIndex(size_t max_tombstones);

  // The entry at rel, live or deleted; nullptr when none is listed.
  const Indexed* Find(const std::string& rel) const;
  // Whether a live entry at rel has exactly this fingerprint (the file was indexed as it is).
  bool IsCurrent(const std::string& rel, const Fingerprint& fp) const;

  // Lists `entry` as live (entry.deleted is ignored), seen on disk as fp. Returns whether it took
  // a new generation (see the rule above).
  bool Put(ManifestEntry entry, const Fingerprint& fp);
  // Marks the live entry at rel deleted (a new generation) and remembers (rel, digest) so sync does
  // not pull that content back. Returns false when no live entry is at rel.
  bool MarkDeleted(const std::string& rel, Clock::time_point now);

  // Paths of live entries below the directory rel_dir (not rel_dir itself), in path order.
  std::vector<std::string> LiveBelow(const std::string& rel_dir) const;
  // Calls fn(rel, const Indexed&) for every live entry, in path order.
  template <typename Fn>
  void ForEachLive(Fn fn) const {
    for (const auto& [rel, idx] : entries_) {
      if (!idx.entry.deleted) {
        fn(rel, idx);
      }
    }
  }

  // One page of the manifest (DirectoryCache::GetManifest has the contract); `directory` is left
  // empty for the caller.
  Manifest List(uint64_t since_generation, uint64_t listing_after, size_t page_entries,
                size_t page_bytes) const;
  // Forgets deleted entries deleted at least `retention` before now. Returns how many.
  size_t PruneDeleted(Clock::time_point now, std::chrono::milliseconds retention);

  bool IsTombstoned(const std::string& path, const store::Digest& digest) const;
  // Reads remembered deletions written by TakeTombstonesIfChanged (lines of hex digest, tab,
  // path; malformed lines and unsafe paths are skipped) after those held. Returns how many are
  // held afterwards.
  size_t LoadTombstones(std::string_view text);
  // The remembered deletions as text, oldest first, when they changed since the last call
  // (nullopt otherwise); MarkTombstonesChanged makes the next call return them again (a failed
  // save).
  std::optional<std::string> TakeTombstonesIfChanged();
  void MarkTombstonesChanged() { tombstones_changed_ = true; }

  uint64_t generation() const { return generation_; }
  uint64_t live_bytes() const { return live_bytes_; }
  uint64_t live_files() const { return live_files_; }
  // Entries held, live and deleted.
  size_t tracked() const { return entries_.size(); }

 private:
  // Gives the entry at rel the next generation and keeps by_generation_ in step.
  void Bump(const std::string& rel, Indexed& idx);
  void Remember(const std::string& path, const store::Digest& digest);

  const size_t max_tombstones_;
  uint64_t generation_ = 0;
  std::map<std::string, Indexed> entries_;         // live and deleted, by path
  std::map<uint64_t, std::string> by_generation_;  // entries_ by their generation
  uint64_t pruned_generation_ = 0;                 // newest generation of a pruned deletion
  uint64_t live_bytes_ = 0;
  uint64_t live_files_ = 0;
  std::set<std::pair<std::string, store::Digest>> tombstones_;
  std::deque<std::pair<std::string, store::Digest>> tombstone_order_;
  bool tombstones_changed_ = false;
};

}  // namespace buildcache::dircache
