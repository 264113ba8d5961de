#include "agent/frontends/pypi/wheel_directories.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "agent/frontends/pypi/testing/test_wheels.h"
#include "agent/store/memory_store.h"

namespace buildcache::pypi {
namespace {

namespace fsys = std::filesystem;

// A wheel long enough to be written in parts.
std::string WheelBytes(const std::string& name, const std::string& version) {
  return testing::WheelBytes(name, version, "py3-none-any", std::string(4096, 'x'));
}

class WheelDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pypi_wheel_dirs_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fsys::create_directories(dir_ / "wheels");
  }
  void TearDown() override { fsys::remove_all(dir_); }

  // A watcher driven by Step, with an interval long enough that "last modified an interval ago"
  // never applies to files written by the test: only stillness between steps counts.
  std::unique_ptr<WheelDirectoryWatcher> Watcher() {
    WheelDirectoryOptions o;
    o.dirs = {dir_ / "wheels", dir_ / "later"};
    o.interval = std::chrono::hours(1);
    o.thread = false;
    auto watcher = std::make_unique<WheelDirectoryWatcher>(house_, o);
    watcher->Step();  // the first scan, of an empty directory
    return watcher;
  }
  void Write(const fsys::path& rel, std::string_view data, bool append = false) {
    fsys::create_directories((dir_ / rel).parent_path());
    std::ofstream(dir_ / rel, std::ios::binary | (append ? std::ios::app : std::ios::trunc))
        << data;
  }
  size_t Listed(std::string_view project) { return house_.Files(project).size(); }

  fsys::path dir_;
  store::MemoryStore store_;
  WheelHouse house_{store_};
};

// A wheel written slowly is not read while it grows; once it held still over a scan it is
// indexed whole.
TEST_F(WheelDirectoryTest, HalfWrittenWheelIsNotReadUntilComplete) {
  auto w = Watcher();
  const std::string wheel = WheelBytes("slow", "1.0");
  const std::string rel = "wheels/ab/cd/slow-1.0-py3-none-any.whl";
  Write(rel, wheel.substr(0, wheel.size() / 2));
  EXPECT_EQ(w->Step().waiting, 1u);
  EXPECT_EQ(Listed("slow"), 0u);
  Write(rel, wheel.substr(wheel.size() / 2, 100), /*append=*/true);
  EXPECT_EQ(w->Step().waiting, 1u);  // it grew: not still
  EXPECT_EQ(Listed("slow"), 0u);
  Write(rel, wheel.substr(wheel.size() / 2 + 100), /*append=*/true);
  EXPECT_EQ(w->Step().waiting, 1u);
  WheelDirectoryScan scan = w->Step();  // still since the last scan: read now
  EXPECT_EQ(scan.added, 1u);
  ASSERT_EQ(Listed("slow"), 1u);
  EXPECT_EQ(house_.Files("slow")[0].sha256, store::Digest::Of(wheel).Hex());
  EXPECT_EQ(w->Step().added, 0u);  // indexed once
}

// A writer that stalls past a scan leaves a truncated zip that looks still: it is refused as a
// broken wheel (nothing stored), and indexed once the rest arrives.
TEST_F(WheelDirectoryTest, StalledWriterLeavesNothingListedUntilTheFileIsSound) {
  auto w = Watcher();
  const std::string wheel = WheelBytes("stall", "1.0");
  const std::string rel = "wheels/stall-1.0-py3-none-any.whl";
  Write(rel, wheel.substr(0, wheel.size() - 30));
  w->Step();
  EXPECT_EQ(w->Step().failed, 1u);
  EXPECT_EQ(Listed("stall"), 0u);
  EXPECT_EQ(store_.Stats().keys, 0u);
  EXPECT_EQ(w->Step().failed, 0u);  // not tried again while unchanged
  Write(rel, wheel.substr(wheel.size() - 30), /*append=*/true);
  w->Step();
  EXPECT_EQ(w->Step().added, 1u);
  EXPECT_EQ(Listed("stall"), 1u);
}

TEST_F(WheelDirectoryTest, RemovedWheelIsUnlistedAndANewDirectoryIsPickedUp) {
  auto w = Watcher();
  Write("wheels/a/gone-1.0-py3-none-any.whl", WheelBytes("gone", "1.0"));
  Write("wheels/b/kept-1.0-py3-none-any.whl", WheelBytes("kept", "1.0"));
  w->Step();
  EXPECT_EQ(w->Step().added, 2u);
  ASSERT_EQ(Listed("gone"), 1u);
  fsys::remove(dir_ / "wheels/a/gone-1.0-py3-none-any.whl");
  EXPECT_EQ(w->Step().removed, 1u);
  EXPECT_EQ(Listed("gone"), 0u);
  EXPECT_EQ(Listed("kept"), 1u);
  // A directory that did not exist at first is watched once it does.
  Write("later/new-2.0-py3-none-any.whl", WheelBytes("new", "2.0"));
  w->Step();
  w->Step();
  EXPECT_EQ(Listed("new"), 1u);
}

TEST_F(WheelDirectoryTest, BadFilesAndLinksAreSkippedAndNothingBehindThemIsStored) {
  auto w = Watcher();
  Write("wheels/notazip-1.0-py3-none-any.whl", "hello");
  // The name says one project, the metadata another.
  Write("wheels/liar-1.0-py3-none-any.whl", WheelBytes("victim", "1.0"));
  Write("outside/linked-1.0-py3-none-any.whl", WheelBytes("linked", "1.0"));
  fsys::create_symlink(dir_ / "outside/linked-1.0-py3-none-any.whl",
                       dir_ / "wheels/linked-1.0-py3-none-any.whl");
  WheelDirectoryScan first = w->Step();
  EXPECT_EQ(first.failed, 1u);  // the link, at once
  WheelDirectoryScan second = w->Step();
  EXPECT_EQ(second.failed, 2u);
  EXPECT_EQ(second.added, 0u);
  EXPECT_EQ(Listed("notazip"), 0u);
  EXPECT_EQ(Listed("liar"), 0u);
  EXPECT_EQ(Listed("linked"), 0u);
  EXPECT_EQ(store_.Stats().keys, 0u);
}

// What a directory holds when the agent starts is indexed by the first scan, links skipped.
TEST_F(WheelDirectoryTest, WheelsPresentAtStartAreIndexedByTheFirstScan) {
  Write("wheels/ab/start-1.0-py3-none-any.whl", WheelBytes("start", "1.0"));
  fsys::create_directory_symlink(dir_ / "wheels/ab", dir_ / "wheels/linked-dir");
  WheelDirectoryOptions o;
  o.dirs = {dir_ / "wheels"};
  o.interval = std::chrono::hours(1);
  o.thread = false;
  WheelDirectoryWatcher w(house_, o);
  WheelDirectoryScan scan = w.Step();
  EXPECT_EQ(scan.added, 1u);
  EXPECT_EQ(scan.failed, 1u);  // the directory link
  EXPECT_EQ(Listed("start"), 1u);
}

}  // namespace
}  // namespace buildcache::pypi
