#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "agent/store/blob_store.h"
#include "agent/upstream/upstream.h"
#include "common/http/router.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::cargo {

struct CargoOptions {
  // The upstream sparse index root, e.g. "https://index.example.internal/" (a "sparse+" prefix,
  // as Cargo writes registry URLs, is dropped; a trailing '/' is added when missing). Index files
  // are fetched from <upstream><index path>, and the upstream's <upstream>config.json says where
  // its .crate files are downloaded from.
  std::string upstream;
  // URL path prefix the front end is served under (no trailing '/').
  std::string prefix = "/cargo";
  // The URL clients reach this front end at, e.g. "http://buildcache.ci.svc:8080/cargo/" (a
  // trailing '/' is optional); config.json's "dl" is <public_url>/api/v1/crates. Empty:
  // "http://<the request's Host header><prefix>", i.e. whatever address the client used.
  std::string public_url;
  // How long a fetched index file (and the upstream's config.json) is used before it is
  // revalidated upstream; 404s are remembered for negative_ttl.
  std::chrono::seconds metadata_ttl{600};
  std::chrono::seconds negative_ttl{60};
  // Largest upstream index file accepted.
  uint64_t max_index_file_size = uint64_t{64} << 20;
  // Prefix of every store key this front end uses.
  std::string key_prefix = "cargo/";
  // Passed to every upstream fetch (timeouts).
  upstream::FetchOptions fetch;
  // The MetadataCache's clock (to tell a document fetched now from a stored one); empty = the
  // system clock.
  std::function<std::chrono::system_clock::time_point()> clock;
};

// The Cargo front end: a caching proxy of an upstream sparse registry index (RFC 2789) and of its
// crate downloads. All paths are under options.prefix ("/cargo"):
//
//   GET/HEAD <p>/index/config.json    the registry configuration, made by the agent: "dl" is
//                                     "<public_url>/api/v1/crates", by default
//                                     "http://<Host><p>/api/v1/crates" (the request's Host header,
//                                     so every client reaches the agent it asked); "api" is left
//                                     out (no publishing or search). A missing or malformed Host
//                                     (when it is used): 400.
//   GET/HEAD <p>/index/<path>         an index file ("1/a", "2/ab", "3/a/abc", "ab/cd/abcd..."),
//                                     through the MetadataCache (TTL, revalidation, stale copy
//                                     when the upstream fails), with an ETag and 304 for
//                                     If-None-Match. Only the canonical path of a valid, lower-case
//                                     crate name is accepted, others get 400. Upstream 404/410:
//                                     404; upstream failure and no cached copy: 502.
//   GET/HEAD <p>/api/v1/crates/<crate>/<version>/download
//                                     a .crate, through the ArtifactCache. The SHA-256 is the
//                                     "cksum" of that version's line in the (cached) index file,
//                                     never anything from the request, and the bytes are verified
//                                     against it before they are stored. The upstream URL comes
//                                     from the upstream's config.json "dl". Invalid names or
//                                     versions: 400 without any upstream request; a crate or
//                                     version the index does not list: 404; no usable cksum: 502.
//
// Other methods get 405. Responses set X-Buildcache-Source (local or upstream); errors go through
// http::SendError. Thread-safe: Handle may run concurrently on many server threads. The caches
// must outlive the front end.
class CargoFrontend {
 public:
  CargoFrontend(upstream::ArtifactCache& artifacts, upstream::MetadataCache& metadata,
                CargoOptions options);

  void Handle(http::Request& request, http::Response& response);
  // Routes every method on options.prefix to Handle; the front end must outlive the router.
  void AddRoutes(http::Router& router);

 private:
  void ServeConfig(http::Request& request, http::Response& response);
  void ServeIndexFile(http::Request& request, http::Response& response, std::string_view path);
  // `rest` is the undecoded "<crate>/<version>/download".
  void ServeCrate(http::Request& request, http::Response& response, std::string_view rest);

  // The upstream index file of a crate (lower-case name); *source is where it came from
  // (upstream::DocumentSource). kNotFound when the upstream does not have the crate.
  Result<upstream::Document> UpstreamIndexFile(const std::string& name, std::string_view* source);
  // The upstream's "dl" download template, from its (cached) config.json.
  Result<std::string> UpstreamDownloadTemplate();

  upstream::ArtifactCache& artifacts_;
  upstream::MetadataCache& metadata_;
  const CargoOptions options_;
};

}  // namespace buildcache::cargo
