#pragma once

// Paths of a Maven repository (the "default" layout):
//   <group as directories>/<artifactId>/<version>/<artifactId>-<version>[-<classifier>].<ext>
//   <group>/<artifactId>/maven-metadata.xml, <group>/maven-metadata.xml (plugin prefixes),
//   <group>/<artifactId>/<version>-SNAPSHOT/maven-metadata.xml,
// and a checksum file beside any of them (".md5", ".sha1", ".sha256", ".sha512").

#include <optional>
#include <string>
#include <string_view>

#include "common/status/status.h"

namespace buildcache::maven {

enum class ChecksumAlgorithm { kMd5, kSha1, kSha256, kSha512 };

// ".md5", ".sha1", ".sha256", ".sha512".
std::string_view ChecksumExtension(ChecksumAlgorithm algorithm);
// Hex digits of a digest: 32, 40, 64, 128.
size_t ChecksumHexLength(ChecksumAlgorithm algorithm);

struct RepositoryPath {
  enum class Kind {
    kArtifact,  // a release file: immutable
    kMetadata,  // maven-metadata.xml: mutable
    kSnapshot,  // a file of a -SNAPSHOT version: mutable
  };
  Kind kind = Kind::kArtifact;
  std::string path;       // the whole path, relative to the repository root
  std::string file_path;  // path without the checksum extension (== path for other files)
  std::optional<ChecksumAlgorithm> checksum;  // set for a checksum file
};

// Longest path accepted.
inline constexpr size_t kMaxPathLength = 1024;

// Parses a path relative to the repository root (no leading '/', not percent-decoded: repository
// paths need no escapes). Every segment is 1..255 characters of [A-Za-z0-9._~+-] and does not
// start with '.'; a file of a version directory is named <artifactId>-<version>... (for a
// -SNAPSHOT version, <artifactId>-<base version>-...). kNotFound for a directory (a trailing
// '/'), kInvalidArgument for anything else that is not such a path.
Result<RepositoryPath> ParseRepositoryPath(std::string_view path);

// The digest in a checksum file, as lower-case hex: the first whitespace-separated token that is
// hex of the algorithm's length (covers "<hex>", "<hex>  <file>" and "SHA1(<file>)= <hex>").
// kInvalidArgument when there is none.
Result<std::string> ParseChecksumFile(std::string_view body, ChecksumAlgorithm algorithm);

// The lower-case hex digest of data.
std::string ComputeChecksum(ChecksumAlgorithm algorithm, std::string_view data);

}  // namespace buildcache::maven
