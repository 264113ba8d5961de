#pragma once

// Names as the npm registry API uses them: package names (plain and scoped), tarball file names,
// and the Host header a client reached the agent by.

#include <optional>
#include <string>
#include <string_view>

#include "agent/upstream/url.h"
#include "common/status/status.h"

namespace buildcache::npm {

// A valid npm package name, "name" or "@scope/name".
struct PackageName {
  std::string scope;  // without '@'; "" for an unscoped package
  std::string name;   // the part after the scope

  bool scoped() const { return !scope.empty(); }
  // "@scope/name" or "name": how the name is written in package.json, packuments and URL paths
  // of tarballs.
  std::string full() const;
  // "@scope%2fname" or "name": one URL path segment, as npm sends it for a packument.
  std::string escaped() const;
};

// Validates a decoded package name with npm's rules for existing packages (the registry still
// serves names that new packages may no longer use, such as upper-case ones):
//   - 1..214 bytes in all;
//   - "name" or "@scope/name" with non-empty parts made only of characters that
//     encodeURIComponent leaves alone (ASCII letters, digits and "-._~!*'()");
//   - no part starts with '.', an unscoped name does not start with '_';
//   - not "node_modules" or "favicon.ico" (any case).
// Only names that pass are put into upstream URLs and store keys. kInvalidArgument otherwise.
Result<PackageName> ParsePackageName(std::string_view name);

// True for a tarball file name the agent serves: 1..255 bytes of ASCII letters, digits and
// "._-+~", not starting with '.'. Such a name is one URL path segment and one store key segment.
bool IsValidTarballFilename(std::string_view filename);
// The file name a tarball URL ends in (percent-decoded, query dropped), when the agent can serve it
// under that name (IsValidTarballFilename); nullopt otherwise.
std::optional<std::string> TarballFilename(const upstream::Url& url);

// Decodes %XX escapes (upstream::PercentDecode).
using upstream::PercentDecode;

// The "http://host[:port]" a client used, from its Host header: a DNS name (letters, digits, '-',
// '.', '_'), an IPv4 address or a bracketed IPv6 address, with an optional port (1..65535).
// nullopt for anything else (empty, userinfo, paths, spaces, control characters, ...), so the
// result can be written into documents as is.
std::optional<std::string> BaseUrlFromHost(std::string_view host);

}  // namespace buildcache::npm
