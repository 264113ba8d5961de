#pragma once

// The documents of a Cargo sparse registry: config.json and index files (one JSON object per
// line, one line per published version).

#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::cargo {

// One version's line of an index file, the fields the cache needs.
struct IndexEntry {
  std::string name;   // as published (may differ in case from the index file name)
  std::string vers;   // the version
  std::string cksum;  // SHA-256 of the .crate file, 64 lower-case hex digits
  bool yanked = false;
};

// Finds the line of `version` (exact string match) for crate `name` (ASCII case-insensitive) in
// an index file. kNotFound when no line has it; kUnavailable when the line is there but has no
// usable cksum (the .crate could not be verified). Lines that are not JSON are skipped.
Result<IndexEntry> FindVersion(std::string_view index_file, std::string_view name,
                               std::string_view version);

// The "dl" value of a registry's config.json; kUnavailable when the document is not a JSON
// object with a non-empty string "dl".
Result<std::string> ParseDownloadTemplate(std::string_view config_json);

// Where a .crate is downloaded from, by the registry's "dl" value: its markers {crate},
// {version}, {prefix}, {lowerprefix} and {sha256-checksum} are replaced; a template with none of
// them gets "/{crate}/{version}/download" appended (the registry protocol's rule, exactly as
// Cargo applies it).
std::string ExpandDownloadUrl(std::string_view dl, std::string_view name, std::string_view version,
                              std::string_view cksum);

// The config.json the agent answers with: downloads go to `dl` (the agent's own download
// endpoint); "api" is left out, so publishing, yanking and searching are not offered.
std::string RenderRegistryConfig(std::string_view dl);

}  // namespace buildcache::cargo
