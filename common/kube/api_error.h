#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::kube {

// What the API server said when it refused a request: its metav1.Status, reduced to what callers
// branch on.
struct ApiError {
  int code = 0;         // HTTP status: 404, 409, 410, 422, ...
  std::string reason;   // metav1.StatusReason: "NotFound", "AlreadyExists", "Conflict", "Invalid",
                        // "Expired", "Gone", "Forbidden", ... ("" when the body had none)
  std::string message;  // the server's message, for people (after any context the caller added)
};

// Builds the Status for an API server error response (http_status >= 400) from its body, which
// is normally a metav1.Status (a non-JSON body is used as the message). The Status code follows
// the HTTP status: 404 kNotFound; 409 AlreadyExists kAlreadyExists; 409 Conflict (a stale
// resourceVersion, or a server-side apply field conflict), 410 Gone, 401/403 and other 4xx
// kFailedPrecondition; 400/415/422 kInvalidArgument; 413 kTooLarge; 429/5xx kUnavailable; 504
// kDeadlineExceeded. The message is "CONTEXT: SERVER MESSAGE (Reason, HTTP code)"; the
// parenthesised suffix is how GetApiError finds the details again, so prepending more context
// (Status::WithContext) keeps them.
Status ApiErrorStatus(int http_status, std::string_view body, std::string_view context);

// The API error a Status was built from by ApiErrorStatus, or nullopt for any other Status.
std::optional<ApiError> GetApiError(const Status& status);

bool IsNotFound(const Status& status);
bool IsAlreadyExists(const Status& status);
// A 409 that is not AlreadyExists: an update with a stale resourceVersion, or an apply whose
// fields another manager owns.
bool IsConflict(const Status& status);
// 410 Gone / reason Expired: the resourceVersion (or continue token) is too old; re-list.
bool IsGone(const Status& status);
// 422 Invalid: the object was rejected by validation (schema, CEL rules, admission).
bool IsInvalid(const Status& status);

}  // namespace buildcache::kube
