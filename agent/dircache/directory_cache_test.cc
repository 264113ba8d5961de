#include "agent/dircache/directory_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/dircache/directory_sync.h"
#include "agent/dircache/ignore.h"
#include "agent/dircache/manual_watcher.h"
#include "agent/store/lmdb_store.h"
#include "agent/store/memory_store.h"
#include "common/log/log.h"
#include "gtest/gtest.h"

namespace buildcache::dircache {
namespace {

namespace fs = std::filesystem;

// Peers connected in memory: each node's DirectorySync answers manifests, its store serves blobs.
class MemoryPeers {
 public:
  struct Node {
    ManifestProvider* provider;
    store::BlobStore* store;
  };
  void Add(const std::string& name, Node node) {
    std::lock_guard<std::mutex> lock(mu_);
    nodes_[name] = node;
  }
  void SetCorrupt(const std::string& name, bool report_data_loss) {
    std::lock_guard<std::mutex> lock(mu_);
    corrupt_[name] = report_data_loss;
  }

  // The view from one node.
  class View : public PeerDirectory {
   public:
    View(MemoryPeers& peers, std::string self) : peers_(peers), self_(std::move(self)) {}
    std::vector<std::string> LivePeers() override {
      std::lock_guard<std::mutex> lock(peers_.mu_);
      std::vector<std::string> out;
      for (const auto& [name, node] : peers_.nodes_) {
        if (name != self_) {
          out.push_back(name);
        }
      }
      return out;
    }
    Result<Manifest> GetManifest(const std::string& peer, std::string_view dir, uint64_t since,
                                 uint64_t listing_after) override {
      ManifestProvider* p;
      {
        std::lock_guard<std::mutex> lock(peers_.mu_);
        auto it = peers_.nodes_.find(peer);
        if (it == peers_.nodes_.end()) {
          return Unavailable("no such peer");
        }
        p = it->second.provider;
      }
      return p->GetManifest(dir, since, listing_after);
    }
    Status FetchBlob(const std::string& peer, const store::Digest& digest, uint64_t size,
                     const std::function<Status(std::string_view)>& sink) override {
      store::BlobStore* s;
      std::optional<bool> corrupt;
      {
        std::lock_guard<std::mutex> lock(peers_.mu_);
        auto it = peers_.nodes_.find(peer);
        if (it == peers_.nodes_.end()) {
          return Unavailable("no such peer");
        }
        s = it->second.store;
        auto c = peers_.corrupt_.find(peer);
        if (c != peers_.corrupt_.end()) {
          corrupt = c->second;
        }
      }
      BC_ASSIGN_OR_RETURN(auto reader, s->OpenDigest(digest));
      BC_ASSIGN_OR_RETURN(std::string data, store::ReadAll(*reader));
      if (corrupt.has_value()) {
        if (!data.empty()) {
          data[data.size() / 2] ^= 1;
        }
        // Half the bytes reach the sink before the failure is noticed.
        BC_RETURN_IF_ERROR(sink(std::string_view(data).substr(0, data.size() / 2)));
        if (*corrupt) {
          return DataLoss("digest mismatch");
        }
        // A broken peer layer that does not verify: the store must catch it.
        return sink(std::string_view(data).substr(data.size() / 2));
      }
      if (data.size() != size) {
        return DataLoss("size mismatch");
      }
      return sink(data);
    }

   private:
    MemoryPeers& peers_;
    std::string self_;
  };

 private:
  std::mutex mu_;
  std::map<std::string, Node> nodes_;
  std::map<std::string, bool> corrupt_;
};

struct Counters {
  std::mutex mu;
  std::condition_variable changed;  // notified after every change a cache reports
  uint64_t changes = 0;
  uint64_t indexed = 0, pulled = 0, pulled_bytes = 0, conflicts = 0, evicted = 0, failed = 0;
  uint64_t hyd_files = 0, hyd_bytes = 0, hyd_target = 0;
  double lag = -1;
};

class Node {
 public:
  Node(MemoryPeers& peers, const std::string& name, const fs::path& base, uint64_t max_size,
       std::chrono::milliseconds rescan = std::chrono::milliseconds(60000), bool lmdb = false,
       const std::function<void(DirectoryCacheOptions&)>& tweak = {})
      : name_(name), root_(base / name), view_(peers, name) {
    if (lmdb) {
      store::LmdbStoreOptions so;
      so.data_dir = (base / (name + "-store")).string();
      so.index_map_bytes = 64 << 20;
      auto opened = store::LmdbStore::Open(so);
      EXPECT_TRUE(opened.ok()) << opened.status().ToString();
      store_ = std::move(opened).value();
    } else {
      store_ = std::make_unique<store::MemoryStore>();
    }
    DirCacheObserver o;
    o.on_indexed = [this](const std::string&, uint64_t) { Bump(&Counters::indexed); };
    o.on_pulled = [this](const std::string&, uint64_t bytes) {
      std::lock_guard<std::mutex> lock(c_.mu);
      ++c_.pulled;
      c_.pulled_bytes += bytes;
    };
    o.on_conflict = [this](const std::string&) { Bump(&Counters::conflicts); };
    o.on_evicted = [this](const std::string&, uint64_t) { Bump(&Counters::evicted); };
    o.on_pull_failed = [this](const std::string&) { Bump(&Counters::failed); };
    o.on_sync_lag = [this](const std::string&, double seconds) {
      std::lock_guard<std::mutex> lock(c_.mu);
      c_.lag = seconds;
    };
    // Called under the cache's lock after every change: waiters are woken, never poll.
    o.on_usage = [this](const std::string&, uint64_t, uint64_t) {
      std::lock_guard<std::mutex> lock(c_.mu);
      ++c_.changes;
      c_.changed.notify_all();
    };
    o.on_hydration = [this](uint64_t files, uint64_t bytes, uint64_t target) {
      std::lock_guard<std::mutex> lock(c_.mu);
      c_.hyd_files = files;
      c_.hyd_bytes = bytes;
      c_.hyd_target = target;
    };
    sync_ = std::make_unique<DirectorySync>(*store_, DirectorySyncOptions{}, o);
    DirectoryCacheOptions d;
    d.name = "cache";
    d.root = root_.string();
    d.max_size = max_size;
    d.settle = std::chrono::milliseconds(100);
    d.rescan_interval = rescan;
    if (tweak) {
      tweak(d);
    }
    EXPECT_TRUE(sync_->Add(d).ok());
    EXPECT_TRUE(sync_->StartWatching().ok());
    sync_->SetPeers(&view_);
    peers.Add(name, {sync_.get(), store_.get()});
  }
  ~Node() {
    sync_->Stop();
    sync_.reset();
  }

  DirectorySync& sync() { return *sync_; }
  DirectoryCache& cache() { return *sync_->Find("cache"); }
  store::BlobStore& store() { return *store_; }
  const fs::path& root() const { return root_; }
  double Lag() {
    std::lock_guard<std::mutex> lock(c_.mu);
    return c_.lag;
  }
  uint64_t Get(uint64_t Counters::*field) {
    std::lock_guard<std::mutex> lock(c_.mu);
    return c_.*field;
  }

  void Write(const std::string& rel, const std::string& data, mode_t mode = 0644) {
    fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ::fchmod(fd, mode);
    ::close(fd);
  }
  // Looks through every page of the manifest.
  std::optional<ManifestEntry> Listed(const std::string& rel) {
    Manifest page = cache().GetManifest(0);
    for (int i = 0; i < 1000; ++i) {
      for (const ManifestEntry& e : page.entries) {
        if (e.path == rel) {
          return e;
        }
      }
      if (!page.more) {
        break;
      }
      page = cache().GetManifest(0, page.generation);
    }
    return std::nullopt;
  }
  // Bounded wait (10 s) for `done`, checked again after every change the cache reports. `done`
  // may call into the cache: the counters' lock is not held while it runs (the cache calls the
  // observer with its own lock held).
  bool WaitUntil(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (true) {
      uint64_t seen;
      {
        std::lock_guard<std::mutex> lock(c_.mu);
        seen = c_.changes;
      }
      if (done()) {
        return true;
      }
      std::unique_lock<std::mutex> lock(c_.mu);
      if (!c_.changed.wait_until(lock, deadline, [&] { return c_.changes != seen; })) {
        lock.unlock();
        return done();
      }
    }
  }
  // Bounded wait for the watcher to index a file with exactly this content.
  bool WaitIndexed(const std::string& rel, const std::string& data) {
    return WaitUntil([&] {
      auto e = Listed(rel);
      return e && e->digest == store::Digest::Of(data);
    });
  }

 private:
  void Bump(uint64_t Counters::*field) {
    std::lock_guard<std::mutex> lock(c_.mu);
    ++(c_.*field);
    ++c_.changes;
    c_.changed.notify_all();
  }

  std::string name_;
  fs::path root_;
  std::unique_ptr<store::BlobStore> store_;
  MemoryPeers::View view_;
  Counters c_;
  std::unique_ptr<DirectorySync> sync_;
};

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string Bytes(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>(seed + i * 31 + i / 7);
  }
  return s;
}

// Every regular file under root, relative.
std::set<std::string> Tree(const fs::path& root) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file()) {
      out.insert(fs::relative(e.path(), root).string());
    }
  }
  return out;
}

class DirCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dircache-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
  }
  void TearDown() override { fs::remove_all(base_); }
  fs::path base_;
  MemoryPeers peers_;
};

TEST(IgnoreTest, TemporaryAndLockFilesAreIgnored) {
  for (const char* p : {"a/b.tmp", "tmp/x", "_cacache/tmp/abc", ".tmpXYZ", "tmpfile", "x.lock",
                        "pip/http/a/b/c.partial", "obj.o.tmp.Ab12Cd", "f~", "x.swp",
                        "registry/.package-cache", "ccache/a/b.alive", "wheels/x.whl1234.tmp",
                        "cache/download/golang.org/x/lock", "v1.2.3.zip12345.tmp"}) {
    EXPECT_TRUE(IsIgnoredPath(p)) << p;
  }
  for (const char* p : {"a/b.whl", "00/0123456789abcdef-d", "pip/http/a/b/c", "stats",
                        "templates/x", "ccache/a/b.result"}) {
    EXPECT_FALSE(IsIgnoredPath(p)) << p;
  }
}

TEST(IgnoreTest, UnsafePathsAreRejected) {
  for (const char* p : {"", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/", "a/."}) {
    EXPECT_FALSE(IsSafeRelativePath(p)) << p;
  }
  EXPECT_TRUE(IsSafeRelativePath("a/b/c.whl"));
  EXPECT_TRUE(IsSafeRelativePath("..a"));
}

TEST_F(DirCacheTest, FileWrittenOnOneNodeAppearsByteIdenticalOnTheOthers) {
  Node a(peers_, "a", base_, 1 << 20), b(peers_, "b", base_, 1 << 20),
      c(peers_, "c", base_, 1 << 20);
  std::string data = Bytes(300000, 'x');
  a.Write("go-build/ab/abcdef-d", data, 0640);
  ASSERT_TRUE(a.WaitIndexed("go-build/ab/abcdef-d", data));
  EXPECT_EQ(a.Get(&Counters::indexed), 1u);
  // The store holds its own copy: fetchable after the pod deletes the file.
  EXPECT_TRUE(a.store().HasDigest(store::Digest::Of(data)));

  b.sync().SyncOnce();
  c.sync().SyncOnce();
  for (Node* n : {&b, &c}) {
    fs::path p = n->root() / "go-build/ab/abcdef-d";
    EXPECT_EQ(ReadFile(p), data);
    // The entry's mode plus read for everyone: pods of another uid read what was pulled.
    EXPECT_EQ(fs::status(p).permissions() & fs::perms::mask, fs::perms(0644));
    EXPECT_EQ(n->Get(&Counters::pulled), 1u);
    EXPECT_EQ(n->Get(&Counters::pulled_bytes), data.size());
    // Listed at once (no second hash by the watcher) and nothing left but the file.
    ASSERT_TRUE(n->Listed("go-build/ab/abcdef-d"));
    EXPECT_EQ(Tree(n->root()), std::set<std::string>{"go-build/ab/abcdef-d"});
  }
  // A second round pulls nothing, in either direction.
  b.sync().SyncOnce();
  a.sync().SyncOnce();
  EXPECT_EQ(b.Get(&Counters::pulled), 1u);
  EXPECT_EQ(a.Get(&Counters::pulled), 0u);
}

TEST_F(DirCacheTest, ReplicatesBetweenDiskStores) {
  // LmdbStore readers are file-backed: the pull copies by reflink or copy_file_range.
  Node a(peers_, "a", base_, 1 << 20, std::chrono::milliseconds(60000), /*lmdb=*/true);
  Node b(peers_, "b", base_, 1 << 20, std::chrono::milliseconds(60000), /*lmdb=*/true);
  std::string data = Bytes(700000, 'L');
  a.Write("deep/er/file.bin", data, 0755);
  ASSERT_TRUE(a.WaitIndexed("deep/er/file.bin", data));
  b.sync().SyncOnce();
  EXPECT_EQ(ReadFile(b.root() / "deep/er/file.bin"), data);
  EXPECT_EQ(fs::status(b.root() / "deep/er/file.bin").permissions() & fs::perms::mask,
            fs::perms(0755));
  // The pod deletes its file; once the deletion is listed the store's copy still serves peers
  // that read the manifest before.
  fs::remove(a.root() / "deep/er/file.bin");
  ASSERT_TRUE(a.WaitUntil([&] { return !a.Listed("deep/er/file.bin"); }));
  auto reader = a.store().OpenDigest(store::Digest::Of(data));
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(*store::ReadAll(**reader), data);
}

TEST_F(DirCacheTest, ManifestIsIncrementalByGeneration) {
  Node a(peers_, "a", base_, 1 << 20);
  a.Write("one", "1");
  ASSERT_TRUE(a.WaitIndexed("one", "1"));
  Manifest first = a.cache().GetManifest(0);
  ASSERT_EQ(first.entries.size(), 1u);
  a.Write("two", "2");
  ASSERT_TRUE(a.WaitIndexed("two", "2"));
  Manifest delta = a.cache().GetManifest(first.generation);
  ASSERT_EQ(delta.entries.size(), 1u);
  EXPECT_EQ(delta.entries[0].path, "two");
  EXPECT_GT(delta.generation, first.generation);
  EXPECT_TRUE(a.cache().GetManifest(delta.generation).entries.empty());
  EXPECT_EQ(a.sync().GetManifest("nope", 0, 0).status().code(), StatusCode::kNotFound);
}

TEST_F(DirCacheTest, TemporaryFilesAreNotIndexed) {
  Node a(peers_, "a", base_, 1 << 20);
  a.Write("http/abc.tmp", "t1");
  a.Write("tmp/xyz", "t2");
  a.Write("x/obj.lock", "t3");
  a.Write("x/obj.o.tmp.k3j2h1", "t4");
  a.Write("marker", "m");
  ASSERT_TRUE(a.WaitIndexed("marker", "m"));
  a.cache().Rescan();
  a.Write("marker2", "m2");  // a second settle after the rescan
  ASSERT_TRUE(a.WaitIndexed("marker2", "m2"));
  std::set<std::string> listed;
  for (const auto& e : a.cache().GetManifest(0).entries) {
    listed.insert(e.path);
  }
  EXPECT_EQ(listed, (std::set<std::string>{"marker", "marker2"}));
}

TEST_F(DirCacheTest, PartialWriteIsNeverIndexedOrPulled) {
  // A short rescan interval: the safety net must not pick up a file still being written either.
  Node a(peers_, "a", base_, 1 << 20, std::chrono::milliseconds(50));
  Node b(peers_, "b", base_, 1 << 20);
  std::string data = Bytes(100000, 'p');
  fs::path p = a.root() / "slow.bin";
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, data.data(), data.size() / 2), static_cast<ssize_t>(data.size() / 2));
  // Events are handled in order: once a later file has settled and been indexed, the half-written
  // one has been seen for longer than the settle time (and by several rescans).
  a.Write("later", "l");
  ASSERT_TRUE(a.WaitIndexed("later", "l"));
  a.Write("later2", "l2");
  ASSERT_TRUE(a.WaitIndexed("later2", "l2"));
  EXPECT_FALSE(a.Listed("slow.bin"));
  b.sync().SyncOnce();
  EXPECT_FALSE(fs::exists(b.root() / "slow.bin"));

  ASSERT_EQ(::write(fd, data.data() + data.size() / 2, data.size() - data.size() / 2),
            static_cast<ssize_t>(data.size() - data.size() / 2));
  ::close(fd);
  ASSERT_TRUE(a.WaitIndexed("slow.bin", data));
  b.sync().SyncOnce();
  EXPECT_EQ(ReadFile(b.root() / "slow.bin"), data);
}

TEST_F(DirCacheTest, ConflictingFileIsNeverOverwritten) {
  Node a(peers_, "a", base_, 1 << 20), b(peers_, "b", base_, 1 << 20);
  a.Write("same/path", "from a");
  b.Write("same/path", "from b");
  ASSERT_TRUE(a.WaitIndexed("same/path", "from a"));
  ASSERT_TRUE(b.WaitIndexed("same/path", "from b"));
  b.sync().SyncOnce();
  b.sync().SyncOnce();
  a.sync().SyncOnce();
  EXPECT_EQ(ReadFile(b.root() / "same/path"), "from b");
  EXPECT_EQ(ReadFile(a.root() / "same/path"), "from a");
  EXPECT_EQ(b.Get(&Counters::conflicts), 1u);  // once per path and digest, not per round
  EXPECT_EQ(a.Get(&Counters::conflicts), 1u);
  EXPECT_EQ(b.Get(&Counters::pulled), 0u);
}

TEST_F(DirCacheTest, LocallyDeletedFileIsNotPulledBackAndPeersKeepTheirs) {
  Node a(peers_, "a", base_, 1 << 20), b(peers_, "b", base_, 1 << 20);
  a.Write("f", "content");
  ASSERT_TRUE(a.WaitIndexed("f", "content"));
  b.sync().SyncOnce();
  ASSERT_EQ(ReadFile(b.root() / "f"), "content");
  uint64_t before = b.cache().GetManifest(0).generation;
  fs::remove(b.root() / "f");
  ASSERT_TRUE(b.WaitUntil([&] {
    bool deleted = false;
    for (const auto& e : b.cache().GetManifest(before).entries) {
      deleted |= e.deleted;
    }
    return deleted;
  }));
  b.sync().SyncOnce();
  a.sync().SyncOnce();
  EXPECT_FALSE(fs::exists(b.root() / "f"));
  EXPECT_EQ(ReadFile(a.root() / "f"), "content");
  EXPECT_EQ(b.Get(&Counters::pulled), 1u);

  // New content at the path is pulled again.
  a.Write("f", "content v2");
  ASSERT_TRUE(a.WaitIndexed("f", "content v2"));
  b.sync().SyncOnce();
  EXPECT_EQ(ReadFile(b.root() / "f"), "content v2");
}

TEST_F(DirCacheTest, LocalDeletionsAreRememberedAcrossARestart) {
  store::MemoryStore store;  // the agent's store outlives a restart of its directory caches
  DirectoryCacheOptions d;
  d.name = "cache";
  d.root = (base_ / "restart").string();
  d.settle = std::chrono::milliseconds(0);
  // Driven step by step: the test reports the write as the watcher would.
  ManualTreeWatcher* watcher = nullptr;
  d.new_watcher = [&watcher] {
    auto w = std::make_unique<ManualTreeWatcher>();
    watcher = w.get();
    return w;
  };
  d.watcher_thread = false;
  const std::string content = "deleted before the restart";
  ManifestEntry gone;
  gone.path = "sub/f";
  gone.digest = store::Digest::Of(content);
  gone.size = content.size();
  {
    auto cache = DirectoryCache::Open(d, store);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    ASSERT_TRUE((*cache)->Start().ok());
    fs::create_directories(base_ / "restart" / "sub");
    std::ofstream(base_ / "restart" / "sub" / "f") << content;
    watcher->Push({TreeEvent::Kind::kDirAdded, "sub"});
    (*cache)->Step(std::chrono::milliseconds(0));
    ASSERT_EQ((*cache)->live_files(), 1u);
    fs::remove(base_ / "restart" / "sub" / "f");
    (*cache)->Rescan();
    ASSERT_EQ((*cache)->live_files(), 0u);
    EXPECT_EQ((*cache)->Classify(gone), DirectoryCache::Plan::kDeleted);
    (*cache)->Stop();
  }
  auto restarted = DirectoryCache::Open(d, store);
  ASSERT_TRUE(restarted.ok());
  EXPECT_EQ((*restarted)->Classify(gone), DirectoryCache::Plan::kDeleted);  // not hydrated again
  ManifestEntry other = gone;
  other.digest = store::Digest::Of("new content at the path");
  EXPECT_EQ((*restarted)->Classify(other), DirectoryCache::Plan::kPull);
  // A cache of another name shares nothing.
  d.name = "other";
  d.root = (base_ / "other").string();
  auto unrelated = DirectoryCache::Open(d, store);
  ASSERT_TRUE(unrelated.ok());
  EXPECT_EQ((*unrelated)->Classify(gone), DirectoryCache::Plan::kPull);
}

TEST_F(DirCacheTest, QuotaEvictsLeastRecentlyUsedFiles) {
  Node a(peers_, "a", base_, 3000);
  Node b(peers_, "b", base_, 1 << 20);
  auto set_time = [&](const std::string& rel, int64_t unix_s) {
    struct timespec ts[2] = {{unix_s, 0}, {unix_s, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (a.root() / rel).c_str(), ts, 0), 0);
  };
  std::vector<std::string> names = {"old", "older", "new"};
  int64_t times[] = {1'700'000'100, 1'700'000'000, 1'700'000'200};
  for (int i = 0; i < 3; ++i) {
    std::string data = Bytes(1000, static_cast<char>('a' + i));
    a.Write(names[i], data);
    ASSERT_TRUE(a.WaitIndexed(names[i], data));
    set_time(names[i], times[i]);
  }
  EXPECT_EQ(a.Get(&Counters::evicted), 0u);
  uint64_t gen = a.cache().GetManifest(0).generation;
  std::string newest = Bytes(1000, 'z');
  a.Write("newest", newest);
  ASSERT_TRUE(a.WaitIndexed("newest", newest));
  // The quota is enforced after the indexing round that went over it.
  ASSERT_TRUE(a.WaitUntil([&] { return a.Get(&Counters::evicted) > 0; }));
  EXPECT_EQ(a.Get(&Counters::evicted), 1u);
  EXPECT_FALSE(fs::exists(a.root() / "older"));
  EXPECT_TRUE(fs::exists(a.root() / "old"));
  EXPECT_TRUE(fs::exists(a.root() / "new"));
  EXPECT_LE(a.cache().used_bytes(), 3000u);
  bool listed_deleted = false;
  for (const auto& e : a.cache().GetManifest(gen).entries) {
    if (e.path == "older") {
      listed_deleted = e.deleted;
    }
  }
  EXPECT_TRUE(listed_deleted);
  // Peers keep theirs: b pulls what a lists, never the evicted file.
  b.sync().SyncOnce();
  EXPECT_EQ(Tree(b.root()), (std::set<std::string>{"old", "new", "newest"}));
}

TEST_F(DirCacheTest, SyncPullsHottestFirstWithinTheQuota) {
  Node a(peers_, "a", base_, 1 << 20);
  Node b(peers_, "b", base_, 2500);
  for (int i = 0; i < 4; ++i) {
    std::string name = "f" + std::to_string(i);
    std::string data = Bytes(1000, static_cast<char>('a' + i));
    a.Write(name, data);
    struct timespec ts[2] = {{1'700'000'000 + i * 10, 0}, {1'700'000'000 + i * 10, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (a.root() / name).c_str(), ts, 0), 0);
    ASSERT_TRUE(a.WaitIndexed(name, data));
  }
  b.sync().SyncOnce();
  EXPECT_EQ(Tree(b.root()), (std::set<std::string>{"f3", "f2"}));
  EXPECT_EQ(b.Get(&Counters::evicted), 0u);  // pulls only fill free room
}

TEST_F(DirCacheTest, HydrationRespectsItsBounds) {
  Node a(peers_, "a", base_, 1 << 20);
  for (int i = 0; i < 5; ++i) {
    std::string name = "h" + std::to_string(i);
    std::string data = Bytes(1000, static_cast<char>('k' + i));
    a.Write(name, data);
    struct timespec ts[2] = {{1'700'000'000 + i * 10, 0}, {1'700'000'000 + i * 10, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (a.root() / name).c_str(), ts, 0), 0);
    ASSERT_TRUE(a.WaitIndexed(name, data));
  }
  {
    Node b(peers_, "b", base_, 1 << 20);
    HydrationReport r = b.sync().Hydrate(std::chrono::minutes(1), 2500);
    EXPECT_TRUE(r.complete);
    EXPECT_EQ(r.peers, 1u);
    EXPECT_EQ(r.files, 2u);
    EXPECT_EQ(r.bytes, 2000u);
    EXPECT_EQ(r.target_bytes, 2000u);
    EXPECT_EQ(Tree(b.root()), (std::set<std::string>{"h4", "h3"}));
    EXPECT_EQ(b.Get(&Counters::hyd_bytes), 2000u);
    EXPECT_EQ(b.Get(&Counters::hyd_target), 2000u);
  }
  Node c(peers_, "c", base_, 1 << 20);
  HydrationReport r = c.sync().Hydrate(std::chrono::milliseconds(0), 1 << 20);
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.files, 0u);
  EXPECT_GT(r.target_bytes, 0u);
  EXPECT_TRUE(Tree(c.root()).empty());
}

TEST_F(DirCacheTest, CorruptBlobFromPeerLeavesNoFile) {
  Node a(peers_, "a", base_, 1 << 20), b(peers_, "b", base_, 1 << 20);
  std::string data = Bytes(50000, 'c');
  a.Write("victim", data);
  ASSERT_TRUE(a.WaitIndexed("victim", data));
  for (bool reported : {true, false}) {
    peers_.SetCorrupt("a", reported);
    b.sync().SyncOnce();
    EXPECT_TRUE(Tree(b.root()).empty()) << reported;
    EXPECT_FALSE(b.store().HasDigest(store::Digest::Of(data))) << reported;
  }
  EXPECT_EQ(b.Get(&Counters::failed), 2u);
  // The wanted entry is still outstanding: the lag counts from when it was first listed.
  EXPECT_GT(b.Lag(), 0.0);
  // Recovered peer: the next round gets the file.
  MemoryPeers healthy;
  Node c(healthy, "c", base_, 1 << 20);
  healthy.Add("a", {&a.sync(), &a.store()});
  c.sync().SyncOnce();
  EXPECT_EQ(ReadFile(c.root() / "victim"), data);
  EXPECT_EQ(c.Lag(), 0.0);
}

TEST_F(DirCacheTest, UnsafePathFromPeerIsRejected) {
  Node b(peers_, "b", base_, 1 << 20);
  ManifestEntry e;
  e.path = "../escape";
  e.size = 1;
  e.digest = store::Digest::Of("x");
  EXPECT_EQ(b.cache().Classify(e), DirectoryCache::Plan::kRejected);
  Status s = b.cache().Pull(e, [](const auto& sink) { return sink("x"); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(base_ / "escape"));
}

// Runs fn on a thread whose file-system uid is `uid`: without CAP_DAC_OVERRIDE, as a non-root
// pod (or the agent, which runs without capabilities) meets file permissions. The fsuid is per
// thread, so the rest of the test keeps root's.
void AsFsUid(uid_t uid, const std::function<void()>& fn) {
  std::thread t([&] {
    ::syscall(SYS_setfsuid, uid);
    ASSERT_EQ(static_cast<uid_t>(::syscall(SYS_setfsuid, -1)), uid);
    fn();
  });
  t.join();
}

// A directory outside every cache root holding what an attacker would like to read or write.
fs::path MakeOutside(const fs::path& base) {
  fs::path outside = base / "outside";
  fs::create_directories(outside / "dir");
  std::ofstream(outside / "secret.txt") << "SECRET OUTSIDE THE ROOT";
  return outside;
}

TEST_F(DirCacheTest, DirectoryMovedToAnIgnoredNameAndReplacedByALinkLeaksNothing) {
  // The attack: rename a watched sub-directory to an ignored name (its watch keeps reporting
  // under the old name), put a symlink to an outside directory in its place, and write into the
  // renamed directory a file named like one outside.
  fs::path outside = MakeOutside(base_);
  Node a(peers_, "a", base_, 1 << 20), b(peers_, "b", base_, 1 << 20);
  a.Write("sub/seed", "seed");
  ASSERT_TRUE(a.WaitIndexed("sub/seed", "seed"));  // sub is watched by now
  fs::rename(a.root() / "sub", a.root() / "sub.tmp");
  fs::create_directory_symlink(outside, a.root() / "sub");
  a.Write("sub.tmp/secret.txt", "decoy");
  a.Write("sub.tmp/dir/x", "decoy");
  // Settles after the attacker's files (events in order, indexed in path order): once it is
  // listed, they were decided.
  a.Write("zz-marker", "marker");
  ASSERT_TRUE(a.WaitIndexed("zz-marker", "marker"));
  a.cache().Rescan();
  a.cache().ProcessDue();

  store::Digest secret = store::Digest::Of("SECRET OUTSIDE THE ROOT");
  for (const ManifestEntry& e : a.cache().GetManifest(0).entries) {
    EXPECT_FALSE(e.path.starts_with("sub/")) << e.path;
    EXPECT_NE(e.digest, secret) << e.path;
  }
  EXPECT_FALSE(a.store().HasDigest(secret));
  EXPECT_FALSE(a.store().Open("dir/cache/sub/secret.txt").ok());
  // Nor served to a peer: the peer's sync pulls only what was listed.
  b.sync().SyncOnce();
  EXPECT_FALSE(b.store().HasDigest(secret));
  EXPECT_FALSE(fs::exists(b.root() / "sub"));
  EXPECT_EQ(Tree(b.root()), std::set<std::string>{"zz-marker"});
  EXPECT_EQ(ReadFile(outside / "secret.txt"), "SECRET OUTSIDE THE ROOT");
}

TEST_F(DirCacheTest, DirectoryMovedWithinTheTreeIsWatchedUnderItsNewName) {
  Node a(peers_, "a", base_, 1 << 20);
  a.Write("old/seed", "seed");
  ASSERT_TRUE(a.WaitIndexed("old/seed", "seed"));
  fs::rename(a.root() / "old", a.root() / "new");
  ASSERT_TRUE(a.WaitIndexed("new/seed", "seed"));
  a.Write("new/later", "later");  // reported by the moved directory's watch: under "new"
  ASSERT_TRUE(a.WaitIndexed("new/later", "later"));
  EXPECT_FALSE(a.Listed("old/seed"));
  EXPECT_FALSE(a.Listed("old/later"));
}

TEST_F(DirCacheTest, PullWhoseParentIsSwappedForALinkWritesNothingOutside) {
  // The attack: between the agent making the parent directories of a pulled file and creating
  // the file in them, a pod replaces a parent with a symlink to a directory outside the root.
  fs::path outside = MakeOutside(base_);
  Node a(peers_, "a", base_, 1 << 20);
  std::string data = Bytes(20000, 'p');
  a.Write("deep/dir/file.bin", data);
  ASSERT_TRUE(a.WaitIndexed("deep/dir/file.bin", data));
  fs::path b_root = base_ / "b";
  int swaps = 0;
  Node b(peers_, "b", base_, 1 << 20, std::chrono::milliseconds(60000), false,
         [&](DirectoryCacheOptions& o) {
           o.test_after_parents = [&] {
             ++swaps;
             fs::rename(b_root / "deep", b_root / "deep.moved");
             fs::create_directory_symlink(outside, b_root / "deep");
           };
         });
  b.sync().SyncOnce();
  EXPECT_EQ(swaps, 1);
  std::set<std::string> outside_files;
  for (const auto& e : fs::recursive_directory_iterator(outside)) {
    outside_files.insert(fs::relative(e.path(), outside).string());
  }
  EXPECT_EQ(outside_files, (std::set<std::string>{"dir", "secret.txt"}));
  // The file went where the directory went (still beneath the root), and is not listed under a
  // path that now leads outside.
  EXPECT_TRUE(ReadFile(b_root / "deep.moved/dir/file.bin") == data);
  EXPECT_FALSE(b.Listed("deep/dir/file.bin"));
}

TEST_F(DirCacheTest, PulledFilesAndDirectoriesAreUsableByNonRootPods) {
  fs::permissions(base_, fs::perms(0755));  // mkdtemp's 0700 would stop uid 1000 first
  Node a(peers_, "a", base_, 1 << 20), b(peers_, "b", base_, 1 << 20);
  a.Write("pip/http/ab/cd/entry", "wheel bytes", 0600);
  ASSERT_TRUE(a.WaitIndexed("pip/http/ab/cd/entry", "wheel bytes"));
  b.sync().SyncOnce();
  ASSERT_EQ(ReadFile(b.root() / "pip/http/ab/cd/entry"), "wheel bytes");
  EXPECT_EQ(fs::status(b.root()).permissions() & fs::perms::mask, fs::perms(0777));
  EXPECT_EQ(fs::status(b.root() / "pip/http/ab").permissions() & fs::perms::mask, fs::perms(0777));
  // A pod running as uid 1000 reads the pulled file, adds a file beside it and replaces it.
  AsFsUid(1000, [&] {
    int fd = ::open((b.root() / "pip/http/ab/cd/entry").c_str(), O_RDONLY);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    if (fd >= 0) {
      ::close(fd);
    }
    fd = ::open((b.root() / "pip/http/ab/cd/new").c_str(), O_WRONLY | O_CREAT, 0644);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    if (fd >= 0) {
      ::close(fd);
    }
    EXPECT_EQ(::rename((b.root() / "pip/http/ab/cd/new").c_str(),
                       (b.root() / "pip/http/ab/cd/entry").c_str()),
              0)
        << std::strerror(errno);
    fd = ::open((b.root() / "top").c_str(), O_WRONLY | O_CREAT, 0644);
    EXPECT_GE(fd, 0) << std::strerror(errno);
    if (fd >= 0) {
      ::close(fd);
    }
  });
}

// A cache without its watcher: the test drives Rescan and ProcessDue itself.
struct ManualCache {
  explicit ManualCache(const fs::path& root,
                       const std::function<void(DirectoryCacheOptions&)>& tweak = {}) {
    DirectoryCacheOptions o;
    o.name = "cache";
    o.root = root.string();
    o.settle = std::chrono::milliseconds(0);
    if (tweak) {
      tweak(o);
    }
    auto opened = DirectoryCache::Open(o, store);
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    cache = std::move(opened).value();
  }
  void CatchUp() {
    cache->Rescan();
    cache->ProcessDue();
  }
  store::MemoryStore store;
  std::unique_ptr<DirectoryCache> cache;
};

void WriteFile(const fs::path& p, const std::string& data, mode_t mode = 0644) {
  fs::create_directories(p.parent_path());
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::fchmod(fd, mode);
  ::close(fd);
}

TEST_F(DirCacheTest, ManifestComesInPagesAndSyncReadsThemAll) {
  auto small_pages = [](DirectoryCacheOptions& o) { o.manifest_page_entries = 3; };
  Node a(peers_, "a", base_, 1 << 20, std::chrono::milliseconds(60000), false, small_pages);
  Node b(peers_, "b", base_, 1 << 20, std::chrono::milliseconds(60000), false, small_pages);
  std::set<std::string> names;
  for (int i = 0; i < 10; ++i) {
    std::string rel = "d" + std::to_string(i % 3) + "/f" + std::to_string(i);
    a.Write(rel, "content " + std::to_string(i));
    names.insert(rel);
  }
  for (int i = 0; i < 10; ++i) {
    std::string rel = "d" + std::to_string(i % 3) + "/f" + std::to_string(i);
    ASSERT_TRUE(a.WaitIndexed(rel, "content " + std::to_string(i)));
  }
  Manifest first = a.cache().GetManifest(0);
  EXPECT_EQ(first.entries.size(), 3u);
  EXPECT_TRUE(first.more);
  std::set<std::string> listed;
  Manifest page = first;
  for (int i = 0; i < 10; ++i) {
    for (const ManifestEntry& e : page.entries) {
      listed.insert(e.path);
    }
    if (!page.more) {
      break;
    }
    page = a.cache().GetManifest(0, page.generation);
  }
  EXPECT_FALSE(page.more);
  EXPECT_EQ(listed, names);

  b.sync().SyncOnce();
  EXPECT_EQ(Tree(b.root()), names);
  // Incremental pages too: four more files, one round.
  for (int i = 10; i < 14; ++i) {
    a.Write("e/f" + std::to_string(i), "more " + std::to_string(i));
    names.insert("e/f" + std::to_string(i));
  }
  for (int i = 10; i < 14; ++i) {
    ASSERT_TRUE(a.WaitIndexed("e/f" + std::to_string(i), "more " + std::to_string(i)));
  }
  b.sync().SyncOnce();
  EXPECT_EQ(Tree(b.root()), names);
}

TEST_F(DirCacheTest, DeletedEntriesArePrunedAndOlderCursorsGetAFullListing) {
  ManualCache m(base_ / "root", [](DirectoryCacheOptions& o) {
    o.deleted_retention = std::chrono::milliseconds(0);
  });
  WriteFile(base_ / "root/keep", "keep");
  WriteFile(base_ / "root/gone", "gone");
  m.CatchUp();
  uint64_t cursor = m.cache->GetManifest(0).generation;
  ASSERT_EQ(m.cache->live_files(), 2u);
  fs::remove(base_ / "root/gone");
  m.cache->Rescan();
  Manifest delta = m.cache->GetManifest(cursor);
  ASSERT_EQ(delta.entries.size(), 1u);
  EXPECT_TRUE(delta.entries[0].deleted);
  EXPECT_EQ(m.cache->tracked_entries(), 2u);

  EXPECT_EQ(m.cache->PruneDeleted(), 1u);
  EXPECT_EQ(m.cache->tracked_entries(), 1u);
  // The deletion is forgotten: a cursor from before it gets the live entries as a full listing.
  Manifest full = m.cache->GetManifest(cursor);
  EXPECT_TRUE(full.full);
  ASSERT_EQ(full.entries.size(), 1u);
  EXPECT_EQ(full.entries[0].path, "keep");
  EXPECT_FALSE(full.entries[0].deleted);
  // A cursor after it is answered incrementally.
  EXPECT_FALSE(m.cache->GetManifest(delta.generation).full);
  // The deletion itself is still remembered (not pulled back).
  ManifestEntry back{"gone", 4, 0644, store::Digest::Of("gone"), 0, false};
  EXPECT_EQ(m.cache->Classify(back), DirectoryCache::Plan::kDeleted);
}

TEST_F(DirCacheTest, PeerThatPrunedDeletionsIsReadAgainInFull) {
  auto prune_at_once = [](DirectoryCacheOptions& o) {
    o.deleted_retention = std::chrono::milliseconds(0);
  };
  Node a(peers_, "a", base_, 1 << 20, std::chrono::milliseconds(60000), false, prune_at_once);
  MemoryPeers only_a;
  only_a.Add("a", {&a.sync(), &a.store()});
  Node c(only_a, "c", base_, 1 << 20);
  a.Write("x", "x1");
  ASSERT_TRUE(a.WaitIndexed("x", "x1"));
  c.sync().SyncOnce();  // c's cursor is now a's generation
  ASSERT_EQ(ReadFile(c.root() / "x"), "x1");
  fs::remove(a.root() / "x");
  a.cache().Rescan();
  a.cache().PruneDeleted();
  a.Write("y", "y1");
  ASSERT_TRUE(a.WaitIndexed("y", "y1"));
  c.sync().SyncOnce();
  EXPECT_EQ(ReadFile(c.root() / "y"), "y1");
  EXPECT_EQ(ReadFile(c.root() / "x"), "x1");  // peers keep their copies
}

TEST_F(DirCacheTest, FilesThisAgentCannotReadAreSkippedWithARateLimitedWarning) {
  // A non-root pod writes its cache files with mode 0600; the agent runs without
  // CAP_DAC_OVERRIDE (as the operator deploys it), so it may not read them.
  ManualCache m(base_ / "root");
  WriteFile(base_ / "root/mine/a", "private a", 0600);
  WriteFile(base_ / "root/mine/b", "private b", 0600);
  WriteFile(base_ / "root/shared", "shared", 0644);
  for (const char* f : {"mine/a", "mine/b", "shared"}) {
    ASSERT_EQ(::chown((base_ / "root" / f).c_str(), 1000, 1000), 0);
  }
  fs::path log_path = base_ / "log";
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(log_fd, 0);
  log::SetOutputFd(log_fd);
  // And a pull into a directory a pod of uid 1000 made 0755: refused, and said so.
  fs::create_directories(base_ / "root/theirs");
  ASSERT_EQ(::chown((base_ / "root/theirs").c_str(), 1000, 1000), 0);
  ManifestEntry pulled{"theirs/f", 3, 0644, store::Digest::Of("abc"), 0, false};
  Status pull_status;
  AsFsUid(0xfffe, [&] {
    m.CatchUp();
    pull_status = m.cache->Pull(pulled, [](const auto& sink) { return sink("abc"); });
  });
  log::SetOutputFd(2);
  ::close(log_fd);
  EXPECT_FALSE(pull_status.ok());
  EXPECT_FALSE(fs::exists(base_ / "root/theirs/f"));

  std::string log_text = ReadFile(log_path);
  size_t lines = 0;
  for (size_t pos = 0;
       (pos = log_text.find("directory file not readable", pos)) != std::string::npos; ++pos) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log_text;  // two files skipped, one line
  EXPECT_NE(log_text.find("directory not writable for pulls"), std::string::npos) << log_text;
  EXPECT_NE(log_text.find("\"level\":\"warn\""), std::string::npos) << log_text;
  EXPECT_NE(log_text.find("mine/"), std::string::npos) << log_text;
  EXPECT_EQ(m.cache->live_files(), 1u);
  EXPECT_FALSE(m.store.HasDigest(store::Digest::Of("private a")));
}

// A started cache whose watcher is a ManualTreeWatcher and which has no watcher thread: the test
// reports changes as events and runs the watcher's rounds itself (Step), with no waiting at all.
struct SteppedCache {
  explicit SteppedCache(const fs::path& root) : root(root) {
    DirectoryCacheOptions o;
    o.name = "cache";
    o.root = root.string();
    o.settle = std::chrono::milliseconds(0);
    o.new_watcher = [this] {
      auto w = std::make_unique<ManualTreeWatcher>();
      watcher = w.get();
      return w;
    };
    o.watcher_thread = false;
    DirCacheObserver observer;
    observer.on_indexed = [this](const std::string&, uint64_t) { ++indexed; };
    auto opened = DirectoryCache::Open(o, store, observer);
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    cache = std::move(opened).value();
    EXPECT_TRUE(cache->Start().ok());
  }
  void Report(TreeEvent::Kind kind, const std::string& rel) {
    watcher->Push({kind, rel});
    cache->Step(std::chrono::milliseconds(0));
  }
  std::set<std::string> Live() {
    std::set<std::string> out;
    for (const ManifestEntry& e : cache->GetManifest(0).entries) {
      out.insert(e.path);
    }
    return out;
  }
  fs::path root;
  store::MemoryStore store;
  ManualTreeWatcher* watcher = nullptr;
  int indexed = 0;  // on_indexed calls (Step runs on the test's thread)
  std::unique_ptr<DirectoryCache> cache;
};

TEST_F(DirCacheTest, WatcherEventsDriveTheCacheStepByStep) {
  using Kind = TreeEvent::Kind;
  WriteFile(base_ / "root/old", "old");
  SteppedCache m(base_ / "root");
  EXPECT_EQ(m.watcher->watched(), std::set<std::string>{""});
  m.cache->Step(std::chrono::milliseconds(0));  // files found by Start's walk settle
  EXPECT_EQ(m.Live(), std::set<std::string>{"old"});

  // A directory moved in with a file already inside: watched, and its file found.
  WriteFile(base_ / "root/dir/inside", "inside");
  m.Report(Kind::kDirAdded, "dir");
  EXPECT_EQ(m.watcher->watched(), (std::set<std::string>{"", "dir"}));
  EXPECT_EQ(m.Live(), (std::set<std::string>{"old", "dir/inside"}));

  // Modified and not closed: not indexed, not even by a rescan; indexed once closed.
  WriteFile(base_ / "root/dir/inside", "rewritten");
  m.Report(Kind::kFileModified, "dir/inside");
  m.cache->Rescan();
  m.cache->ProcessDue();
  EXPECT_EQ(m.Live(), (std::set<std::string>{"old", "dir/inside"}));
  EXPECT_EQ(m.cache->GetManifest(0).entries.back().digest, store::Digest::Of("inside"));
  m.Report(Kind::kFileWritten, "dir/inside");
  EXPECT_EQ(m.cache->GetManifest(0).entries.back().digest, store::Digest::Of("rewritten"));

  // Events for ignored paths change nothing.
  WriteFile(base_ / "root/dir/x.tmp", "temporary");
  m.Report(Kind::kFileWritten, "dir/x.tmp");
  EXPECT_EQ(m.Live(), (std::set<std::string>{"old", "dir/inside"}));

  // A file deleted, then the whole directory gone: listed as deleted, watch dropped.
  fs::remove(base_ / "root/old");
  m.Report(Kind::kFileGone, "old");
  EXPECT_EQ(m.Live(), std::set<std::string>{"dir/inside"});
  fs::remove_all(base_ / "root/dir");
  m.Report(Kind::kDirGone, "dir");
  EXPECT_TRUE(m.Live().empty());
  EXPECT_EQ(m.watcher->watched(), std::set<std::string>{""});
  EXPECT_EQ(m.cache->live_files(), 0u);

  // Lost events: the next round walks the tree.
  WriteFile(base_ / "root/unseen", "written while events were lost");
  m.Report(Kind::kOverflow, "");
  EXPECT_EQ(m.Live(), std::set<std::string>{"unseen"});
}

TEST_F(DirCacheTest, SameContentSeenAgainKeepsItsGeneration) {
  using Kind = TreeEvent::Kind;
  SteppedCache m(base_ / "root");
  WriteFile(base_ / "root/touched", "same bytes");
  m.Report(Kind::kFileWritten, "touched");
  ASSERT_EQ(m.indexed, 1);
  uint64_t cursor = m.cache->GetManifest(0).generation;
  // A tool marks use by setting the mtime (Go's cache does): read again, not listed again.
  struct timespec ts[2] = {{1'700'000'000, 0}, {1'700'000'000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (base_ / "root/touched").c_str(), ts, 0), 0);
  m.Report(Kind::kFileWritten, "touched");
  EXPECT_TRUE(m.cache->GetManifest(cursor).entries.empty());
  EXPECT_EQ(m.indexed, 1);

  // A pulled file takes one generation; the watcher's event for it adds none (the same rule).
  ManifestEntry e{"pulled/f", 6, 0644, store::Digest::Of("pulled"), 0, false};
  ASSERT_TRUE(m.cache->Pull(e, [](const auto& sink) { return sink("pulled"); }).ok());
  Manifest after_pull = m.cache->GetManifest(cursor);
  ASSERT_EQ(after_pull.entries.size(), 1u);
  EXPECT_EQ(after_pull.entries[0].path, "pulled/f");
  m.Report(Kind::kDirAdded, "pulled");
  m.Report(Kind::kFileWritten, "pulled/f");
  ASSERT_TRUE(m.cache->GetManifest(after_pull.generation).entries.empty());
  // New content at a path is a change.
  WriteFile(base_ / "root/touched", "other bytes");
  m.Report(Kind::kFileWritten, "touched");
  Manifest changed = m.cache->GetManifest(after_pull.generation);
  ASSERT_EQ(changed.entries.size(), 1u);
  EXPECT_EQ(changed.entries[0].digest, store::Digest::Of("other bytes"));
}

}  // namespace
}  // namespace buildcache::dircache
