#pragma once

#include <set>
#include <string>
#include <vector>

#include "agent/dircache/tree_watcher.h"
#include "common/base/thread_annotations.h"

namespace buildcache::dircache {

// TreeWatcher for tests: reports exactly the events pushed with Push, in order, and records which
// directories are watched. With it (and DirectoryCacheOptions::watcher_thread false) a test
// drives a directory cache step by step (DirectoryCache::Step) instead of waiting for inotify and
// a watcher thread. Thread-safe.
class ManualTreeWatcher : public TreeWatcher {
 public:
  // Queues an event and wakes a Wait in progress. A kDirGone drops the watches of the directory
  // and those below it, as inotify's implementation does.
  void Push(TreeEvent event);
  // Directories watched now, relative to the root ("" is the root).
  std::set<std::string> watched();

  bool Watch(const std::string& rel, int dir_fd) override;
  // Returns the queued events; when none are queued, waits up to timeout for one (or Wake).
  void Wait(std::chrono::milliseconds timeout, std::vector<TreeEvent>* events) override;
  void Wake() override;

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<TreeEvent> queued_ GUARDED_BY(mu_);
  std::set<std::string> watched_ GUARDED_BY(mu_);
  bool woken_ GUARDED_BY(mu_) = false;
};

}  // namespace buildcache::dircache
