#include "agent/frontends/maven/maven_frontend.h"

#include <array>
#include <optional>
#include <utility>

#include "agent/upstream/serving.h"
#include "common/http/headers.h"
#include "common/http/router.h"
#include "common/http/status_http.h"
#include "common/log/log.h"

namespace buildcache::maven {
namespace {

using http::kSourceHeader;
constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";
// Upstream checksum files are a digest and perhaps a file name; anything longer is not one.
constexpr uint64_t kMaxChecksumFileSize = 4096;
// The checksum files a release file is verified with, in the order they are tried: every
// repository has .sha1; the others are newer and optional.
constexpr std::array<ChecksumAlgorithm, 3> kVerifyWith = {
    ChecksumAlgorithm::kSha1, ChecksumAlgorithm::kSha256, ChecksumAlgorithm::kSha512};

void MethodNotAllowed(http::Response& response) {
  response.SetStatus(405);
  response.SetHeader("Allow", "GET, HEAD");
  response.SetHeader("Content-Type", kTextPlain);
  (void)response.Send("method not allowed\n");
}

std::string_view ContentTypeFor(std::string_view file) {
  size_t dot = file.rfind('.');
  std::string_view ext = dot == std::string_view::npos ? "" : file.substr(dot + 1);
  if (ext == "pom" || ext == "xml") return "application/xml";
  if (ext == "jar" || ext == "war" || ext == "ear" || ext == "aar") {
    return "application/java-archive";
  }
  if (ext == "module" || ext == "json") return "application/json";
  if (ext == "asc") return "application/pgp-signature";
  if (ext == "md5" || ext == "sha1" || ext == "sha256" || ext == "sha512") return kTextPlain;
  return "application/octet-stream";
}

upstream::ExpectedDigest::Algorithm UpstreamAlgorithm(ChecksumAlgorithm algorithm) {
  switch (algorithm) {
    case ChecksumAlgorithm::kSha1:
      return upstream::ExpectedDigest::Algorithm::kSha1;
    case ChecksumAlgorithm::kSha512:
      return upstream::ExpectedDigest::Algorithm::kSha512;
    case ChecksumAlgorithm::kSha256:
    case ChecksumAlgorithm::kMd5:  // never used for verification
      break;
  }
  return upstream::ExpectedDigest::Algorithm::kSha256;
}

// Sends a small document with a strong ETag of its content; If-None-Match gets 304.
void SendDocument(http::Request& request, http::Response& response, std::string_view body,
                  std::string_view content_type, std::string_view source) {
  upstream::SendRevalidatedDocument(request, response, body, upstream::StrongEtag(body),
                                    content_type, source);
}

}  // namespace

MavenFrontend::MavenFrontend(store::BlobStore& store, upstream::ArtifactCache& artifacts,
                             upstream::MetadataCache& metadata, MavenOptions options)
    : store_(store), artifacts_(artifacts), metadata_(metadata), options_([&] {
        if (!options.upstream.empty() && !options.upstream.ends_with('/')) {
          options.upstream += '/';
        }
        while (options.prefix.ends_with('/')) options.prefix.pop_back();
        if (!options.clock) options.clock = [] { return std::chrono::system_clock::now(); };
        return std::move(options);
      }()) {}

void MavenFrontend::AddRoutes(http::Router& router) {
  router.Add("", options_.prefix,
             [this](http::Request& req, http::Response& resp) { Handle(req, resp); });
}

void MavenFrontend::Handle(http::Request& request, http::Response& response) {
  std::optional<std::string_view> under = http::PathUnder(request.path(), options_.prefix);
  if (!under) {
    http::SendError(response, NotFound("no Maven repository at this path"));
    return;
  }
  if (request.method() != "GET" && request.method() != "HEAD") {
    MethodNotAllowed(response);
    return;
  }
  std::string_view rest = under->empty() ? *under : under->substr(1);
  auto parsed = ParseRepositoryPath(rest);
  if (!parsed.ok()) {
    http::SendError(response, parsed.status());
    return;
  }
  if (options_.upstream.empty()) {
    http::SendError(response, NotFound("no upstream repository is configured"));
    return;
  }
  switch (parsed->kind) {
    case RepositoryPath::Kind::kMetadata:
    case RepositoryPath::Kind::kSnapshot:
      ServeMutable(request, response, *parsed);
      return;
    case RepositoryPath::Kind::kArtifact:
      if (parsed->checksum) {
        ServeReleaseChecksum(request, response, *parsed);
      } else {
        ServeArtifact(request, response, *parsed);
      }
      return;
  }
}

void MavenFrontend::ServeMutable(http::Request& request, http::Response& response,
                                 const RepositoryPath& path) {
  upstream::MetadataRequest req;
  req.frontend = "maven";
  req.key = options_.key_prefix + "meta/" + path.file_path;
  req.url = options_.upstream + path.file_path;
  req.ttl = options_.metadata_ttl;
  req.negative_ttl = options_.negative_ttl;
  req.max_size = options_.max_mutable_size;
  req.fetch = options_.fetch;
  auto start = options_.clock();
  auto doc = metadata_.Get(req);
  if (!doc.ok()) {
    log::Warn("maven metadata failed",
              {{"path", path.file_path}, {"error", doc.status().ToString()}});
    http::SendError(response, doc.status());
    return;
  }
  if (doc->status == 404 || doc->status == 410) {
    http::SendError(response, NotFound(path.file_path + " not found upstream"));
    return;
  }
  if (doc->status != 200) {
    http::SendError(response, Unavailable("upstream answered " + std::to_string(doc->status) +
                                          " for " + req.url));
    return;
  }
  const std::string_view source = upstream::DocumentSource(*doc, start);
  if (path.checksum) {
    // Computed from the body this agent serves, so the pair always matches even when the
    // upstream's own checksum file is refreshed at another time.
    SendDocument(request, response, ComputeChecksum(*path.checksum, doc->body), kTextPlain, source);
    return;
  }
  SendDocument(request, response, doc->body, ContentTypeFor(path.file_path), source);
}

Result<std::string> MavenFrontend::ReleaseChecksum(const std::string& file_path,
                                                   ChecksumAlgorithm algorithm, bool* cached) {
  const std::string ext(ChecksumExtension(algorithm));
  upstream::Artifact artifact;
  artifact.frontend = "maven";
  artifact.key = options_.key_prefix + "files/" + file_path + ext;
  artifact.url = options_.upstream + file_path + ext;
  artifact.content_type = std::string(kTextPlain);
  artifact.fetch = options_.fetch;
  *cached = store_.Stat(artifact.key).ok();
  BC_ASSIGN_OR_RETURN(store::BlobInfo info, artifacts_.Ensure(artifact));
  Result<std::string> hex =
      InvalidArgument("larger than " + std::to_string(kMaxChecksumFileSize) + " bytes");
  if (info.size <= kMaxChecksumFileSize) {
    BC_ASSIGN_OR_RETURN(auto reader, store_.Open(artifact.key));
    BC_ASSIGN_OR_RETURN(std::string body, store::ReadAll(*reader));
    hex = ParseChecksumFile(body, algorithm);
  }
  if (!hex.ok()) {
    // Not kept: it would be taken for a checksum file on every later request.
    (void)store_.Delete(artifact.key);
    log::Warn("maven checksum file unusable",
              {{"url", artifact.url}, {"error", hex.status().ToString()}});
    return Unavailable("the upstream checksum file " + file_path + ext +
                       " is unusable: " + hex.status().message());
  }
  return hex;
}

void MavenFrontend::ServeReleaseChecksum(http::Request& request, http::Response& response,
                                         const RepositoryPath& path) {
  bool cached = false;
  auto hex = ReleaseChecksum(path.file_path, *path.checksum, &cached);
  if (!hex.ok()) {
    http::SendError(response, hex.status());
    return;
  }
  response.SetStatus(200);
  response.SetHeader("Content-Type", kTextPlain);
  response.SetHeader("Cache-Control", "public, max-age=31536000, immutable");
  response.SetHeader(kSourceHeader, cached ? "local" : "upstream");
  (void)response.Send(*hex);
}

void MavenFrontend::ServeArtifact(http::Request& request, http::Response& response,
                                  const RepositoryPath& path) {
  std::optional<upstream::ExpectedDigest> expected;
  for (ChecksumAlgorithm algorithm : kVerifyWith) {
    bool cached = false;
    auto hex = ReleaseChecksum(path.file_path, algorithm, &cached);
    if (hex.ok()) {
      auto digest = upstream::ParseHexDigest(UpstreamAlgorithm(algorithm), *hex);
      if (!digest.ok()) {
        http::SendError(response, Internal("checksum parsed but rejected: " + *hex));
        return;
      }
      expected = std::move(digest).value();
      break;
    }
    if (hex.status().code() != StatusCode::kNotFound) {
      http::SendError(response, hex.status());
      return;
    }
  }
  if (!expected) {
    http::SendError(response,
                    NotFound("the upstream has no .sha1, .sha256 or .sha512 file for " +
                             path.file_path + " (missing, or not verifiable and so not served)"));
    return;
  }
  upstream::Artifact artifact;
  artifact.frontend = "maven";
  artifact.key = options_.key_prefix + "files/" + path.file_path;
  artifact.url = options_.upstream + path.file_path;
  artifact.expected.push_back(std::move(*expected));
  artifact.content_type = std::string(ContentTypeFor(path.file_path));
  artifact.fetch = options_.fetch;
  artifacts_.Serve(request, response, artifact);
}

}  // namespace buildcache::maven
