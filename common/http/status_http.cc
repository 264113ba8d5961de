#include "common/http/status_http.h"

#include <string>

namespace buildcache::http {

int HttpCodeFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kFailedPrecondition:
      return 412;
    case StatusCode::kResourceExhausted:
      return 507;
    case StatusCode::kTooLarge:
      return 413;
    case StatusCode::kDataLoss:
      return 502;
    case StatusCode::kUnavailable:
      return 502;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kCancelled:
      return 499;
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

void SendError(Response& response, const Status& status) {
  // A cancelled request has no one to answer (kCancelled maps to 499 only for logs and metrics).
  if (response.started() || status.code() == StatusCode::kCancelled) {
    response.Abort();
    return;
  }
  if (status.ok()) {
    // A caller bug; answer something that is clearly not a success.
    SendError(response, Internal("SendError called with an OK status"));
    return;
  }
  std::string body = status.ToString();
  body.push_back('\n');
  response.SetStatus(HttpCodeFor(status.code()));
  response.SetHeader("Content-Type", "text/plain; charset=utf-8");
  (void)response.Send(body);
}

}  // namespace buildcache::http
