#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent/frontends/npm/names.h"
#include "agent/frontends/npm/packument.h"
#include "agent/store/blob_store.h"
#include "agent/upstream/derived_cache.h"
#include "agent/upstream/upstream.h"
#include "common/http/router.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::npm {

struct NpmOptions {
  // The upstream registry, e.g. "https://npm.example.internal/" (a trailing '/' is added when
  // missing). Packuments are fetched from <upstream><escaped-name> ("@scope%2fname" for scoped
  // packages); tarballs from the URL their packument gives.
  std::string upstream;
  // URL path prefix the front end is served under (no trailing '/').
  std::string prefix = "/npm";
  // The registry URL clients are given, e.g. "http://buildcache.ci.svc:8080/npm/" (a trailing
  // '/' is added when missing). Tarball URLs in packuments are <public_url><name>/-/<file>.
  // Empty: "http://<Host header><prefix>/", so the URLs name whatever address the client used.
  std::string public_url;
  // How long a fetched packument is used before it is revalidated upstream; 404s are remembered
  // for negative_ttl.
  std::chrono::seconds metadata_ttl{300};
  std::chrono::seconds negative_ttl{60};
  // Largest upstream packument accepted (full packuments of popular packages run to tens of MB).
  uint64_t max_packument_size = uint64_t{64} << 20;
  // Bytes of parsed tarball lists kept in memory, so a tarball request does not re-parse its
  // packument (0 = none).
  size_t index_cache_bytes = size_t{32} << 20;
  // Bytes of served packuments kept in memory, so a hot packument is not re-serialized for every
  // client (0 = none).
  size_t render_cache_bytes = size_t{64} << 20;
  // Prefix of every store key this front end uses.
  std::string key_prefix = "npm/";
  // Passed to every upstream fetch (timeouts).
  upstream::FetchOptions fetch;
};

// The npm front end: a caching proxy of an upstream npm registry. All paths are under
// options.prefix ("/npm"); clients use it as their registry (npm --registry http://AGENT/npm/).
//
//   GET/HEAD <p>/<name>                the packument; <name> is "name", "@scope%2fname" or
//            <p>/@scope/name           "@scope/name". Full (application/json) or abbreviated
//                                      (Accept: application/vnd.npm.install-v1+json), each form
//                                      fetched and cached on its own in the MetadataCache (TTL,
//                                      revalidation, stale copy when the upstream fails); an
//                                      abbreviated request is answered with the full form when
//                                      only that one is stored (npm accepts it). The JSON
//                                      is parsed and every dist.tarball is rewritten to
//                                      <public_url or http://Host<p>/><name>/-/<file>; versions
//                                      whose tarball the agent could not serve are left out.
//                                      Vary: Accept, ETag (If-None-Match gives 304). An invalid
//                                      name or Host header: 400, and nothing is fetched. Upstream
//                                      404: 404; upstream failure with nothing cached: 502.
//   GET/HEAD <p>/<name>/-/<file>       a tarball, through the ArtifactCache. Its upstream URL and
//                                      digest come from the cached packument (either form), looked
//                                      up by file name, never from the request: dist.integrity
//                                      (SRI, strongest algorithm) or else dist.shasum (SHA-1). A
//                                      file the packument does not list: 404. No usable digest:
//                                      502. The bytes are verified before they are stored; on a
//                                      mismatch nothing is stored and the client gets 502 or an
//                                      aborted transfer.
//   GET <p>/-/ping                     200 "{}" (npm ping), answered by the agent.
//   POST <p>/-/npm/v1/security/...     404 with a JSON error: audits are not proxied (the
//                                      fetcher only GETs). npm install carries on without an
//                                      audit report; `npm audit` says the endpoint is missing.
//   anything else                      404 (other GETs, e.g. <p>/<name>/<version>) or 405 (other
//                                      methods: publishing goes to the real registry).
//
// Responses set X-Buildcache-Source (local or upstream); errors go through http::SendError.
// Thread-safe: Handle may run concurrently on many server threads. The store and the caches must
// outlive the front end; the store is only asked which packuments it holds.
class NpmFrontend {
 public:
  NpmFrontend(store::BlobStore& store, upstream::ArtifactCache& artifacts,
              upstream::MetadataCache& metadata, NpmOptions options);
  ~NpmFrontend();

  void Handle(http::Request& request, http::Response& response);
  // Routes every method on options.prefix to Handle; the front end must outlive the router.
  void AddRoutes(http::Router& router);

 private:
  // A packument as served, and its ETag.
  struct Rendered {
    std::string body;
    std::string etag;
  };
  // The tarballs of one form of a packument.
  struct ParsedTarballs {
    Form form = Form::kAbbreviated;
    TarballIndex tarballs;
  };

  void ServeRegistryEndpoint(http::Request& request, http::Response& response,
                             std::string_view rest);
  void ServePackument(http::Request& request, http::Response& response, const PackageName& name);
  void ServeTarball(http::Request& request, http::Response& response, const PackageName& name,
                    std::string_view raw_filename);

  // The upstream packument of one form; *source is where it came from
  // (upstream::DocumentSource). NotFound when the upstream does not have the package.
  Result<upstream::Document> FetchPackument(const PackageName& name, Form form,
                                            std::string_view* source);
  // The tarballs of a package, from the form of its packument clients last read (else
  // SourceForm(kAbbreviated)); parsed once per fetched copy.
  Result<std::shared_ptr<const TarballIndex>> Tarballs(const PackageName& name);
  // Keeps the tarball list parsed from one document (by DocumentFingerprint) of one form.
  std::shared_ptr<const TarballIndex> PutTarballs(const PackageName& name, Form form,
                                                  const std::string& fingerprint,
                                                  TarballIndex tarballs);
  std::string PackumentKey(const PackageName& name, Form form) const;
  // The form to read for a request of `wanted`: the full one for an abbreviated request when
  // only the full one is stored (it answers that request too), else `wanted`.
  Form SourceForm(const PackageName& name, Form wanted);
  std::string PackumentUrl(const PackageName& name) const;

  store::BlobStore& store_;
  upstream::ArtifactCache& artifacts_;
  upstream::MetadataCache& metadata_;
  const NpmOptions options_;
  // Tarball lists by package name; validated by form and document.
  upstream::DerivedCache<ParsedTarballs> index_cache_;
  // Served packuments by packument key and tarball base; validated by document.
  upstream::DerivedCache<Rendered> render_cache_;
};

}  // namespace buildcache::npm
