#include "agent/identity/identity_source.h"

#include <openssl/evp.h>
#include <strings.h>

namespace buildcache::identity {
namespace {

bool StartsWithScheme(std::string_view header, std::string_view scheme) {
  return header.size() > scheme.size() && header[scheme.size()] == ' ' &&
         strncasecmp(header.data(), scheme.data(), scheme.size()) == 0;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Standard base64 (padding required, as RFC 7617 credentials are); nullopt when malformed.
std::optional<std::string> DecodeBase64(std::string_view in) {
  if (in.empty() || in.size() % 4 != 0 || in.size() > 8192) return std::nullopt;
  for (char c : in) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
          c == '/' || c == '=')) {
      return std::nullopt;
    }
  }
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t pad = in.ends_with("==") ? 2 : in.ends_with('=') ? 1 : 0;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

}  // namespace

Result<std::optional<std::string>> BearerToken(std::string_view authorization) {
  std::string_view header = Trim(authorization);
  if (header.empty()) return std::optional<std::string>();
  std::string token;
  if (StartsWithScheme(header, "Bearer")) {
    token = std::string(Trim(header.substr(7)));
  } else if (StartsWithScheme(header, "Basic")) {
    std::optional<std::string> pair = DecodeBase64(Trim(header.substr(6)));
    if (!pair) return InvalidArgument("malformed Basic credentials (not base64)");
    size_t colon = pair->find(':');
    if (colon == std::string::npos) return InvalidArgument("malformed Basic credentials (no ':')");
    std::string_view user = std::string_view(*pair).substr(0, colon);
    std::string_view password = std::string_view(*pair).substr(colon + 1);
    token = std::string(password.empty() ? user : password);
  } else {
    return InvalidArgument("unsupported Authorization scheme (use Bearer or Basic)");
  }
  if (token.empty()) return InvalidArgument("empty token in the Authorization header");
  return std::optional<std::string>(std::move(token));
}

}  // namespace buildcache::identity
