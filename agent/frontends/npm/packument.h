#pragma once

// Packuments: the registry's per-package JSON documents. The agent serves the upstream's
// documents with every tarball URL pointing at itself, and finds the upstream URL and digest of a
// tarball by its file name.

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "agent/frontends/npm/names.h"
#include "common/status/status.h"

namespace buildcache::npm {

// The two forms the registry serves: the full document, and the abbreviated one that holds only
// what installing needs (Accept: application/vnd.npm.install-v1+json).
enum class Form { kFull, kAbbreviated };

inline constexpr std::string_view kAbbreviatedType = "application/vnd.npm.install-v1+json";
inline constexpr std::string_view kJsonType = "application/json";

// The form a client asks for: abbreviated when its Accept header lists
// application/vnd.npm.install-v1+json with a q-value above 0 and not below application/json's;
// full otherwise (also when Accept is absent, as the registry does).
Form NegotiateForm(std::string_view accept);

// The Accept header the agent sends upstream for a form. The abbreviated one lets application/json
// through, so an upstream without abbreviated documents answers with the full one.
std::string_view UpstreamAccept(Form form);

// Where a tarball comes from, as one version's "dist" gives it.
struct TarballDist {
  std::string url;        // absolute upstream URL (resolved against the packument's URL)
  std::string integrity;  // dist.integrity (SRI), "" when absent
  std::string shasum;     // dist.shasum (hex SHA-1), "" when absent
};

// Tarballs by file name (the last segment of the tarball URL, percent-decoded).
using TarballIndex = std::map<std::string, TarballDist, std::less<>>;

struct Packument {
  std::string body;       // the re-serialized document (only when a tarball base was given)
  TarballIndex tarballs;  // every version's tarball the agent can serve
  size_t versions = 0;    // versions in the served document
  size_t dropped = 0;     // versions left out because their tarball could not be served
};

// Parses an upstream packument (a JSON object; its nesting is bounded before it is parsed) fetched
// from packument_url and indexes the tarballs of its versions. A version's tarball is servable
// when its URL resolves to an http(s) URL whose file name passes IsValidTarballFilename and no
// other version claims the same file name with a different URL or digest. Versions without a
// string dist.tarball are kept as they are.
//
// With tarball_base ("http://host:port/npm/", ending in '/'), the document is also re-serialized
// into Packument::body with every servable tarball URL replaced by
// tarball_base + name.full() + "/-/" + file name, and versions whose tarball is not servable
// removed (the agent only lists what it can serve). Everything else is kept as the upstream sent
// it (key order aside). kInvalidArgument when the body is not a JSON object or nests too deeply.
Result<Packument> ReadPackument(std::string_view body, std::string_view packument_url,
                                const PackageName& name,
                                const std::optional<std::string>& tarball_base);

}  // namespace buildcache::npm
