#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace buildcache::dircache {

// A change below a directory cache's root, as a TreeWatcher reports it. `rel` is relative to the
// root ('/'-separated, "" never: the root itself produces no events).
struct TreeEvent {
  enum class Kind {
    kFileWritten,   // a file closed after writing, or moved in: it may be complete
    kFileModified,  // a file written to and not closed yet
    kFileGone,      // a file deleted or moved away
    kDirAdded,      // a directory created or moved in: not watched yet
    kDirGone,       // a directory deleted or moved away; the watcher dropped its watches and
                    // those below it already (they would report under the old name)
    kOverflow,      // events were lost: only a walk of the tree can tell what changed
  };
  Kind kind;
  std::string rel;

  bool operator==(const TreeEvent&) const = default;
};

// Follows changes in a tree of directories, one directory at a time. The owner walks the tree
// and calls Watch for each directory; events come back from Wait in the order they happened.
// Implementations: InotifyTreeWatcher (Linux inotify) and ManualTreeWatcher (tests push events).
//
// Watch and Wait are called from one thread at a time (the directory cache's watcher thread, or
// before it starts); Wake from any thread.
class TreeWatcher {
 public:
  virtual ~TreeWatcher() = default;

  // Starts reporting events for the entries of the directory `rel` ("" is the root), which the
  // caller holds open as dir_fd (opened beneath the root: the watch follows that directory, not
  // whatever the path leads to later). Watching a directory twice is harmless. Returns false when
  // the directory is not watched (gone, or a failure the implementation logs).
  virtual bool Watch(const std::string& rel, int dir_fd) = 0;
  // Appends the events that arrive within `timeout` (at least the first batch; possibly none) to
  // *events. Returns early when Wake is called.
  virtual void Wait(std::chrono::milliseconds timeout, std::vector<TreeEvent>* events) = 0;
  // Makes the current or next Wait return at once. Thread-safe.
  virtual void Wake() = 0;
};

}  // namespace buildcache::dircache
