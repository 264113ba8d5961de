#include "agent/frontends/maven/repository_path.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <vector>

namespace buildcache::maven {
namespace {

constexpr std::string_view kMetadataFile = "maven-metadata.xml";
constexpr std::string_view kSnapshotSuffix = "-SNAPSHOT";
constexpr size_t kMaxSegmentLength = 255;

constexpr std::array<ChecksumAlgorithm, 4> kAlgorithms = {
    ChecksumAlgorithm::kMd5, ChecksumAlgorithm::kSha1, ChecksumAlgorithm::kSha256,
    ChecksumAlgorithm::kSha512};

bool IsSegmentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '~' || c == '+';
}

bool IsValidSegment(std::string_view s) {
  return !s.empty() && s.size() <= kMaxSegmentLength && s.front() != '.' &&
         std::all_of(s.begin(), s.end(), IsSegmentChar);
}

bool IsHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

std::optional<ChecksumAlgorithm> ChecksumOf(std::string_view file) {
  for (ChecksumAlgorithm a : kAlgorithms) {
    std::string_view ext = ChecksumExtension(a);
    if (file.size() > ext.size() && file.ends_with(ext)) return a;
  }
  return std::nullopt;
}

const EVP_MD* Md(ChecksumAlgorithm algorithm) {
  switch (algorithm) {
    case ChecksumAlgorithm::kMd5:
      return EVP_md5();
    case ChecksumAlgorithm::kSha1:
      return EVP_sha1();
    case ChecksumAlgorithm::kSha256:
      return EVP_sha256();
    case ChecksumAlgorithm::kSha512:
      return EVP_sha512();
  }
  return EVP_sha256();
}

}  // namespace

std::string_view ChecksumExtension(ChecksumAlgorithm algorithm) {
  switch (algorithm) {
    case ChecksumAlgorithm::kMd5:
      return ".md5";
    case ChecksumAlgorithm::kSha1:
      return ".sha1";
    case ChecksumAlgorithm::kSha256:
      return ".sha256";
    case ChecksumAlgorithm::kSha512:
      return ".sha512";
  }
  return "";
}

size_t ChecksumHexLength(ChecksumAlgorithm algorithm) {
  switch (algorithm) {
    case ChecksumAlgorithm::kMd5:
      return 32;
    case ChecksumAlgorithm::kSha1:
      return 40;
    case ChecksumAlgorithm::kSha256:
      return 64;
    case ChecksumAlgorithm::kSha512:
      return 128;
  }
  return 0;
}

Result<RepositoryPath> ParseRepositoryPath(std::string_view path) {
  if (path.empty()) return NotFound("the repository root is not served");
  if (path.size() > kMaxPathLength) return InvalidArgument("repository path too long");
  if (path.ends_with('/')) return NotFound("directory listings are not served");
  std::vector<std::string_view> segments;
  for (size_t start = 0; start <= path.size();) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view segment = path.substr(start, slash - start);
    if (!IsValidSegment(segment)) {
      return InvalidArgument("invalid repository path segment \"" +
                             std::string(segment.substr(0, 64)) + "\"");
    }
    segments.push_back(segment);
    start = slash + 1;
  }
  if (segments.size() < 2) return InvalidArgument("not a repository file path");

  RepositoryPath out;
  out.path = std::string(path);
  std::string_view file = segments.back();
  out.checksum = ChecksumOf(file);
  if (out.checksum) {
    file.remove_suffix(ChecksumExtension(*out.checksum).size());
    if (ChecksumOf(file)) return InvalidArgument("a checksum of a checksum file");
  }
  out.file_path = std::string(path.substr(0, path.size() - (segments.back().size() - file.size())));

  if (file == kMetadataFile) {
    out.kind = RepositoryPath::Kind::kMetadata;
    return out;
  }
  if (segments.size() < 4) {
    return InvalidArgument("not <group>/<artifactId>/<version>/<file>");
  }
  std::string_view artifact_id = segments[segments.size() - 3];
  std::string_view version = segments[segments.size() - 2];
  std::string stem = std::string(artifact_id) + "-";
  if (version.size() > kSnapshotSuffix.size() && version.ends_with(kSnapshotSuffix)) {
    // "<artifactId>-1.0-SNAPSHOT.jar" or timestamped "<artifactId>-1.0-20240101.120000-1.jar".
    stem += std::string(version.substr(0, version.size() - kSnapshotSuffix.size() + 1));
    out.kind = RepositoryPath::Kind::kSnapshot;
    if (file.size() > stem.size() && file.starts_with(stem)) return out;
  } else {
    stem += std::string(version);
    out.kind = RepositoryPath::Kind::kArtifact;
    if (file.size() > stem.size() && file.starts_with(stem) &&
        (file[stem.size()] == '.' || file[stem.size()] == '-')) {
      return out;
    }
  }
  return InvalidArgument("file name \"" + std::string(file.substr(0, 64)) +
                         "\" does not start with \"" + stem + "\"");
}

Result<std::string> ParseChecksumFile(std::string_view body, ChecksumAlgorithm algorithm) {
  const size_t want = ChecksumHexLength(algorithm);
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  size_t i = 0;
  while (i < body.size()) {
    while (i < body.size() && is_space(body[i])) ++i;
    size_t start = i;
    while (i < body.size() && !is_space(body[i])) ++i;
    std::string_view token = body.substr(start, i - start);
    if (token.size() == want && IsHex(token)) {
      std::string hex(token);
      std::transform(hex.begin(), hex.end(), hex.begin(),
                     [](char c) { return (c >= 'A' && c <= 'F') ? char(c - 'A' + 'a') : c; });
      return hex;
    }
  }
  return InvalidArgument("no " + std::string(ChecksumExtension(algorithm).substr(1)) +
                         " digest in the checksum file");
}

std::string ComputeChecksum(ChecksumAlgorithm algorithm, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, Md(algorithm), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

}  // namespace buildcache::maven
