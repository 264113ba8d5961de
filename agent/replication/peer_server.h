#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

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
  // When set, clients must present a certificate signed by tls.ca_file (mutual TLS).
  PeerTlsFiles tls;
  size_t chunk_size = 256 * 1024;
  // While a Fetch waits for its upstream, an empty message is sent this often so the caller can
  // tell a slow upstream from a dead peer.
  std::chrono::milliseconds heartbeat{1000};
};

struct PeerServerHooks {
  // Makes sure the artifact is in the local store (the agent wires upstream::ArtifactCache::
  // Ensure, after checking the URL belongs to a configured upstream). Empty: Fetch is refused.
  std::function<Result<store::BlobInfo>(const upstream::Artifact&)> ensure;
};

// Serves proto/peer.proto from the local store. `store` must be the plain local store, not the
// replicated decorator: a peer's request never fans out to further peers (except Fetch, whose
// ensure hook may go upstream). Objects received through Put are verified while written and are
// not pushed further.
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
