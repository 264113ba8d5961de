#include "agent/dircache/directory_sync.h"

#include <algorithm>
#include <set>
#include <utility>

#include "common/log/log.h"

namespace buildcache::dircache {
namespace {

using Clock = std::chrono::steady_clock;

// Pages read from one peer for one directory in one round (10,000 entries each by default).
constexpr int kMaxManifestPages = 10'000;

}  // namespace

DirectorySync::DirectorySync(store::BlobStore& store, DirectorySyncOptions options,
                             DirCacheObserver observer)
    : store_(store), options_(options), observer_(std::move(observer)) {}

DirectorySync::~DirectorySync() { Stop(); }

Status DirectorySync::Add(DirectoryCacheOptions options) {
  if (Find(options.name) != nullptr) {
    return InvalidArgument("directory cache " + options.name + ": name used twice");
  }
  BC_ASSIGN_OR_RETURN(auto cache, DirectoryCache::Open(std::move(options), store_, observer_));
  caches_.push_back(std::move(cache));
  return Status::Ok();
}

Status DirectorySync::StartWatching() {
  for (auto& cache : caches_) {
    BC_RETURN_IF_ERROR(cache->Start());
  }
  return Status::Ok();
}

void DirectorySync::SetPeers(PeerDirectory* peers) { peers_ = peers; }

DirectoryCache* DirectorySync::Find(std::string_view name) {
  for (auto& cache : caches_) {
    if (cache->name() == name) {
      return cache.get();
    }
  }
  return nullptr;
}

Result<Manifest> DirectorySync::GetManifest(std::string_view directory, uint64_t since,
                                            uint64_t listing_after) {
  DirectoryCache* cache = Find(directory);
  if (cache == nullptr) {
    return NotFound("no directory cache named " + std::string(directory));
  }
  return cache->GetManifest(since, listing_after);
}

void DirectorySync::StartSync() {
  MutexLock lock(stop_mu_);
  if (stopping_ || sync_thread_.joinable() || caches_.empty()) {
    return;
  }
  sync_thread_ = std::thread([this] {
    while (!stopping_) {
      SyncOnce();
      MutexLock lock(stop_mu_);
      auto deadline = Clock::now() + options_.sync_interval;
      while (!stopping_ && stop_cv_.WaitUntil(stop_mu_, deadline)) {
      }
    }
  });
}

void DirectorySync::Stop() {
  {
    MutexLock lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.NotifyAll();
  std::thread sync;
  {
    MutexLock lock(stop_mu_);
    sync = std::move(sync_thread_);
  }
  if (sync.joinable()) {
    sync.join();
  }
  for (auto& cache : caches_) {
    cache->Stop();
  }
}

std::vector<std::string> DirectorySync::RefreshManifests(bool full) {
  PeerDirectory* peers = peers_.load();
  if (peers == nullptr) {
    return {};
  }
  std::vector<std::string> live = peers->LivePeers();
  std::set<std::string> live_set(live.begin(), live.end());
  {
    MutexLock lock(remotes_mu_);
    for (auto it = remotes_.begin(); it != remotes_.end();) {
      it = live_set.count(it->first.first) > 0 ? std::next(it) : remotes_.erase(it);
    }
  }
  for (const std::string& peer : live) {
    for (auto& cache : caches_) {
      RefreshOne(*peers, peer, *cache, full);
    }
  }
  return live;
}

void DirectorySync::RefreshOne(PeerDirectory& peers, const std::string& peer, DirectoryCache& cache,
                               bool full) {
  auto key = std::make_pair(peer, cache.name());
  uint64_t cursor = 0;
  if (!full) {
    MutexLock lock(remotes_mu_);
    auto it = remotes_.find(key);
    if (it != remotes_.end()) {
      cursor = it->second.cursor;
    }
  }
  // A listing (cursor 0, or the peer answered with a full one) replaces what was known of the
  // peer; it is read page by page after `after`. Bounded: a peer that keeps answering "more"
  // without moving forward is left for the next round.
  bool listing = cursor == 0;
  uint64_t after = 0;
  bool restarted = false;
  for (int page = 0; page < kMaxManifestPages && !stopping_; ++page) {
    Result<Manifest> m =
        peers.GetManifest(peer, cache.name(), listing ? 0 : cursor, listing ? after : 0);
    if (m.ok() && !listing && !m->full && m->generation < cursor && !restarted) {
      // The peer's generations went back (its clock did): start over with everything.
      listing = true;
      after = 0;
      restarted = true;
      --page;
      continue;
    }
    if (!m.ok()) {
      if (m.status().code() != StatusCode::kNotFound) {
        log::Warn("peer manifest unavailable", {{"peer", peer},
                                                {"directory", cache.name()},
                                                {"page", page},
                                                {"error", m.status().ToString()}});
      }
      return;  // the cursor stays where the last applied page left it
    }
    bool first_of_listing = (listing && after == 0) || m->full;
    if (m->full) {
      listing = true;
    }
    uint64_t from = listing ? after : cursor;
    if (m->more && m->generation <= from) {
      log::Warn("peer manifest page does not advance",
                {{"peer", peer}, {"directory", cache.name()}, {"generation", m->generation}});
      return;
    }
    ApplyPage(key, cache.name(), *m, first_of_listing);
    if (!m->more) {
      MutexLock lock(remotes_mu_);
      remotes_[key].cursor = m->generation;
      return;
    }
    if (listing) {
      after = m->generation;
    } else {
      cursor = m->generation;
      MutexLock lock(remotes_mu_);
      remotes_[key].cursor = cursor;  // incremental pages are safe to resume from
    }
  }
}

void DirectorySync::ApplyPage(const std::pair<std::string, std::string>& key,
                              const std::string& dir, Manifest& m, bool replace) {
  auto now = Clock::now();
  MutexLock lock(remotes_mu_);
  Remote& remote = remotes_[key];
  if (replace) {
    remote.entries.clear();
    remote.cursor = 0;  // until the listing's last page arrives
  }
  for (ManifestEntry& e : m.entries) {
    if (e.deleted) {
      auto it = remote.entries.find(e.path);
      if (it != remote.entries.end() && it->second.digest == e.digest) {
        remote.entries.erase(it);
      }
      first_seen_.erase({dir, e.path, e.digest});
      continue;
    }
    first_seen_.try_emplace({dir, e.path, e.digest}, now);
    std::string path = e.path;
    remote.entries[path] = std::move(e);
  }
}

std::vector<DirectorySync::Wanted> DirectorySync::Plan(DirectoryCache& cache) {
  // path -> (holder, entry) over every peer listing this directory.
  std::map<std::string, std::vector<std::pair<std::string, ManifestEntry>>> by_path;
  {
    MutexLock lock(remotes_mu_);
    for (const auto& [key, remote] : remotes_) {
      if (key.second != cache.name()) {
        continue;
      }
      for (const auto& [path, e] : remote.entries) {
        by_path[path].emplace_back(key.first, e);
      }
    }
  }
  std::vector<Wanted> wanted;
  for (auto& [path, holders] : by_path) {
    std::sort(holders.begin(), holders.end(), [](const auto& a, const auto& b) {
      return a.second.last_use_unix_ms > b.second.last_use_unix_ms;
    });
    const ManifestEntry& best = holders.front().second;
    DirectoryCache::Plan plan = cache.Classify(best);
    if (plan == DirectoryCache::Plan::kConflict) {
      cache.NoteConflict(best);
    }
    if (plan != DirectoryCache::Plan::kPull) {
      // Not wanted (here already, conflicting, deleted here): not part of the lag.
      MutexLock lock(remotes_mu_);
      first_seen_.erase({cache.name(), best.path, best.digest});
      continue;
    }
    Wanted w{&cache, best, {}};
    for (const auto& [peer, e] : holders) {
      if (e.digest == best.digest && e.size == best.size) {
        w.peers.push_back(peer);
      }
    }
    wanted.push_back(std::move(w));
  }
  std::sort(wanted.begin(), wanted.end(), [](const Wanted& a, const Wanted& b) {
    return a.entry.last_use_unix_ms > b.entry.last_use_unix_ms;
  });
  return wanted;
}

bool DirectorySync::PullFromPeers(const Wanted& w, const std::function<bool()>& cancelled) {
  PeerDirectory* peers = peers_.load();
  const std::string& dir = w.cache->name();
  Status last = Unavailable("no peer holds it");
  for (const std::string& peer : w.peers) {
    auto fetch = [&](const std::function<Status(std::string_view)>& sink) {
      return peers->FetchBlob(peer, w.entry.digest, w.entry.size, sink);
    };
    last = w.cache->Pull(w.entry, fetch, cancelled);
    if (last.ok() || last.code() == StatusCode::kAlreadyExists) {
      return true;
    }
    switch (last.code()) {
      case StatusCode::kNotFound:
      case StatusCode::kUnavailable:
      case StatusCode::kDeadlineExceeded:
        continue;  // try the next holder
      case StatusCode::kDataLoss:
        log::Warn("peer sent corrupt directory file", {{"directory", dir},
                                                       {"path", w.entry.path},
                                                       {"peer", peer},
                                                       {"error", last.ToString()}});
        continue;
      default:
        break;  // local reasons (conflict, cancelled, disk): no other peer helps
    }
    break;
  }
  if (last.code() != StatusCode::kCancelled && last.code() != StatusCode::kFailedPrecondition) {
    log::Warn("directory file not pulled",
              {{"directory", dir}, {"path", w.entry.path}, {"error", last.ToString()}});
    if (observer_.on_pull_failed) {
      observer_.on_pull_failed(dir);
    }
  }
  return false;
}

size_t DirectorySync::PullAll(const std::vector<const Wanted*>& items,
                              const std::function<bool()>& cancelled,
                              const std::function<void(const Wanted&, bool)>& done) {
  std::atomic<size_t> next{0};
  std::atomic<size_t> tried{0};
  Mutex done_mu;
  auto work = [&] {
    for (size_t i = next++; i < items.size(); i = next++) {
      if (stopping_ || cancelled()) {
        return;
      }
      ++tried;
      bool ok = PullFromPeers(*items[i], cancelled);
      MutexLock lock(done_mu);
      done(*items[i], ok);
    }
  };
  size_t n = std::min<size_t>(std::max(options_.parallel_pulls, 1), items.size());
  std::vector<std::thread> workers;
  for (size_t i = 1; i < n; ++i) {
    workers.emplace_back(work);
  }
  work();
  for (std::thread& t : workers) {
    t.join();
  }
  return tried.load();
}

std::vector<const DirectorySync::Wanted*> DirectorySync::Choose(const std::vector<Wanted>& wanted,
                                                                uint64_t max_bytes,
                                                                uint64_t* planned_bytes) {
  std::map<DirectoryCache*, uint64_t> room;
  for (auto& cache : caches_) {
    uint64_t max = cache->options().max_size;
    uint64_t used = cache->used_bytes();
    room[cache.get()] = max == 0 ? UINT64_MAX : (used >= max ? 0 : max - used);
  }
  std::vector<const Wanted*> chosen;
  uint64_t planned = 0;
  for (const Wanted& w : wanted) {
    uint64_t& free = room[w.cache];
    if (w.entry.size > free || w.entry.size > max_bytes - planned) {
      continue;
    }
    free -= w.entry.size;
    planned += w.entry.size;
    chosen.push_back(&w);
  }
  *planned_bytes = planned;
  return chosen;
}

void DirectorySync::SyncOnce() {
  MutexLock round(round_mu_);
  if (peers_.load() == nullptr) {
    return;
  }
  RefreshManifests(/*full=*/false);
  for (auto& cache : caches_) {
    if (stopping_) {
      return;
    }
    std::vector<Wanted> wanted = Plan(*cache);
    uint64_t planned = 0;
    std::vector<const Wanted*> chosen = Choose(wanted, UINT64_MAX, &planned);
    auto oldest = Clock::time_point::max();
    PullAll(
        chosen, [] { return false; },
        [&](const Wanted& w, bool ok) {
          MutexLock lock(remotes_mu_);
          auto key = std::make_tuple(cache->name(), w.entry.path, w.entry.digest);
          if (ok) {
            first_seen_.erase(key);
            return;
          }
          auto it = first_seen_.find(key);
          if (it != first_seen_.end()) {
            oldest = std::min(oldest, it->second);
          }
        });
    double lag = oldest == Clock::time_point::max()
                     ? 0.0
                     : std::chrono::duration<double>(Clock::now() - oldest).count();
    if (observer_.on_sync_lag) {
      observer_.on_sync_lag(cache->name(), lag);
    }
  }
}

HydrationReport DirectorySync::Hydrate(std::chrono::milliseconds max_time, uint64_t max_size) {
  MutexLock round(round_mu_);
  HydrationReport report;
  if (stopping_) {
    return report;
  }
  auto deadline = Clock::now() + max_time;
  std::vector<std::string> live = RefreshManifests(/*full=*/true);
  report.peers = live.size();

  std::vector<Wanted> all;
  for (auto& cache : caches_) {
    for (Wanted& w : Plan(*cache)) {
      all.push_back(std::move(w));
    }
  }
  std::stable_sort(all.begin(), all.end(), [](const Wanted& a, const Wanted& b) {
    return a.entry.last_use_unix_ms > b.entry.last_use_unix_ms;
  });
  std::vector<const Wanted*> chosen = Choose(all, max_size, &report.target_bytes);
  log::Info("hydration started", {{"peers", live.size()},
                                  {"files", chosen.size()},
                                  {"target_bytes", report.target_bytes},
                                  {"max_bytes", max_size},
                                  {"max_time_ms", static_cast<int64_t>(max_time.count())}});
  if (observer_.on_hydration) {
    observer_.on_hydration(0, 0, report.target_bytes);
  }
  auto cancelled = [this, deadline] { return stopping_.load() || Clock::now() >= deadline; };
  size_t tried = PullAll(chosen, cancelled, [&](const Wanted& w, bool ok) {
    if (ok) {
      ++report.files;
      report.bytes += w.entry.size;
    } else {
      ++report.failed;
    }
    if (observer_.on_hydration) {
      observer_.on_hydration(report.files, report.bytes, report.target_bytes);
    }
    if ((report.files + report.failed) % 64 == 0) {
      log::Info("hydration progress", {{"files", report.files},
                                       {"bytes", report.bytes},
                                       {"target_bytes", report.target_bytes}});
    }
  });
  report.complete = tried == chosen.size() && !cancelled();
  log::Write(report.complete ? log::Level::kInfo : log::Level::kWarn,
             report.complete ? "hydration finished" : "hydration stopped at its bound",
             {{"files", report.files},
              {"bytes", report.bytes},
              {"target_bytes", report.target_bytes},
              {"failed", report.failed},
              {"peers", live.size()}});
  return report;
}

}  // namespace buildcache::dircache
