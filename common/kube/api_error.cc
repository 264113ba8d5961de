#include "common/kube/api_error.h"

#include <nlohmann/json.hpp>
#include <regex>

namespace buildcache::kube {

namespace {

StatusCode CodeFor(int http_status, std::string_view reason) {
  switch (http_status) {
    case 400:
    case 415:
    case 422:
      return StatusCode::kInvalidArgument;
    case 404:
      return StatusCode::kNotFound;
    case 409:
      return reason == "AlreadyExists" ? StatusCode::kAlreadyExists
                                       : StatusCode::kFailedPrecondition;
    case 413:
      return StatusCode::kTooLarge;
    case 429:
      return StatusCode::kUnavailable;
    case 504:
      return StatusCode::kDeadlineExceeded;
    default:
      break;
  }
  if (http_status >= 500) return StatusCode::kUnavailable;
  return StatusCode::kFailedPrecondition;
}

// The reason the API server would give for a status without a metav1.Status body.
std::string DefaultReason(int http_status) {
  switch (http_status) {
    case 400:
      return "BadRequest";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 405:
      return "MethodNotAllowed";
    case 406:
      return "NotAcceptable";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 413:
      return "RequestEntityTooLarge";
    case 415:
      return "UnsupportedMediaType";
    case 422:
      return "Invalid";
    case 429:
      return "TooManyRequests";
    case 500:
      return "InternalError";
    case 503:
      return "ServiceUnavailable";
    case 504:
      return "Timeout";
    default:
      return "Unknown";
  }
}

}  // namespace

Status ApiErrorStatus(int http_status, std::string_view body, std::string_view context) {
  std::string reason;
  std::string message;
  int code = http_status;
  auto parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && parsed.value("kind", "") == "Status") {
    if (parsed.contains("reason") && parsed["reason"].is_string()) {
      reason = parsed["reason"].get<std::string>();
    }
    if (parsed.contains("message") && parsed["message"].is_string()) {
      message = parsed["message"].get<std::string>();
    }
    if (parsed.contains("code") && parsed["code"].is_number_integer()) {
      code = parsed["code"].get<int>();
    }
  } else {
    message = std::string(body.substr(0, 1024));
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) {
      message.pop_back();
    }
  }
  if (code < 400) code = http_status;
  if (reason.empty()) reason = DefaultReason(code);
  if (message.empty()) message = "the server returned HTTP " + std::to_string(code);
  std::string text(context);
  if (!text.empty()) text += ": ";
  text += message + " (" + reason + ", HTTP " + std::to_string(code) + ")";
  return Status(CodeFor(code, reason), std::move(text));
}

std::optional<ApiError> GetApiError(const Status& status) {
  if (status.ok()) return std::nullopt;
  static const std::regex kSuffix(R"( \(([A-Za-z]+), HTTP ([0-9]{3})\)$)");
  std::smatch match;
  const std::string& text = status.message();
  if (!std::regex_search(text, match, kSuffix)) return std::nullopt;
  ApiError error;
  error.reason = match[1].str();
  error.code = std::stoi(match[2].str());
  error.message = text.substr(0, static_cast<size_t>(match.position(0)));
  return error;
}

bool IsNotFound(const Status& status) {
  auto e = GetApiError(status);
  return e && e->code == 404;
}

bool IsAlreadyExists(const Status& status) {
  auto e = GetApiError(status);
  return e && e->code == 409 && e->reason == "AlreadyExists";
}

bool IsConflict(const Status& status) {
  auto e = GetApiError(status);
  return e && e->code == 409 && e->reason != "AlreadyExists";
}

bool IsGone(const Status& status) {
  auto e = GetApiError(status);
  return e && (e->code == 410 || e->reason == "Expired" || e->reason == "Gone");
}

bool IsInvalid(const Status& status) {
  auto e = GetApiError(status);
  return e && e->code == 422;
}

}  // namespace buildcache::kube
