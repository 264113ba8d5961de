#pragma once

// Checks a wheel the agent built before it is stored: it must be a sound zip archive whose
// metadata names the project, version and tags the agent expects. A build runs an sdist's own
// code, so its output is as untrusted as its input until checked.

#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "agent/frontends/pypi/names.h"
#include "common/status/status.h"
#include "common/zip/zip_reader.h"

namespace buildcache::pypi {

struct WheelCheckLimits {
  uint64_t max_entries = 100'000;
  uint64_t max_uncompressed = uint64_t{4} << 30;
  size_t max_metadata_bytes = size_t{1} << 20;  // METADATA and WHEEL each
};

// Every tag a (possibly compressed, "py2.py3-none-any") wheel file name claims, as
// "python-abi-platform".
std::set<std::string> ExpandTags(const WheelName& wheel);

// Verifies the wheel `filename` of `size` bytes (read through read_at) built from the sdist of
// `project` (normalized) `version`: the file name names that project and version (PEP 440
// equal); the archive reads whole (every entry inflates and matches its CRC-32, no entry name
// is absolute or has a ".." segment, no duplicate names, within the limits); exactly one
// "<name>-<version>.dist-info/" directory has a METADATA whose Name and Version are the
// project's and the version, and a WHEEL whose Tag lines are exactly the file name's tags.
// kInvalidArgument says which check failed; kDataLoss for a broken archive.
Status CheckBuiltWheel(const zip::ReadAtFn& read_at, uint64_t size, std::string_view filename,
                       std::string_view project, std::string_view version,
                       const WheelCheckLimits& limits = {});

}  // namespace buildcache::pypi
