#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/identity/caller.h"
#include "agent/store/blob_store.h"
#include "common/http/router.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::httpcache {

// Which client protocol a request used.
enum class Api {
  kGeneric,   // /cache/<key>: ccache (subdirs, flat), Gradle, sccache (WebDAV) objects
  kBazelAc,   // /ac/<sha256> or /cache/ac/<sha256>: Bazel action cache (and ccache layout=bazel)
  kBazelCas,  // /cas/<sha256> or /cache/cas/<sha256>: Bazel CAS, uploads verified
  kWebDav,    // PROPFIND, MKCOL, OPTIONS (sccache's directory probing)
};
std::string_view ApiName(Api api);

// The outcome of one request, for metrics and logs kept outside the frontend.
enum class Outcome {
  kHit,       // GET/HEAD found the object
  kMiss,      // GET/HEAD: no such object
  kStored,    // PUT committed
  kDeleted,   // DELETE removed the key
  kMeta,      // PROPFIND, MKCOL, OPTIONS answered
  kRejected,  // the client's fault: bad key, too large, digest mismatch, bad method (4xx)
  kError,     // the agent's fault or the client went away mid-transfer (5xx or aborted)
};
std::string_view OutcomeName(Outcome outcome);

struct RequestInfo {
  Api api = Api::kGeneric;
  Outcome outcome = Outcome::kError;
  int status = 0;          // HTTP status sent (0 if the connection was aborted first)
  uint64_t bytes_in = 0;   // request body bytes stored (PUT)
  uint64_t bytes_out = 0;  // response body bytes sent (GET hits)
};

// Called once per request after the response is sent, on the server thread that served it.
struct Observer {
  std::function<void(const RequestInfo&)> on_request;
};

struct HttpCacheOptions {
  // Largest object accepted by PUT; larger gets 413 (before any byte is read when the length is
  // declared).
  uint64_t max_object_size = uint64_t{512} << 20;
  Observer observer;
  // Answers a write the caller may not make (403), with `why`; the agent passes
  // identity::IdentityGate::RefuseWrite so refusals are logged and counted in one place. Unset:
  // a plain 403.
  std::function<void(http::Request&, http::Response&, const identity::Caller&,
                     std::string_view why)>
      refuse_write;
};

// The build-cache HTTP API: one key -> blob store spoken by several clients.
//
//   GET/HEAD/PUT/DELETE /cache/<key>    generic objects (ccache, Gradle, sccache)
//   GET/HEAD/PUT/DELETE /ac/<sha256>    Bazel action cache; also /cache/ac/<sha256>
//   GET/HEAD/PUT/DELETE /cas/<sha256>   Bazel CAS; the body must hash to the digest (else 400,
//                                       nothing stored); also /cache/cas/<sha256>
//   PROPFIND/MKCOL/OPTIONS /cache/...   WebDAV probing by sccache: collections are virtual
//
// Objects are stored under the key "httpcache/<key>" ("httpcache/ac/<hex>", "httpcache/cas/<hex>").
//
// Scopes (identity::Caller): CAS entries prove themselves and are shared by everyone. Every other
// key (generic, Bazel AC, gocacheprog's action entries) cannot be checked against its name, so:
//   - a trusted writer (and every caller when identity is off) reads and writes the trusted scope,
//     "httpcache/<key>";
//   - another caller with a scope writes "scope/<scope>/httpcache/<key>" and reads that key
//     first, then the trusted one; it deletes only in its own scope;
//   - an anonymous caller reads the trusted scope and writes nothing (403, refuse_write).
// Untrusted callers may add CAS entries (verified) but not delete them (403).
//
// Keys are percent-decoded, then must be 1..1024 bytes of [A-Za-z0-9._~+=,@-] segments separated
// by single '/', with no "." or ".." segment (400 otherwise). Bodies are streamed to and from the
// store; errors are answered through http::SendError. See README.md for each client's protocol.
//
// Thread-safe: Handle may run concurrently on many server threads. The store must outlive this.
class HttpCacheFrontend {
 public:
  HttpCacheFrontend(store::BlobStore& store, HttpCacheOptions options);

  // Serves one request for `caller` and returns what happened (Handle also calls the observer).
  // Without a caller: Caller::Unrestricted() (identity off).
  RequestInfo Serve(http::Request& request, http::Response& response,
                    const identity::Caller& caller);
  RequestInfo Serve(http::Request& request, http::Response& response);

  // An http::Handler; the frontend must outlive it.
  void Handle(http::Request& request, http::Response& response, const identity::Caller& caller);
  void Handle(http::Request& request, http::Response& response);
  http::Handler AsHandler();

  // The path prefixes this frontend serves (all methods); route each of them to Handle.
  static constexpr const char* kPathPrefixes[] = {"/cache/", "/ac/", "/cas/"};
  // Routes kPathPrefixes to this frontend (when no decorator is wanted).
  void AddRoutes(http::Router& router);

  // Parses a request path into the store key it addresses. Exposed for tests.
  struct Target {
    Api api = Api::kGeneric;
    std::string key;          // validated, decoded key relative to the namespace
    bool collection = false;  // the path ended in '/' (a WebDAV collection)
    std::string digest_hex;   // Bazel digest (lowercase) for kBazelAc/kBazelCas
  };
  Result<Target> ParseTarget(std::string_view path) const;

 private:
  void Get(const Target& t, const identity::Caller& c, http::Request& req, http::Response& resp,
           RequestInfo& info);
  void Head(const Target& t, const identity::Caller& c, http::Response& resp, RequestInfo& info);
  void Put(const Target& t, const identity::Caller& c, http::Request& req, http::Response& resp,
           RequestInfo& info);
  void Delete(const Target& t, const identity::Caller& c, http::Request& req, http::Response& resp,
              RequestInfo& info);
  void Propfind(const Target& t, const identity::Caller& c, std::string_view path,
                http::Request& req, http::Response& resp, RequestInfo& info);
  void Fail(http::Response& resp, const Status& status, RequestInfo& info);
  void RefuseWrite(http::Request& req, http::Response& resp, const identity::Caller& c,
                   std::string_view why, RequestInfo& info);
  // The first of the keys `c` reads `t` from (ReadKeys) that the store has.
  Result<store::BlobInfo> StatFirst(const Target& t, const identity::Caller& c);

 public:
  // The store keys a read of `t` by `c` looks at, in order, and the key a write or delete goes
  // to (kPermissionDenied with the reason when `c` may not). Exposed for tests.
  static std::vector<std::string> ReadKeys(const Target& t, const identity::Caller& c);
  static Result<std::string> WriteKey(const Target& t, const identity::Caller& c, bool deleting);

 private:
  static std::string StoreKey(const Target& t) { return "httpcache/" + t.key; }

  store::BlobStore& store_;
  const HttpCacheOptions options_;
};

// Validates and percent-decodes a generic key (see HttpCacheFrontend) into its canonical form:
// empty segments are dropped ("a//b" and "/a/b" name "a/b", as WebDAV servers merge slashes);
// "." and ".." segments, unsafe characters and over-long keys or segments are errors. Exposed
// for tests.
Result<std::string> DecodeKey(std::string_view raw);

}  // namespace buildcache::httpcache
