#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/dircache/peer_directory.h"
#include "agent/replication/observer.h"
#include "agent/store/blob_store.h"
#include "common/base/thread_annotations.h"
#include "common/status/status.h"

namespace grpc {
class Channel;
}
namespace buildcache::peer::v1 {
class FetchRequest;
}

namespace buildcache::replication {

struct PeerTlsFiles {
  std::string cert_file;  // this agent's certificate (PEM), presented to servers
  std::string key_file;
  std::string ca_file;  // verifies servers; "" together with cert_file = plaintext
  // The name servers' certificates must carry instead of the address dialed ("" = the address).
  std::string server_name;
  bool enabled() const { return !cert_file.empty(); }
};

struct PeerClientOptions {
  // Bounds unary calls and the wait for a stream's first message; a stream that makes no
  // progress for this long is cancelled.
  std::chrono::milliseconds timeout{2000};
  // Bounds a Build call (the owner checks its index page and fetches the sdist first).
  std::chrono::milliseconds build_timeout{std::chrono::minutes(2)};
  PeerTlsFiles tls;
};

// Object metadata a peer announced at the start of a stream.
struct PeerObject {
  store::Digest digest;
  uint64_t size = 0;
};

// A wheel build offered to a peer (proto/peer.proto BuildRequest), and its answer.
struct PeerBuildCall {
  std::string project;
  std::string filename;
  std::string sha256;  // 64 lowercase hex digits
  std::string user_agent;
  std::string requester;  // the caller's advertised peer address (filled by the server: caller)
  std::string caller;     // server side: the caller's source address ("" with TLS unknown)
};
struct PeerBuildReply {
  std::string decision;
  std::string build_id;
  std::string wheel;
};

// Calls to peer agents over gRPC, one cached channel per peer. Every byte streamed from a peer is
// checked against the digest and size it announced: more bytes than announced fail at once, and
// a mismatch at the end gives kDataLoss (on_data has seen the bytes by then; callers write into an
// uncommitted store writer and drop it). Thread-safe.
class PeerClient : public dircache::PeerDirectory {
 public:
  // cluster_peers lists the live peers for PeerDirectory::LivePeers (may be empty).
  PeerClient(PeerClientOptions options, ReplicationObserver observer,
             std::function<std::vector<std::string>()> live_peers = {});
  ~PeerClient() override;

  using InfoFn = std::function<Status(const PeerObject&)>;
  using DataFn = std::function<Status(std::string_view)>;

  // Who checks a stream's bytes against the digest the peer announced: this client (kDataLoss
  // when they differ), or the caller, which writes them into the store with that digest as
  // WriteOptions::expected_digest (Commit fails with kDataLoss): hashing once instead of twice.
  enum class Verification { kHere, kByCaller };

  // Streams the object stored under key (or with digest). kNotFound when the peer lacks it;
  // kUnavailable/kDeadlineExceeded when it cannot be reached or stalls; kDataLoss on bad bytes
  // (more bytes than announced always; different bytes with Verification::kHere).
  // Errors returned by on_info/on_data end the call and are returned as they are.
  Status GetByKey(const std::string& peer, std::string_view key, const InfoFn& on_info,
                  const DataFn& on_data, Verification verification = Verification::kHere);
  Status GetByDigest(const std::string& peer, const store::Digest& digest, const InfoFn& on_info,
                     const DataFn& on_data);
  // Asks the peer to make sure it has the artifact (fetching it upstream if needed) and stream it.
  // The peer may send heartbeats while it fetches; they count as progress.
  Status Fetch(const std::string& peer, const peer::v1::FetchRequest& request,
               const InfoFn& on_info, const DataFn& on_data);
  // Offers a wheel build to the peer (the sdist's owner). Bounded by options.build_timeout: the
  // owner may fetch the sdist from its upstream before it answers.
  Result<PeerBuildReply> Build(const std::string& peer, const PeerBuildCall& call);
  // Pushes the object to the peer; returns whether the peer stored it (false: it had it or
  // declined).
  Result<bool> Put(const std::string& peer, std::string_view key, store::BlobReader& reader);

  // dircache::PeerDirectory
  std::vector<std::string> LivePeers() override;
  Result<dircache::Manifest> GetManifest(const std::string& peer, std::string_view directory,
                                         uint64_t since_generation,
                                         uint64_t listing_after) override;
  Status FetchBlob(const std::string& peer, const store::Digest& digest, uint64_t size,
                   const std::function<Status(std::string_view)>& sink) override;

 private:
  std::shared_ptr<grpc::Channel> ChannelFor(const std::string& peer);

  PeerClientOptions options_;
  ReplicationObserver observer_;
  std::function<std::vector<std::string>()> live_peers_;
  std::string tls_cert_, tls_key_, tls_ca_;
  Mutex mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ GUARDED_BY(mu_);
};

}  // namespace buildcache::replication
