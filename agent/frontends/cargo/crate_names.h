#pragma once

// Names and paths of the Cargo sparse registry protocol: crate names, versions, and the index
// file layout ("1/a", "2/ab", "3/a/abc", "ab/cd/abcd...").

#include <string>
#include <string_view>

#include "agent/upstream/url.h"
#include "common/status/status.h"

namespace buildcache::cargo {

// Longest crate name accepted (the limit of the default public registry).
inline constexpr size_t kMaxCrateNameLength = 64;
// Longest version string accepted.
inline constexpr size_t kMaxVersionLength = 128;

// A crate name: 1..64 characters of [A-Za-z0-9_-], not starting with '-'. Enough to keep every
// name a single, harmless path segment and store-key part; the registry decides the rest.
bool IsValidCrateName(std::string_view name);

// A SemVer 2.0 version as Cargo writes it: MAJOR.MINOR.PATCH, then optional "-prerelease" and
// "+build" parts of dot-separated [0-9A-Za-z-] identifiers; at most kMaxVersionLength characters.
bool IsValidVersion(std::string_view version);

// ASCII lower case (Cargo looks crates up in the index by their lower-cased name).
std::string Lower(std::string_view s);

// The directories an index file sits in, for a name as given: "1", "2", "3/a" or "ab/cd"
// (Cargo's {prefix} download-template marker). Empty for an empty name.
std::string IndexPrefix(std::string_view name);

// The index file path of a crate: IndexPrefix(Lower(name)) + "/" + Lower(name).
std::string IndexPath(std::string_view name);

// Parses an index file path (relative to the index root, undecoded) back to the crate name.
// Only the canonical form is accepted, the one Cargo requests: a valid, lower-case name under its
// own prefix directories. Anything else is kInvalidArgument.
Result<std::string> ParseIndexPath(std::string_view path);

// Decodes %XX escapes (upstream::PercentDecode).
using upstream::PercentDecode;

}  // namespace buildcache::cargo
