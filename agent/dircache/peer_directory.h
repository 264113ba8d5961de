#pragma once

// The seam between directory caches (agent/dircache, no networking) and the peer protocol
// (agent/replication, gRPC): dircache asks the cluster through PeerDirectory and answers it
// through ManifestProvider. Tests implement both in memory.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/store/digest.h"
#include "common/status/status.h"

namespace buildcache::dircache {

// One file of a directory cache, as an agent lists it (proto: peer.v1.ManifestEntry).
struct ManifestEntry {
  std::string path;  // relative to the directory root, '/'-separated, no "." or ".." elements
  uint64_t size = 0;
  uint32_t mode = 0644;  // permission bits only
  store::Digest digest;
  int64_t last_use_unix_ms = 0;
  bool deleted = false;

  bool operator==(const ManifestEntry&) const = default;
};

struct Manifest {
  std::string directory;    // directories[].name
  uint64_t generation = 0;  // increases with every change on the agent that made it; the cursor
  std::vector<ManifestEntry> entries;
  bool more = false;  // a page: ask again from `generation` for the rest
  bool full = false;  // a full listing although changes were asked for: replace what you hold
};

// This agent's side: what the peer server answers GetManifest with.
class ManifestProvider {
 public:
  virtual ~ManifestProvider() = default;
  // Entries changed after since_generation, or with 0 a listing of the live entries continued
  // after listing_after; one page at a time (DirectoryCache::GetManifest: Manifest::more and
  // Manifest::full). kNotFound for an unknown directory name.
  virtual Result<Manifest> GetManifest(std::string_view directory, uint64_t since_generation,
                                       uint64_t listing_after) = 0;
};

// The cluster's side, as directory sync sees it. Thread-safe.
class PeerDirectory {
 public:
  virtual ~PeerDirectory() = default;
  // Peers currently believed up, as "HOST:PORT", without this agent.
  virtual std::vector<std::string> LivePeers() = 0;
  // One page of a peer's manifest (ManifestProvider::GetManifest).
  virtual Result<Manifest> GetManifest(const std::string& peer, std::string_view directory,
                                       uint64_t since_generation, uint64_t listing_after) = 0;
  // Streams the blob with this digest from the peer into sink (called with chunks in order).
  // The implementation verifies the bytes against digest and size and returns kDataLoss when
  // they do not match (sink may have seen bytes by then: the caller writes to a temporary file
  // and discards it). kNotFound when the peer no longer has it.
  virtual Status FetchBlob(const std::string& peer, const store::Digest& digest, uint64_t size,
                           const std::function<Status(std::string_view)>& sink) = 0;
};

}  // namespace buildcache::dircache
