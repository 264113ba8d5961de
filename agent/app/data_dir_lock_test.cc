#include "agent/app/data_dir_lock.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

namespace buildcache::agent {
namespace {

class DataDirLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/data_dir_lock_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

// flock locks belong to open file descriptions, so a second Acquire in this process contends
// like a second agent would; the child process makes the holder another pid, as in production.
TEST_F(DataDirLockTest, SecondHolderIsRefusedWithTheFirstOnesPid) {
  int ready[2], done[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = DataDirLock::Acquire(dir_ + "/store");
    char c = lock.ok() ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    (void)!read(done[0], &c, 1);
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto second = DataDirLock::Acquire(dir_ + "/store");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use by another agent"), std::string::npos);
  EXPECT_NE(second.status().message().find("pid " + std::to_string(child)), std::string::npos)
      << second.status().message();

  // The holder exits (however it exits): the directory can be locked again.
  (void)!write(done[1], "x", 1);
  int status = 0;
  waitpid(child, &status, 0);
  auto again = DataDirLock::Acquire(dir_ + "/store");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/store/agent.lock"));
}

TEST_F(DataDirLockTest, ReleasedWhenDestroyed) {
  {
    auto first = DataDirLock::Acquire(dir_);
    ASSERT_TRUE(first.ok());
    EXPECT_FALSE(DataDirLock::Acquire(dir_).ok());
  }
  EXPECT_TRUE(DataDirLock::Acquire(dir_).ok());
}

}  // namespace
}  // namespace buildcache::agent
