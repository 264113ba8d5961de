#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status/status.h"
#include "operator/api/buildcache.h"

namespace buildcache::api {

// The WheelBuild custom resource (crds/buildcache.io_wheelbuilds.yaml): an agent's request that
// the operator build one sdist with one builder of the agent's BuildCache, in a pod made from a
// fixed template (operator/controllers/wheel_build_pod.h). The agent names a builder; it never
// names an image, a command or a service account, so an agent (or anyone with create on
// wheelbuilds) can at worst ask for a build with an image the BuildCache already allows.
// ValidateWheelBuild mirrors the CRD's schema and CEL rules with the API server's messages.

inline constexpr char kWheelBuildKind[] = "WheelBuild";
inline constexpr char kWheelBuildPlural[] = "wheelbuilds";

// Labels on WheelBuilds (the agent sets them) and on builder pods (the operator sets them).
inline constexpr char kBuildCacheLabel[] = "buildcache.io/buildcache";
inline constexpr char kNodeLabel[] = "buildcache.io/node";
inline constexpr char kWheelBuildLabel[] = "buildcache.io/wheelbuild";

// spec.deadlineSeconds bounds.
inline constexpr int64_t kMinBuildDeadlineSeconds = 60;
inline constexpr int64_t kMaxBuildDeadlineSeconds = 7200;

struct SdistRef {
  std::string project{};
  std::string version{};
  std::string filename{};
  std::string sha256{};  // 64 lower-case hex digits
};

struct WheelBuildSpec {
  std::string build_cache{};  // a BuildCache in the same namespace
  std::string builder{};      // one of its spec.ecosystems.pypi.builders[].name
  std::string build_id{};     // 16 lower-case hex digits
  SdistRef sdist{};
  std::string agent_url{};     // http://HOST:PORT of the asking agent
  std::string upload_token{};  // 43 base64url characters
  int64_t deadline_seconds = 0;
};

// status.phase values ("" until the operator has looked at the object).
inline constexpr char kPhasePending[] = "Pending";
inline constexpr char kPhaseRunning[] = "Running";
inline constexpr char kPhaseSucceeded[] = "Succeeded";
inline constexpr char kPhaseFailed[] = "Failed";

struct WheelBuildStatus {
  std::string phase{};
  std::string pod_name{};
  std::string message{};
  std::string start_time{};       // RFC 3339
  std::string completion_time{};  // RFC 3339

  bool Finished() const { return phase == kPhaseSucceeded || phase == kPhaseFailed; }
  bool operator==(const WheelBuildStatus&) const = default;
};

struct WheelBuild {
  std::string name{};
  std::string ns{};
  std::string uid{};
  std::string resource_version{};
  std::string creation_timestamp{};
  WheelBuildSpec spec{};
  WheelBuildStatus status{};
};

// Every violation of the CRD's schema and rules, in the API server's words.
std::vector<FieldError> ValidateWheelBuild(const Json& object);

// Validates and converts. kInvalidArgument lists every violation, one per line.
Result<WheelBuild> WheelBuildFromJson(const Json& object);

// The status subresource's body, {"status": {...}} (empty fields left out).
Json WheelBuildStatusToJson(const WheelBuildStatus& status);

// The status of an object, read tolerantly (missing or mistyped fields read as "").
WheelBuildStatus WheelBuildStatusFromJson(const Json& object);

}  // namespace buildcache::api
