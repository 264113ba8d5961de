#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status/status.h"

namespace buildcache::identity {

// The API server's answer to a TokenReview (authentication.k8s.io/v1): whether it authenticated
// the token for the audiences asked, and as whom.
struct TokenReviewVerdict {
  bool authenticated = false;
  std::string username;  // "system:serviceaccount:NAMESPACE:NAME" for a ServiceAccount
  std::vector<std::string> audiences;  // the asked audiences the token is valid for
  std::string pod_name;                // user.extra authentication.kubernetes.io/pod-name, if bound
  std::string pod_uid;                 // ... pod-uid
  std::string error;                   // status.error (why it was not authenticated)
};

// The body of a TokenReview create request for `token` and `audience`. It holds the token: it
// goes to the API server only, never to a log.
std::string TokenReviewRequestBody(std::string_view token, std::string_view audience);

// Parses the TokenReview the API server returned; kInvalidArgument when it is not one.
Result<TokenReviewVerdict> ParseTokenReview(std::string_view body);

// "system:serviceaccount:NS:NAME" split into NS and NAME; false for any other user name.
bool SplitServiceAccountUser(std::string_view username, std::string* ns, std::string* name);

}  // namespace buildcache::identity
