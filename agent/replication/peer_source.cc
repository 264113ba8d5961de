#include "agent/replication/peer_source.h"

#include "agent/replication/grpc_util.h"
#include "common/log/log.h"
#include "proto/peer.pb.h"

namespace buildcache::replication {

namespace pb = ::buildcache::peer::v1;

namespace {

const char* AlgorithmName(upstream::ExpectedDigest::Algorithm a) {
  switch (a) {
    case upstream::ExpectedDigest::Algorithm::kSha1:
      return "sha1";
    case upstream::ExpectedDigest::Algorithm::kSha256:
      return "sha256";
    case upstream::ExpectedDigest::Algorithm::kSha384:
      return "sha384";
    case upstream::ExpectedDigest::Algorithm::kSha512:
      return "sha512";
  }
  return "";
}

// The peer protocol's request for the artifact.
pb::FetchRequest NewFetchRequest(const upstream::Artifact& a) {
  pb::FetchRequest request;
  request.set_frontend(a.frontend);
  request.set_key(a.key);
  request.set_url(a.url);
  for (const upstream::ExpectedDigest& e : a.expected) {
    auto* x = request.add_expected();
    x->set_algorithm(AlgorithmName(e.algorithm));
    x->set_raw(e.raw);
  }
  if (a.size) request.set_size(*a.size);
  for (const auto& [name, value] : a.fetch.headers) {
    auto* h = request.add_headers();
    h->set_name(name);
    h->set_value(value);
  }
  return request;
}

}  // namespace

ClusterPeerSource::ClusterPeerSource(Cluster& cluster, PeerClient& client,
                                     ReplicationObserver observer)
    : cluster_(cluster), client_(client), observer_(std::move(observer)) {}

Status ClusterPeerSource::Fetch(
    const upstream::Artifact& a,
    const std::function<Status(const upstream::UpstreamResponse&)>& on_head,
    const std::function<Status(std::string_view)>& on_data) {
  if (internal::serving_peer_fetch) return FailedPrecondition("serving a peer's fetch");
  // An owner fetches only what it can verify (peer_server.h): without a digest, fetch it here.
  if (a.expected.empty()) return FailedPrecondition("no digest to verify a peer's fetch with");
  const pb::FetchRequest request = NewFetchRequest(a);
  bool headed = false;
  std::optional<PeerObject> announced;
  uint64_t delivered = 0;
  Status last = FailedPrecondition("no other owner");
  for (const std::string& owner : cluster_.Owners(a.key)) {
    if (owner == cluster_.self()) {
      // This agent is the first live owner, or every owner before it failed before sending
      // anything: it fetches itself. After a partial transfer the upstream takes over likewise.
      return delivered == 0 && !headed ? FailedPrecondition("this agent owns " + a.key) : last;
    }
    if (!cluster_.IsLive(owner)) continue;
    Status refused;
    uint64_t position = 0;  // bytes of this peer's stream seen
    Status got = client_.Fetch(
        owner, request,
        [&](const PeerObject& object) -> Status {
          if (announced && (announced->size != object.size || announced->digest != object.digest)) {
            return Unavailable("peer " + owner + " announced a different object than the last");
          }
          if (!headed) {
            upstream::UpstreamResponse head;
            head.status = 200;
            head.content_length = object.size;
            head.final_url = a.url;
            headed = true;
            announced = object;
            refused = on_head(head);
            return refused;
          }
          return Status::Ok();
        },
        [&](std::string_view data) -> Status {
          uint64_t end = position + data.size();
          if (end <= delivered) {
            position = end;
            return Status::Ok();
          }
          data.remove_prefix(delivered - position);
          position = end;
          delivered += data.size();
          refused = on_data(data);
          return refused;
        });
    if (!refused.ok()) return refused;
    if (got.ok()) {
      cluster_.ReportSuccess(owner);
      if (observer_.on_peer_request) observer_.on_peer_request("hit");
      return Status::Ok();
    }
    if (got.code() == StatusCode::kNotFound && !headed) {
      // The owner's upstream says there is no such artifact: that is the answer.
      cluster_.ReportSuccess(owner);
      if (observer_.on_peer_request) observer_.on_peer_request("miss");
      upstream::UpstreamResponse head;
      head.status = 404;
      head.final_url = a.url;
      return on_head(head);
    }
    if (observer_.on_peer_request) observer_.on_peer_request("error");
    if (got.code() == StatusCode::kDataLoss) {
      if (observer_.on_corrupt) observer_.on_corrupt(owner);
      log::Warn("peer sent corrupt artifact",
                {{"peer", owner}, {"key", a.key}, {"error", got.message()}});
      return got;  // bytes already delivered cannot be trusted to continue
    }
    if (got.code() == StatusCode::kUnavailable || got.code() == StatusCode::kDeadlineExceeded) {
      cluster_.ReportFailure(owner);
    }
    log::Warn(
        "peer fetch failed",
        {{"peer", owner}, {"key", a.key}, {"delivered", delivered}, {"error", got.message()}});
    last = got;
  }
  return delivered == 0 && !headed ? FailedPrecondition("no owner answered") : last;
}

}  // namespace buildcache::replication
