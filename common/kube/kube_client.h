#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>

#include "common/kube/api_error.h"
#include "common/kube/resource.h"
#include "common/status/status.h"

namespace buildcache::kube {

struct ListOptions {
  std::string label_selector{};  // "app=x,tier!=db"
  std::string field_selector{};  // "metadata.name=x"
  // "" (the default) reads the latest state (a quorum read); "0" accepts any cached state.
  std::string resource_version{};
  int64_t limit = 0;             // page size; 0 for no paging
  std::string continue_token{};  // from the previous page's metadata.continue
};

struct WatchOptions {
  std::string label_selector{};
  std::string field_selector{};
  // Events after this version; "" starts with synthetic ADDED events for every current object.
  std::string resource_version{};
  bool allow_bookmarks = true;
  // The server ends the watch after this long (0: the server's default). The client waits a
  // minute longer than this for data before it gives up on a silent connection.
  int64_t timeout_seconds = 300;
};

enum class WatchEventType { kAdded, kModified, kDeleted, kBookmark };
std::string_view WatchEventTypeName(WatchEventType type);

struct WatchEvent {
  WatchEventType type{};
  Json object{};  // for bookmarks, only apiVersion, kind and metadata.resourceVersion
};
// Returns false to end the watch.
using WatchHandler = std::function<bool(const WatchEvent& event)>;

struct ApplyOptions {
  std::string field_manager{};  // required by server-side apply
  bool force = false;           // take ownership of fields other managers own
};

struct DeleteOptions {
  std::string propagation_policy{};  // "", "Foreground", "Background", "Orphan"
  std::string precondition_uid{};    // only delete this incarnation of the object
  std::string precondition_resource_version{};
  std::optional<int64_t> grace_period_seconds{};
};

// A client of the Kubernetes API. Objects are JSON documents as the server sends them; `ns` is
// the namespace ("" for cluster-scoped resources, or all namespaces in List/Watch). Errors the
// server returns are Statuses built by ApiErrorStatus (IsNotFound, IsConflict, ... tell them
// apart; GetApiError gives the details); transport failures are kUnavailable or
// kDeadlineExceeded. Implementations are thread-safe.
class KubeClient {
 public:
  virtual ~KubeClient() = default;

  // Reads one object (or one subresource, like "status").
  virtual Result<Json> Get(const Resource& resource, const std::string& ns, const std::string& name,
                           const std::string& subresource = "") = 0;

  // Reads one page of a collection: {"metadata": {"resourceVersion", "continue"}, "items": [...]}.
  virtual Result<Json> List(const Resource& resource, const std::string& ns,
                            const ListOptions& options = {}) = 0;

  // Creates an object in metadata.namespace (for namespaced resources). Returns it as stored.
  virtual Result<Json> Create(const Resource& resource, const Json& object) = 0;

  // Replaces an object (PUT). With metadata.resourceVersion set, fails with a conflict
  // (IsConflict) if the stored object has changed since. subresource "status" replaces only the
  // status (the spec in `object` is ignored), and the main resource ignores status changes when
  // the resource has a status subresource.
  virtual Result<Json> Update(const Resource& resource, const Json& object,
                              const std::string& subresource = "") = 0;

  // Applies an RFC 7386 JSON merge patch (null deletes a field; lists are replaced whole).
  virtual Result<Json> MergePatch(const Resource& resource, const std::string& ns,
                                  const std::string& name, const Json& patch,
                                  const std::string& subresource = "") = 0;

  // Server-side apply: `object` (with apiVersion, kind, metadata.name) states the fields the
  // field manager owns; the server merges them and creates the object if needed. Fails with a
  // conflict (IsConflict) when another manager owns a field with a different value, unless
  // options.force.
  virtual Result<Json> Apply(const Resource& resource, const Json& object,
                             const ApplyOptions& options, const std::string& subresource = "") = 0;

  // Deletes an object. NotFound when it does not exist. Returns OK once the server accepted the
  // deletion (finalizers may keep the object around for a while).
  virtual Status Delete(const Resource& resource, const std::string& ns, const std::string& name,
                        const DeleteOptions& options = {}) = 0;

  // Watches a collection, calling on_event for each event until: the server ends the watch
  // (timeout_seconds; returns OK), on_event returns false (OK), stop is requested (kCancelled),
  // the connection fails (kUnavailable/kDeadlineExceeded), or the server sends an ERROR event,
  // which becomes the returned Status (with 410 "too old resource version", IsGone is true: the
  // caller must list again). on_event runs on the calling thread.
  virtual Status Watch(const Resource& resource, const std::string& ns, const WatchOptions& options,
                       const WatchHandler& on_event, std::stop_token stop = {}) = 0;
};

}  // namespace buildcache::kube
