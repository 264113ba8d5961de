#pragma once

#include <string>
#include <unordered_map>

#include "agent/dircache/tree_watcher.h"
#include "common/base/thread_annotations.h"
#include "common/fs/file.h"
#include "common/status/status.h"

namespace buildcache::dircache {

// TreeWatcher over Linux inotify. A directory is watched through its descriptor's /proc/self/fd
// name, so a symlink swapped in on its path cannot make it watch a directory elsewhere (without
// /proc, the path under `root` with IN_DONT_FOLLOW). When a watched directory is deleted or moved
// away its watches and those below it are removed before kDirGone is reported: events its old
// watch descriptors send afterwards are dropped instead of being reported under the old name,
// which may be a link by then. A queue overflow is reported as kOverflow.
//
// inotify itself drops events when its queue overflows and never sees a change made while no
// watch existed: the owner walks the tree after Watch and now and then (DirectoryCache does).
class InotifyTreeWatcher : public TreeWatcher {
 public:
  // `name` labels log lines; `root` is the absolute path of the tree (for the fallback above).
  static Result<std::unique_ptr<InotifyTreeWatcher>> Create(std::string name, std::string root);
  ~InotifyTreeWatcher() override = default;

  bool Watch(const std::string& rel, int dir_fd) override;
  // Drains at most 64 buffers of events (64 KiB each) per call, so a flood cannot starve the
  // owner's other work.
  void Wait(std::chrono::milliseconds timeout, std::vector<TreeEvent>* events) override;
  void Wake() override;

 private:
  InotifyTreeWatcher(std::string name, std::string root, fs::UniqueFd inotify, fs::UniqueFd wake)
      : name_(std::move(name)),
        root_(std::move(root)),
        inotify_(std::move(inotify)),
        wake_(std::move(wake)) {}
  void Translate(const char* buf, size_t len, std::vector<TreeEvent>* events);
  // Removes the watches of rel and every directory below it.
  void UnwatchTreeLocked(const std::string& rel) REQUIRES(mu_);

  const std::string name_;
  const std::string root_;
  const fs::UniqueFd inotify_;
  const fs::UniqueFd wake_;  // eventfd: Wake makes poll return
  Mutex mu_;
  std::unordered_map<int, std::string> watches_ GUARDED_BY(mu_);  // wd -> relative dir ("" root)
};

}  // namespace buildcache::dircache
