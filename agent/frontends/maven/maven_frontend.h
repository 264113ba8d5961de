#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "agent/frontends/maven/repository_path.h"
#include "agent/store/blob_store.h"
#include "agent/upstream/upstream.h"
#include "common/http/router.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::maven {

struct MavenOptions {
  // The upstream repository root, e.g. "https://maven.example.internal/maven2/" (a trailing '/'
  // is added when missing). A file is fetched from <upstream><path>.
  std::string upstream;
  // URL path prefix the front end is served under (no trailing '/').
  std::string prefix = "/maven";
  // How long a fetched maven-metadata.xml or SNAPSHOT file is used before it is revalidated
  // upstream; 404s are remembered for negative_ttl.
  std::chrono::seconds metadata_ttl{600};
  std::chrono::seconds negative_ttl{60};
  // Largest mutable file (maven-metadata.xml, SNAPSHOT files) accepted; they are held in memory
  // while served.
  uint64_t max_mutable_size = uint64_t{64} << 20;
  // Prefix of every store key this front end uses.
  std::string key_prefix = "maven/";
  // Passed to every upstream fetch (timeouts).
  upstream::FetchOptions fetch;
  // The MetadataCache's clock (to tell a document fetched now from a stored one); empty = the
  // system clock.
  std::function<std::chrono::system_clock::time_point()> clock;
};

// The Maven front end: a caching proxy of an upstream Maven repository (default layout), to be
// used as a <mirror> (mirrorOf "*") in settings.xml. All paths are under options.prefix
// ("/maven"); GET and HEAD only (405 otherwise, so nothing is deployed here):
//
//   <p>/<group>/<artifactId>/<version>/<artifactId>-<version>[-<classifier>].<ext>
//       A release file: immutable, through the ArtifactCache. Its upstream checksum file is
//       fetched first (.sha1, else .sha256, else .sha512) and the bytes are verified against it
//       before they are stored. No checksum file upstream: 404 (an unverifiable file is not
//       served); a checksum file without a digest in it: 502.
//   <p>/.../<file>.sha1 (.md5, .sha256, .sha512) of a release file
//       The upstream checksum file: immutable, kept in the store once fetched, answered with the
//       digest it holds (lower-case hex) after checking it is one.
//   <p>/.../maven-metadata.xml, and every file of a <version>-SNAPSHOT directory
//       Mutable: through the MetadataCache (TTL, revalidation, stale copy when the upstream
//       fails), with an ETag and 304 for If-None-Match. Their checksum files are computed from
//       the body served, so a client always gets a matching pair.
//
// A path that is not such a repository path (a bad character, a "." or ".." segment, a file name
// that does not match its artifactId and version) gets 400 without any upstream request;
// directories get 404. Upstream 404/410: 404; upstream failure with nothing cached: 502.
// Responses set X-Buildcache-Source (local or upstream); errors go through http::SendError.
// Thread-safe: Handle may run concurrently on many server threads. The store and the caches must
// outlive the front end.
class MavenFrontend {
 public:
  MavenFrontend(store::BlobStore& store, upstream::ArtifactCache& artifacts,
                upstream::MetadataCache& metadata, MavenOptions options);

  void Handle(http::Request& request, http::Response& response);
  // Routes every method on options.prefix to Handle; the front end must outlive the router.
  void AddRoutes(http::Router& router);

 private:
  void ServeMutable(http::Request& request, http::Response& response, const RepositoryPath& path);
  void ServeReleaseChecksum(http::Request& request, http::Response& response,
                            const RepositoryPath& path);
  void ServeArtifact(http::Request& request, http::Response& response, const RepositoryPath& path);

  // The digest in the upstream checksum file of a release file (kept in the store once fetched);
  // *cached is set when it was already stored. kNotFound when the upstream has no such file.
  Result<std::string> ReleaseChecksum(const std::string& file_path, ChecksumAlgorithm algorithm,
                                      bool* cached);

  store::BlobStore& store_;
  upstream::ArtifactCache& artifacts_;
  upstream::MetadataCache& metadata_;
  const MavenOptions options_;
};

}  // namespace buildcache::maven
