#include "agent/dircache/beneath.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace buildcache::dircache {
namespace {

namespace fs = std::filesystem;

// Both resolvers: openat2 where the kernel has it, and the component walk used elsewhere.
class BeneathTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    UseOpenat2ForTesting(GetParam());
    char tmpl[] = "/tmp/beneath-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    fs::create_directories(base_ / "root/a/b");
    fs::create_directories(base_ / "outside/b");
    std::ofstream(base_ / "root/a/b/f") << "inside";
    std::ofstream(base_ / "outside/b/f") << "outside";
    fs::create_directory_symlink(base_ / "outside", base_ / "root/link");
    fs::create_symlink(base_ / "outside/b/f", base_ / "root/a/b/filelink");
    root_ = ::open((base_ / "root").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(root_, 0);
  }
  void TearDown() override {
    ::close(root_);
    fs::remove_all(base_);
    UseOpenat2ForTesting(true);
  }
  fs::path base_;
  int root_ = -1;
};

TEST_P(BeneathTest, OpensPathsBelowTheRoot) {
  int fd = OpenBeneath(root_, "a/b/f", O_RDONLY);
  ASSERT_GE(fd, 0) << std::strerror(-fd);
  char buf[16] = {};
  EXPECT_EQ(::read(fd, buf, sizeof(buf)), 6);
  EXPECT_EQ(std::string(buf), "inside");
  ::close(fd);
  struct stat st;
  EXPECT_EQ(StatBeneath(root_, "a/b", &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(StatBeneath(root_, "a/b/missing", &st), ENOENT);
}

TEST_P(BeneathTest, NeverFollowsALinkInAnyComponent) {
  // A directory link in the middle, a file link at the end: both refused, never the outside file.
  int fd = OpenBeneath(root_, "link/b/f", O_RDONLY);
  EXPECT_LT(fd, 0);
  EXPECT_TRUE(fd == -ELOOP || fd == -ENOTDIR) << std::strerror(-fd);
  fd = OpenBeneath(root_, "a/b/filelink", O_RDONLY);
  EXPECT_EQ(fd, -ELOOP);
  struct stat st;
  EXPECT_NE(StatBeneath(root_, "link/b/f", &st), 0);
  // The link itself is seen as a link (never as what it points to).
  ASSERT_EQ(StatBeneath(root_, "a/b/filelink", &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  // Creating through a link writes nothing outside.
  fd = OpenBeneath(root_, "link/b/new", O_WRONLY | O_CREAT | O_EXCL, 0644);
  EXPECT_LT(fd, 0);
  EXPECT_FALSE(fs::exists(base_ / "outside/b/new"));
  EXPECT_LT(OpenBeneath(root_, "../outside/b/f", O_RDONLY), 0);
}

TEST_P(BeneathTest, ParentsAreMadeByDescriptorAndLinksOnTheWayRefused) {
  std::string leaf;
  auto dir = OpenParentBeneath(root_, "x/y/z/file", /*create=*/true, 0777, &leaf);
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  EXPECT_EQ(leaf, "file");
  EXPECT_TRUE(fs::is_directory(base_ / "root/x/y/z"));
  EXPECT_EQ(fs::status(base_ / "root/x/y").permissions() & fs::perms::mask, fs::perms(0777));
  auto through = OpenParentBeneath(root_, "link/b/file", /*create=*/true, 0777, &leaf);
  EXPECT_EQ(through.status().code(), StatusCode::kFailedPrecondition);
  auto existing = OpenParentBeneath(root_, "link/b/f", /*create=*/false, 0, &leaf);
  EXPECT_FALSE(existing.ok());
}

INSTANTIATE_TEST_SUITE_P(Resolvers, BeneathTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Openat2" : "Walk"; });

}  // namespace
}  // namespace buildcache::dircache
