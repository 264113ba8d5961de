#include "agent/frontends/maven/repository_path.h"

#include <gtest/gtest.h>

namespace buildcache::maven {
namespace {

using Kind = RepositoryPath::Kind;

TEST(RepositoryPathTest, ReleaseFiles) {
  for (const char* p : {"com/example/demo/1.0/demo-1.0.jar", "com/example/demo/1.0/demo-1.0.pom",
                        "org/demo/1.0/demo-1.0-sources.jar", "a/b/c/d/e/lib/2.1.3/lib-2.1.3.tar.gz",
                        "org/x/my_lib/1.0.0-beta+1/my_lib-1.0.0-beta+1-linux-x86_64.exe",
                        "org/demo/1.0/demo-1.0.jar.asc", "org/demo/1.0/demo-1.0.module"}) {
    auto r = ParseRepositoryPath(p);
    ASSERT_TRUE(r.ok()) << p << ": " << r.status().ToString();
    EXPECT_EQ(r->kind, Kind::kArtifact) << p;
    EXPECT_EQ(r->path, p);
    EXPECT_EQ(r->file_path, p);
    EXPECT_FALSE(r->checksum.has_value());
  }
}

TEST(RepositoryPathTest, ChecksumFiles) {
  auto r = ParseRepositoryPath("com/example/demo/1.0/demo-1.0.jar.sha1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, Kind::kArtifact);
  EXPECT_EQ(r->file_path, "com/example/demo/1.0/demo-1.0.jar");
  EXPECT_EQ(r->checksum, ChecksumAlgorithm::kSha1);
  for (auto [ext, algorithm] : {std::pair{".md5", ChecksumAlgorithm::kMd5},
                                std::pair{".sha256", ChecksumAlgorithm::kSha256},
                                std::pair{".sha512", ChecksumAlgorithm::kSha512}}) {
    auto c = ParseRepositoryPath(std::string("org/demo/maven-metadata.xml") + ext);
    ASSERT_TRUE(c.ok()) << ext;
    EXPECT_EQ(c->kind, Kind::kMetadata);
    EXPECT_EQ(c->checksum, algorithm);
    EXPECT_EQ(c->file_path, "org/demo/maven-metadata.xml");
  }
  EXPECT_FALSE(ParseRepositoryPath("org/demo/1.0/demo-1.0.jar.sha1.md5").ok());
}

TEST(RepositoryPathTest, MetadataAndSnapshots) {
  for (const char* p :
       {"org/apache/maven/plugins/maven-metadata.xml", "com/example/demo/maven-metadata.xml",
        "com/example/demo/2.0-SNAPSHOT/maven-metadata.xml"}) {
    auto r = ParseRepositoryPath(p);
    ASSERT_TRUE(r.ok()) << p;
    EXPECT_EQ(r->kind, Kind::kMetadata) << p;
  }
  for (const char* p : {"com/example/demo/2.0-SNAPSHOT/demo-2.0-SNAPSHOT.jar",
                        "com/example/demo/2.0-SNAPSHOT/demo-2.0-20240101.120000-3.jar",
                        "com/example/demo/2.0-SNAPSHOT/demo-2.0-20240101.120000-3.pom.sha1"}) {
    auto r = ParseRepositoryPath(p);
    ASSERT_TRUE(r.ok()) << p;
    EXPECT_EQ(r->kind, Kind::kSnapshot) << p;
  }
}

TEST(RepositoryPathTest, InvalidPaths) {
  for (const char* p :
       {"com/example/demo/1.0/../../../etc/passwd", "com/./demo/1.0/demo-1.0.jar",
        "com//demo/1.0/demo-1.0.jar", "/com/demo/1.0/demo-1.0.jar", "com/demo/1.0/.demo-1.0.jar",
        "com/demo/1.0/demo-1.0.jar%00", "com/demo/1.0/demo%2f1.0.jar", "com/demo/1.0/demo 1.0.jar",
        "com/demo/1.0/other-1.0.jar", "com/demo/1.0/demo-1.1.jar", "com/demo/1.0/demo-1.0",
        "com/demo/1.0/demo-1.00.jar", "demo/1.0/demo-1.0.jar", "maven-metadata.xml",
        "com/demo/2.0-SNAPSHOT/demo-2.1-SNAPSHOT.jar", "com/demo/1.0/demo-1.0.jar?x",
        "com/demo/1.0/caf\xc3\xa9-1.0.jar", "com/demo/1.0/demo-1.0.jar\\x"}) {
    auto r = ParseRepositoryPath(p);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << p;
  }
  EXPECT_FALSE(ParseRepositoryPath(std::string(2000, 'a')).ok());
  EXPECT_EQ(ParseRepositoryPath("").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ParseRepositoryPath("com/demo/").status().code(), StatusCode::kNotFound);
}

TEST(RepositoryPathTest, ChecksumFileContents) {
  const std::string sha1 = "A9993E364706816ABA3E25717850C26C9CD0D89D";
  EXPECT_EQ(*ParseChecksumFile(sha1, ChecksumAlgorithm::kSha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(*ParseChecksumFile(sha1 + "  demo-1.0.jar\n", ChecksumAlgorithm::kSha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(*ParseChecksumFile("SHA1(demo-1.0.jar)= " + sha1 + "\n", ChecksumAlgorithm::kSha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_FALSE(ParseChecksumFile(sha1, ChecksumAlgorithm::kSha256).ok());
  EXPECT_FALSE(ParseChecksumFile("<html>not found</html>", ChecksumAlgorithm::kSha1).ok());
  EXPECT_FALSE(ParseChecksumFile("", ChecksumAlgorithm::kSha1).ok());
}

TEST(RepositoryPathTest, ComputeChecksum) {
  EXPECT_EQ(ComputeChecksum(ChecksumAlgorithm::kMd5, "abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(ComputeChecksum(ChecksumAlgorithm::kSha1, "abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(ComputeChecksum(ChecksumAlgorithm::kSha256, "abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ComputeChecksum(ChecksumAlgorithm::kSha512, "abc").size(), 128u);
}

}  // namespace
}  // namespace buildcache::maven
