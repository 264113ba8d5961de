#include "agent/dircache/inotify_watcher.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace buildcache::dircache {
namespace {

namespace stdfs = std::filesystem;
using Kind = TreeEvent::Kind;

class InotifyTreeWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/inotify-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    auto w = InotifyTreeWatcher::Create("test", root_.string());
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    watcher_ = std::move(w).value();
  }
  void TearDown() override { stdfs::remove_all(root_); }

  bool Watch(const std::string& rel) {
    fs::UniqueFd fd(::open((root_ / rel).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    return fd.valid() && watcher_->Watch(rel, fd.get());
  }
  // Events until `last` has been reported (bounded: 10 s of waiting on the inotify descriptor).
  std::vector<TreeEvent> CollectThrough(const TreeEvent& last) {
    std::vector<TreeEvent> events;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::find(events.begin(), events.end(), last) == events.end() &&
           std::chrono::steady_clock::now() < deadline) {
      watcher_->Wait(std::chrono::milliseconds(200), &events);
    }
    return events;
  }
  bool Has(const std::vector<TreeEvent>& events, Kind kind, const std::string& rel) {
    return std::find(events.begin(), events.end(), TreeEvent{kind, rel}) != events.end();
  }

  stdfs::path root_;
  std::unique_ptr<InotifyTreeWatcher> watcher_;
};

TEST_F(InotifyTreeWatcherTest, ReportsChangesUnderTheirRelativePaths) {
  stdfs::create_directory(root_ / "d");
  ASSERT_TRUE(Watch(""));
  ASSERT_TRUE(Watch("d"));
  std::ofstream(root_ / "d/f") << "bytes";
  stdfs::create_directory(root_ / "e");
  stdfs::remove(root_ / "d/f");
  std::ofstream(root_ / "marker") << "m";
  std::vector<TreeEvent> events = CollectThrough({Kind::kFileWritten, "marker"});
  EXPECT_TRUE(Has(events, Kind::kFileModified, "d/f"));
  EXPECT_TRUE(Has(events, Kind::kFileWritten, "d/f"));
  EXPECT_TRUE(Has(events, Kind::kDirAdded, "e"));
  EXPECT_TRUE(Has(events, Kind::kFileGone, "d/f"));
  EXPECT_TRUE(Has(events, Kind::kFileWritten, "marker"));
  EXPECT_FALSE(Watch("missing"));
}

// The attack this guards against: a pod renames a watched directory (to an ignored name, or out
// of the tree) and puts a link to elsewhere under the old name. The moved directory's watch must
// not keep reporting its files under the old name, which now leads through the link.
TEST_F(InotifyTreeWatcherTest, DirectoryMovedAwayReportsNothingUnderItsOldName) {
  stdfs::create_directory(root_ / "sub");
  ASSERT_TRUE(Watch(""));
  ASSERT_TRUE(Watch("sub"));
  stdfs::rename(root_ / "sub", root_ / "sub.tmp");
  std::ofstream(root_ / "sub.tmp/secret.txt") << "decoy";
  std::ofstream(root_ / "marker") << "m";
  std::vector<TreeEvent> events = CollectThrough({Kind::kFileWritten, "marker"});
  EXPECT_TRUE(Has(events, Kind::kDirGone, "sub"));
  EXPECT_TRUE(Has(events, Kind::kDirAdded, "sub.tmp"));
  for (const TreeEvent& e : events) {
    EXPECT_FALSE(e.rel.starts_with("sub/")) << e.rel;
  }
}

}  // namespace
}  // namespace buildcache::dircache
