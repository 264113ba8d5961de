#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "common/fs/atomic_file.h"
#include "common/fs/dir_reader.h"
#include "common/fs/file.h"
#include "gtest/gtest.h"

namespace buildcache::fs {
namespace {

namespace stdfs = std::filesystem;

std::string Slurp(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::set<std::string> Names(const stdfs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : stdfs::directory_iterator(dir)) {
    out.insert(e.path().filename().string());
  }
  return out;
}

class FsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fs-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (mounted_) {
      ::umount2(dir_.c_str(), MNT_DETACH);
    }
    stdfs::remove_all(dir_);
  }
  stdfs::path dir_;
  bool mounted_ = false;
};

TEST_F(FsTest, UniqueFdClosesOnDestructionResetAndMove) {
  int raw = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(raw, 0);
  {
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), raw);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);  // closed by b
  UniqueFd c(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY));
  int first = c.get();
  c.reset(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY));
  EXPECT_NE(::fcntl(c.get(), F_GETFD), -1);
  if (first != c.get()) {
    EXPECT_EQ(::fcntl(first, F_GETFD), -1);
  }
  int kept = c.release();
  EXPECT_FALSE(c.valid());
  EXPECT_EQ(::close(kept), 0);
}

TEST_F(FsTest, WriteAllWritesEverythingAndReportsAFullDevice) {
  UniqueFd f(::open((dir_ / "f").c_str(), O_WRONLY | O_CREAT, 0644));
  ASSERT_TRUE(f.valid());
  std::string data(3 << 20, 'w');
  ASSERT_TRUE(WriteAll(f.get(), data).ok());
  EXPECT_EQ(Slurp(dir_ / "f"), data);

  UniqueFd full(::open("/dev/full", O_WRONLY));
  ASSERT_TRUE(full.valid());
  Status s = WriteAll(full.get(), "x", "write /dev/full");
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.ToString().find("/dev/full"), std::string::npos) << s.ToString();
}

TEST_F(FsTest, MakeDirsMakesMissingParentsAndRefusesAFileInTheWay) {
  ASSERT_TRUE(MakeDirs((dir_ / "a/b/c").string(), 0750).ok());
  EXPECT_TRUE(stdfs::is_directory(dir_ / "a/b/c"));
  EXPECT_TRUE(MakeDirs((dir_ / "a/b").string()).ok());  // existing: fine
  std::ofstream(dir_ / "file") << "x";
  EXPECT_FALSE(MakeDirs((dir_ / "file").string()).ok());
  EXPECT_FALSE(MakeDirs((dir_ / "file/sub").string()).ok());
}

TEST_F(FsTest, DirReaderListsEntriesAndNeverCallsALinkADirectory) {
  stdfs::create_directory(dir_ / "sub");
  std::ofstream(dir_ / "file") << "x";
  stdfs::create_directory_symlink(dir_ / "sub", dir_ / "link");
  auto reader = DirReader::Open(dir_.string());
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::set<std::string> names, dirs;
  DirEntry e;
  while (reader->Next(&e)) {
    names.insert(std::string(e.name));
    if (reader->IsDir(e)) {
      dirs.insert(std::string(e.name));
    }
    // File systems that leave d_type unknown: resolved with a no-follow stat.
    DirEntry unknown{e.name, DT_UNKNOWN};
    EXPECT_EQ(reader->IsDir(unknown), e.name == "sub") << e.name;
  }
  EXPECT_EQ(reader->error(), 0);
  EXPECT_EQ(names, (std::set<std::string>{"sub", "file", "link"}));
  EXPECT_EQ(dirs, std::set<std::string>{"sub"});
  EXPECT_EQ(DirReader::Open((dir_ / "missing").string()).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(DirReader::Open((dir_ / "file").string()).ok());
}

TEST_F(FsTest, FileStampChangesWithASymlinkSwapAndAnInPlaceWrite) {
  const stdfs::path a = dir_ / "a", b = dir_ / "b", link = dir_ / "token";
  std::ofstream(a) << "first";
  std::ofstream(b) << "other";  // same size as a, another inode
  stdfs::create_symlink(a, link);
  Result<FileStamp> first = StampOf(link.string());
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(*StampOf(link.string()), *first);  // nothing changed: equal

  // A Secret volume's update: the link now names another file of the same size.
  stdfs::remove(link);
  stdfs::create_symlink(b, link);
  Result<FileStamp> swapped = StampOf(link.string());
  ASSERT_TRUE(swapped.ok());
  EXPECT_NE(*swapped, *first);
  EXPECT_EQ(swapped->size, 5);

  // Written in place, same inode: the size (and mtime/ctime) tell.
  std::ofstream(b, std::ios::app) << "!";
  Result<FileStamp> written = StampOf(link.string());
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(written->ino, swapped->ino);
  EXPECT_NE(*written, *swapped);

  Result<FileStamp> missing = StampOf((dir_ / "missing").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
}

TEST_F(FsTest, AtomicWriteFileReplacesTheWholeFileAndLeavesNoTemporary) {
  std::string path = (dir_ / "config").string();
  ASSERT_TRUE(AtomicWriteFile(path, "first", 0640).ok());
  EXPECT_EQ(Slurp(path), "first");
  EXPECT_EQ(stdfs::status(path).permissions() & stdfs::perms::mask, stdfs::perms(0640));
  ASSERT_TRUE(AtomicWriteFile(path, "second, longer").ok());
  EXPECT_EQ(Slurp(path), "second, longer");
  EXPECT_EQ(Names(dir_), std::set<std::string>{"config"});
  EXPECT_FALSE(AtomicWriteFile((dir_ / "no/such/dir/f").string(), "x").ok());
}

TEST_F(FsTest, AtomicFileWithoutReplaceKeepsTheExistingFile) {
  std::ofstream(dir_ / "taken") << "theirs";
  UniqueFd d(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY));
  {
    auto f = AtomicFile::Create(d.get(), "taken");
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE(f->Write("mine").ok());
    Status s = f->Commit(AtomicFile::Replace::kNo);
    EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
    EXPECT_FALSE(f->committed());
  }  // destroyed uncommitted: the temporary file goes
  EXPECT_EQ(Slurp(dir_ / "taken"), "theirs");
  EXPECT_EQ(Names(dir_), std::set<std::string>{"taken"});

  auto g = AtomicFile::Create(d.get(), "free", ".tmp.custom-");
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->temp_name().starts_with(".tmp.custom-"));
  ASSERT_TRUE(g->Write("new").ok());
  EXPECT_EQ(Slurp(dir_ / "free"), "");  // nothing at the destination before Commit
  ASSERT_TRUE(g->Commit(AtomicFile::Replace::kNo).ok());
  EXPECT_TRUE(g->committed());
  EXPECT_EQ(Slurp(dir_ / "free"), "new");
  EXPECT_EQ(Names(dir_), (std::set<std::string>{"taken", "free"}));
  EXPECT_FALSE(AtomicFile::Create(d.get(), "a/b").ok());
  EXPECT_FALSE(AtomicFile::Create(d.get(), "..").ok());
}

TEST_F(FsTest, AtomicFileCanKeepItsTemporaryInAnotherDirectory) {
  stdfs::create_directory(dir_ / "tmp");
  stdfs::create_directory(dir_ / "blobs");
  UniqueFd tmp(::open((dir_ / "tmp").c_str(), O_RDONLY | O_DIRECTORY));
  UniqueFd blobs(::open((dir_ / "blobs").c_str(), O_RDONLY | O_DIRECTORY));
  {
    auto f = AtomicFile::CreateIn(tmp.get(), blobs.get(), "abc");
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE(f->Write("content").ok());
    EXPECT_EQ(Names(dir_ / "tmp").size(), 1u);
    EXPECT_TRUE(Names(dir_ / "blobs").empty());  // readers of blobs/ see nothing unfinished
    // The caller syncs the directory itself (once for a batch).
    ASSERT_TRUE(f->Commit(AtomicFile::Replace::kYes, AtomicFile::SyncDir::kNo).ok());
  }
  EXPECT_TRUE(Names(dir_ / "tmp").empty());
  EXPECT_EQ(Slurp(dir_ / "blobs/abc"), "content");
  {
    auto g = AtomicFile::CreateIn(tmp.get(), blobs.get(), "never");
    ASSERT_TRUE(g.ok());
    ASSERT_TRUE(g->Write("abandoned").ok());
  }  // not committed: removed from tmp/
  EXPECT_TRUE(Names(dir_ / "tmp").empty());
  EXPECT_EQ(Names(dir_ / "blobs"), std::set<std::string>{"abc"});
}

// A write that runs out of room fails with the file system's error and leaves the destination as
// it was, with no temporary file. On a tiny tmpfs where the test may mount one (root); otherwise
// the file-size limit makes the kernel refuse the write (EFBIG) the same way.
TEST_F(FsTest, FullDiskLeavesTheDestinationIntact) {
  stdfs::path target = dir_ / "data";
  bool tmpfs = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=64k") == 0;
  mounted_ = tmpfs;
  ASSERT_TRUE(AtomicWriteFile(target.string(), "old content").ok());
  std::string big(1 << 20, 'b');
  Status s;
  if (tmpfs) {
    s = AtomicWriteFile(target.string(), big);
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  } else {
    struct rlimit old_limit;
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
    struct rlimit small = old_limit;
    small.rlim_cur = 64 << 10;
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    s = AtomicWriteFile(target.string(), big);
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    ::signal(SIGXFSZ, old_handler);
  }
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(Slurp(target), "old content");
  EXPECT_EQ(Names(dir_), std::set<std::string>{"data"});
}

}  // namespace
}  // namespace buildcache::fs
