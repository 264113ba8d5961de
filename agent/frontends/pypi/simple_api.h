#pragma once

// The PyPI "simple" repository API for one project: the data model, parsing upstream pages
// (PEP 691 JSON, or PEP 503 HTML), rendering them for clients, and content negotiation.
//
// Covered: PEP 503 (HTML, hash fragments, data-requires-python), PEP 592 (yanked), PEP 629
// (repository version), PEP 658/714 (core metadata), PEP 691 (JSON), PEP 700 (versions, size,
// upload-time).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status/status.h"

namespace buildcache::pypi {

// One distribution file of a project.
struct DistFile {
  std::string filename;
  // Where the file is: an absolute upstream URL after parsing, the agent's relative URL after
  // rewriting. Never has a fragment.
  std::string url;
  // Hash name (lowercase, e.g. "sha256") -> lowercase hex digest.
  std::map<std::string, std::string> hashes;
  std::string requires_python;  // "" = absent
  // PEP 592: nullopt = not yanked; "" = yanked without a reason.
  std::optional<std::string> yanked;
  // PEP 658/714: the core metadata is at url + ".metadata"; its hashes (may be empty).
  bool core_metadata = false;
  std::map<std::string, std::string> core_metadata_hashes;
  std::optional<uint64_t> size;
  std::string upload_time;  // ISO 8601 as given; "" = absent

  friend bool operator==(const DistFile&, const DistFile&) = default;
};

struct ProjectPage {
  std::string name;
  // The repository's API version as the upstream declared it ("1.0" when absent).
  std::string api_version = "1.0";
  // PEP 700 versions; empty when the upstream did not list them.
  std::vector<std::string> versions;
  std::vector<DistFile> files;

  // Finds a file by exact name; nullptr when absent.
  const DistFile* Find(std::string_view filename) const;
};

// Parses a PEP 691 JSON project page. Relative file URLs are resolved against base_url (the
// page's URL); files with an unusable URL are dropped. kInvalidArgument when the document is
// not a JSON project page.
Result<ProjectPage> ParseJsonPage(std::string_view body, std::string_view base_url);

// Parses a PEP 503 HTML project page: every <a href> is a file; hashes come from the URL's
// fragment; HTML character references in attributes are decoded; <base href> is honoured.
Result<ProjectPage> ParseHtmlPage(std::string_view body, std::string_view base_url);

// Parses by Content-Type: JSON for application/vnd.pypi.simple.*+json and application/json,
// HTML otherwise.
Result<ProjectPage> ParseProjectPage(std::string_view body, std::string_view content_type,
                                     std::string_view base_url);

// The formats a project page is served in.
enum class Format {
  kHtml,    // text/html (PEP 503)
  kHtmlV1,  // application/vnd.pypi.simple.v1+html
  kJsonV1,  // application/vnd.pypi.simple.v1+json
};

// The Content-Type header for a format.
std::string_view ContentTypeFor(Format format);

// Chooses the response format for an Accept header (PEP 691): the acceptable format with the
// highest q-value wins; ties go to the more specific media range, then to the range listed first,
// then to HTML. "latest" aliases count as v1. An absent Accept header, or one that accepts none
// of the formats, gets text/html (PEP 691 allows serving a default).
Format NegotiateFormat(std::string_view accept);

// The Accept header for fetching an upstream page: JSON preferred, HTML accepted.
inline constexpr std::string_view kUpstreamAccept =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.1";

// Renders the page. File URLs are used as they are, with a "#<hash>=<hex>" fragment appended
// (sha256 preferred). The API version is "1.1" when the page lists versions and every file has a
// size, "1.0" otherwise (only fields of the version rendered are promised).
std::string RenderHtml(const ProjectPage& page);
std::string RenderJson(const ProjectPage& page);
std::string Render(const ProjectPage& page, Format format);

}  // namespace buildcache::pypi
