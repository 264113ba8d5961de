#include "agent/replication/peer_server.h"

#include <grpcpp/grpcpp.h>

#include <future>
#include <thread>

#include "agent/replication/caller_gate.h"
#include "agent/replication/grpc_util.h"
#include "common/log/log.h"
#include "proto/peer.grpc.pb.h"

namespace buildcache::replication {

namespace pb = ::buildcache::peer::v1;
using internal::ToGrpc;

namespace {

std::string PeerOf(grpc::ServerContext* context) { return context->peer(); }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void FillInfo(const store::BlobInfo& info, pb::ObjectInfo* out) {
  out->set_found(true);
  out->set_size(info.size);
  internal::ToProto(info.digest, out->mutable_digest());
}

Result<upstream::ExpectedDigest> ToExpected(const pb::FetchRequest::Expected& e) {
  using A = upstream::ExpectedDigest::Algorithm;
  static const std::pair<const char*, std::pair<A, size_t>> kAlgorithms[] = {
      {"sha1", {A::kSha1, 20}},
      {"sha256", {A::kSha256, 32}},
      {"sha384", {A::kSha384, 48}},
      {"sha512", {A::kSha512, 64}}};
  for (const auto& [name, algo] : kAlgorithms) {
    if (e.algorithm() == name) {
      if (e.raw().size() != algo.second) {
        return InvalidArgument("expected " + std::string(name) + " digest has the wrong length");
      }
      return upstream::ExpectedDigest{algo.first, e.raw()};
    }
  }
  return InvalidArgument("unknown digest algorithm \"" + e.algorithm() + "\"");
}

}  // namespace

struct PeerServer::Service final : public pb::Peer::Service {
  store::BlobStore& store;
  PeerServerOptions options;
  PeerServerHooks hooks;
  ReplicationObserver observer;
  std::atomic<dircache::ManifestProvider*> manifests{nullptr};

  Service(store::BlobStore& s, PeerServerOptions o, PeerServerHooks h, ReplicationObserver obs)
      : store(s), options(std::move(o)), hooks(std::move(h)), observer(std::move(obs)) {}

  void Refused(std::string_view call, std::string_view reason, grpc::ServerContext* context,
               const std::string& detail) {
    if (observer.on_refused) observer.on_refused(call, reason);
    log::Warn("peer call refused", {{"call", std::string(call)},
                                    {"reason", std::string(reason)},
                                    {"caller", PeerOf(context)},
                                    {"detail", detail}});
  }

  // OK when the caller may call at all (PeerServerOptions::admit).
  grpc::Status Admit(grpc::ServerContext* context, std::string_view call) {
    if (options.tls.enabled() || !options.admit) return grpc::Status::OK;
    const std::string address = CallerAddress(PeerOf(context));
    if (!address.empty() && options.admit(address)) return grpc::Status::OK;
    Refused(call, "not_member", context, "the caller's address is no member's");
    return {grpc::StatusCode::PERMISSION_DENIED,
            "this agent takes peer calls only from members of its BuildCache"};
  }

  // For a content-addressed key: OK when `digest` is the one the key names.
  Status CheckContentAddress(const std::string& key, const store::Digest& digest) {
    for (const std::string& prefix : options.content_addressed_prefixes) {
      if (!key.starts_with(prefix)) continue;
      std::string_view hex = std::string_view(key).substr(prefix.size());
      std::string lower;
      for (char c : hex) {
        if (HexDigit(c) < 0) return InvalidArgument("key " + key + " does not name a SHA-256");
        lower.push_back(static_cast<char>(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c));
      }
      if (lower != digest.Hex()) {
        return InvalidArgument("key " + key + " names another digest than the one announced (" +
                               digest.Hex() + ")");
      }
    }
    return Status::Ok();
  }

  // The receiver checks every byte against the digest announced (its store writer's
  // expected_digest), so this side does not hash the blob again before sending it.
  Result<std::unique_ptr<store::BlobReader>> OpenRef(const pb::ObjectRef& ref) {
    if (ref.has_digest()) {
      auto digest = internal::FromProto(ref.digest());
      if (!digest) return InvalidArgument("digest must be 32 bytes");
      return store.OpenDigestForRelay(*digest);
    }
    if (ref.key().empty()) return InvalidArgument("empty object reference");
    return store.OpenForRelay(ref.key());
  }

  // Streams a verified local blob: info in the first message, then chunks.
  grpc::Status StreamBlob(grpc::ServerContext* context, store::BlobReader& reader,
                          grpc::ServerWriter<pb::Chunk>* writer) {
    const store::BlobInfo& info = reader.info();
    pb::Chunk first;
    FillInfo(info, first.mutable_info());
    if (info.size == 0) {
      writer->Write(first);
      return grpc::Status::OK;
    }
    uint64_t offset = 0;
    bool sent_first = false;
    while (offset < info.size) {
      if (context->IsCancelled()) return {grpc::StatusCode::CANCELLED, "cancelled"};
      pb::Chunk chunk;
      if (!sent_first) {
        chunk = first;
        sent_first = true;
      }
      // Read straight into the message (no copy through a buffer).
      std::string* data = chunk.mutable_data();
      data->resize(std::min<uint64_t>(options.chunk_size, info.size - offset));
      auto n = reader.ReadAt(offset, std::span<char>(data->data(), data->size()));
      if (!n.ok()) return ToGrpc(n.status());
      if (*n == 0) return {grpc::StatusCode::DATA_LOSS, "blob shorter than its index entry"};
      data->resize(*n);
      if (!writer->Write(chunk)) return {grpc::StatusCode::CANCELLED, "client went away"};
      if (observer.on_bytes) observer.on_bytes("out", PeerOf(context), *n);
      offset += *n;
    }
    return grpc::Status::OK;
  }

  grpc::Status Has(grpc::ServerContext* context, const pb::HasRequest* request,
                   pb::HasResponse* response) override {
    if (auto admitted = Admit(context, "Has"); !admitted.ok()) return admitted;
    if (request->refs_size() > 1024) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "at most 1024 refs per Has"};
    }
    for (const pb::ObjectRef& ref : request->refs()) {
      pb::ObjectInfo* info = response->add_infos();
      if (ref.has_digest()) {
        auto digest = internal::FromProto(ref.digest());
        if (digest && store.HasDigest(*digest)) {
          info->set_found(true);
          internal::ToProto(*digest, info->mutable_digest());
        }
        continue;
      }
      auto stat = store.Stat(ref.key());
      if (stat.ok()) FillInfo(*stat, info);
    }
    return grpc::Status::OK;
  }

  grpc::Status Get(grpc::ServerContext* context, const pb::GetRequest* request,
                   grpc::ServerWriter<pb::Chunk>* writer) override {
    if (auto admitted = Admit(context, "Get"); !admitted.ok()) return admitted;
    auto reader = OpenRef(request->ref());
    if (!reader.ok()) return ToGrpc(reader.status());
    return StreamBlob(context, **reader, writer);
  }

  grpc::Status Fetch(grpc::ServerContext* context, const pb::FetchRequest* request,
                     grpc::ServerWriter<pb::Chunk>* writer) override {
    if (auto admitted = Admit(context, "Fetch"); !admitted.ok()) return admitted;
    if (!hooks.ensure) return {grpc::StatusCode::UNIMPLEMENTED, "this agent fetches for no one"};
    if (request->expected().empty()) {
      // Nothing would verify what is stored under the key and then pushed to other owners.
      Refused("Fetch", "unverifiable", context, request->key());
      return {grpc::StatusCode::FAILED_PRECONDITION,
              "a Fetch needs an expected digest; fetch unverifiable objects yourself"};
    }
    upstream::Artifact artifact;
    artifact.frontend = request->frontend();
    artifact.key = request->key();
    artifact.url = request->url();
    for (const auto& e : request->expected()) {
      auto expected = ToExpected(e);
      if (!expected.ok()) return ToGrpc(expected.status());
      artifact.expected.push_back(*std::move(expected));
    }
    if (request->has_size()) artifact.size = request->size();
    for (const pb::Header& h : request->headers()) {
      artifact.fetch.headers.emplace_back(h.name(), h.value());
    }
    // Ensure runs on its own thread so this one can send heartbeats while the upstream is slow.
    auto ensured = std::async(std::launch::async, [this, artifact] {
      internal::serving_peer_fetch = true;
      return hooks.ensure(artifact);
    });
    while (ensured.wait_for(options.heartbeat) != std::future_status::ready) {
      if (context->IsCancelled()) break;  // the future's destructor still waits for Ensure
      writer->Write(pb::Chunk());
    }
    Result<store::BlobInfo> info = ensured.get();
    if (!info.ok()) {
      const StatusCode code = info.status().code();
      if (code == StatusCode::kInvalidArgument || code == StatusCode::kPermissionDenied) {
        Refused("Fetch", "bad_request", context, info.status().message());
      }
      return ToGrpc(info.status());
    }
    auto reader = store.OpenForRelay(artifact.key);
    if (!reader.ok()) return ToGrpc(reader.status());
    return StreamBlob(context, **reader, writer);
  }

  grpc::Status Put(grpc::ServerContext* context, grpc::ServerReader<pb::PutRequest>* reader,
                   pb::PutResponse* response) override {
    if (auto admitted = Admit(context, "Put"); !admitted.ok()) return admitted;
    pb::PutRequest message;
    if (!reader->Read(&message)) return {grpc::StatusCode::INVALID_ARGUMENT, "empty push"};
    auto digest = internal::FromProto(message.info().digest());
    if (message.key().empty() || !digest) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "a push starts with a key and a digest"};
    }
    const std::string key = message.key();
    const uint64_t size = message.info().size();
    if (Status named = CheckContentAddress(key, *digest); !named.ok()) {
      Refused("Put", "bad_key", context, named.message());
      return ToGrpc(named);
    }
    auto existing = store.Stat(key);
    if (existing.ok() && existing->digest == *digest) {
      response->set_stored(false);
      response->set_reason("present");
      return grpc::Status::OK;
    }
    store::WriteOptions write_options;
    write_options.expected_digest = *digest;
    write_options.expected_size = size;
    // The per-peer in-flight cap (store::WriteLimits) counts by address, whatever the port.
    const std::string from = PeerOf(context);
    write_options.caller = from.substr(0, from.rfind(':'));
    auto writer = store.NewWriter(key, write_options);
    if (!writer.ok()) {
      response->set_stored(false);
      response->set_reason(writer.status().message());
      return grpc::Status::OK;
    }
    const std::string peer = PeerOf(context);
    auto write = [&](const std::string& data) -> grpc::Status {
      if (data.empty()) return grpc::Status::OK;
      Status s = (*writer)->Write(data);
      if (!s.ok()) return ToGrpc(s);
      if (observer.on_bytes) observer.on_bytes("in", peer, data.size());
      return grpc::Status::OK;
    };
    if (auto s = write(message.data()); !s.ok()) return s;
    while (reader->Read(&message)) {
      if (auto s = write(message.data()); !s.ok()) return s;
    }
    if (context->IsCancelled()) return {grpc::StatusCode::CANCELLED, "push abandoned"};
    auto committed = (*writer)->Commit();
    if (!committed.ok()) {
      if (committed.status().code() == StatusCode::kDataLoss) {
        if (observer.on_corrupt) observer.on_corrupt(peer);
        log::Warn("pushed object rejected",
                  {{"peer", peer}, {"key", key}, {"error", committed.status().message()}});
      }
      return ToGrpc(committed.status());
    }
    response->set_stored(true);
    return grpc::Status::OK;
  }

  grpc::Status Build(grpc::ServerContext* context, const pb::BuildRequest* request,
                     pb::BuildResponse* response) override {
    if (auto admitted = Admit(context, "Build"); !admitted.ok()) return admitted;
    if (!hooks.build) return {grpc::StatusCode::UNIMPLEMENTED, "this agent builds for no one"};
    auto digest = internal::FromProto(request->sha256());
    constexpr size_t kMaxField = 8192;
    if (!digest || request->project().size() > kMaxField ||
        request->filename().size() > kMaxField || request->user_agent().size() > kMaxField ||
        request->requester().size() > kMaxField) {
      Refused("Build", "bad_request", context, "malformed build request");
      return {grpc::StatusCode::INVALID_ARGUMENT, "malformed build request"};
    }
    PeerBuildCall call{request->project(),    request->filename(),  digest->Hex(),
                       request->user_agent(), request->requester(), CallerAddress(PeerOf(context))};
    Result<PeerBuildReply> reply = hooks.build(call);
    if (!reply.ok()) {
      const StatusCode code = reply.status().code();
      if (code == StatusCode::kInvalidArgument || code == StatusCode::kNotFound ||
          code == StatusCode::kPermissionDenied) {
        Refused("Build", "bad_request", context,
                request->filename() + ": " + std::string(reply.status().message()));
      }
      return ToGrpc(reply.status());
    }
    response->set_decision(reply->decision);
    response->set_build_id(reply->build_id);
    response->set_wheel(reply->wheel);
    return grpc::Status::OK;
  }

  grpc::Status GetManifest(grpc::ServerContext* context, const pb::ManifestRequest* request,
                           pb::Manifest* response) override {
    if (auto admitted = Admit(context, "GetManifest"); !admitted.ok()) return admitted;
    dircache::ManifestProvider* provider = manifests.load();
    if (provider == nullptr) {
      return {grpc::StatusCode::NOT_FOUND, "this agent has no directory caches"};
    }
    auto manifest = provider->GetManifest(request->directory(), request->since_generation(),
                                          request->listing_after());
    if (!manifest.ok()) return ToGrpc(manifest.status());
    response->set_directory(manifest->directory);
    response->set_generation(manifest->generation);
    response->set_more(manifest->more);
    response->set_full(manifest->full);
    for (const dircache::ManifestEntry& e : manifest->entries) {
      pb::ManifestEntry* out = response->add_entries();
      out->set_path(e.path);
      out->set_size(e.size);
      out->set_mode(e.mode);
      internal::ToProto(e.digest, out->mutable_digest());
      out->set_last_use_unix_ms(e.last_use_unix_ms);
      out->set_deleted(e.deleted);
    }
    return grpc::Status::OK;
  }
};

Result<std::unique_ptr<PeerServer>> PeerServer::Start(store::BlobStore& store,
                                                      PeerServerOptions options,
                                                      PeerServerHooks hooks,
                                                      ReplicationObserver observer) {
  std::unique_ptr<PeerServer> server(new PeerServer());
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (options.tls.enabled()) {
    BC_ASSIGN_OR_RETURN(std::string cert, internal::ReadFile(options.tls.cert_file));
    BC_ASSIGN_OR_RETURN(std::string key, internal::ReadFile(options.tls.key_file));
    BC_ASSIGN_OR_RETURN(std::string ca, internal::ReadFile(options.tls.ca_file));
    grpc::SslServerCredentialsOptions ssl(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = ca;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }
  const std::string listen = options.listen;
  server->service_ =
      std::make_unique<Service>(store, std::move(options), std::move(hooks), std::move(observer));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, creds, &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(16 << 20);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return Unavailable("peer server cannot listen on " + listen);
  }
  return server;
}

void PeerServer::SetManifestProvider(dircache::ManifestProvider* provider) {
  service_->manifests.store(provider);
}

PeerServer::~PeerServer() { Stop(); }

void PeerServer::Stop() {
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_->Wait();
    server_.reset();
  }
}

}  // namespace buildcache::replication
