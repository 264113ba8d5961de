#include "agent/dircache/manual_watcher.h"

namespace buildcache::dircache {

void ManualTreeWatcher::Push(TreeEvent event) {
  MutexLock lock(mu_);
  if (event.kind == TreeEvent::Kind::kDirGone) {
    std::string prefix = event.rel + "/";
    for (auto it = watched_.begin(); it != watched_.end();) {
      it = (*it == event.rel || it->starts_with(prefix)) ? watched_.erase(it) : std::next(it);
    }
  }
  queued_.push_back(std::move(event));
  cv_.NotifyAll();
}

std::set<std::string> ManualTreeWatcher::watched() {
  MutexLock lock(mu_);
  return watched_;
}

bool ManualTreeWatcher::Watch(const std::string& rel, int /*dir_fd*/) {
  MutexLock lock(mu_);
  watched_.insert(rel);
  return true;
}

void ManualTreeWatcher::Wait(std::chrono::milliseconds timeout, std::vector<TreeEvent>* events) {
  MutexLock lock(mu_);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (queued_.empty() && !woken_ && cv_.WaitUntil(mu_, deadline)) {
  }
  woken_ = false;
  for (TreeEvent& e : queued_) {
    events->push_back(std::move(e));
  }
  queued_.clear();
}

void ManualTreeWatcher::Wake() {
  MutexLock lock(mu_);
  woken_ = true;
  cv_.NotifyAll();
}

}  // namespace buildcache::dircache
