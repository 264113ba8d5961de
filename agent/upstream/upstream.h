#pragma once

// The shared upstream layer: how front ends fetch what the local store lacks.
//
//   Fetcher        streaming HTTP(S) GET with TLS verification, timeouts, redirects and bounded
//                  retries with backoff (only before any byte was handed on).
//   ArtifactCache  immutable artifacts (wheels, module zips, tarballs, crates, jars): served from
//                  the store, or fetched once (concurrent misses coalesced), streamed to the client
//                  while stored, verified against the digest the ecosystem's index gives.
//   MetadataCache  mutable documents (simple pages, @v/list, packuments, index files): a TTL,
//                  conditional revalidation, stale serving when the upstream fails, 502 with the
//                  reason when it fails and nothing is cached.
//
// Front ends depend on this layer and on the store; neither knows any front end. URLs given to
// this layer are validated here (agent/upstream/url.h: ParseUrl, also usable to check configured
// upstream URLs at start-up); names inside them are the front ends' to validate.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/store/blob_store.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::upstream {

struct Url;  // agent/upstream/url.h

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// ---------------------------------------------------------------------------------------------
// Transport

struct UpstreamResponse {
  int status = 0;
  HeaderList headers;
  std::optional<uint64_t> content_length;
  std::string final_url;  // after redirects; without userinfo
  // Header value by case-insensitive name; "" when absent.
  std::string_view header(std::string_view name) const;
};

// "<where> answered <status>", the message of an unexpected upstream status: for 401 and 407 it
// adds that the upstream wants credentials (or refused the ones sent), so a client of a private
// upstream sees why. Never quotes anything of the response.
std::string UnexpectedStatusMessage(std::string_view where, int status);

struct FetchOptions {
  // Extra request headers (Accept, If-None-Match, If-Modified-Since, ...). Host, Connection,
  // Content-Length and Transfer-Encoding are the fetcher's own and are ignored here; a name or
  // value with CR, LF or NUL makes Get fail with kInvalidArgument. Authorization, Cookie and
  // Proxy-Authorization are dropped when a redirect leaves the origin. "Accept-Encoding:
  // identity" is sent unless given here: bodies are stored and verified exactly as sent.
  HeaderList headers;
  // Bounds connecting and the TLS handshake (name resolution is bounded by the system resolver).
  std::chrono::milliseconds connect_timeout{10'000};
  // Bounds each read from the upstream (a stalled transfer fails after this long).
  std::chrono::milliseconds read_timeout{30'000};
  // 301, 302, 303, 307 and 308 with a Location are followed (relative or absolute), at most this
  // many times; a redirect from https to http is refused.
  int max_redirects = 5;
  // When set, called with the URL and with every redirect target before anything is sent there;
  // a non-OK status ends the request with that status (not retried). The agent uses it to keep
  // fetches that peers ask for away from internal addresses.
  std::function<Status(const Url&)> check_target;
  // When set, asked for the Authorization header value before the request is sent and again for
  // every redirect target (after check_target): a value is sent as Authorization, replacing any in
  // `headers`; nullopt sends none (not even one from `headers`); an error ends the request with it
  // (not retried). The front ends set it from their section's credential
  // (agent/upstream/credential.h), which answers only for the upstream's own origin, so a redirect
  // to another host (a CDN) never carries the credential.
  std::function<Result<std::optional<std::string>>(const Url&)> authorization;
};

struct FetcherOptions {
  // PEM bundle; empty = the system trust store. An unreadable file makes every https request
  // fail with kUnavailable naming it (and is logged when the fetcher is made).
  std::string ca_file;
  std::string user_agent = "buildcache-agent";
  // Attempts for one request (1 = no retry). Retried: connection failures, timeouts before the
  // response head, 429 and 5xx; attempt n+1 starts after a random delay in
  // [backoff * 2^(n-1) / 2, backoff * 2^(n-1)] (capped at 30 s). Never retried: TLS certificate
  // failures, and anything after on_head was called.
  int attempts = 3;
  std::chrono::milliseconds backoff{200};
  // Kept-alive connections parked per origin (scheme, host, port), and how long one may idle.
  // A connection is parked after a complete response, and after an answer on_head declined when
  // its body is at most 64 KiB (read and dropped). A new https connection resumes the last TLS
  // session of its origin (per origin only: a session never crosses host names or ports).
  int max_idle_per_host = 8;
  std::chrono::milliseconds idle_timeout{30'000};
};

// Streams GET requests. Thread-safe; connections may be pooled per host.
class Fetcher {
 public:
  virtual ~Fetcher() = default;

  // Fetches url. on_head is called once with the final (post-redirect) response head; returning
  // non-OK abandons the transfer with that status. on_data then receives the body as it arrives;
  // returning non-OK abandons the transfer. Returns OK when the whole body was delivered (or the
  // response had none), kUnavailable/kDeadlineExceeded on transport failure. Non-2xx responses
  // are not errors here: on_head sees them and decides (a 429 or 5xx reaches on_head only on the
  // last attempt). A URL that is not http(s) with a host, or contains CR/LF or other control
  // characters, is rejected with kInvalidArgument before anything is sent. Userinfo in the URL
  // ("https://user:token@host/") is sent as Basic authorization. Both callbacks run on the
  // calling thread.
  virtual Status Get(std::string_view url, const FetchOptions& options,
                     const std::function<Status(const UpstreamResponse&)>& on_head,
                     const std::function<Status(std::string_view)>& on_data) = 0;
};

// The real fetcher: Boost.Beast over TCP, and over TLS (OpenSSL) with certificate and host name
// verification and SNI for https URLs.
std::unique_ptr<Fetcher> NewHttpFetcher(FetcherOptions options = {});

// ---------------------------------------------------------------------------------------------
// Observing (the agent's metric catalog implements this; the layer stays free of metrics)

// Every member may be empty. Called on the requesting thread, without locks held.
struct UpstreamObserver {
  // One upstream fetch finished (one Fetcher::Get: its retries and redirects included): outcome
  // is "ok", "not_found" (404/410), "error" (transport failure, unexpected status, over a size
  // limit, or a digest mismatch) or "not_modified" (304); bytes is the body bytes received.
  std::function<void(std::string_view frontend, std::string_view outcome, uint64_t bytes,
                     double seconds)>
      on_fetch;
  std::function<void(std::string_view frontend)> on_stale_served;
  std::function<void(std::string_view frontend)> on_coalesced;      // waited on another fetch
  std::function<void(std::string_view frontend)> on_verify_failed;  // digest mismatch
  // A stored artifact did not match the digest its index gives (written by a peer, or an index
  // that changed): it was not served and is fetched again.
  std::function<void(std::string_view frontend)> on_stored_mismatch;
};

// ---------------------------------------------------------------------------------------------
// Immutable artifacts

// A digest in the ecosystem's own algorithm, raw bytes (not hex/base64).
struct ExpectedDigest {
  enum class Algorithm { kSha1, kSha256, kSha384, kSha512 };
  Algorithm algorithm;
  std::string raw;
};

// Parses npm/SRI integrity ("sha512-<base64>", several space-separated allowed: the strongest
// known algorithm wins, the first of its entries is used; unknown algorithms and "?options" are
// ignored), or returns kInvalidArgument when no usable entry is present.
Result<ExpectedDigest> ParseIntegrity(std::string_view sri);
// Parses a hex digest for the given algorithm (PyPI #sha256=, Cargo cksum, Maven .sha1 files),
// either case, exactly the algorithm's length; kInvalidArgument otherwise.
Result<ExpectedDigest> ParseHexDigest(ExpectedDigest::Algorithm algorithm, std::string_view hex);

struct Artifact {
  std::string frontend;  // metrics label: "pypi", "goproxy", "npm", "cargo", "maven"
  std::string key;       // store key, e.g. "npm/tarball/<name>/<file>"
  std::string url;       // where upstream has it
  std::vector<ExpectedDigest> expected;  // all must match; empty = content is not verifiable
  std::string content_type;              // sent to the client; "" = "application/octet-stream"
  // The size the index promises, when it gives one (PyPI JSON, Maven): a different upstream length
  // is a verification failure, and the store reserves the space up front.
  std::optional<uint64_t> size;
  FetchOptions fetch;
  // An upstream 403 means "not found" too (the GOPROXY protocol's reading: module proxies answer
  // 403 for paths they refuse to look up), answered and counted like 404.
  bool forbidden_is_not_found = false;
  // When positive, a not-found answer (404/410, and 403 as above) is remembered for this long:
  // requests for the key within it are answered not found without going upstream. In memory,
  // bounded (ArtifactCacheOptions::max_negative_entries), forgotten on restart.
  std::chrono::seconds negative_ttl{0};
};

// Other agents that may have an artifact or fetch it for the cluster (agent/replication
// implements it), asked before this agent's own upstream fetch.
class PeerSource {
 public:
  virtual ~PeerSource() = default;
  // Streams the artifact from a peer with Fetcher::Get's callback contract: on_head gets a
  // synthetic head (200 with the length, or 404 when the peer's upstream said so), then on_data
  // the body. Returns kFailedPrecondition, without calling anything, when this agent should
  // fetch it itself (it is the artifact's first live owner). Any other failure is a peer
  // failure: the cache then continues from its own upstream after the bytes already delivered,
  // and the verification of the whole body still decides. Errors returned by the callbacks are
  // returned unchanged.
  virtual Status Fetch(const Artifact& artifact,
                       const std::function<Status(const UpstreamResponse&)>& on_head,
                       const std::function<Status(std::string_view)>& on_data) = 0;
};

struct ArtifactCacheOptions {
  // Largest artifact fetched; larger upstream responses fail with 502 and are not stored.
  uint64_t max_object_size = uint64_t{2} << 30;
  // How long a coalesced waiter (GET, HEAD or Ensure) waits for the fetch it joined while that
  // fetch makes no progress, before giving up (504): counted from the fetch's start and again from
  // every piece of body that arrives, so a large artifact arriving slowly is waited for however
  // long it takes, and a stalled one is not.
  std::chrono::milliseconds wait_timeout{300'000};
  // Asked before the upstream on a miss (source "peer"); nullptr = upstream only. Not owned.
  PeerSource* peers = nullptr;
  // Most not-found answers remembered at once (Artifact::negative_ttl); past it the entry that
  // expires first is forgotten, so a client asking for endless missing names cannot grow memory.
  size_t max_negative_entries = 10'000;
  // Clock for negative_ttl; defaults to the steady clock. Tests inject their own.
  std::function<std::chrono::steady_clock::time_point()> clock;
};

class ArtifactCache {
 public:
  ArtifactCache(store::BlobStore& store, Fetcher& fetcher, UpstreamObserver observer,
                ArtifactCacheOptions options = {});
  ~ArtifactCache();

  // Answers a GET or HEAD for the artifact. A stored artifact is served from disk (source
  // "local") once it matches every digest in artifact.expected and artifact.size: SHA-256 is the
  // store's own digest (checked on reads); SHA-1/384/512 are computed by this agent over the
  // stored blob the first time it is used (then kept in memory by the blob's SHA-256), never
  // taken from a peer. A stored blob that does not match is not served, is counted
  // (on_stored_mismatch), logged and removed, and the artifact is fetched again (Ensure checks
  // the same way). An artifact not stored is fetched once: concurrent requests for the same key
  // wait for that fetch and are then served from the store; the first request is streamed the bytes
  // as they arrive (source "upstream", header X-Buildcache-Source) while they are written to the
  // store. The bytes are verified against artifact.expected before the store entry is committed; on
  // a mismatch nothing is stored, a started response is aborted (the client sees a failed transfer,
  // never complete wrong bytes) and an unstarted one gets 502. Upstream 404/410 give 404/410 (403
  // gives 404 with forbidden_is_not_found); upstream failure gives 502 naming the upstream and the
  // reason. A stored artifact honours a GET's single byte range (206/416, see SendBlob); a fetch
  // streamed to the client sends the whole body.
  //
  // Details: the last body byte (Content-Length responses) or the chunked terminator is held
  // back until the content is verified and committed, so a client can never take unverified
  // bytes for a complete response. A HEAD miss fetches and stores, then answers from the store.
  // A waiter's response carries source "upstream" (the object was not cached when it asked).
  // When the store cannot take the object (quota), the leader's client is still served,
  // verified, straight from upstream. If the leader's client goes away the fetch completes for
  // the store and the waiters. Headers the caller set on `response` before Serve are kept.
  // An invalid artifact.url gives 400 (kInvalidArgument); any other method than GET/HEAD 405.
  void Serve(http::Request& request, http::Response& response, const Artifact& artifact);

  // Makes sure the artifact is in the store (fetching and verifying it if needed) without
  // serving it. Same coalescing. Errors: kNotFound (upstream 404/410, or 403 with
  // forbidden_is_not_found; remembered for negative_ttl), kDataLoss (digest or size
  // mismatch), kUnavailable (upstream failed, or larger than max_object_size),
  // kDeadlineExceeded (upstream timed out, or the joined fetch went wait_timeout without
  // progress), kResourceExhausted (the store has no room), kInvalidArgument (bad URL).
  Result<store::BlobInfo> Ensure(const Artifact& artifact);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Mutable metadata

struct Document {
  int status = 200;          // 200, or 404/410 when the upstream said so (cached negatively)
  std::string body;          // the upstream body, unmodified
  std::string content_type;  // as the upstream sent it
  std::string etag;
  std::string last_modified;
  std::chrono::system_clock::time_point fetched_at;  // when it was last fetched or revalidated
  bool stale = false;      // served past its TTL because the upstream failed
  bool from_peer = false;  // the stored copy was pulled from a peer agent for this Get
  // Hex SHA-256 of the body when it is known without hashing it again: set by Get for every 200
  // document, and by Stream for a stored copy (not while a body streams from the upstream).
  // DocumentFingerprint uses it, so a front end can tell "same document" without the body.
  std::string body_sha256;
  // Bytes of the stored body (Stream, stored copies; 0 otherwise).
  uint64_t stored_size = 0;
};

// What a front end reports as the source of a document (X-Buildcache-Source) that a
// MetadataCache::Get started at `start` returned: "upstream" when the Get fetched or revalidated
// it, "peer" when it was pulled from a peer agent, else "local".
std::string_view DocumentSource(const Document& doc, std::chrono::system_clock::time_point start);

struct MetadataRequest {
  std::string frontend;  // metrics label
  std::string key;       // store key for the body; the record goes under key + "#meta"
  std::string url;
  std::chrono::seconds ttl{300};
  std::chrono::seconds negative_ttl{60};  // for 404/410
  uint64_t max_size = uint64_t{64} << 20;
  FetchOptions fetch;  // e.g. Accept headers
  // An upstream 403 is a not-found answer, cached for negative_ttl as a 404 (the GOPROXY
  // protocol's reading; other protocols treat 403 as a failure).
  bool forbidden_is_not_found = false;
};

struct MetadataCacheOptions {
  // Wall clock for fetched_at and TTLs; defaults to the system clock. Tests inject their own.
  std::function<std::chrono::system_clock::time_point()> clock;
  // How long a request waits for a refresh of the same key that another request started.
  std::chrono::milliseconds wait_timeout{120'000};
};

// Storage: the body under request.key and a small text record under request.key + "#meta"
// (status, fetched-at, etag, last-modified, content-type and the body's SHA-256, which ties the
// two together: a body that does not match its record is treated as not cached). Both are
// ordinary store keys, so they survive restarts and can be replicated like any other object.
class MetadataCache {
 public:
  MetadataCache(store::BlobStore& store, Fetcher& fetcher, UpstreamObserver observer,
                MetadataCacheOptions options = {});
  ~MetadataCache();

  // Returns the document: from the store while fresh; after the TTL revalidated upstream with
  // If-None-Match / If-Modified-Since (304 refreshes it); when the upstream fails, the stored
  // copy is returned with stale = true and a warning is logged; when it fails and nothing is
  // stored, kUnavailable naming the upstream and the reason. Concurrent refreshes of the same
  // key are coalesced.
  //
  // "The upstream fails" means a transport error or timeout, a 429/5xx after the fetcher's
  // retries, any other unexpected status, or a body over max_size. A 404/410 answer is cached
  // for negative_ttl (Document.status says which) and replaces a stored body. A stale negative
  // entry is served stale like a positive one. Store write failures are logged; the fetched
  // document is still returned. Errors: kInvalidArgument (bad URL), kUnavailable (as above),
  // kDeadlineExceeded (a joined refresh did not finish within wait_timeout).
  Result<Document> Get(const MetadataRequest& request);

  // Get without holding the body in memory. on_head is called once with the document, its body
  // empty; on_data then receives the body in pieces (at most 256 KiB each), read from the store
  // or, on a cold miss (nothing stored for the key), as it arrives from the upstream while it is
  // written to the store, so the first byte can be handed on before the last one arrived. A
  // refresh of a stored copy (revalidation, changed body, stale fallback) is completed in the
  // store first and then read from there. Memory per call is bounded by the piece size, whatever
  // the document's size and however slowly the caller consumes it.
  //
  // Returning non-OK from on_head ends the call with that status without reading the body (a
  // caller that already holds what it derives from the document, identified by body_sha256,
  // which on_head gets for every stored copy). Returning non-OK from on_data ends the calls to
  // the callbacks; an upstream transfer still completes into the store (for later requests and
  // coalesced waiters), and that status is returned.
  //
  // Returns the document head (body_sha256 set when the body is stored) when the whole body was
  // handed on. Errors before on_head are Get's; after on_head: the callbacks' status, or
  // kUnavailable when the upstream failed or exceeded max_size in the middle of a cold body (the
  // caller must then treat what it received as truncated). Concurrent Streams of one key are
  // coalesced: one fetches, the others wait and then read the store. Streams and Gets of the same
  // key are not coalesced with each other (a front end uses one or the other per key).
  Result<Document> Stream(const MetadataRequest& request,
                          const std::function<Status(const Document&)>& on_head,
                          const std::function<Status(std::string_view)>& on_data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace buildcache::upstream
