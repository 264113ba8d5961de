#pragma once

// Module paths and versions as the GOPROXY protocol carries them. Every module path and version
// that reaches an upstream URL or a store key has passed through these functions: decoded from
// the request, checked, and encoded again from the checked value.

#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::goproxy {

// Case encoding ("!" + lowercase letter for an uppercase letter), used for module paths and
// versions in proxy URLs so that they are safe on case-insensitive file systems.
//
// Escape returns the encoded form of s; it must not contain '!' (kInvalidArgument).
Result<std::string> Escape(std::string_view s);
// Unescape decodes; an uppercase letter, a '!' not followed by a lowercase letter, or a trailing
// '!' is kInvalidArgument.
Result<std::string> Unescape(std::string_view escaped);

// Checks a (decoded) module path with the go command's module path rules: slash-separated
// elements, none empty, none made only of dots, no leading or trailing dot in an element;
// characters from [A-Za-z0-9._~-]; the first element lowercase [a-z0-9.-], with a dot and no
// leading '-'; no element that names a Windows device (CON, NUL, COM1, ...) before its first dot;
// at most 512 bytes. kInvalidArgument naming the problem.
Status CheckModulePath(std::string_view path);

// True for a canonical semantic version as the go command writes it: "vMAJOR.MINOR.PATCH", an
// optional "-prerelease" (dot-separated [0-9A-Za-z-] identifiers, numeric ones without leading
// zeros) and an optional "+incompatible". Pseudo-versions ("v0.0.0-20240102150405-abcdef123456")
// are canonical versions too. These name immutable content.
bool IsCanonicalVersion(std::string_view version);

// True for a pseudo-version: a canonical prerelease version whose last prerelease part is a
// 14-digit UTC timestamp, '-', and a 12-hex-digit revision prefix.
bool IsPseudoVersion(std::string_view version);

// Checks a (decoded) version that a client may ask .info for: a canonical version, or a query
// the upstream resolves (a branch, tag or revision: [A-Za-z0-9._+~-], not starting with '.' or
// '-', no "..", at most 128 bytes). kInvalidArgument otherwise.
Status CheckVersionQuery(std::string_view version);

}  // namespace buildcache::goproxy
