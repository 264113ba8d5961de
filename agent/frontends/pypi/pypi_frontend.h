#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "agent/frontends/pypi/build_scheduler.h"
#include "agent/frontends/pypi/simple_api.h"
#include "agent/frontends/pypi/wheel_builder.h"
#include "agent/frontends/pypi/wheel_house.h"
#include "agent/store/blob_store.h"
#include "agent/upstream/derived_cache.h"
#include "agent/upstream/upstream.h"
#include "common/http/router.h"
#include "common/http/server.h"
#include "common/status/status.h"

namespace buildcache::pypi {

struct PypiOptions {
  // The upstream simple index, e.g. "https://pypi.example.internal/simple/" (a trailing '/' is
  // added when missing). Project pages are fetched from <upstream><normalized-name>/.
  std::string upstream;
  // URL path prefix the front end is served under (no trailing '/').
  std::string prefix = "/pypi";
  // How long a fetched project page is used before it is revalidated upstream; 404s are
  // remembered for negative_ttl.
  std::chrono::seconds metadata_ttl{600};
  std::chrono::seconds negative_ttl{60};
  // Largest upstream project page accepted.
  uint64_t max_page_size = uint64_t{64} << 20;
  // Largest upload body accepted (413 beyond it).
  uint64_t max_upload_size = uint64_t{1} << 30;
  // Bytes of parsed upstream pages and of served pages kept in memory (each budget on its own),
  // so a warm request neither parses nor renders a page (0 = none). A big project's page takes
  // 50-150 ms to parse, and pip asks for it again for every file it downloads.
  size_t page_cache_bytes = size_t{64} << 20;
  // Whether uploads are accepted (403 when not). Wheel-house wheels are listed when it is on or
  // when the agent builds wheels (builds): building needs no open uploads.
  bool wheel_house = true;
  // Prefix of every store key this front end uses.
  std::string key_prefix = "pypi/";
  // Passed to every upstream fetch (timeouts).
  upstream::FetchOptions fetch;
  // Wheel building (wheel_builder.h): when set (with or without wheel_house), a pip or uv client on
  // a platform a builder serves that downloads a verified upstream sdist, with no fitting wheel in
  // the wheel house, starts a background build of that sdist.
  std::optional<WheelBuildOptions> builds;
  // With builds in a cluster: offers a build to the sdist's owner (build_scheduler.h) instead of
  // starting it here. Unset: every build this agent would start runs here.
  OfferFn offer_build;
  // With replication: the copies of a wheel-house list its owners hold (WheelHouseOptions::
  // owner_copies), asked for at most once per wheel_list_ttl. Unset: lists are refreshed only by
  // replication's pushes.
  std::function<std::vector<std::string>(const std::string& index_key)> wheel_list_owner_copies;
  std::chrono::milliseconds wheel_list_ttl{std::chrono::seconds(30)};
  // buildcache_pypi_built_wheels_served_total (null: not counted).
  metrics::Counter* built_wheels_served = nullptr;
};

// The PyPI front end: a caching proxy of an upstream simple index (PEP 503/691) plus a wheel
// house of wheels built in the cluster. All paths are under options.prefix ("/pypi"):
//
//   GET/HEAD <p>/simple/              404: the project list is not proxied (pip and uv never ask
//                                     for it; the upstream's is tens of megabytes).
//   GET/HEAD <p>/simple/<name>/       the project page, HTML or JSON by the Accept header (PEP
//                                     691; text/html by default; Vary: Accept). A name that is
//                                     not PEP 503 normalized, or a missing trailing '/', gets a
//                                     301 to the normalized page. Invalid names get 400. File
//                                     URLs are relative ("../../files/<name>/<file>#sha256=..."),
//                                     so pages carry no host name; data-requires-python, yanked
//                                     and core metadata (PEP 658/714, only with a hash) are kept.
//                                     Wheel-house wheels are merged in (an upstream file of the
//                                     same name wins), but only for versions the upstream page
//                                     does not have (compared as PEP 440 versions, local labels
//                                     ignored): uploads are untrusted. Upstream 404 with no
//                                     wheels: 404;
//                                     upstream failure and no cached page: 502.
//   GET/HEAD <p>/files/<name>/<file>  an upstream file, through the ArtifactCache: the URL and
//                                     sha256 come from the cached project page (never from the
//                                     request), the bytes are verified before they are stored.
//                                     A file the page does not list: 404. No usable hash
//                                     (sha256 or sha512) in the index: 502.
//   GET/HEAD <p>/files/<name>/<file>.metadata   its PEP 658 core metadata, verified the same way.
//   GET/HEAD <p>/wheelhouse/<name>/<file>       a wheel-house wheel, from the store.
//   GET <p>/builds/                   with builds configured: the wheel builds (queued, running,
//                                     and the remembered ones) as JSON.
//   GET <p>/builds/<id>/log           a build's log (text).
//   Built wheels (WheelEntry::built()) are listed and served for the versions the upstream has,
//   as long as the upstream page still lists the sdist (by its sha256) they were built from.
//   POST <p>/, <p>/legacy/            upload (the legacy API twine uses: multipart/form-data with
//                                     ":action"="file_upload", "name", "version", "content" and
//                                     optional "sha256_digest"). Credentials are ignored. Only
//                                     wheels; malformed forms, a non-wheel, a name that does not
//                                     match the file, or a wrong digest: 400 and nothing stored.
//                                     The same file again: 200. A different file of a listed
//                                     name: 409 (logged), and the first one stays. With
//                                     wheel_house off: 403 and nothing stored (built wheels are
//                                     still listed when the agent builds).
//
// Responses set X-Buildcache-Source (local or upstream); errors go through http::SendError.
// Thread-safe: Handle may run concurrently on many server threads. The store and the caches must
// outlive the front end.
class PypiFrontend {
 public:
  PypiFrontend(store::BlobStore& store, upstream::ArtifactCache& artifacts,
               upstream::MetadataCache& metadata, PypiOptions options);
  ~PypiFrontend();

  void Handle(http::Request& request, http::Response& response);
  // Routes every method on options.prefix to Handle; the front end must outlive the router.
  void AddRoutes(http::Router& router);

  // The wheel house (for ScanDirectory on pip cache directories, and tests).
  WheelHouse& wheel_house() { return wheel_house_; }
  // Whether index pages and downloads include wheel-house wheels: uploads on, or wheel building.
  bool ListsWheelHouse() const { return options_.wheel_house || builder_ != nullptr; }
  // The wheel builder (null without options.builds).
  WheelBuilder* wheel_builder() { return builder_.get(); }
  // The scheduler of offered builds (null without options.builds and options.offer_build).
  BuildScheduler* build_scheduler() { return scheduler_.get(); }

  // The owner's side of a build a peer offers (the peer protocol's Build call). The sdist is
  // named by project, file name and sha256 (hex); it is built only when this agent's own
  // upstream page of the project lists that file with that sha256 (kNotFound otherwise, and
  // nothing is fetched or built), after the sdist was fetched into the store (through the
  // ArtifactCache, verified against the page's digests). user_agent is the client's (its
  // platform). kInvalidArgument for malformed names; kFailedPrecondition without builds.
  struct PeerBuild {
    std::string decision;  // a BuildDecisionName, or "built"
    std::string id;        // the build's id (when a builder serves the platform)
    std::string wheel;     // with "built": the fitting wheel's file name
  };
  Result<PeerBuild> BuildForPeer(std::string_view project, std::string_view filename,
                                 std::string_view sha256, std::string_view user_agent);

 private:
  void ServeIndexPage(http::Request& request, http::Response& response, std::string_view name,
                      bool trailing_slash);
  // `rest` is the undecoded "<name>/<file>" after the route.
  void ServeFile(http::Request& request, http::Response& response, std::string_view rest);
  void ServeWheelHouseFile(const http::Request& request, http::Response& response,
                           std::string_view rest);
  void Upload(http::Request& request, http::Response& response);
  struct UploadForm;  // pypi_frontend.cc
  // Reads the request's multipart body into `form` (the wheel into a pending wheel-house entry)
  // and checks the fields (CheckUploadForm); the error names what is wrong.
  Status ReadUploadForm(http::Request& request, const std::string& boundary, UploadForm& form);
  // The checks of an upload form's fields against each other and the wheel's file name.
  static Status CheckUploadForm(const UploadForm& form);
  // After an sdist was served: starts a build when the client's platform is known, a builder
  // serves it and the wheel house has no wheel of that version that fits it.
  void MaybeBuild(const http::Request& request, const std::string& project, const DistFile& file,
                  const std::string& store_key);
  void ServeBuilds(http::Response& response, std::string_view rest);
  // A wheel-house wheel of `version` that fits `platform` (built or uploaded), if any.
  std::optional<std::string> FittingWheel(const std::string& project, std::string_view version,
                                          const ClientPlatform& platform);

  // A served page and its ETag.
  struct RenderedPage {
    std::string body;
    std::string etag;
  };
  // The upstream project page for a normalized name, parsed once per upstream document (with
  // upstream file URLs); *fingerprint (optional) is set to the document's fingerprint. *source
  // is where it came from (upstream::DocumentSource). NotFound when the upstream does not
  // have the project.
  Result<std::shared_ptr<const ProjectPage>> UpstreamPage(const std::string& project,
                                                          std::string_view* source,
                                                          std::string* fingerprint = nullptr);
  // The page as served: the upstream page with the agent's file URLs, merged with wheels.
  ProjectPage ServedPage(const std::string& project, const ProjectPage* upstream_page,
                         const std::vector<WheelEntry>& wheels) const;

  store::BlobStore& store_;
  upstream::ArtifactCache& artifacts_;
  upstream::MetadataCache& metadata_;
  const PypiOptions options_;
  WheelHouse wheel_house_;
  std::unique_ptr<WheelBuilder> builder_;      // null without builds
  std::unique_ptr<BuildScheduler> scheduler_;  // null without builds or offer_build
  // Parsed upstream pages by project, valid for one upstream document.
  upstream::DerivedCache<ProjectPage> parsed_pages_;
  // Served pages by project and format, valid for one upstream document and wheel list.
  upstream::DerivedCache<RenderedPage> rendered_pages_;
};

}  // namespace buildcache::pypi
