#include "agent/identity/token_review.h"

#include <nlohmann/json.hpp>

namespace buildcache::identity {
namespace {

using Json = nlohmann::json;

std::string FirstString(const Json& extra, const char* key) {
  auto it = extra.find(key);
  if (it == extra.end() || !it->is_array() || it->empty() || !(*it)[0].is_string()) return "";
  return (*it)[0].get<std::string>();
}

}  // namespace

std::string TokenReviewRequestBody(std::string_view token, std::string_view audience) {
  return Json{{"apiVersion", "authentication.k8s.io/v1"},
              {"kind", "TokenReview"},
              {"spec", {{"token", token}, {"audiences", {audience}}}}}
      .dump();
}

Result<TokenReviewVerdict> ParseTokenReview(std::string_view body) {
  Json review = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!review.is_object() || review.value("kind", "") != "TokenReview") {
    return InvalidArgument("the API server's answer is not a TokenReview");
  }
  const Json& status = review.value("status", Json::object());
  if (!status.is_object()) return InvalidArgument("the TokenReview has no status");
  TokenReviewVerdict verdict;
  verdict.authenticated = status.value("authenticated", Json(false)).is_boolean() &&
                          status.value("authenticated", false);
  if (status.value("error", Json()).is_string()) verdict.error = status["error"].get<std::string>();
  if (auto it = status.find("audiences"); it != status.end() && it->is_array()) {
    for (const Json& a : *it) {
      if (a.is_string()) verdict.audiences.push_back(a.get<std::string>());
    }
  }
  const Json& user = status.value("user", Json::object());
  if (user.is_object()) {
    if (user.value("username", Json()).is_string()) {
      verdict.username = user["username"].get<std::string>();
    }
    const Json& extra = user.value("extra", Json::object());
    if (extra.is_object()) {
      verdict.pod_name = FirstString(extra, "authentication.kubernetes.io/pod-name");
      verdict.pod_uid = FirstString(extra, "authentication.kubernetes.io/pod-uid");
    }
  }
  return verdict;
}

bool SplitServiceAccountUser(std::string_view username, std::string* ns, std::string* name) {
  constexpr std::string_view kPrefix = "system:serviceaccount:";
  if (!username.starts_with(kPrefix)) return false;
  username.remove_prefix(kPrefix.size());
  size_t colon = username.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == username.size() ||
      username.find(':', colon + 1) != std::string_view::npos) {
    return false;
  }
  *ns = std::string(username.substr(0, colon));
  *name = std::string(username.substr(colon + 1));
  return true;
}

}  // namespace buildcache::identity
