#include "agent/frontends/pypi/wheel_house.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "agent/store/memory_store.h"

namespace buildcache::pypi {
namespace {

namespace fs = std::filesystem;

std::string Wheel(std::string_view tag) { return "PK\x03\x04" + std::string(tag) + "-zip-body"; }

std::string Sha(std::string_view data) { return store::Digest::Of(data).Hex(); }

WheelHouseOptions FixedClock() {
  WheelHouseOptions o;
  o.now = [] { return std::chrono::system_clock::time_point(std::chrono::seconds(1700000000)); };
  return o;
}

TEST(WheelHouseTest, AddedWheelsAreListedWithTheirDigest) {
  store::MemoryStore store;
  WheelHouse house(store, FixedClock());
  auto e = house.AddBytes("Demo_Pkg-1.0-cp311-cp311-linux_x86_64.whl", Wheel("a"));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->sha256, Sha(Wheel("a")));
  EXPECT_EQ(e->size, Wheel("a").size());
  EXPECT_EQ(e->uploaded, "2023-11-14T22:13:20.000000Z");
  auto files = house.Files("demo-pkg");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0], *e);
  EXPECT_TRUE(house.Find("demo-pkg", "Demo_Pkg-1.0-cp311-cp311-linux_x86_64.whl"));
  EXPECT_FALSE(house.Find("demo-pkg", "other-1.0-py3-none-any.whl"));
  EXPECT_TRUE(house.Files("other").empty());
  auto blob = store.Open(house.FileKey("demo-pkg", e->filename));
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(*store::ReadAll(**blob), Wheel("a"));
}

TEST(WheelHouseTest, SurvivesRestart) {
  store::MemoryStore store;
  {
    WheelHouse house(store);
    ASSERT_TRUE(house.AddBytes("demo-1.0-py3-none-any.whl", Wheel("a")).ok());
    ASSERT_TRUE(house.AddBytes("demo-2.0-py3-none-any.whl", Wheel("b")).ok());
  }
  WheelHouse again(store);
  auto files = again.Files("demo");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].filename, "demo-1.0-py3-none-any.whl");
  EXPECT_EQ(files[1].filename, "demo-2.0-py3-none-any.whl");
  EXPECT_EQ(files[1].sha256, Sha(Wheel("b")));
}

TEST(WheelHouseTest, ListReplacedByAPeersIsMergedIntoTheOneInMemory) {
  // Two nodes' wheel houses; node b's list blob reaches node a's store the way replication
  // pushes it (over a's own list), together with b's wheel blob.
  store::MemoryStore a_store, b_store;
  WheelHouse a(a_store), b(b_store);
  ASSERT_TRUE(a.AddBytes("demo-1.0-py3-none-any.whl", Wheel("mine")).ok());
  ASSERT_EQ(a.Files("demo").size(), 1u);  // a's list is in memory now
  ASSERT_TRUE(b.AddBytes("demo-2.0-py3-none-any.whl", Wheel("peer")).ok());
  for (const std::string& key :
       {b.FileKey("demo", "demo-2.0-py3-none-any.whl"), b.IndexKey("demo")}) {
    auto blob = b_store.Open(key);
    ASSERT_TRUE(blob.ok());
    ASSERT_TRUE(store::PutBytes(a_store, key, *store::ReadAll(**blob)).ok());
  }

  auto files = a.Files("demo");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].filename, "demo-1.0-py3-none-any.whl");
  EXPECT_EQ(files[1].filename, "demo-2.0-py3-none-any.whl");
  EXPECT_EQ(files[1].sha256, Sha(Wheel("peer")));

  // The next change saves the union: a restart (or a peer reading it) sees all three.
  ASSERT_TRUE(a.AddBytes("demo-3.0-py3-none-any.whl", Wheel("third")).ok());
  WheelHouse restarted(a_store);
  EXPECT_EQ(restarted.Files("demo").size(), 3u);
}

TEST(WheelHouseTest, FirstWheelOfANameStays) {
  store::MemoryStore store;
  WheelHouse house(store);
  const std::string name = "demo-1.0-py3-none-any.whl";
  ASSERT_TRUE(house.AddBytes(name, Wheel("a")).ok());
  EXPECT_TRUE(house.AddBytes(name, Wheel("a")).ok());  // idempotent
  auto other = house.AddBytes(name, Wheel("b"));
  EXPECT_EQ(other.status().code(), StatusCode::kAlreadyExists);
  ASSERT_EQ(house.Files("demo").size(), 1u);
  EXPECT_EQ(house.Files("demo")[0].sha256, Sha(Wheel("a")));
  auto blob = store.Open(house.FileKey("demo", name));
  EXPECT_EQ(*store::ReadAll(**blob), Wheel("a"));
}

TEST(WheelHouseTest, RejectsBadContentAndStoresNothing) {
  store::MemoryStore store;
  WheelHouse house(store);
  EXPECT_EQ(house.AddBytes("demo-1.0.tar.gz", Wheel("a")).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(house.AddBytes("demo-1.0-py3-none-any.whl", "not a zip").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      house.AddBytes("demo-1.0-py3-none-any.whl", Wheel("a"), std::string(64, '0')).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_TRUE(house.Files("demo").empty());
  EXPECT_EQ(store.Stats().blobs, 0u);
  // The right digest (any case) is accepted.
  std::string upper = Sha(Wheel("a"));
  for (char& c : upper) c = static_cast<char>(toupper(c));
  EXPECT_TRUE(house.AddBytes("demo-1.0-py3-none-any.whl", Wheel("a"), upper).ok());
}

TEST(WheelHouseTest, EvictedWheelsAreNotListedAndCanBeAddedAgain) {
  store::MemoryStore store;
  WheelHouse house(store);
  const std::string name = "demo-1.0-py3-none-any.whl";
  ASSERT_TRUE(house.AddBytes(name, Wheel("a")).ok());
  ASSERT_TRUE(store.Delete(house.FileKey("demo", name)).ok());
  EXPECT_TRUE(house.Files("demo").empty());
  EXPECT_FALSE(house.Find("demo", name));
  auto again = house.AddBytes(name, Wheel("b"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(house.Files("demo").size(), 1u);
}

TEST(WheelHouseTest, ConcurrentAddsOfOneNameKeepExactlyOneWheel) {
  store::MemoryStore store;
  WheelHouse house(store);
  const std::string name = "demo-1.0-cp311-cp311-linux_x86_64.whl";
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, exists{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto r = house.AddBytes(name, Wheel(std::to_string(i % 2)));
      if (r.ok()) ++ok;
      if (r.status().code() == StatusCode::kAlreadyExists) ++exists;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok + exists, 8);
  EXPECT_GE(ok, 1);
  auto files = house.Files("demo");
  ASSERT_EQ(files.size(), 1u);
  auto blob = store.Open(house.FileKey("demo", name));
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(Sha(*store::ReadAll(**blob)), files[0].sha256);
}

TEST(WheelHouseTest, ListCodecRoundTripsAndRejectsGarbage) {
  std::vector<WheelEntry> list = {
      {"demo-1.0-py3-none-any.whl", std::string(64, 'a'), 5, ">=3.8", "2024-01-01T00:00:00Z", "",
       "", ""},
      // A built wheel keeps its provenance.
      {"demo-1.0-cp311-cp311-linux_x86_64.whl", std::string(64, 'b'), 6, "", "2024-01-01T00:00:00Z",
       std::string(64, 'c'), "py311 (cp311-linux-x86_64-glibc2.36)", "CPython 3.11.2; pip 23.0.1"}};
  auto back = DecodeWheelList(EncodeWheelList(list));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, list);
  EXPECT_FALSE(DecodeWheelList("nope").ok());
  EXPECT_FALSE(
      DecodeWheelList(R"({"files":[{"filename":"../x.whl","sha256":"a","size":1}]})").ok());
  EXPECT_FALSE(DecodeWheelList(R"({"files":[{"filename":1}]})").ok());
  // A provenance digest that is no sha256 makes the list unusable.
  EXPECT_FALSE(DecodeWheelList(R"({"files":[{"filename":"demo-1.0-py3-none-any.whl","sha256":")" +
                               std::string(64, 'a') + R"(","size":1,"built_from":"x"}]})")
                   .ok());
}

class ScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pypi_scan_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const fs::path& rel, std::string_view data) {
    fs::create_directories((dir_ / rel).parent_path());
    std::ofstream(dir_ / rel, std::ios::binary) << data;
  }
  fs::path dir_;
};

TEST_F(ScanTest, IndexesWheelsFromAPipCacheLayout) {
  Write("wheels/ab/cd/ef/0123/demo-1.0-cp311-cp311-linux_x86_64.whl", Wheel("a"));
  Write("wheels/12/34/56/abcd/Other_Pkg-2.0-py3-none-any.whl", Wheel("b"));
  Write("wheels/12/34/56/abcd/notes.txt", "not a wheel");
  Write("wheels/12/34/56/abcd/broken-py3.whl", Wheel("c"));      // not a wheel name
  Write("wheels/12/34/56/abcd/empty-1.0-py3-none-any.whl", "");  // not a zip
  store::MemoryStore store;
  WheelHouse house(store);
  auto r = house.ScanDirectory(dir_ / "wheels");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->added, 2u);
  EXPECT_EQ(r->present, 0u);
  EXPECT_EQ(r->failed, 2u);
  ASSERT_EQ(house.Files("demo").size(), 1u);
  ASSERT_EQ(house.Files("other-pkg").size(), 1u);
  EXPECT_EQ(house.Files("other-pkg")[0].sha256, Sha(Wheel("b")));

  auto again = house.ScanDirectory(dir_ / "wheels");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->added, 0u);
  EXPECT_EQ(again->present, 2u);

  EXPECT_EQ(house.ScanDirectory(dir_ / "missing").status().code(), StatusCode::kNotFound);
}

// A pod that writes into a wheel directory plants links: to a file it cannot read (the agent runs
// as root), to a wheel elsewhere on the node, and to a whole directory. None is followed: nothing
// behind a link is read, stored or listed, and each link is counted and logged.
TEST_F(ScanTest, SymbolicLinksAreSkippedAndNothingBehindThemIsStored) {
  Write("outside/secret", "PK\x03\x04 root-only secret");
  Write("outside/dir/linked-1.0-py3-none-any.whl", Wheel("elsewhere"));
  Write("wheels/aa/real-1.0-py3-none-any.whl", Wheel("real"));
  fs::create_directories(dir_ / "wheels/bb");
  fs::create_symlink(dir_ / "outside/secret", dir_ / "wheels/bb/shadow-1.0-py3-none-any.whl");
  fs::create_symlink(dir_ / "outside/dir/linked-1.0-py3-none-any.whl",
                     dir_ / "wheels/bb/linked-1.0-py3-none-any.whl");
  fs::create_directory_symlink(dir_ / "outside/dir", dir_ / "wheels/cc");
  store::MemoryStore store;
  WheelHouse house(store);
  auto r = house.ScanDirectory(dir_ / "wheels");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->added, 1u);
  EXPECT_EQ(r->failed, 3u);
  EXPECT_EQ(house.Files("real").size(), 1u);
  EXPECT_TRUE(house.Files("shadow").empty());
  EXPECT_TRUE(house.Files("linked").empty());
  // One wheel and one list: nothing else reached the store.
  EXPECT_EQ(store.Stats().blobs, 2u);
}

// A wheel unlisted on one node (its file left a watched directory) stays unlisted when that
// node's list meets a peer's older copy, and the removal reaches the peer's copy; the same wheel
// added again later is listed again everywhere.
TEST(WheelHouseTest, UnlistingIsATombstoneThatWinsOverOlderCopies) {
  store::MemoryStore store;
  int64_t seconds = 1700000000;
  WheelHouseOptions o;
  o.now = [&seconds] {
    return std::chrono::system_clock::time_point(std::chrono::seconds(seconds));
  };
  WheelHouse house(store, o);
  const std::string name = "demo-1.0-py3-none-any.whl";
  ASSERT_TRUE(house.AddBytes(name, Wheel("a")).ok());
  auto before = store::ReadAll(**store.Open(house.IndexKey("demo")));  // a peer's copy, say
  ++seconds;
  EXPECT_EQ(house.Unlist("demo", name, Sha(Wheel("other"))).code(), StatusCode::kNotFound);
  ASSERT_TRUE(house.Unlist("demo", name, Sha(Wheel("a"))).ok());
  EXPECT_TRUE(house.Files("demo").empty());
  EXPECT_FALSE(house.Find("demo", name));
  // The peer's older list replaces the stored one (replication): the wheel stays unlisted.
  ASSERT_TRUE(store::PutBytes(store, house.IndexKey("demo"), *before).ok());
  EXPECT_TRUE(house.Files("demo").empty());
  // The next change saves the union, tombstone included; a peer that had the older list and
  // reads the new one unlists the wheel too.
  ++seconds;
  ASSERT_TRUE(house.AddBytes("demo-2.0-py3-none-any.whl", Wheel("2")).ok());
  store::MemoryStore peer_store;
  ASSERT_TRUE(store::PutBytes(peer_store, house.FileKey("demo", name), Wheel("a")).ok());
  ASSERT_TRUE(store::PutBytes(peer_store, house.IndexKey("demo"), *before).ok());
  WheelHouse peer(peer_store, o);
  ASSERT_EQ(peer.Files("demo").size(), 1u);
  ASSERT_TRUE(store::PutBytes(peer_store, house.IndexKey("demo"),
                              *store::ReadAll(**store.Open(house.IndexKey("demo"))))
                  .ok());
  EXPECT_TRUE(peer.Files("demo").empty());
  // Added again (the file came back): listed again, and the tombstone gives way.
  ++seconds;
  ASSERT_TRUE(house.AddBytes(name, Wheel("a")).ok());
  ASSERT_EQ(house.Files("demo").size(), 2u);
  ASSERT_TRUE(store::PutBytes(peer_store, house.IndexKey("demo"),
                              *store::ReadAll(**store.Open(house.IndexKey("demo"))))
                  .ok());
  EXPECT_EQ(peer.Files("demo").size(), 1u);
}

// A node that is not an owner of a project's list asks the owners again once its copy is older
// than the TTL, and sees wheels added there since; not more often than that.
TEST(WheelHouseTest, ListOlderThanItsTtlIsRefreshedFromTheOwners) {
  store::MemoryStore owner_store;
  WheelHouse owner(owner_store);
  ASSERT_TRUE(owner.AddBytes("demo-1.0-py3-none-any.whl", Wheel("1")).ok());

  store::MemoryStore store;
  std::atomic<int> asked{0};
  auto steady = std::chrono::steady_clock::time_point(std::chrono::hours(1));
  WheelHouseOptions o;
  o.list_ttl = std::chrono::seconds(30);
  o.steady_now = [&steady] { return steady; };
  o.owner_copies = [&](const std::string& key) {
    ++asked;
    return std::vector<std::string>{*store::ReadAll(**owner_store.Open(key))};
  };
  WheelHouse house(store, o);
  // The copy this node pulled once (and the wheels' blobs, which the replicated store would pull
  // on first use).
  ASSERT_TRUE(store::PutBytes(store, house.IndexKey("demo"),
                              *store::ReadAll(**owner_store.Open(owner.IndexKey("demo"))))
                  .ok());
  for (const char* tag : {"1", "2"}) {
    ASSERT_TRUE(
        store::PutBytes(store,
                        house.FileKey("demo", std::string("demo-") + tag + ".0-py3-none-any.whl"),
                        Wheel(tag))
            .ok());
  }
  EXPECT_EQ(house.Files("demo").size(), 1u);
  // A wheel built at the owner later.
  ASSERT_TRUE(owner.AddBytes("demo-2.0-py3-none-any.whl", Wheel("2")).ok());
  const int before = asked.load();
  EXPECT_EQ(house.Files("demo").size(), 1u);  // within the TTL: the copy here
  EXPECT_EQ(asked.load(), before);
  steady += std::chrono::seconds(31);
  EXPECT_EQ(house.Files("demo").size(), 2u);
  EXPECT_EQ(asked.load(), before + 1);
  // A project this node has no list of is not asked about (names clients make up).
  EXPECT_TRUE(house.Files("made-up").empty());
  EXPECT_EQ(asked.load(), before + 1);
}

}  // namespace
}  // namespace buildcache::pypi
