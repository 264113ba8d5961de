#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agent/frontends/npm/names.h"
#include "agent/frontends/npm/packument.h"
#include "agent/frontends/npm/packument_stream.h"
#include "agent/store/blob_store.h"
#include "agent/upstream/derived_cache.h"
#include "agent/upstream/upstream.h"
#include "common/base/thread_annotations.h"
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
//                                      is rewritten as it streams (PackumentRewriter): every
//                                      dist.tarball becomes <public_url or http://Host<p>/>
//                                      <name>/-/<file>; versions whose tarball the agent could
//                                      not serve are left out. A cold packument (nothing stored)
//                                      is sent chunked while it arrives, without an ETag; a
//                                      stored one is rewritten once into memory (one copy per
//                                      packument whatever the Host, up to render_cache_bytes;
//                                      larger ones are rewritten from the store as they are sent)
//                                      and sent with an ETag derived from the stored document and
//                                      the base URL (If-None-Match gives 304 without reading the
//                                      document). Vary: Accept. An invalid name or Host header:
//                                      400, and nothing is fetched. Upstream 404: 404; upstream
//                                      failure with nothing cached: 502 (after the first byte of a
//                                      cold document: an aborted transfer).
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
  // The tarballs of one form of a packument.
  struct ParsedTarballs {
    Form form = Form::kAbbreviated;
    TarballIndex tarballs;
  };

  void ServeRegistryEndpoint(http::Request& request, http::Response& response,
                             std::string_view rest);
  void ServePackument(http::Request& request, http::Response& response, const PackageName& name);
  class PackumentAnswer;  // one packument GET (npm_frontend.cc)
  void ServeTarball(http::Request& request, http::Response& response, const PackageName& name,
                    std::string_view raw_filename);

  // The MetadataCache request for the packument of one form.
  upstream::MetadataRequest PackumentRequest(const PackageName& name, Form form) const;
  // NotFound when the upstream does not have the package, kUnavailable for another non-200.
  Status CheckPackument(const PackageName& name, const upstream::Document& doc) const;
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
  // Sends a rewritten packument from memory with `base` (JSON-safe) at its tarball URLs.
  void SendTemplate(http::Response& response, const PackumentTemplate& rendered,
                    std::string_view base);

  // Tarball lists by package name; validated by form and document.
  upstream::DerivedCache<ParsedTarballs> index_cache_;
  // Rewritten packuments by packument key (never by Host: the tarball base is filled in as they
  // are sent, so every address clients use shares one entry); validated by document.
  upstream::DerivedCache<PackumentTemplate> render_cache_;
  // Builds of one packument's template are serialized (by key hash), so N concurrent requests for
  // a document not yet in memory hold one copy of it, not N. Guards no data: a PackumentAnswer
  // holds one from its head until its template is cached (std::unique_lock, across callbacks).
  Mutex build_mu_[16];
};

}  // namespace buildcache::npm
