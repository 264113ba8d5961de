#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/frontends/goproxy/dirhash.h"
#include "agent/frontends/goproxy/zip_stream_hasher.h"
#include "agent/store/blob_store.h"
#include "agent/upstream/coalescer.h"
#include "agent/upstream/upstream.h"
#include "common/http/router.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::goproxy {

struct SumdbOptions {
  // The checksum database's name as GOSUMDB gives it (e.g. the first field of `go env GOSUMDB`).
  // Empty: no database is proxied, and .mod/.zip are not checked against one.
  std::string name;
  // The database's base URL: <upstream>/lookup/..., /tile/..., /latest. A GOPROXY upstream that
  // proxies the database serves it at <proxy>/sumdb/<name>, the default when this is empty.
  std::string upstream;
  // How long "latest" and partial tiles are used before they are fetched again.
  std::chrono::seconds latest_ttl{60};
  // Check .mod and .zip against the database's h1: hashes before storing them.
  bool verify = true;
  // Module path patterns (GONOSUMDB syntax: path prefixes whose elements may use '*' and '?')
  // whose .mod and .zip are stored without that check (modules the database does not have).
  std::vector<std::string> no_verify;
};

struct GoproxyOptions {
  // The upstream module proxy's base URL, e.g. "https://goproxy.example.internal" (a trailing '/'
  // is dropped). Requests go to <upstream>/<escaped module>/@v/...
  std::string upstream;
  // URL path prefix the front end is served under (no trailing '/').
  std::string prefix = "/gomod";
  // How long @v/list, @latest and .info of a query (branch, tag) are used before they are fetched
  // again; 404/410 answers are remembered for negative_ttl.
  std::chrono::seconds metadata_ttl{60};
  std::chrono::seconds negative_ttl{60};
  // How long a .mod or .zip request waits for another request's fetch of the same file while that
  // fetch makes no progress; then it gets 504. A streamed zip GET's fetch progresses with every
  // piece that arrives and is waited for however long it takes; a HEAD's or a .mod's fetch counts
  // from its start.
  std::chrono::milliseconds verify_wait{300'000};
  // Largest metadata document (lists, .info, sumdb latest, partial tiles) accepted.
  uint64_t max_metadata_size = uint64_t{16} << 20;
  SumdbOptions sumdb;
  ZipLimits zip;
  // Prefix of every store key this front end uses.
  std::string key_prefix = "goproxy/";
  // Passed to every upstream fetch (timeouts).
  upstream::FetchOptions fetch;
  // The MetadataCache's clock (to tell a fresh fetch from a cached document); system clock when
  // empty.
  std::function<std::chrono::system_clock::time_point()> clock;
};

// The Go module proxy front end (the GOPROXY protocol) with checksum-database proxying. Paths are
// under options.prefix ("/gomod"); <m> is a case-encoded module path ("!" + lowercase for an
// uppercase letter), <v> a case-encoded version:
//
//   GET/HEAD <p>/<m>/@v/list          the versions; mutable (MetadataCache, metadata_ttl).
//   GET/HEAD <p>/<m>/@latest          the latest version's info; mutable.
//   GET/HEAD <p>/<m>/@v/<v>.info      a canonical version: immutable (ArtifactCache); a query
//                                     (branch, tag, revision prefix): mutable.
//   GET/HEAD <p>/<m>/@v/<v>.mod       canonical versions only; immutable. With a checksum
//   GET/HEAD <p>/<m>/@v/<v>.zip       database and sumdb.verify, the bytes are fetched, checked
//                                     against the database's h1: hashes, and only then stored
//                                     and served (a mismatch: 502, nothing stored).
//   GET/HEAD <p>/sumdb/<name>/supported       200 for the configured database, else 404.
//   GET/HEAD <p>/sumdb/<name>/lookup/<m>@<v>  immutable.
//   GET/HEAD <p>/sumdb/<name>/tile/H/L/N      a full tile: immutable.
//   GET/HEAD <p>/sumdb/<name>/tile/H/L/N.p/W  a partial tile: mutable (latest_ttl).
//   GET/HEAD <p>/sumdb/<name>/latest          the signed tree head: mutable (latest_ttl).
//
// Module paths and versions are decoded and checked (module_path.h) before anything else, and
// upstream URLs are built from the checked values: bad input gets 400 and causes no upstream
// request. Upstream 404/410 give the same code (so GOPROXY=<agent>,direct falls through); on the
// module endpoints (list, latest, info, mod, zip) an upstream 403 gives 404 too (proxies answer
// 403 for paths they refuse, e.g. the prefixes `go mod tidy` probes), and every not-found answer
// is remembered for negative_ttl, logged at debug and counted as not_found. Any other upstream
// failure gives 502, which stops the go command, as the protocol says. Concurrent requests for a
// .mod or .zip not stored yet share one fetch (a Coalescer flight): the others, GET or HEAD, wait
// for it holding nothing (504 after verify_wait without progress) and are served from the store.
// Responses set X-Buildcache-Source (local or upstream). Thread-safe; the store and caches must
// outlive it.
class GoproxyFrontend {
 public:
  GoproxyFrontend(store::BlobStore& store, upstream::ArtifactCache& artifacts,
                  upstream::MetadataCache& metadata, GoproxyOptions options);
  ~GoproxyFrontend();

  void Handle(http::Request& request, http::Response& response);
  // Routes every method on options.prefix to Handle; the front end must outlive the router.
  void AddRoutes(http::Router& router);

  const GoproxyOptions& options() const { return options_; }

 private:
  struct ModuleRequest;

  void ServeModule(http::Request& request, http::Response& response, std::string_view rest);
  void ServeSumdb(http::Request& request, http::Response& response, std::string_view rest);
  // Module endpoints read an upstream 403 as not found and remember not-found answers for
  // negative_ttl; checksum-database endpoints take only 404/410 as not found.
  enum class Endpoint { kModule, kSumdb };
  void ServeMetadata(http::Request& request, http::Response& response, const std::string& key,
                     const std::string& url, std::chrono::seconds ttl,
                     std::string_view content_type, Endpoint endpoint);
  void ServeArtifact(http::Request& request, http::Response& response, const std::string& key,
                     const std::string& url, std::string_view content_type, Endpoint endpoint);
  // .mod and .zip checked against the checksum database.
  void ServeVerified(http::Request& request, http::Response& response, const ModuleRequest& m);
  // Makes sure the checked object is stored under final_key. Called by the key's flight leader
  // (flights_) only, so nothing else writes final_key or the staging key meanwhile.
  Status EnsureVerified(const ModuleRequest& m, const std::string& final_key);
  // The .mod or .zip of m under its staging key (fetched there, never served).
  upstream::Artifact StagedArtifact(const ModuleRequest& m) const;
  // Checks the staged object `reader` reads (the blob staged_key maps to) against the checksum
  // database's `expected` hash and moves it to final_key (a copy when the staged key changed
  // meanwhile); kDataLoss when it does not match (or a zip is unusable).
  // A zip's entries that `streamed` hashed as it arrived are not inflated again.
  Status StoreVerified(const ModuleRequest& m, store::BlobReader& reader,
                       const std::string& expected, const std::string& staged_key,
                       const std::string& final_key, const ZipStreamHasher* streamed = nullptr);
  // Answers a failed .mod/.zip fetch with its status (unless the response has started), logging
  // it unless it is a not-found answer.
  void FetchFailed(http::Response& response, const ModuleRequest& m, const Status& s);
  // A zip GET miss, led by this request (`lead`: its progress is reported as bytes arrive): the
  // checksum-database look-up runs while the zip is fetched and streamed to the client with its
  // last byte held back until the zip's h1 matches (HeldBackResponse).
  void ServeZipStreamed(http::Request& request, http::Response& response, const ModuleRequest& m,
                        const std::string& final_key,
                        upstream::Coalescer<Status>::Leadership& lead);
  // Checks the staged zip (it must be the bytes that were sent: `sha256`) against `expected` and
  // stores it under final_key. Runs inside the zip's artifact fetch, before its last byte goes out
  // and before the fetch's waiters are released: it must never wait for another request.
  Status CommitVerifiedZip(const ModuleRequest& m, const std::string& staged_key,
                           const std::string& final_key, const std::string& expected,
                           const store::Digest& sha256, const ZipStreamHasher& streamed);
  // The checksum database's hashes for module@version (the lookup, cached as an artifact).
  Result<std::string> ExpectedHash(const ModuleRequest& m);
  bool SkipVerify(std::string_view module) const;

  store::BlobStore& store_;
  upstream::ArtifactCache& artifacts_;
  upstream::MetadataCache& metadata_;
  const GoproxyOptions options_;
  // One fetch-and-verify per final .mod/.zip key; the others wait on it (ServeVerified).
  upstream::Coalescer<Status> flights_;
};

// True when a GONOSUMDB-style pattern list matches the module path: some pattern matches a prefix
// of its path elements, element by element, with '*' (any run of characters) and '?' (one).
bool MatchesPathPatterns(const std::vector<std::string>& patterns, std::string_view module);

}  // namespace buildcache::goproxy
