#pragma once

// Conversions shared by the peer client and server (internal to agent/replication).

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <sstream>
#include <string>

#include "agent/store/digest.h"
#include "common/status/status.h"
#include "proto/peer.pb.h"

namespace buildcache::replication::internal {

// The one place a buildcache Status becomes a gRPC status and back.
inline grpc::Status ToGrpc(const Status& s) {
  using grpc::StatusCode;
  switch (s.code()) {
    case buildcache::StatusCode::kOk:
      return grpc::Status::OK;
    case buildcache::StatusCode::kInvalidArgument:
      return {StatusCode::INVALID_ARGUMENT, s.message()};
    case buildcache::StatusCode::kNotFound:
      return {StatusCode::NOT_FOUND, s.message()};
    case buildcache::StatusCode::kAlreadyExists:
      return {StatusCode::ALREADY_EXISTS, s.message()};
    case buildcache::StatusCode::kPermissionDenied:
      return {StatusCode::PERMISSION_DENIED, s.message()};
    case buildcache::StatusCode::kFailedPrecondition:
      return {StatusCode::FAILED_PRECONDITION, s.message()};
    case buildcache::StatusCode::kResourceExhausted:
    case buildcache::StatusCode::kTooLarge:
      return {StatusCode::RESOURCE_EXHAUSTED, s.message()};
    case buildcache::StatusCode::kDataLoss:
      return {StatusCode::DATA_LOSS, s.message()};
    case buildcache::StatusCode::kDeadlineExceeded:
      return {StatusCode::DEADLINE_EXCEEDED, s.message()};
    case buildcache::StatusCode::kCancelled:
      return {StatusCode::CANCELLED, s.message()};
    case buildcache::StatusCode::kUnavailable:
      return {StatusCode::UNAVAILABLE, s.message()};
    default:
      return {StatusCode::INTERNAL, s.message()};
  }
}

inline Status FromGrpc(const grpc::Status& s, const std::string& peer) {
  if (s.ok()) return Status::Ok();
  std::string m = "peer " + peer + ": " + s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::NOT_FOUND:
      return NotFound(m);
    case grpc::StatusCode::INVALID_ARGUMENT:
      return InvalidArgument(m);
    case grpc::StatusCode::DATA_LOSS:
      return DataLoss(m);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return DeadlineExceeded(m);
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return ResourceExhausted(m);
    case grpc::StatusCode::FAILED_PRECONDITION:
      return FailedPrecondition(m);
    case grpc::StatusCode::PERMISSION_DENIED:
      return PermissionDenied(m);
    default:
      return Unavailable(m + " (gRPC code " + std::to_string(s.error_code()) + ")");
  }
}

inline std::optional<store::Digest> FromProto(const peer::v1::Digest& d) {
  if (d.sha256().size() != 32) return std::nullopt;
  std::array<uint8_t, 32> bytes;
  std::memcpy(bytes.data(), d.sha256().data(), 32);
  return store::Digest(bytes);
}

inline void ToProto(const store::Digest& d, peer::v1::Digest* out) {
  out->set_sha256(std::string(d.raw()));
}

inline Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Unavailable("cannot read " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// Set while this thread serves a peer's Fetch: an agent asked to fetch for the cluster fetches
// from its own upstream instead of forwarding, so disagreeing membership views cannot loop.
inline thread_local bool serving_peer_fetch = false;

}  // namespace buildcache::replication::internal
