#pragma once

#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::http {

// The one place a Status code becomes an HTTP status:
//   kInvalidArgument 400, kNotFound 404, kAlreadyExists 409, kFailedPrecondition 412,
//   kResourceExhausted 507, kTooLarge 413, kDataLoss 502, kUnavailable 502,
//   kDeadlineExceeded 504, kCancelled 499 (never sent), kInternal 500.
int HttpCodeFor(StatusCode code);

// Responds with HttpCodeFor(status.code()) and a short text body "<CODE>: <message>\n".
// If the response has already started, aborts the connection instead.
void SendError(Response& response, const Status& status);

}  // namespace buildcache::http
