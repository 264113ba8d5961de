#pragma once

// Memory for what front ends derive from upstream documents: parsed project pages, rewritten
// packuments, rendered index pages. Parsing and re-serializing a large document costs tens to
// hundreds of milliseconds, and a warm cache serves the same few documents to every client, so
// a warm request should be a look-up, not a parse.

#include <cstddef>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "agent/upstream/upstream.h"
#include "common/base/thread_annotations.h"

namespace buildcache::upstream {

// Identifies the content of one document: its status, content type and a digest of its body.
// Two fetches of the same bytes give the same fingerprint (a refresh that changed nothing keeps
// what was derived from it); any change of the body gives another one. Costs one SHA-256 pass
// over the body (about a millisecond per megabyte), far less than parsing it, and nothing when
// the document carries its body_sha256 (MetadataCache::Get and Stream set it for stored copies).
std::string DocumentFingerprint(const Document& doc);

// A bounded map from a key to a value derived from some input, valid only for the input it was
// derived from (the "validator", e.g. a DocumentFingerprint plus whatever else went into the
// value). Entries are charged the bytes the caller gives; least recently used entries go first
// when the total exceeds max_bytes. A value larger than max_bytes is not kept. Values are shared
// and immutable, so a reader keeps its copy even after the entry is replaced or evicted.
// Thread-safe.
template <typename T>
class DerivedCache {
 public:
  explicit DerivedCache(size_t max_bytes) : max_bytes_(max_bytes) {}
  DerivedCache(const DerivedCache&) = delete;
  DerivedCache& operator=(const DerivedCache&) = delete;

  // The value under key when it was derived from `validator`; nullptr otherwise.
  std::shared_ptr<const T> Find(const std::string& key, std::string_view validator) {
    MutexLock lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.validator != validator) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.value;
  }

  // The value under key whatever it was derived from (e.g. to learn which input the last value
  // came from); nullptr when there is none. Does not count as a use.
  std::shared_ptr<const T> Peek(const std::string& key) const {
    MutexLock lock(mu_);
    auto it = entries_.find(key);
    return it == entries_.end() ? nullptr : it->second.value;
  }

  // Keeps value under key (replacing what was there), charged `bytes` plus the key and
  // validator.
  void Put(const std::string& key, std::string validator, std::shared_ptr<const T> value,
           size_t bytes) {
    const size_t cost = bytes + key.size() + validator.size();
    MutexLock lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) EraseLocked(it);
    if (cost > max_bytes_) return;
    while (bytes_ + cost > max_bytes_ && !lru_.empty()) EraseLocked(entries_.find(lru_.back()));
    lru_.push_front(key);
    entries_.emplace(key, Entry{std::move(validator), std::move(value), cost, lru_.begin()});
    bytes_ += cost;
  }

  size_t bytes() const {
    MutexLock lock(mu_);
    return bytes_;
  }
  size_t size() const {
    MutexLock lock(mu_);
    return entries_.size();
  }

 private:
  struct Entry {
    std::string validator;
    std::shared_ptr<const T> value;
    size_t cost = 0;
    std::list<std::string>::iterator lru;
  };

  void EraseLocked(typename std::unordered_map<std::string, Entry>::iterator it) REQUIRES(mu_) {
    bytes_ -= it->second.cost;
    lru_.erase(it->second.lru);
    entries_.erase(it);
  }

  const size_t max_bytes_;
  mutable Mutex mu_;
  size_t bytes_ GUARDED_BY(mu_) = 0;
  std::list<std::string> lru_ GUARDED_BY(mu_);  // most recently used first
  std::unordered_map<std::string, Entry> entries_ GUARDED_BY(mu_);
};

}  // namespace buildcache::upstream
