#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "common/base/thread_annotations.h"
#include "common/kube/backoff.h"
#include "common/kube/kube_client.h"

namespace buildcache::kube {

// Callbacks for changes to the watched objects. Each may be empty. They run on the informer's
// thread, one at a time and in the order the changes happened, so they should be quick (put a key
// on a WorkQueue and return) and must not call AddEventHandlers.
struct EventHandlers {
  std::function<void(const Json& object)> on_add{};
  std::function<void(const Json& old_object, const Json& new_object)> on_update{};
  // The object's last state (from the DELETED event, or the cache when a re-list found it gone).
  std::function<void(const Json& object)> on_delete{};
};

struct InformerOptions {
  std::string ns{};  // "" for all namespaces (or a cluster-scoped resource)
  std::string label_selector{};
  std::string field_selector{};
  int64_t page_size = 500;
  // Each watch asks the server to end it after a random time in [min, 2*min), so that many
  // clients do not reconnect together.
  std::chrono::seconds min_watch_timeout{300};
  // Retrying failed lists and watches.
  BackoffOptions backoff{};
};

struct InformerStats {
  uint64_t lists = 0;     // complete (all pages) lists
  uint64_t watches = 0;   // watch requests started
  uint64_t expired = 0;   // 410 Gone answers that made it list again
  uint64_t failures = 0;  // failed lists and watches (retried with backoff)
};

// A local cache of one kind of object, kept current by list + watch, like client-go's shared
// informer: it lists (in pages), then watches from the list's resourceVersion with bookmarks,
// reconnects from the last version it saw when a watch ends, and lists again from scratch when
// the server says that version is too old (410 Gone, as an HTTP status or an ERROR event).
// Failures, and watches that end within a second without an event, are retried with backoff.
// Objects in the cache carry apiVersion and kind, also those that came from a list.
//
// Thread-safe. Stop (or the destructor) ends the background thread; Start after Stop resumes from
// the cached version.
class Informer {
 public:
  Informer(KubeClient* client, Resource resource, InformerOptions options = {});
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Adds handlers. Added after objects are cached, they first get on_add for each of them.
  void AddEventHandlers(EventHandlers handlers);

  void Start();
  void Stop();

  // True once the first complete list is in the cache and the handlers have been called for it.
  bool HasSynced() const;
  // Waits up to timeout for HasSynced.
  bool WaitForSync(Duration timeout) const;

  // The cached object with this key ("namespace/name", or "name"), if any.
  std::optional<Json> Get(const std::string& key) const;
  std::vector<Json> List() const;
  std::vector<std::string> ListKeys() const;
  // The resourceVersion the cache reflects.
  std::string resource_version() const;
  InformerStats stats() const;

 private:
  using Object = std::shared_ptr<const Json>;

  void Run(std::stop_token stop);
  Status ListAndReplace(std::stop_token stop);
  // One watch from the cached version; counts the events it delivered in *events.
  Status WatchOnce(std::stop_token stop, uint64_t* events);
  void ApplyEvent(const WatchEvent& event);

  KubeClient* client_;
  const Resource resource_;
  const InformerOptions options_;

  // Held while the cache changes and its handlers run, so handlers see changes in order and
  // AddEventHandlers sees a consistent cache.
  Mutex dispatch_mu_ ACQUIRED_BEFORE(mu_);
  std::vector<EventHandlers> handlers_ GUARDED_BY(dispatch_mu_);

  mutable Mutex mu_;
  mutable CondVar synced_cv_;
  std::map<std::string, Object> objects_ GUARDED_BY(mu_);
  std::string resource_version_ GUARDED_BY(mu_);
  bool synced_ GUARDED_BY(mu_) = false;
  InformerStats stats_ GUARDED_BY(mu_);

  std::jthread thread_;
};

}  // namespace buildcache::kube
