#include "agent/replication/replicated_store.h"

#include <algorithm>
#include <optional>

#include "common/log/log.h"

namespace buildcache::replication {
namespace {

// Commits through the local writer, then queues the push.
class PushingWriter : public store::BlobWriter {
 public:
  PushingWriter(std::unique_ptr<store::BlobWriter> inner, ReplicatedStore& owner, std::string key)
      : inner_(std::move(inner)), owner_(owner), key_(std::move(key)) {}
  Status Write(std::string_view data) override { return inner_->Write(data); }
  Result<store::BlobInfo> Commit() override {
    auto info = inner_->Commit();
    if (info.ok()) {
      owner_.ForgetMiss(key_);
      owner_.EnqueuePush(key_);
    }
    return info;
  }

 private:
  std::unique_ptr<store::BlobWriter> inner_;
  ReplicatedStore& owner_;
  std::string key_;
};

}  // namespace

ReplicatedStore::ReplicatedStore(store::BlobStore& local, Cluster& cluster, PeerClient& client,
                                 ReplicationObserver observer, ReplicatedStoreOptions options)
    : local_(local),
      cluster_(cluster),
      client_(client),
      observer_(std::move(observer)),
      options_(options),
      pusher_([this] { PushLoop(); }),
      pull_budget_(std::make_shared<WindowBudget>(options.pull_memory)) {}

ReplicatedStore::~ReplicatedStore() {
  WaitForPulls();
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  pusher_.join();
}

void ReplicatedStore::WaitForPulls() {
  // Pulls end by themselves: every peer call is bounded by the stall timeout.
  MutexLock lock(pulls_mu_);
  while (pull_threads_ != 0) pulls_cv_.Wait(pulls_mu_);
}

size_t ReplicatedStore::PushQueueDepth() {
  MutexLock lock(mu_);
  return queue_.size() + in_flight_;
}

Result<std::unique_ptr<store::BlobWriter>> ReplicatedStore::NewWriter(
    std::string_view key, const store::WriteOptions& options) {
  BC_ASSIGN_OR_RETURN(auto inner, local_.NewWriter(key, options));
  return std::unique_ptr<store::BlobWriter>(
      new PushingWriter(std::move(inner), *this, std::string(key)));
}

Result<std::unique_ptr<store::BlobReader>> ReplicatedStore::Open(std::string_view key) {
  auto opened = local_.Open(key);
  if (opened.ok()) {
    if (!TakePulledByStat(key)) return opened;
    return store::WithOrigin(std::move(*opened), "peer");
  }
  if (opened.status().code() != StatusCode::kNotFound) return opened;
  if (RecentlyMissed(key)) return opened;
  bool started = false;
  std::shared_ptr<PullStream> stream = StartOrJoinPull(key, &started);
  if (stream == nullptr) return opened;
  if (started) {
    // This Open reads the pull as it runs.
    if (!stream->WaitReadable().ok()) return opened;
    return stream->NewReader(stream, local_);
  }
  // Another request is pulling it: answer from the store once that pull is done.
  if (!stream->WaitDone().ok()) return opened;
  BC_ASSIGN_OR_RETURN(auto pulled, local_.Open(key));
  return store::WithOrigin(std::move(pulled), "peer");
}

Result<store::BlobInfo> ReplicatedStore::Stat(std::string_view key) {
  auto info = local_.Stat(key);
  if (info.ok() || info.status().code() != StatusCode::kNotFound) return info;
  if (RecentlyMissed(key)) return info;
  bool started = false;
  std::shared_ptr<PullStream> stream = StartOrJoinPull(key, &started);
  if (stream == nullptr) return info;
  if (started) stream->NoReader();
  if (!stream->WaitDone().ok()) return info;
  {
    MutexLock lock(pulled_mu_);
    if (pulled_unread_.emplace(key).second) pulled_order_.emplace_back(key);
    if (pulled_order_.size() > kPulledUnreadLimit) {
      pulled_unread_.erase(pulled_order_.front());
      pulled_order_.pop_front();
    }
  }
  return local_.Stat(key);
}

bool ReplicatedStore::MissCached(std::string_view key) const {
  if (options_.miss_ttl <= std::chrono::milliseconds::zero()) return false;
  return std::any_of(options_.miss_cache_prefixes.begin(), options_.miss_cache_prefixes.end(),
                     [key](const std::string& prefix) { return key.starts_with(prefix); });
}

std::chrono::steady_clock::time_point ReplicatedStore::Now() const {
  return options_.now ? options_.now() : std::chrono::steady_clock::now();
}

bool ReplicatedStore::RecentlyMissed(std::string_view key) {
  if (!MissCached(key)) return false;
  const TimePoint now = Now();
  MutexLock lock(misses_mu_);
  auto it = misses_.find(std::string(key));
  if (it == misses_.end()) return false;
  if (it->second > now) return true;
  misses_.erase(it);
  return false;
}

void ReplicatedStore::RememberMiss(const std::string& key) {
  const TimePoint expires = Now() + options_.miss_ttl;
  MutexLock lock(misses_mu_);
  misses_[key] = expires;
  miss_order_.emplace_back(key, expires);
  // Expiry times only grow along the deque (one TTL, a monotonic clock), so the expired and, over
  // the bound, the oldest are at its front.
  const TimePoint now = Now();
  while (!miss_order_.empty() &&
         (miss_order_.size() > options_.miss_cache_entries || miss_order_.front().second <= now)) {
    auto it = misses_.find(miss_order_.front().first);
    if (it != misses_.end() && it->second == miss_order_.front().second) misses_.erase(it);
    miss_order_.pop_front();
  }
}

void ReplicatedStore::ForgetMiss(std::string_view key) {
  if (!MissCached(key)) return;
  MutexLock lock(misses_mu_);
  misses_.erase(std::string(key));
}

bool ReplicatedStore::TakePulledByStat(std::string_view key) {
  MutexLock lock(pulled_mu_);
  if (pulled_unread_.empty()) return false;
  // Its place in pulled_order_ stays until the bound drops it. At worst that drops a later pull
  // of the same key early, and one peer hit is counted as local: this only labels metrics.
  return pulled_unread_.erase(std::string(key)) > 0;
}

Result<std::unique_ptr<store::BlobReader>> ReplicatedStore::OpenDigest(
    const store::Digest& digest) {
  return local_.OpenDigest(digest);
}
Result<std::unique_ptr<store::BlobReader>> ReplicatedStore::OpenDigestForRelay(
    const store::Digest& digest) {
  return local_.OpenDigestForRelay(digest);
}
bool ReplicatedStore::HasDigest(const store::Digest& digest) { return local_.HasDigest(digest); }
Status ReplicatedStore::Delete(std::string_view key) { return local_.Delete(key); }
Status ReplicatedStore::Rename(std::string_view from, std::string_view to,
                               const store::Digest& digest) {
  BC_RETURN_IF_ERROR(local_.Rename(from, to, digest));
  EnqueuePush(std::string(to));  // `to` is new here, like a committed write
  return Status::Ok();
}
store::StoreStats ReplicatedStore::Stats() { return local_.Stats(); }

std::shared_ptr<PullStream> ReplicatedStore::StartOrJoinPull(std::string_view key, bool* started) {
  *started = false;
  bool any_owner = false;
  for (const std::string& owner : cluster_.Owners(key)) {
    if (owner != cluster_.self() && cluster_.IsLive(owner)) any_owner = true;
  }
  if (!any_owner) return nullptr;
  MutexLock lock(pulls_mu_);
  auto it = pulls_.find(key);
  if (it != pulls_.end()) return it->second;
  auto stream = std::make_shared<PullStream>(options_.pull_window, pull_budget_);
  pulls_.emplace(std::string(key), stream);
  ++pull_threads_;
  *started = true;
  std::thread([this, k = std::string(key), stream] { RunPull(k, stream); }).detach();
  return stream;
}

void ReplicatedStore::RunPull(const std::string& key, const std::shared_ptr<PullStream>& stream) {
  Status result = PullFromOwners(key, *stream);
  if (result.code() == StatusCode::kNotFound && MissCached(key)) RememberMiss(key);
  {
    MutexLock lock(pulls_mu_);
    pulls_.erase(key);  // later misses start afresh; the store has the object if result is OK
  }
  stream->Finish(std::move(result));
  {
    MutexLock lock(pulls_mu_);
    --pull_threads_;
  }
  pulls_cv_.NotifyAll();
}

// About 90 lines: the two callbacks and the verdict on each owner share the one writer and the
// offset reached across owners (a pull that an owner left part-way continues at the next one);
// split apart, that state would be passed through every piece.
Status ReplicatedStore::PullFromOwners(const std::string& key, PullStream& stream) {
  Status last = NotFound("no owner has " + key);
  std::unique_ptr<store::BlobWriter> writer;
  std::optional<PeerObject> object;  // what the bytes written so far belong to
  uint64_t written = 0;
  auto start_over = [&](const Status& why) {
    writer.reset();  // an uncommitted writer leaves nothing behind
    object.reset();
    written = 0;
    stream.Restart(why);
  };
  for (const std::string& owner : cluster_.Owners(key)) {
    if (owner == cluster_.self() || !cluster_.IsLive(owner)) continue;
    uint64_t position = 0;  // in this owner's stream
    Status got = client_.GetByKey(
        owner, key,
        [&](const PeerObject& announced) -> Status {
          if (object) {
            // Continuing after an owner that failed part-way: only the same object will do.
            if (announced.digest != object->digest || announced.size != object->size) {
              return FailedPrecondition("peer " + owner + " has another object under the key");
            }
            return Status::Ok();
          }
          store::WriteOptions options;
          options.expected_digest = announced.digest;
          options.expected_size = announced.size;
          // The owner keeps its copy: a pulled one lost in a machine crash before the store's
          // grouped content sync is absent here (re-hashed after the unclean stop), never wrong.
          options.sync_content = false;
          // A hit once the bytes are verified: the reader may hand them out from then on, before
          // the commit has made them durable.
          options.on_verified = [this, &stream] {
            if (observer_.on_peer_request) observer_.on_peer_request("hit");
            stream.Verified();
          };
          BC_ASSIGN_OR_RETURN(writer, local_.NewWriter(key, options));
          object = announced;
          stream.Announce(store::BlobInfo{announced.digest, announced.size});
          return Status::Ok();
        },
        [&](std::string_view data) -> Status {
          // Bytes an earlier owner already delivered are skipped; the digest covers the whole.
          const uint64_t end = position + data.size();
          if (end > written) {
            data.remove_prefix(static_cast<size_t>(written - position));
            BC_RETURN_IF_ERROR(writer->Write(data));
            stream.Append(data);
            written = end;
          }
          position = end;
          return Status::Ok();
        },
        // The writer checks the announced digest at Commit; one hash of the bytes is enough.
        PeerClient::Verification::kByCaller);
    if (got.ok() && writer == nullptr) got = Unavailable("peer " + owner + " sent no object");
    if (got.ok()) {
      auto committed = writer->Commit();
      got = committed.status();
      writer.reset();
      if (got.ok()) {
        cluster_.ReportSuccess(owner);
        log::Debug("object pulled from peer", {{"peer", owner}, {"key", key}});
        return Status::Ok();
      }
      if (got.code() != StatusCode::kDataLoss) return got;  // verified, but not stored here
    }
    if (got.code() == StatusCode::kNotFound) {
      cluster_.ReportSuccess(owner);
      if (observer_.on_peer_request) observer_.on_peer_request("miss");
      continue;
    }
    if (got.code() == StatusCode::kFailedPrecondition) {
      cluster_.ReportSuccess(owner);
      continue;
    }
    if (observer_.on_peer_request) observer_.on_peer_request("error");
    last = got;
    if (got.code() == StatusCode::kDataLoss) {
      if (observer_.on_corrupt) observer_.on_corrupt(owner);
      log::Warn("peer sent corrupt object",
                {{"peer", owner}, {"key", key}, {"error", got.message()}});
      start_over(got);
    } else if (got.code() == StatusCode::kResourceExhausted) {
      return got;  // this store cannot take it; another owner would not change that
    } else {
      cluster_.ReportFailure(owner);
      log::Warn("peer read failed", {{"peer", owner}, {"key", key}, {"error", got.message()}});
    }
  }
  return last;
}

void ReplicatedStore::EnqueuePush(std::string key) {
  {
    MutexLock lock(mu_);
    if (queue_.size() >= options_.push_queue) {
      log::Warn("push queue full; object not replicated", {{"key", key}});
      if (observer_.on_push) observer_.on_push("dropped");
      return;
    }
    queue_.push_back(Push{std::move(key), 0, std::chrono::steady_clock::now()});
  }
  cv_.NotifyOne();
}

void ReplicatedStore::PushLoop() {
  mu_.Lock();
  while (!stop_) {
    if (queue_.empty()) {
      while (!stop_ && queue_.empty()) cv_.Wait(mu_);
      continue;
    }
    // The entry due first; retried entries go back with a later due time.
    auto it = std::min_element(queue_.begin(), queue_.end(),
                               [](const Push& a, const Push& b) { return a.due < b.due; });
    auto now = std::chrono::steady_clock::now();
    if (it->due > now) {
      cv_.WaitUntil(mu_, it->due);
      continue;
    }
    Push push = std::move(*it);
    queue_.erase(it);
    ++in_flight_;
    mu_.Unlock();
    Status s = PushOnce(push.key);
    mu_.Lock();
    --in_flight_;
    if (s.ok()) continue;
    if (++push.attempts >= options_.push_attempts) {
      log::Warn("push abandoned after retries", {{"key", push.key}, {"error", s.message()}});
      if (observer_.on_push) observer_.on_push("dropped");
      continue;
    }
    auto backoff = options_.push_backoff * (1 << std::min(push.attempts - 1, 6));
    push.due = std::chrono::steady_clock::now() +
               std::min<std::chrono::milliseconds>(backoff, std::chrono::seconds(30));
    queue_.push_back(std::move(push));
  }
  mu_.Unlock();
}

Status ReplicatedStore::PushOnce(const std::string& key) {
  Status result;
  for (const std::string& owner : cluster_.Owners(key)) {
    if (owner == cluster_.self()) continue;
    if (!cluster_.IsLive(owner)) {
      result = Unavailable("owner " + owner + " is down");
      continue;
    }
    // The owner's store writer checks the digest: no hash here before sending.
    auto reader = local_.OpenForRelay(key);
    if (!reader.ok()) return Status::Ok();  // evicted or replaced meanwhile: nothing to push
    auto stored = client_.Put(owner, key, **reader);
    if (stored.ok()) {
      cluster_.ReportSuccess(owner);
      if (observer_.on_push) observer_.on_push(*stored ? "stored" : "declined");
      continue;
    }
    if (observer_.on_push) observer_.on_push("error");
    if (stored.status().code() != StatusCode::kResourceExhausted) cluster_.ReportFailure(owner);
    log::Debug("push failed",
               {{"peer", owner}, {"key", key}, {"error", stored.status().message()}});
    result = stored.status();
  }
  return result;
}

}  // namespace buildcache::replication
