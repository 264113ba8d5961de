#include "agent/replication/peer_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <thread>

#include "agent/replication/grpc_util.h"
#include "common/log/log.h"
#include "proto/peer.grpc.pb.h"

namespace buildcache::replication {
namespace {

namespace pb = ::buildcache::peer::v1;
using internal::FromGrpc;

// Cancels a call that makes no progress for `timeout`: gRPC's deadline bounds a whole call, but a
// large transfer may rightly take minutes while a stalled one must be abandoned quickly.
class StallGuard {
 public:
  StallGuard(grpc::ClientContext& context, std::chrono::milliseconds timeout)
      : context_(context), timeout_(timeout), thread_([this] { Run(); }) {}
  ~StallGuard() {
    {
      MutexLock lock(mu_);
      done_ = true;
    }
    cv_.NotifyAll();
    thread_.join();
  }
  void Progress() {
    MutexLock lock(mu_);
    ++progress_;
  }
  bool fired() {
    MutexLock lock(mu_);
    return fired_;
  }

 private:
  void Run() {
    MutexLock lock(mu_);
    uint64_t seen = progress_;
    while (!done_) {
      const auto deadline = std::chrono::steady_clock::now() + timeout_;
      while (!done_ && cv_.WaitUntil(mu_, deadline)) {
      }
      if (done_) return;
      if (progress_ == seen) {
        fired_ = true;
        context_.TryCancel();
        return;
      }
      seen = progress_;
    }
  }

  grpc::ClientContext& context_;
  std::chrono::milliseconds timeout_;
  Mutex mu_;
  CondVar cv_;
  uint64_t progress_ GUARDED_BY(mu_) = 0;
  bool done_ GUARDED_BY(mu_) = false;
  bool fired_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Reads a Get/Fetch stream, verifying it against what the first message announced.
Status ReadChunks(grpc::ClientReaderInterface<pb::Chunk>& reader, StallGuard& guard,
                  const std::string& peer, const PeerClient::InfoFn& on_info,
                  const PeerClient::DataFn& on_data, const ReplicationObserver& observer,
                  PeerClient::Verification verification, Status* callback_error) {
  const bool verify = verification == PeerClient::Verification::kHere;
  pb::Chunk chunk;
  bool have_info = false;
  PeerObject object;
  store::Sha256 hash;
  uint64_t received = 0;
  while (reader.Read(&chunk)) {
    guard.Progress();
    if (!have_info) {
      if (!chunk.has_info()) {
        if (!chunk.data().empty()) return DataLoss("peer " + peer + " sent data before info");
        continue;  // a heartbeat while the peer fetches
      }
      auto digest = internal::FromProto(chunk.info().digest());
      if (!chunk.info().found() || !digest) {
        return DataLoss("peer " + peer + " announced no usable digest");
      }
      object.digest = *digest;
      object.size = chunk.info().size();
      have_info = true;
      if (Status s = on_info(object); !s.ok()) {
        *callback_error = s;
        return s;
      }
    }
    const std::string& data = chunk.data();
    if (data.empty()) continue;
    if (received + data.size() > object.size) {
      return DataLoss("peer " + peer + " sent more than the " + std::to_string(object.size) +
                      " bytes it announced");
    }
    received += data.size();
    if (verify) hash.Update(data);
    if (observer.on_bytes) observer.on_bytes("in", peer, data.size());
    if (Status s = on_data(data); !s.ok()) {
      *callback_error = s;
      return s;
    }
  }
  if (!have_info) return Status::Ok();  // the caller looks at the call's status
  if (received != object.size) {
    return Unavailable("peer " + peer + " ended the stream after " + std::to_string(received) +
                       " of " + std::to_string(object.size) + " bytes");
  }
  if (verify && hash.Finish() != object.digest) {
    return DataLoss("peer " + peer + " sent bytes that do not match the digest it announced");
  }
  return Status::Ok();
}

template <typename StartFn>
Status StreamCall(const std::string& peer, std::chrono::milliseconds timeout, StartFn start,
                  const PeerClient::InfoFn& on_info, const PeerClient::DataFn& on_data,
                  const ReplicationObserver& observer,
                  PeerClient::Verification verification = PeerClient::Verification::kHere) {
  grpc::ClientContext context;
  StallGuard guard(context, timeout);
  std::unique_ptr<grpc::ClientReaderInterface<pb::Chunk>> reader = start(context);
  Status callback_error;
  Status read =
      ReadChunks(*reader, guard, peer, on_info, on_data, observer, verification, &callback_error);
  if (guard.fired() && callback_error.ok()) {
    context.TryCancel();
    (void)reader->Finish();
    return DeadlineExceeded("peer " + peer + " made no progress for " +
                            std::to_string(timeout.count()) + " ms");
  }
  if (!read.ok()) {
    context.TryCancel();
    (void)reader->Finish();
    return read;
  }
  grpc::Status finished = reader->Finish();
  if (guard.fired()) {
    return DeadlineExceeded("peer " + peer + " made no progress for " +
                            std::to_string(timeout.count()) + " ms");
  }
  return FromGrpc(finished, peer);
}

}  // namespace

PeerClient::PeerClient(PeerClientOptions options, ReplicationObserver observer,
                       std::function<std::vector<std::string>()> live_peers)
    : options_(std::move(options)),
      observer_(std::move(observer)),
      live_peers_(std::move(live_peers)) {
  if (options_.tls.enabled()) {
    // Read once: files that later fail to read would otherwise turn into silent plaintext.
    auto cert = internal::ReadFile(options_.tls.cert_file);
    auto key = internal::ReadFile(options_.tls.key_file);
    auto ca = internal::ReadFile(options_.tls.ca_file);
    if (cert.ok()) tls_cert_ = *cert;
    if (key.ok()) tls_key_ = *key;
    if (ca.ok()) tls_ca_ = *ca;
    if (!cert.ok() || !key.ok() || !ca.ok()) {
      log::Error("peer TLS files unreadable; peer calls will fail",
                 {{"cert_file", options_.tls.cert_file}, {"ca_file", options_.tls.ca_file}});
    }
  }
}

PeerClient::~PeerClient() = default;

std::shared_ptr<grpc::Channel> PeerClient::ChannelFor(const std::string& peer) {
  MutexLock lock(mu_);
  auto it = channels_.find(peer);
  if (it != channels_.end()) return it->second;
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options_.tls.enabled()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = tls_ca_;
    ssl.pem_private_key = tls_key_;
    ssl.pem_cert_chain = tls_cert_;
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
  // Reconnect quickly after a peer comes back (the default backoff grows to two minutes).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  if (options_.tls.enabled() && !options_.tls.server_name.empty()) {
    args.SetSslTargetNameOverride(options_.tls.server_name);
  }
  auto channel = grpc::CreateCustomChannel(peer, creds, args);
  channels_[peer] = channel;
  return channel;
}

Status PeerClient::GetByKey(const std::string& peer, std::string_view key, const InfoFn& on_info,
                            const DataFn& on_data, Verification verification) {
  pb::GetRequest request;
  request.mutable_ref()->set_key(std::string(key));
  auto stub = pb::Peer::NewStub(ChannelFor(peer));
  return StreamCall(
      peer, options_.timeout, [&](grpc::ClientContext& ctx) { return stub->Get(&ctx, request); },
      on_info, on_data, observer_, verification);
}

Status PeerClient::GetByDigest(const std::string& peer, const store::Digest& digest,
                               const InfoFn& on_info, const DataFn& on_data) {
  pb::GetRequest request;
  internal::ToProto(digest, request.mutable_ref()->mutable_digest());
  auto stub = pb::Peer::NewStub(ChannelFor(peer));
  return StreamCall(
      peer, options_.timeout, [&](grpc::ClientContext& ctx) { return stub->Get(&ctx, request); },
      on_info, on_data, observer_);
}

Status PeerClient::Fetch(const std::string& peer, const pb::FetchRequest& request,
                         const InfoFn& on_info, const DataFn& on_data) {
  auto stub = pb::Peer::NewStub(ChannelFor(peer));
  return StreamCall(
      peer, options_.timeout, [&](grpc::ClientContext& ctx) { return stub->Fetch(&ctx, request); },
      on_info, on_data, observer_);
}

Result<PeerBuildReply> PeerClient::Build(const std::string& peer, const PeerBuildCall& call) {
  auto digest = store::Digest::FromHex(call.sha256);
  if (!digest) return InvalidArgument("a build offer needs the sdist's sha256");
  auto stub = pb::Peer::NewStub(ChannelFor(peer));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::max(options_.timeout, options_.build_timeout));
  pb::BuildRequest request;
  request.set_project(call.project);
  request.set_filename(call.filename);
  internal::ToProto(*digest, request.mutable_sha256());
  request.set_user_agent(call.user_agent);
  request.set_requester(call.requester);
  pb::BuildResponse response;
  BC_RETURN_IF_ERROR(FromGrpc(stub->Build(&context, request, &response), peer));
  return PeerBuildReply{response.decision(), response.build_id(), response.wheel()};
}

Result<bool> PeerClient::Put(const std::string& peer, std::string_view key,
                             store::BlobReader& reader) {
  auto stub = pb::Peer::NewStub(ChannelFor(peer));
  grpc::ClientContext context;
  StallGuard guard(context, options_.timeout);
  pb::PutResponse response;
  auto writer = stub->Put(&context, &response);
  const store::BlobInfo& info = reader.info();
  pb::PutRequest first;
  first.set_key(std::string(key));
  first.mutable_info()->set_found(true);
  first.mutable_info()->set_size(info.size);
  internal::ToProto(info.digest, first.mutable_info()->mutable_digest());
  constexpr size_t kChunk = 256 * 1024;
  std::string buf(kChunk, '\0');
  uint64_t offset = 0;
  bool open = writer->Write(first);
  guard.Progress();
  while (open && offset < info.size) {
    auto n = reader.ReadAt(offset, std::span<char>(buf.data(), buf.size()));
    if (!n.ok()) {
      context.TryCancel();
      (void)writer->Finish();
      return n.status();
    }
    if (*n == 0) break;
    pb::PutRequest next;
    next.set_data(buf.data(), *n);
    // false: the peer finished early (it already has the object, or declined).
    open = writer->Write(next);
    guard.Progress();
    if (open && observer_.on_bytes) observer_.on_bytes("out", peer, *n);
    offset += *n;
  }
  if (open) writer->WritesDone();
  grpc::Status finished = writer->Finish();
  if (guard.fired()) {
    return DeadlineExceeded("peer " + peer + " made no progress on a push");
  }
  BC_RETURN_IF_ERROR(FromGrpc(finished, peer));
  return response.stored();
}

std::vector<std::string> PeerClient::LivePeers() {
  return live_peers_ ? live_peers_() : std::vector<std::string>{};
}

Result<dircache::Manifest> PeerClient::GetManifest(const std::string& peer,
                                                   std::string_view directory,
                                                   uint64_t since_generation,
                                                   uint64_t listing_after) {
  auto stub = pb::Peer::NewStub(ChannelFor(peer));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.timeout);
  pb::ManifestRequest request;
  request.set_directory(std::string(directory));
  request.set_since_generation(since_generation);
  request.set_listing_after(listing_after);
  pb::Manifest response;
  BC_RETURN_IF_ERROR(FromGrpc(stub->GetManifest(&context, request, &response), peer));
  dircache::Manifest out;
  out.directory = response.directory();
  out.generation = response.generation();
  out.more = response.more();
  out.full = response.full();
  out.entries.reserve(response.entries_size());
  for (const pb::ManifestEntry& e : response.entries()) {
    auto digest = internal::FromProto(e.digest());
    if (!digest && !e.deleted()) {
      return DataLoss("peer " + peer + " listed " + e.path() + " without a valid digest");
    }
    dircache::ManifestEntry entry;
    entry.path = e.path();
    entry.size = e.size();
    entry.mode = e.mode();
    if (digest) entry.digest = *digest;
    entry.last_use_unix_ms = e.last_use_unix_ms();
    entry.deleted = e.deleted();
    out.entries.push_back(std::move(entry));
  }
  return out;
}

Status PeerClient::FetchBlob(const std::string& peer, const store::Digest& digest, uint64_t size,
                             const std::function<Status(std::string_view)>& sink) {
  return GetByDigest(
      peer, digest,
      [&](const PeerObject& object) -> Status {
        if (object.digest != digest || object.size != size) {
          return DataLoss("peer " + peer + " announced a different object for " + digest.Hex());
        }
        return Status::Ok();
      },
      sink);
}

}  // namespace buildcache::replication
