#pragma once

// Names as the PyPI simple API uses them: project names (PEP 503 normalization), distribution
// file names, wheel file names (PEP 427), and the URL pieces built from them.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/upstream/url.h"
#include "common/status/status.h"

namespace buildcache::pypi {

// PEP 503 normalized form: lowercase, every run of '-', '_' and '.' replaced by one '-'.
std::string NormalizeName(std::string_view name);

// True for a valid project name (PEP 508): ASCII letters, digits, '-', '_' and '.', starting and
// ending with a letter or digit, at most 200 bytes. Only such names are ever put into an upstream
// URL.
bool IsValidProjectName(std::string_view name);

// True for a distribution file name the agent serves: 1..255 bytes of ASCII letters, digits and
// "._-+!", not starting with '.'. Such a name has no '/', so it is one URL path segment and one
// store key segment.
bool IsValidFilename(std::string_view filename);

// The parts of a wheel file name: {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
struct WheelName {
  std::string distribution;  // as in the file name (escaped: '-' became '_')
  std::string version;
  std::string build;  // "" when absent
  std::string python;
  std::string abi;
  std::string platform;

  // NormalizeName(distribution).
  std::string project() const;
};

// Parses a wheel file name; kInvalidArgument when it is not one (wrong extension, wrong number
// of parts, an empty part, or a name IsValidFilename rejects).
Result<WheelName> ParseWheelFilename(std::string_view filename);

// A PEP 440 comparison key: two versions that a pin such as `==1.0` treats alike get the same key.
// Lowercase, a leading 'v' and any local label ("+...") dropped, release numbers without leading
// zeros and without trailing ".0" segments, pre/post/dev spellings folded ("1.0-Alpha.1" ->
// "1a1", "1.0.0+local" -> "1"). Text that is no PEP 440 version is returned lowercased.
std::string VersionKey(std::string_view version);

// The version of a distribution file of `project` (a normalized name): a wheel's version field,
// or what follows the project's name in an sdist (.tar.gz, .zip, .tar.bz2, .tar.xz, .tgz).
// nullopt for other files or names that do not start with the project.
std::optional<std::string> DistributionVersion(std::string_view project, std::string_view filename);

// The pieces of s between the separators (an empty s gives one empty piece). For compressed
// wheel tag sets ("py2.py3"), archive paths and header lines.
std::vector<std::string_view> SplitOn(std::string_view s, char sep);

// Decodes %XX escapes (upstream::PercentDecode).
using upstream::PercentDecode;

// Escapes everything but RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~), so the result is
// safe as one path segment.
std::string PercentEncodeSegment(std::string_view s);

// Resolves a URL reference against an absolute http(s) base URL (RFC 3986 section 5.2), removing
// dot segments. The reference's fragment, if any, is dropped. Returns kInvalidArgument when the
// base is not an absolute http(s) URL or the result's scheme is not http or https.
Result<std::string> ResolveUrl(std::string_view base, std::string_view reference);

}  // namespace buildcache::pypi
