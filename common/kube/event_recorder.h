#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/base/thread_annotations.h"
#include "common/kube/kube_client.h"

namespace buildcache::kube {

enum class EventType { kNormal, kWarning };

struct EventRecorderOptions {
  // reportingController: who reports ("buildcache.io/operator").
  std::string controller = "buildcache.io/operator";
  // reportingInstance: which replica (the pod name).
  std::string instance{};
  // An event identical to one recorded within this window (same object, type, reason, action and
  // note) is counted in that event's series instead of creating a new one.
  std::chrono::seconds series_window{std::chrono::minutes(10)};
  size_t max_tracked = 4096;  // identical-event tracking entries kept (least recent dropped)
  // At most `burst` writes (creates or series updates) per object, type and reason, refilled by
  // one every `refill_every` (client-go's spam filter: 25, 5 minutes). Callers that record what
  // untrusted requests cause (the webhook) cannot make the operator write unbounded Events.
  int burst = 25;
  std::chrono::seconds refill_every{std::chrono::minutes(5)};
  std::function<std::chrono::steady_clock::time_point()> clock = std::chrono::steady_clock::now;
};

// Records events.k8s.io/v1 Events about objects ("kubectl describe" and "kubectl events" show
// them), like client-go's event recorder: repeats of the same event within the series window
// update one Event's series (count, lastObservedTime) instead of piling up new ones.
// Writes are rate-limited per object, type and reason (EventRecorderOptions::burst); a
// limited Record writes nothing and returns kResourceExhausted.
// Thread-safe. Record makes one API request; callers that must not block on it (reconcilers
// should not) may ignore its Status, which is also logged.
class EventRecorder {
 public:
  EventRecorder(KubeClient* client, EventRecorderOptions options);

  // `object` must carry apiVersion, kind and metadata.name (and namespace and uid when it has
  // them); the Event goes to the object's namespace, or "default" for cluster-scoped objects.
  // reason is a short CamelCase word ("AgentsReady"), action what was done ("Reconcile"), note
  // a human-readable sentence (truncated to 1 KiB).
  Status Record(const Json& object, EventType type, std::string_view reason,
                std::string_view action, std::string_view note);

 private:
  struct Tracked {
    std::string ns{};
    std::string name{};
    int64_t count = 1;
    std::chrono::steady_clock::time_point first{};
    std::list<std::string>::iterator lru{};
  };

  Status CreateEvent(const Json& object, const std::string& key, EventType type,
                     std::string_view reason, std::string_view action, const std::string& note);

  KubeClient* client_;
  EventRecorderOptions options_;
  Mutex mu_;
  std::unordered_map<std::string, Tracked> tracked_ GUARDED_BY(mu_);
  std::list<std::string> lru_ GUARDED_BY(mu_);  // most recent first
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point last{};
  };
  // Whether a write for `key` (object, type, reason) may go out now; takes a token if so.
  bool TakeToken(const std::string& key) EXCLUDES(mu_);
  std::unordered_map<std::string, Bucket> buckets_ GUARDED_BY(mu_);
};

}  // namespace buildcache::kube
