#include "operator/api/wheelbuild.h"

#include <regex>

#include "operator/api/json_util.h"

namespace buildcache::api {

using internal::Quoted;
using internal::Str;
using internal::TypeName;

namespace {

// The CRD's patterns (crds/buildcache.io_wheelbuilds.yaml), one per field.
struct Pattern {
  const char* key;
  size_t max_length;
  const char* regex;
  const char* message;
};

constexpr Pattern kSpecPatterns[] = {
    {"buildCache", 40, "^[a-z]([-a-z0-9]*[a-z0-9])?$",
     "buildCache must be a BuildCache name (a DNS label of at most 40 characters)"},
    {"builder", 40, "^[a-z]([-a-z0-9]*[a-z0-9])?$",
     "builder must be a builder name (a DNS label of at most 40 characters)"},
    {"buildId", 16, "^[0-9a-f]{16}$", "buildId must be 16 lower-case hex digits"},
    {"agentURL", 300,
     "^http://([0-9]{1,3}([.][0-9]{1,3}){3}|\\[[0-9a-fA-F:]+\\]|[a-z0-9]([-a-z0-9.]*[a-z0-9])?):"
     "[0-9]{1,5}$",
     "agentURL must be http:// and a host (an IP address or DNS name) and port only: no user "
     "information, no path"},
    {"uploadToken", 43, "^[A-Za-z0-9_-]{43}$", "uploadToken must be 43 base64url characters"},
};

constexpr Pattern kSdistPatterns[] = {
    {"project", 128, "^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$",
     "sdist.project must be a project name (letters, digits, '.', '_' and '-')"},
    {"version", 64, "^[A-Za-z0-9][A-Za-z0-9.+!_-]*$",
     "sdist.version must be a version (letters, digits, '.', '+', '!', '_' and '-')"},
    {"filename", 255, "^[A-Za-z0-9][A-Za-z0-9._+!-]*[.](tar[.]gz|zip)$",
     "sdist.filename must be an sdist file name (.tar.gz or .zip) without '/'"},
    {"sha256", 64, "^[0-9a-f]{64}$", "sdist.sha256 must be 64 lower-case hex digits"},
};

void CheckString(const Json& parent, const Pattern& p, const std::string& path,
                 std::vector<FieldError>* errors) {
  auto it = parent.find(p.key);
  if (it == parent.end() || it->is_null()) {
    errors->push_back({path, "Required value"});
    return;
  }
  if (!it->is_string()) {
    errors->push_back({path, "Invalid value: " + Quoted(TypeName(*it)) + ": " + path +
                                 " in body must be of type string: " + Quoted(TypeName(*it))});
    return;
  }
  const std::string& s = it->get_ref<const std::string&>();
  if (s.size() > p.max_length) {
    errors->push_back(
        {path, "Too long: may not be more than " + std::to_string(p.max_length) + " bytes"});
    return;
  }
  const std::regex re(p.regex);
  if (!std::regex_match(s, re)) {
    errors->push_back({path, "Invalid value: \"string\": " + std::string(p.message)});
  }
}

}  // namespace

std::vector<FieldError> ValidateWheelBuild(const Json& object) {
  std::vector<FieldError> errors;
  if (!object.is_object()) {
    errors.push_back(
        {"<nil>", "Invalid value: " + Quoted(TypeName(object)) + ": must be an object"});
    return errors;
  }
  auto spec_it = object.find("spec");
  if (spec_it == object.end() || spec_it->is_null()) {
    errors.push_back({"spec", "Required value"});
    return errors;
  }
  if (!spec_it->is_object()) {
    errors.push_back(
        {"spec", "Invalid value: " + Quoted(TypeName(*spec_it)) +
                     ": spec in body must be of type object: " + Quoted(TypeName(*spec_it))});
    return errors;
  }
  const Json& spec = *spec_it;
  for (const Pattern& p : kSpecPatterns) {
    CheckString(spec, p, std::string("spec.") + p.key, &errors);
  }
  auto sdist = spec.find("sdist");
  if (sdist == spec.end() || sdist->is_null()) {
    errors.push_back({"spec.sdist", "Required value"});
  } else if (!sdist->is_object()) {
    errors.push_back({"spec.sdist", "Invalid value: " + Quoted(TypeName(*sdist)) +
                                        ": spec.sdist in body must be of type object: " +
                                        Quoted(TypeName(*sdist))});
  } else {
    for (const Pattern& p : kSdistPatterns) {
      CheckString(*sdist, p, std::string("spec.sdist.") + p.key, &errors);
    }
  }
  auto deadline = spec.find("deadlineSeconds");
  const std::string dp = "spec.deadlineSeconds";
  if (deadline == spec.end() || deadline->is_null()) {
    errors.push_back({dp, "Required value"});
  } else if (!deadline->is_number_integer()) {
    errors.push_back({dp, "Invalid value: " + Quoted(TypeName(*deadline)) + ": " + dp +
                              " in body must be of type integer: " + Quoted(TypeName(*deadline))});
  } else if (int64_t n = deadline->get<int64_t>(); n < kMinBuildDeadlineSeconds) {
    errors.push_back({dp, "Invalid value: " + std::to_string(n) + ": " + dp +
                              " in body should be greater than or equal to " +
                              std::to_string(kMinBuildDeadlineSeconds)});
  } else if (n > kMaxBuildDeadlineSeconds) {
    errors.push_back({dp, "Invalid value: " + std::to_string(n) + ": " + dp +
                              " in body should be less than or equal to " +
                              std::to_string(kMaxBuildDeadlineSeconds)});
  }
  // The pod is named after the object: the name must be what the agent derives from the spec,
  // so one build id cannot be asked for under two names.
  const std::string name = object.contains("metadata") && object["metadata"].is_object()
                               ? Str(object["metadata"], "name")
                               : "";
  if (errors.empty() && name != Str(spec, "buildCache") + "-" + Str(spec, "buildId")) {
    errors.push_back(
        {"<nil>",
         "Invalid value: \"object\": metadata.name must be <spec.buildCache>-<spec.buildId>"});
  }
  return errors;
}

Result<WheelBuild> WheelBuildFromJson(const Json& object) {
  std::vector<FieldError> errors = ValidateWheelBuild(object);
  if (!errors.empty()) {
    std::string name =
        object.is_object() && object.contains("metadata") && object["metadata"].is_object()
            ? Str(object["metadata"], "name")
            : "";
    std::string text = "WheelBuild " + Quoted(name) + " is invalid:";
    for (const FieldError& e : errors) text += "\n" + e.ToString();
    return InvalidArgument(text);
  }
  WheelBuild out;
  const Json& meta = object["metadata"];
  out.name = Str(meta, "name");
  out.ns = Str(meta, "namespace");
  out.uid = Str(meta, "uid");
  out.resource_version = Str(meta, "resourceVersion");
  out.creation_timestamp = Str(meta, "creationTimestamp");
  const Json& spec = object["spec"];
  const Json& sdist = spec["sdist"];
  out.spec = {
      Str(spec, "buildCache"),
      Str(spec, "builder"),
      Str(spec, "buildId"),
      {Str(sdist, "project"), Str(sdist, "version"), Str(sdist, "filename"), Str(sdist, "sha256")},
      Str(spec, "agentURL"),
      Str(spec, "uploadToken"),
      spec["deadlineSeconds"].get<int64_t>()};
  out.status = WheelBuildStatusFromJson(object);
  return out;
}

WheelBuildStatus WheelBuildStatusFromJson(const Json& object) {
  WheelBuildStatus out;
  if (!object.is_object()) return out;
  auto st = object.find("status");
  if (st == object.end() || !st->is_object()) return out;
  out.phase = Str(*st, "phase");
  out.pod_name = Str(*st, "podName");
  out.message = Str(*st, "message");
  out.start_time = Str(*st, "startTime");
  out.completion_time = Str(*st, "completionTime");
  return out;
}

Json WheelBuildStatusToJson(const WheelBuildStatus& status) {
  Json st = Json::object();
  if (!status.phase.empty()) st["phase"] = status.phase;
  if (!status.pod_name.empty()) st["podName"] = status.pod_name;
  if (!status.message.empty()) st["message"] = status.message;
  if (!status.start_time.empty()) st["startTime"] = status.start_time;
  if (!status.completion_time.empty()) st["completionTime"] = status.completion_time;
  return {{"status", st}};
}

}  // namespace buildcache::api
