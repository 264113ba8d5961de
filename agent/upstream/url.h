#pragma once

// Upstream URLs: the only way a URL becomes an upstream request. Everything the fetcher sends
// (host, port, request-target) comes out of a Url that passed ParseUrl, so no caller-supplied
// byte reaches the wire unchecked.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::upstream {

struct Url {
  bool https = false;
  std::string host;      // lowercase; IPv6 literals without brackets
  uint16_t port = 0;     // explicit or the scheme's default
  std::string target;    // path and query, starts with '/'; the fragment is dropped
  std::string userinfo;  // "user:password" as written (percent-encoded), usually empty

  bool default_port() const { return port == (https ? 443 : 80); }
  bool ip_literal() const;
  // "host" or "host:port" (brackets around IPv6), for the Host header.
  std::string authority() const;
  // "https://host:port": what connections are pooled by and redirects compare.
  std::string origin() const;
  // The URL without userinfo and query, for logs and error messages (queries may carry tokens).
  std::string Redacted() const;
  // The URL without userinfo (credentials never leave through a string).
  std::string ToString() const;
};

// Parses an absolute http or https URL. Rejects (kInvalidArgument) other schemes, a missing or
// malformed host, a bad port, and any control character, space or byte >= 0x7f anywhere, so the
// result can be written into a request line and Host header as is.
Result<Url> ParseUrl(std::string_view url);

// Resolves a redirect's Location against the URL it came from: absolute, scheme-relative
// ("//host/p"), absolute-path ("/p") and relative ("p", "../p", "?q") references. The result is
// validated like ParseUrl.
Result<Url> ResolveReference(const Url& base, std::string_view reference);

// Decodes the %XX escapes (either case) of a request path segment. '+' stays '+' (paths are not
// forms). kInvalidArgument for a truncated or non-hex escape, and for %00: no name, file or path
// the agent serves may contain NUL. The front ends decode every request path with this one.
Result<std::string> PercentDecode(std::string_view s);

}  // namespace buildcache::upstream
