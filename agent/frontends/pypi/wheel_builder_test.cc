#include "agent/frontends/pypi/wheel_builder.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "agent/frontends/goproxy/testing/test_zip.h"
#include "agent/frontends/pypi/testing/test_wheels.h"
#include "agent/frontends/pypi/wheel_check.h"
#include "agent/store/memory_store.h"

namespace buildcache::pypi {
namespace {

namespace fsys = std::filesystem;
using goproxy::testing::BuildZip;

using testing::Cp311Glibc236;
using testing::kWait;
using testing::WheelBytes;

class WheelBuilderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/wheel_builder_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    Result<SdistRef> sdist = testing::PutDemoSdist(store_);
    ASSERT_TRUE(sdist.ok()) << sdist.status().ToString();
    sdist_ = *sdist;
  }
  void TearDown() override { fsys::remove_all(dir_); }

  // A fake interpreter: a shell script run as "python -m pip wheel ... -w OUT SDIST". It appends
  // a line to runs.txt each time, then runs `body` with $OUT set.
  std::unique_ptr<WheelBuilder> Builder(const std::string& body,
                                        std::chrono::milliseconds deadline = kWait) {
    fsys::path script = dir_ / "python";
    std::ofstream(script) << "#!/bin/sh\necho run >> " << (dir_ / "runs.txt").string()
                          << "\nwhile [ $# -gt 2 ]; do shift; done\nOUT=$1\n"
                          << body << "\n";
    fsys::permissions(script, fsys::perms::owner_all);
    BuilderSpec spec{.name = "fake",
                     .python = script.string(),
                     .image = "",
                     .platform = Cp311Glibc236(),
                     .tools = "fake 1",
                     .read_only_paths = {}};
    WheelBuildOptions o;
    o.builders = {spec};
    o.work_dir = dir_ / "work";
    o.sandbox = Sandbox::kNone;
    o.deadline = deadline;
    o.failure_ttl = std::chrono::minutes(5);
    o.now = [this] { return now_; };
    o.metrics = {&started_, &succeeded_, &failed_, &deduplicated_, nullptr};
    o.records_store = records_;
    return std::make_unique<WheelBuilder>(store_, house_, o);
  }

  int Runs() {
    std::ifstream in(dir_ / "runs.txt");
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  }
  std::string Prepared(const std::string& name, const std::string& bytes) {
    fsys::create_directories(dir_ / "prepared");
    std::ofstream(dir_ / "prepared" / name, std::ios::binary) << bytes;
    return "cp " + (dir_ / "prepared" / name).string() + " \"$OUT/\"";
  }
  BuildRecord OnlyRecord(WheelBuilder& b) {
    auto records = b.Builds();
    EXPECT_EQ(records.size(), 1u);
    return records.empty() ? BuildRecord{} : records[0];
  }
  bool NothingStored() {
    return house_.Files("demo").empty() && house_.Files("evil").empty() &&
           store_.Stats().keys == 1;  // the sdist only
  }

  fsys::path dir_;
  store::MemoryStore store_;
  WheelHouse house_{store_};
  SdistRef sdist_;
  store::BlobStore* records_ = nullptr;  // where Builder's records persist (null: memory)
  std::chrono::steady_clock::time_point now_{std::chrono::hours(1)};
  metrics::Counter started_, succeeded_, failed_, deduplicated_;
};

TEST_F(WheelBuilderTest, BuiltWheelIsStoredWithProvenance) {
  auto b = Builder(Prepared("demo-1.0-py3-none-any.whl", WheelBytes("demo", "1.0")));
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  BuildRecord r = OnlyRecord(*b);
  EXPECT_EQ(r.state, BuildRecord::State::kSucceeded) << r.error;
  auto files = house_.Files("demo");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].filename, "demo-1.0-py3-none-any.whl");
  EXPECT_EQ(files[0].built_from, sdist_.sha256);
  EXPECT_EQ(files[0].builder, "fake (cp311-linux-x86_64-glibc2.36)");
  EXPECT_EQ(files[0].tools, "fake 1");
  // Provenance survives a restart (the list is re-read from the store).
  WheelHouse again(store_);
  EXPECT_EQ(again.Files("demo"), files);
  EXPECT_EQ(succeeded_.Value(), 1);
}

TEST_F(WheelBuilderTest, ConcurrentRequestsShareOneBuild) {
  // The build waits until the test lets it finish (bounded: 600 x 0.1 s).
  fsys::path go = dir_ / "go";
  auto b = Builder("i=0; while [ ! -e " + go.string() +
                   " ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n" +
                   Prepared("demo-1.0-py3-none-any.whl", WheelBytes("demo", "1.0")));
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kDeduplicated);
  }
  std::ofstream(go) << "";
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_EQ(Runs(), 1);
  EXPECT_EQ(started_.Value(), 1);
  EXPECT_EQ(deduplicated_.Value(), 5);
  EXPECT_EQ(house_.Files("demo").size(), 1u);
}

TEST_F(WheelBuilderTest, FailedBuildIsRememberedWithItsLog) {
  auto b = Builder("echo 'error: demo.c:1: no such header' >&2; exit 1");
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  BuildRecord r = OnlyRecord(*b);
  EXPECT_EQ(r.state, BuildRecord::State::kFailed);
  EXPECT_NE(r.error.find("exit code 1"), std::string::npos) << r.error;
  auto log = b->Log(r.id);
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("no such header"), std::string::npos) << *log;
  EXPECT_NE(log->find("[buildcache] failed"), std::string::npos) << *log;
  // Not tried again within the failure TTL ...
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kFailedRecently);
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_EQ(Runs(), 1);
  // ... and tried again after it.
  now_ += std::chrono::minutes(6);
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_EQ(Runs(), 2);
  EXPECT_EQ(failed_.Value(), 2);
  EXPECT_TRUE(NothingStored());
  EXPECT_EQ(b->Log("0123456789abcdef").status().code(), StatusCode::kNotFound);
}

TEST_F(WheelBuilderTest, BuildOverItsDeadlineIsKilled) {
  // The builder sleeps far past the deadline, in a child process (killed with its group).
  auto b = Builder(
      "sleep 300 & wait; " + Prepared("demo-1.0-py3-none-any.whl", WheelBytes("demo", "1.0")),
      std::chrono::milliseconds(500));
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  BuildRecord r = OnlyRecord(*b);
  EXPECT_EQ(r.state, BuildRecord::State::kFailed);
  EXPECT_NE(r.error.find("deadline"), std::string::npos) << r.error;
  EXPECT_TRUE(NothingStored());
}

TEST_F(WheelBuilderTest, NoBuilderForAnotherPlatform) {
  auto b = Builder("exit 1");
  ClientPlatform other = Cp311Glibc236();
  other.python_minor = 12;
  EXPECT_EQ(b->Request(sdist_, other), BuildDecision::kNoBuilder);
  ClientPlatform older_glibc = Cp311Glibc236();
  older_glibc.libc_minor = 28;  // the builder's glibc is newer: its wheels would not load
  EXPECT_EQ(b->Request(sdist_, older_glibc), BuildDecision::kNoBuilder);
  ClientPlatform musl = Cp311Glibc236();
  musl.libc = "musl";
  EXPECT_EQ(b->Request(sdist_, musl), BuildDecision::kNoBuilder);
  EXPECT_EQ(Runs(), 0);
}

// Attacks: an sdist's build runs its own code, so its output is checked before it is stored.
TEST_F(WheelBuilderTest, WheelNamingAnotherProjectIsRejectedAndNothingStored) {
  auto b = Builder(Prepared("evil-1.0-py3-none-any.whl", WheelBytes("evil", "1.0")));
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  BuildRecord r = OnlyRecord(*b);
  EXPECT_EQ(r.state, BuildRecord::State::kFailed);
  EXPECT_NE(r.error.find("not a wheel of demo 1.0"), std::string::npos) << r.error;
  EXPECT_TRUE(NothingStored());
}

TEST_F(WheelBuilderTest, RightFileNameButMetadataOfAnotherVersionIsRejected) {
  auto b = Builder(Prepared("demo-1.0-py3-none-any.whl", WheelBytes("demo", "2.0")));
  ASSERT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_EQ(OnlyRecord(*b).state, BuildRecord::State::kFailed);
  EXPECT_TRUE(NothingStored());
}

TEST_F(WheelBuilderTest, WheelForAnotherPlatformIsRejected) {
  auto b = Builder(Prepared("demo-1.0-cp311-cp311-win_amd64.whl",
                            WheelBytes("demo", "1.0", "cp311-cp311-win_amd64")));
  ASSERT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_NE(OnlyRecord(*b).error.find("does not fit"), std::string::npos);
  EXPECT_TRUE(NothingStored());
}

TEST_F(WheelBuilderTest, SymbolicLinkInTheOutputIsNotFollowed) {
  // The build leaves a link to a host file under a wheel's name.
  fsys::path secret = dir_ / "secret";
  std::ofstream(secret) << WheelBytes("demo", "1.0");  // even a valid wheel: links are refused
  auto b = Builder("ln -s " + secret.string() + " \"$OUT/demo-1.0-py3-none-any.whl\"");
  ASSERT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_EQ(OnlyRecord(*b).state, BuildRecord::State::kFailed);
  EXPECT_TRUE(NothingStored());
}

TEST_F(WheelBuilderTest, SdistChangedInTheStoreIsNotBuilt) {
  ASSERT_TRUE(store::PutBytes(store_, sdist_.store_key, "other bytes").ok());
  auto b = Builder(Prepared("demo-1.0-py3-none-any.whl", WheelBytes("demo", "1.0")));
  ASSERT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_EQ(Runs(), 0);
  EXPECT_TRUE(house_.Files("demo").empty());
}

// A restarted agent still knows its builds: a remembered failure is not tried again within the
// failure TTL, and its log is still served.
TEST_F(WheelBuilderTest, FailedBuildIsStillRememberedAfterARestart) {
  store::MemoryStore records;
  records_ = &records;
  std::string id;
  {
    auto b = Builder("echo 'error: no compiler' >&2; exit 3");
    ASSERT_EQ(b->Request(sdist_, Cp311Glibc236(), &id), BuildDecision::kStarted);
    ASSERT_TRUE(b->WaitIdle(kWait));
  }
  auto b = Builder("echo should not run; exit 0");
  BuildRecord r = OnlyRecord(*b);
  EXPECT_EQ(r.id, id);
  EXPECT_EQ(r.state, BuildRecord::State::kFailed);
  EXPECT_EQ(r.project, "demo");
  EXPECT_EQ(r.sha256, sdist_.sha256);
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kFailedRecently);
  auto log = b->Log(id);
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("error: no compiler"), std::string::npos) << *log;
  EXPECT_NE(log->find("[buildcache] failed: "), std::string::npos) << *log;
  EXPECT_EQ(Runs(), 1);
  // After the TTL it is built again.
  now_ += std::chrono::minutes(6);
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_EQ(Runs(), 2);
}

// A build killed by the agent's shutdown, and one the agent crashed during (its record still
// says running), are listed as interrupted after a restart, not running; and built again when
// asked.
TEST_F(WheelBuilderTest, BuildsTheAgentStoppedDuringAreInterruptedNotRunningForever) {
  store::MemoryStore records;
  records_ = &records;
  std::string id;
  {
    auto b = Builder("sleep 600");
    ASSERT_EQ(b->Request(sdist_, Cp311Glibc236(), &id), BuildDecision::kStarted);
    for (int i = 0; i < 6000 && OnlyRecord(*b).state != BuildRecord::State::kRunning; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(OnlyRecord(*b).state, BuildRecord::State::kRunning);
  }  // shutdown kills the build
  EXPECT_EQ(failed_.Value(), 0);
  {
    auto b = Builder("exit 3");
    EXPECT_EQ(OnlyRecord(*b).state, BuildRecord::State::kInterrupted);
  }
  // A crash: the record says running, and nothing finished it.
  BuildRecord crashed;
  crashed.id = id;
  crashed.project = "demo";
  crashed.version = "1.0";
  crashed.sdist = sdist_.filename;
  crashed.sha256 = sdist_.sha256;
  crashed.state = BuildRecord::State::kRunning;
  ASSERT_TRUE(store::PutBytes(records, "pypi/builds/" + id, EncodeBuildRecord(crashed)).ok());
  auto b = Builder(Prepared("demo-1.0-py3-none-any.whl", WheelBytes("demo", "1.0")));
  BuildRecord r = OnlyRecord(*b);
  EXPECT_EQ(r.state, BuildRecord::State::kInterrupted);
  EXPECT_NE(b->Log(id)->find("[buildcache] interrupted"), std::string::npos);
  // Not a failure: the next request builds it.
  EXPECT_EQ(b->Request(sdist_, Cp311Glibc236()), BuildDecision::kStarted);
  ASSERT_TRUE(b->WaitIdle(kWait));
  EXPECT_EQ(OnlyRecord(*b).state, BuildRecord::State::kSucceeded);
  // The record in the store says so too.
  auto stored = store::ReadAll(**records.Open("pypi/builds/" + id));
  EXPECT_EQ(DecodeBuildRecord(*stored)->state, BuildRecord::State::kSucceeded);
}

TEST(BuildRecordTest, CodecRoundTripsAndRejectsGarbage) {
  BuildRecord r;
  r.id = "0123456789abcdef";
  r.project = "demo";
  r.version = "1.0";
  r.sdist = "demo-1.0.tar.gz";
  r.sha256 = std::string(64, 'a');
  r.builder = "py311";
  r.platform = "cp311-linux-x86_64-glibc2.36";
  r.state = BuildRecord::State::kFailed;
  r.error = "boom";
  r.seconds = 1.5;
  r.finished_unix_ms = 1700000000000;
  auto back = DecodeBuildRecord(EncodeBuildRecord(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, r.id);
  EXPECT_EQ(back->state, r.state);
  EXPECT_EQ(back->error, r.error);
  EXPECT_EQ(back->finished_unix_ms, r.finished_unix_ms);
  EXPECT_FALSE(DecodeBuildRecord("nope").ok());
  EXPECT_FALSE(DecodeBuildRecord(R"({"id":"../x","project":"a","release":"1","sdist":"a",)"
                                 R"("sha256":"a","state":"failed"})")
                   .ok());
  std::string unknown = EncodeBuildRecord(r);
  unknown.replace(unknown.find("\"failed\""), 8, "\"weird\"");
  EXPECT_FALSE(DecodeBuildRecord(unknown).ok());
}

TEST(WheelCheckTest, ChecksMetadataTagsAndPaths) {
  auto check = [](const std::string& filename, const std::string& zip) {
    return CheckBuiltWheel(zip::ReadAtBytes(zip), zip.size(), filename, "demo", "1.0");
  };
  std::string good = WheelBytes("Demo", "1.0.0", "py2-none-any\nTag: py3-none-any");
  EXPECT_TRUE(check("demo-1.0-py2.py3-none-any.whl", good).ok());
  // WHEEL claims fewer tags than the file name.
  EXPECT_FALSE(check("demo-1.0-py2.py3-none-any.whl", WheelBytes("demo", "1.0")).ok());
  std::string traversal =
      BuildZip({{"../evil.py", "x", true},
                {"demo-1.0.dist-info/METADATA", "Name: demo\nVersion: 1.0\n", true},
                {"demo-1.0.dist-info/WHEEL", "Tag: py3-none-any\n", true}});
  EXPECT_FALSE(check("demo-1.0-py3-none-any.whl", traversal).ok());
  std::string two_dist_infos =
      BuildZip({{"demo-1.0.dist-info/METADATA", "Name: demo\nVersion: 1.0\n", true},
                {"demo-1.0.dist-info/WHEEL", "Tag: py3-none-any\n", true},
                {"evil-1.0.dist-info/METADATA", "Name: evil\nVersion: 1.0\n", true}});
  EXPECT_FALSE(check("demo-1.0-py3-none-any.whl", two_dist_infos).ok());
  std::string junk = "PK\x03\x04 not really";
  EXPECT_FALSE(check("demo-1.0-py3-none-any.whl", junk).ok());
}

}  // namespace
}  // namespace buildcache::pypi
