#pragma once

// The wheel house: wheels built inside the cluster (uploaded by pods, or found in a pip cache's
// wheels/ directory) that the PyPI front end lists beside the upstream's files, so the next pod
// downloads the wheel instead of compiling the sdist again.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/frontends/pypi/names.h"
#include "agent/store/blob_store.h"
#include "agent/store/digest.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace buildcache::pypi {

// One wheel of the wheel house.
struct WheelEntry {
  std::string filename;
  std::string sha256;  // lowercase hex
  uint64_t size = 0;
  std::string requires_python;  // "" = unknown
  std::string uploaded;         // ISO 8601 UTC, e.g. "2026-11-28T07:30:00Z"
  // Provenance of a wheel the agent built itself from a verified upstream sdist (all empty for
  // uploaded and scanned wheels): the sdist's sha256 (lowercase hex), the builder's identity
  // and its tool versions. `uploaded` is the time the build was stored.
  std::string built_from;
  std::string builder;
  std::string tools;
  // Unlisted (its file left a watched wheel directory): kept as a tombstone so the removal
  // reaches the peers' copies of the list (merged by file name, the later change winning), never
  // listed or served. `uploaded` is then the time of the removal.
  bool removed = false;

  // Whether the agent built this wheel (trusted content: see BuildProvenance).
  bool built() const { return !built_from.empty(); }

  friend bool operator==(const WheelEntry&, const WheelEntry&) = default;
};

struct WheelHouseOptions {
  // Prefix of every store key the wheel house uses.
  std::string key_prefix = "pypi/";
  // Freshness of lists this agent does not own (replication): the copies of a project's list
  // held by its owners (the bodies of their list blobs, IndexKey), or nothing when this agent is
  // an owner itself (pushes keep an owner's copy current) or none answered. Called (outside any
  // lock) at most once per list_ttl and project, for projects that have a list here; what the
  // owners list is merged in by file name. Unset: a list is refreshed only by replication.
  std::function<std::vector<std::string>(const std::string& index_key)> owner_copies;
  std::chrono::milliseconds list_ttl{std::chrono::seconds(30)};
  std::function<std::chrono::steady_clock::time_point()> steady_now = [] {
    return std::chrono::steady_clock::now();
  };
  // The clock for upload times (injectable for tests).
  std::function<std::chrono::system_clock::time_point()> now = [] {
    return std::chrono::system_clock::now();
  };
};

struct ScanResult {
  uint64_t added = 0;    // wheels stored and listed
  uint64_t present = 0;  // already listed under that file name (left as they are)
  uint64_t failed = 0;   // unreadable or rejected files (logged)
};

// Replication: the list blobs replicate like any object, so a peer's list can replace this node's
// stored one; a list that changed in the store is merged (by file name) into the one in memory
// on its next use, and the union is saved with the next change.
//
// Persistence: each wheel is a blob under "<prefix>wheelhouse/<project>/<filename>"; each project's
// list is a JSON blob under "<prefix>wheelhouse-index/<project>", rewritten on every change, so the
// wheel house survives restarts. A list whose blob was evicted is rebuilt from memory on the next
// change; a listed wheel whose blob was evicted is left out of Files() (and dropped from the list
// on the next change).
//
// The first wheel stored under a file name stays: adding the same name with the same content
// succeeds (idempotent), with different content fails with kAlreadyExists.
//
// Thread-safe. The store must outlive the wheel house.
class WheelHouse {
 public:
  explicit WheelHouse(store::BlobStore& store, WheelHouseOptions options = {});
  ~WheelHouse();

  // A wheel being added: bytes are streamed into the store and hashed; nothing is listed or
  // visible until Commit.
  class Pending {
   public:
    ~Pending();
    Status Write(std::string_view data);
    const WheelName& wheel() const { return wheel_; }
    const std::string& filename() const { return filename_; }
    uint64_t size() const { return size_; }

   private:
    friend class WheelHouse;
    Pending() = default;
    std::string filename_;
    WheelName wheel_;
    std::unique_ptr<store::BlobWriter> writer_;
    store::Sha256 hash_;
    uint64_t size_ = 0;
    std::string head_;  // the first bytes, to check the zip signature
  };

  // Starts adding the wheel `filename` (validated with ParseWheelFilename: kInvalidArgument).
  Result<std::unique_ptr<Pending>> Begin(std::string_view filename);

  // Verifies and lists a pending wheel. kInvalidArgument when the content is not a zip file or
  // does not hash to expected_sha256 (hex, when given): nothing is stored then. kAlreadyExists
  // when a different wheel is listed under the same name.
  Result<WheelEntry> Commit(std::unique_ptr<Pending> pending,
                            std::optional<std::string_view> expected_sha256 = std::nullopt,
                            std::string_view requires_python = {});

  // Lists a pending wheel the agent built from a verified upstream sdist, with its provenance
  // (provenance.built_from must be 64 hex digits: kInvalidArgument). Otherwise as Commit without
  // an expected digest. Only the wheel builder calls this; uploads never carry provenance.
  Result<WheelEntry> CommitBuilt(std::unique_ptr<Pending> pending, const WheelEntry& provenance);

  // Stores and lists the wheel file `relative` beneath the directory `dir_fd` (opened without
  // following any link, as ScanDirectory does). With check_archive, the file must also read as
  // a sound wheel whose metadata names the project and version of its file name
  // (CheckBuiltWheel): a half-written or broken file is refused (kInvalidArgument/kDataLoss)
  // and nothing is stored. kAlreadyExists as Commit.
  Result<WheelEntry> AddFile(int dir_fd, const std::filesystem::path& relative, bool check_archive);

  // Unlists the wheel `filename` of project if it is listed with this sha256 (another wheel
  // under the name stays): it becomes a tombstone (WheelEntry::removed). kNotFound otherwise.
  Status Unlist(std::string_view project, std::string_view filename, std::string_view sha256);

  // Convenience: Begin, one Write, Commit.
  Result<WheelEntry> AddBytes(std::string_view filename, std::string_view data,
                              std::optional<std::string_view> expected_sha256 = std::nullopt);

  // Stores every *.whl file under dir (recursively; pip's cache keeps them in hashed
  // subdirectories) that is not already listed. kNotFound when dir does not exist. Pods write
  // these directories, so nothing is reached through a symbolic link: links (to files or
  // directories) are skipped with a warning and counted as failed, and each file is opened
  // beneath dir without following links (a link swapped in after the walk saw a file fails too).
  Result<ScanResult> ScanDirectory(const std::filesystem::path& dir);

  // The wheels listed for a normalized project name whose blobs are still stored, in the order
  // they were added.
  std::vector<WheelEntry> Files(std::string_view project);

  // The listed wheel with this file name, if it is still stored.
  std::optional<WheelEntry> Find(std::string_view project, std::string_view filename);

  // Store keys (exposed for the front end and tests).
  std::string FileKey(std::string_view project, std::string_view filename) const;
  std::string IndexKey(std::string_view project) const;

 private:
  using List = std::vector<WheelEntry>;

  // The project's list, loaded from the store on first use (created empty when there is none).
  List& ListLocked(const std::string& project) REQUIRES(mu_);
  // The project's list if it has one (in memory, or loaded from the store); nullptr otherwise.
  const List* CachedListLocked(std::string_view project) REQUIRES(mu_);
  // Adds to `list` the wheels of the stored list when that blob changed since this wheel house
  // last read or wrote it (a peer's list replicated over ours).
  void MergeStoredLocked(const std::string& project, List& list) REQUIRES(mu_);
  // Writes the list to the store; mu_ keeps two saves of one project in order.
  Status SaveLocked(const std::string& project, const List& list) REQUIRES(mu_);
  // Stores and lists a verified pending wheel under entry (Commit and CommitBuilt).
  Result<WheelEntry> CommitEntry(std::unique_ptr<Pending> pending, WheelEntry entry);
  // Adds the entries of `other` to `list`, by file name (a removal or re-addition that is newer
  // than ours replaces ours); whether anything changed.
  static bool MergeInto(List& list, List other);
  // Asks the owners for the project's list when the copy here is older than list_ttl.
  void RefreshFromOwners(std::string_view project) EXCLUDES(mu_);

  store::BlobStore& store_;
  const WheelHouseOptions options_;
  Mutex mu_;
  std::map<std::string, List, std::less<>> lists_ GUARDED_BY(mu_);
  // The digest of each project's list blob as last read or written here.
  std::map<std::string, store::Digest, std::less<>> list_digests_ GUARDED_BY(mu_);
  // When each list was last refreshed from its owners (owner_copies).
  std::map<std::string, std::chrono::steady_clock::time_point, std::less<>> refreshed_
      GUARDED_BY(mu_);
};

// Serializes a project's list (exposed for tests).
std::string EncodeWheelList(const std::vector<WheelEntry>& list);
Result<std::vector<WheelEntry>> DecodeWheelList(std::string_view json);

}  // namespace buildcache::pypi
