#pragma once

// Checksum-database (sumdb) request paths and records, as proxied under
// <prefix>/sumdb/<name>/... (the "Proxying a Checksum Database" part of the GOPROXY protocol).

#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::goproxy {

// A checksum database name as GOSUMDB gives it (the part before any '+key'): a host name,
// lowercase [a-z0-9.-] labels, at most 253 bytes.
bool IsValidSumdbName(std::string_view name);

struct TilePath {
  int height = 0;     // H: 1..30
  bool data = false;  // "data" instead of a level number
  int level = 0;      // L when !data: 0..63
  uint64_t index = 0;
  int width = 0;  // W of a partial tile (".p/W"), 0 for a full tile
  bool partial() const { return width != 0; }
  // The canonical form, "H/L/x001/234[.p/W]": what goes into the upstream URL.
  std::string ToString() const;
};

// Parses what follows "tile/": H/L/N[.p/W] with N written as 3-digit elements, all but the last
// prefixed with 'x' ("x001/x234/567"), and 1 <= W < 2^H. Anything else is kInvalidArgument.
Result<TilePath> ParseTilePath(std::string_view path);

struct LookupHashes {
  std::string zip;  // "h1:..." of the module zip; empty when the record has none
  std::string mod;  // "h1:..." of the go.mod
};

// Finds the lines "<module> <version> h1:..." and "<module> <version>/go.mod h1:..." in a lookup
// response (record id, the records, a blank line, the signed tree note). Module and version are
// the decoded values. kDataLoss when no go.mod hash for them is present. The note's signature and
// the record's inclusion in the tree are not checked here: the go command checks them.
Result<LookupHashes> ParseLookup(std::string_view body, std::string_view module,
                                 std::string_view version);

}  // namespace buildcache::goproxy
