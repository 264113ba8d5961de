#include "common/kube/informer.h"

#include <random>

#include "common/log/log.h"

namespace buildcache::kube {

Informer::Informer(KubeClient* client, Resource resource, InformerOptions options)
    : client_(client), resource_(std::move(resource)), options_(std::move(options)) {}

Informer::~Informer() { Stop(); }

void Informer::Start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token stop) { Run(stop); });
}

void Informer::Stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

void Informer::AddEventHandlers(EventHandlers handlers) {
  MutexLock dispatch(dispatch_mu_);
  if (handlers.on_add) {
    std::vector<Object> current;
    {
      MutexLock lock(mu_);
      for (const auto& [key, object] : objects_) current.push_back(object);
    }
    for (const Object& object : current) handlers.on_add(*object);
  }
  handlers_.push_back(std::move(handlers));
}

bool Informer::HasSynced() const {
  MutexLock lock(mu_);
  return synced_;
}

bool Informer::WaitForSync(Duration timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(mu_);
  while (!synced_) {
    if (!synced_cv_.WaitUntil(mu_, deadline) && !synced_) return false;
  }
  return true;
}

std::optional<Json> Informer::Get(const std::string& key) const {
  MutexLock lock(mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return std::nullopt;
  return *it->second;
}

std::vector<Json> Informer::List() const {
  MutexLock lock(mu_);
  std::vector<Json> out;
  out.reserve(objects_.size());
  for (const auto& [key, object] : objects_) out.push_back(*object);
  return out;
}

std::vector<std::string> Informer::ListKeys() const {
  MutexLock lock(mu_);
  std::vector<std::string> out;
  out.reserve(objects_.size());
  for (const auto& [key, object] : objects_) out.push_back(key);
  return out;
}

std::string Informer::resource_version() const {
  MutexLock lock(mu_);
  return resource_version_;
}

InformerStats Informer::stats() const {
  MutexLock lock(mu_);
  return stats_;
}

void Informer::Run(std::stop_token stop) {
  Backoff backoff(options_.backoff);
  // Started again after Stop: resume watching from the cached version (the server says when it
  // is too old, and then the cache is re-listed and the differences dispatched).
  bool need_list = resource_version().empty();
  const std::string what = resource_.Describe();
  while (!stop.stop_requested()) {
    if (need_list) {
      Status listed = ListAndReplace(stop);
      if (stop.stop_requested()) break;
      if (!listed.ok()) {
        {
          MutexLock lock(mu_);
          ++stats_.failures;
        }
        Duration delay = backoff.Next();
        log::Warn("informer list failed; retrying",
                  {{"resource", what},
                   {"error", listed.ToString()},
                   {"retry_ms", static_cast<int64_t>(delay.count() / 1'000'000)}});
        SleepFor(delay, stop);
        continue;
      }
      need_list = false;
    }
    auto started = std::chrono::steady_clock::now();
    uint64_t events = 0;
    Status watched = WatchOnce(stop, &events);
    if (stop.stop_requested()) break;
    if (watched.ok() && events == 0 &&
        std::chrono::steady_clock::now() - started < std::chrono::seconds(1)) {
      // A watch the server closes at once, again and again, would otherwise spin.
      watched = Unavailable("watch " + what + " ended within a second without any event");
    }
    if (watched.ok()) {
      backoff.Reset();  // the server ended the watch on schedule: reconnect right away
      continue;
    }
    if (IsGone(watched)) {
      {
        MutexLock lock(mu_);
        ++stats_.expired;
      }
      log::Info("informer resource version expired; listing again",
                {{"resource", what}, {"error", watched.message()}});
      need_list = true;
      continue;
    }
    {
      MutexLock lock(mu_);
      ++stats_.failures;
    }
    Duration delay = backoff.Next();
    log::Warn("informer watch failed; retrying",
              {{"resource", what},
               {"error", watched.ToString()},
               {"retry_ms", static_cast<int64_t>(delay.count() / 1'000'000)}});
    SleepFor(delay, stop);
  }
}

Status Informer::ListAndReplace(std::stop_token stop) {
  std::map<std::string, Object> fresh;
  std::string version;
  std::string continue_token;
  while (true) {
    if (stop.stop_requested()) return Cancelled("informer stopped");
    ListOptions list;
    list.label_selector = options_.label_selector;
    list.field_selector = options_.field_selector;
    list.limit = options_.page_size;
    list.continue_token = continue_token;
    auto page = client_->List(resource_, options_.ns, list);
    if (!page.ok()) {
      if (IsGone(page.status()) && !continue_token.empty()) {
        // The continue token expired between pages: start over with a fresh snapshot.
        fresh.clear();
        continue_token.clear();
        continue;
      }
      return page.status();
    }
    if (continue_token.empty()) version = StringAt(*page, {"metadata", "resourceVersion"});
    continue_token = StringAt(*page, {"metadata", "continue"});
    auto items = page->find("items");
    if (items != page->end() && items->is_array()) {
      for (Json& item : *items) {
        if (!item.is_object()) continue;
        // List items omit apiVersion and kind; the cache's objects carry them, like watch events.
        item["apiVersion"] = resource_.ApiVersion();
        item["kind"] = resource_.kind;
        std::string key = ObjectKey(item);
        fresh[key] = std::make_shared<const Json>(std::move(item));
      }
    }
    if (continue_token.empty()) break;
  }

  MutexLock dispatch(dispatch_mu_);
  std::vector<std::pair<Object, Object>> updates;  // old, new
  std::vector<Object> adds, deletes;
  {
    MutexLock lock(mu_);
    for (const auto& [key, object] : fresh) {
      auto it = objects_.find(key);
      if (it == objects_.end()) {
        adds.push_back(object);
      } else if (ResourceVersionOf(*it->second) != ResourceVersionOf(*object)) {
        updates.emplace_back(it->second, object);
      }
    }
    for (const auto& [key, object] : objects_) {
      if (!fresh.count(key)) deletes.push_back(object);
    }
    objects_ = std::move(fresh);
    resource_version_ = version;
    ++stats_.lists;
  }
  for (const EventHandlers& h : handlers_) {
    if (h.on_delete) {
      for (const Object& o : deletes) h.on_delete(*o);
    }
    if (h.on_add) {
      for (const Object& o : adds) h.on_add(*o);
    }
    if (h.on_update) {
      for (const auto& [old_object, new_object] : updates) h.on_update(*old_object, *new_object);
    }
  }
  {
    // Synced only once the handlers have heard of every listed object.
    MutexLock lock(mu_);
    synced_ = true;
  }
  synced_cv_.NotifyAll();
  return Status::Ok();
}

Status Informer::WatchOnce(std::stop_token stop, uint64_t* events) {
  WatchOptions watch;
  watch.label_selector = options_.label_selector;
  watch.field_selector = options_.field_selector;
  watch.resource_version = resource_version();
  watch.allow_bookmarks = true;
  int64_t min_seconds = std::max<int64_t>(1, options_.min_watch_timeout.count());
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  watch.timeout_seconds =
      std::uniform_int_distribution<int64_t>(min_seconds, 2 * min_seconds - 1)(rng);
  {
    MutexLock lock(mu_);
    ++stats_.watches;
  }
  return client_->Watch(
      resource_, options_.ns, watch,
      [this, events](const WatchEvent& event) {
        ++*events;
        ApplyEvent(event);
        return true;
      },
      stop);
}

void Informer::ApplyEvent(const WatchEvent& event) {
  std::string version = ResourceVersionOf(event.object);
  if (event.type == WatchEventType::kBookmark) {
    MutexLock lock(mu_);
    if (!version.empty()) resource_version_ = version;
    return;
  }
  auto object = std::make_shared<const Json>(event.object);
  std::string key = ObjectKey(*object);
  MutexLock dispatch(dispatch_mu_);
  Object old_object;
  {
    MutexLock lock(mu_);
    auto it = objects_.find(key);
    if (it != objects_.end()) old_object = it->second;
    if (event.type == WatchEventType::kDeleted) {
      objects_.erase(key);
    } else {
      objects_[key] = object;
    }
    if (!version.empty()) resource_version_ = version;
  }
  for (const EventHandlers& h : handlers_) {
    if (event.type == WatchEventType::kDeleted) {
      if (h.on_delete) h.on_delete(*object);
    } else if (old_object) {
      if (h.on_update) h.on_update(*old_object, *object);
    } else if (h.on_add) {
      h.on_add(*object);
    }
  }
}

}  // namespace buildcache::kube
