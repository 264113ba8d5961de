#include "common/kube/event_recorder.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>

#include "common/kube/kube_time.h"
#include "common/log/log.h"

namespace buildcache::kube {

namespace {

constexpr size_t kMaxNote = 1024;
constexpr size_t kMaxName = 253;

std::string Truncate(std::string_view text, size_t max) {
  if (text.size() <= max) return std::string(text);
  // Do not cut a UTF-8 sequence in half.
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return std::string(text.substr(0, end));
}

std::string DefaultInstance() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') return host;
  return "unknown";
}

// A name unique per object and moment: "<object>.<hex nanoseconds>" as client-go makes them.
std::string EventName(const std::string& object_name) {
  static std::atomic<uint64_t> counter{0};
  uint64_t nanos = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
  char suffix[40];
  std::snprintf(suffix, sizeof(suffix), ".%llx",
                static_cast<unsigned long long>(nanos) + counter++);
  std::string base = object_name.substr(0, kMaxName - std::string(suffix).size());
  return base + suffix;
}

}  // namespace

EventRecorder::EventRecorder(KubeClient* client, EventRecorderOptions options)
    : client_(client), options_(std::move(options)) {
  if (options_.instance.empty()) options_.instance = DefaultInstance();
}

Status EventRecorder::Record(const Json& object, EventType type, std::string_view reason,
                             std::string_view action, std::string_view note) {
  std::string name = NameOf(object);
  if (name.empty() || StringAt(object, {"kind"}).empty() ||
      StringAt(object, {"apiVersion"}).empty()) {
    return InvalidArgument("event: the object needs apiVersion, kind and metadata.name");
  }
  std::string text = Truncate(note, kMaxNote);
  std::string key = StringAt(object, {"apiVersion"}) + "|" + StringAt(object, {"kind"}) + "|" +
                    ObjectKey(object) + "|" + UidOf(object) + "|" +
                    (type == EventType::kNormal ? "Normal" : "Warning") + "|" +
                    std::string(reason) + "|" + std::string(action) + "|" + text;

  const std::string bucket = StringAt(object, {"apiVersion"}) + "|" + StringAt(object, {"kind"}) +
                             "|" + ObjectKey(object) + "|" + UidOf(object) + "|" +
                             (type == EventType::kNormal ? "Normal" : "Warning") + "|" +
                             std::string(reason);
  if (!TakeToken(bucket)) {
    log::Debug("event dropped by rate limit", {{"object", ObjectKey(object)}, {"reason", reason}});
    return ResourceExhausted("event rate limit reached for " + ObjectKey(object));
  }

  std::string event_ns, event_name;
  int64_t count = 0;
  {
    MutexLock lock(mu_);
    auto it = tracked_.find(key);
    auto now = std::chrono::steady_clock::now();
    if (it != tracked_.end() && now - it->second.first < options_.series_window) {
      event_ns = it->second.ns;
      event_name = it->second.name;
      count = ++it->second.count;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
    } else if (it != tracked_.end()) {
      lru_.erase(it->second.lru);
      tracked_.erase(it);
    }
  }
  if (!event_name.empty()) {
    Json patch = {{"series",
                   {{"count", count},
                    {"lastObservedTime", FormatMicroTime(std::chrono::system_clock::now())}}}};
    auto patched = client_->MergePatch(resources::kEvents, event_ns, event_name, patch);
    if (patched.ok()) return Status::Ok();
    if (!IsNotFound(patched.status())) {
      log::Warn("event update failed",
                {{"event", event_ns + "/" + event_name}, {"error", patched.status().ToString()}});
      return patched.status();
    }
    // The Event expired (events have a TTL): start a new one.
    MutexLock lock(mu_);
    auto it = tracked_.find(key);
    if (it != tracked_.end()) {
      lru_.erase(it->second.lru);
      tracked_.erase(it);
    }
  }
  return CreateEvent(object, key, type, reason, action, text);
}

bool EventRecorder::TakeToken(const std::string& key) {
  const auto now = options_.clock();
  MutexLock lock(mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    // Bounded like the series tracking; the keys are objects that exist (and their reasons), so
    // a full map means thousands of them, and forgetting a bucket only forgets a limit.
    if (buckets_.size() >= options_.max_tracked) buckets_.clear();
    it = buckets_.emplace(key, Bucket{static_cast<double>(options_.burst), now}).first;
  }
  Bucket& b = it->second;
  if (options_.refill_every.count() > 0) {
    const double refill = std::chrono::duration<double>(now - b.last) /
                          std::chrono::duration<double>(options_.refill_every);
    b.tokens = std::min<double>(options_.burst, b.tokens + refill);
  }
  b.last = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

Status EventRecorder::CreateEvent(const Json& object, const std::string& key, EventType type,
                                  std::string_view reason, std::string_view action,
                                  const std::string& note) {
  std::string object_ns = NamespaceOf(object);
  std::string ns = object_ns.empty() ? "default" : object_ns;
  Json regarding = {{"apiVersion", StringAt(object, {"apiVersion"})},
                    {"kind", StringAt(object, {"kind"})},
                    {"name", NameOf(object)}};
  if (!object_ns.empty()) regarding["namespace"] = object_ns;
  if (!UidOf(object).empty()) regarding["uid"] = UidOf(object);
  if (!ResourceVersionOf(object).empty()) {
    regarding["resourceVersion"] = ResourceVersionOf(object);
  }
  Json event = {{"apiVersion", "events.k8s.io/v1"},
                {"kind", "Event"},
                {"metadata", {{"name", EventName(NameOf(object))}, {"namespace", ns}}},
                {"eventTime", FormatMicroTime(std::chrono::system_clock::now())},
                {"reportingController", options_.controller},
                {"reportingInstance", Truncate(options_.instance, 128)},
                {"action", Truncate(action, 128)},
                {"reason", Truncate(reason, 128)},
                {"type", type == EventType::kNormal ? "Normal" : "Warning"},
                {"note", note},
                {"regarding", regarding}};
  auto created = client_->Create(resources::kEvents, event);
  if (!created.ok()) {
    log::Warn("event create failed", {{"object", ObjectKey(object)},
                                      {"reason", reason},
                                      {"error", created.status().ToString()}});
    return created.status();
  }
  MutexLock lock(mu_);
  if (tracked_.count(key)) return Status::Ok();  // a concurrent Record got there first
  lru_.push_front(key);
  tracked_[key] = Tracked{ns, NameOf(*created), 1, std::chrono::steady_clock::now(), lru_.begin()};
  while (tracked_.size() > options_.max_tracked && !lru_.empty()) {
    tracked_.erase(lru_.back());
    lru_.pop_back();
  }
  return Status::Ok();
}

}  // namespace buildcache::kube
