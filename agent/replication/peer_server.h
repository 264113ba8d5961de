#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent/dircache/peer_directory.h"
#include "agent/replication/observer.h"
#include "agent/replication/peer_client.h"
#include "agent/store/blob_store.h"
#include "agent/upstream/upstream.h"
#include "common/status/status.h"

namespace grpc {
class Server;
}

namespace buildcache::replication {

struct PeerServerOptions {
  std::string listen = "127.0.0.1:0";  // HOST:PORT; port 0 picks one
  // When set, clients must present a certificate signed by tls.ca_file (mutual TLS): the
  // handshake is then what admits a caller.
  PeerTlsFiles tls;
  // Without TLS: whether a caller's source address (text, no port; IPv4-mapped IPv6 given as
  // IPv4) may call at all. Refused calls get PERMISSION_DENIED, are logged with the caller and
  // counted (observer.on_refused, reason "not_member"). Empty: every caller is admitted. Called
  // on gRPC threads; must be thread-safe. Ignored when tls is set.
  std::function<bool(const std::string& address)> admit;
  // Keys that name their content (e.g. "httpcache/cas/" + 64 hex digits of its SHA-256): a Put
  // under such a key is refused unless the announced digest, which the store then checks, is
  // the one the key names.
  std::vector<std::string> content_addressed_prefixes;
  size_t chunk_size = 256 * 1024;
  // While a Fetch waits for its upstream, an empty message is sent this often so the caller can
  // tell a slow upstream from a dead peer.
  std::chrono::milliseconds heartbeat{1000};
};

struct PeerServerHooks {
  // Makes sure the artifact is in the local store (the agent wires upstream::ArtifactCache::
  // Ensure, after checking the front end, the key and the URL: PeerFetchRules, PeerFetchPolicy).
  // Empty: Fetch is refused. Only called for artifacts with at least one expected digest; a
  // Fetch without one is refused with FAILED_PRECONDITION (the caller fetches it itself), so
  // everything a peer's Fetch stores was verified against a digest before it was committed. A
  // kInvalidArgument or kPermissionDenied from the hook is counted as refused ("bad_request").
  std::function<Result<store::BlobInfo>(const upstream::Artifact&)> ensure;
  // Answers a wheel build a peer offers (PeerBuildCall: the fields checked for size and form,
  // caller set). Empty: Build is refused with UNIMPLEMENTED. kInvalidArgument, kNotFound (an
  // sdist the upstream index does not list with that digest) and kPermissionDenied are counted
  // as refused ("bad_request").
  std::function<Result<PeerBuildReply>(const PeerBuildCall&)> build;
};

// Serves proto/peer.proto from the local store. `store` must be the plain local store, not the
// replicated decorator: a peer's request never fans out to further peers (except Fetch, whose
// ensure hook may go upstream). Objects received through Put are verified while written against
// the digest announced (and, for content-addressed keys, the digest the key names) and are not
// pushed further; front-end artifacts among them are checked against their index's digest when
// a front end serves them (upstream::ArtifactCache), so Put cannot make a front end serve other
// bytes than the upstream's. Metadata and build-cache entries cannot be checked against their
// names: they are accepted from admitted callers (TLS certificate of this BuildCache's CA, or a
// member's address).
class PeerServer {
 public:
  static Result<std::unique_ptr<PeerServer>> Start(store::BlobStore& store,
                                                   PeerServerOptions options, PeerServerHooks hooks,
                                                   ReplicationObserver observer);
  ~PeerServer();

  int port() const { return port_; }
  // GetManifest answers from provider (nullptr: NOT_FOUND). May be called at any time.
  void SetManifestProvider(dircache::ManifestProvider* provider);
  // Stops accepting calls and waits (bounded) for running ones. Idempotent.
  void Stop();

 private:
  struct Service;
  PeerServer() = default;

  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace buildcache::replication
