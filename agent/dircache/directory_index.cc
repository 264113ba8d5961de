#include "agent/dircache/directory_index.h"

#include <algorithm>

#include "agent/dircache/ignore.h"

namespace buildcache::dircache {
namespace {

uint64_t NowUnixMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

DirectoryIndex::DirectoryIndex(size_t max_tombstones)
    : max_tombstones_(max_tombstones), generation_(NowUnixMicros()) {}

const DirectoryIndex::Indexed* DirectoryIndex::Find(const std::string& rel) const {
  auto it = entries_.find(rel);
  return it == entries_.end() ? nullptr : &it->second;
}

bool DirectoryIndex::IsCurrent(const std::string& rel, const Fingerprint& fp) const {
  const Indexed* idx = Find(rel);
  return idx != nullptr && !idx->entry.deleted && idx->fp == fp;
}

void DirectoryIndex::Bump(const std::string& rel, Indexed& idx) {
  if (idx.generation != 0) {
    by_generation_.erase(idx.generation);
  }
  generation_ = std::max(generation_ + 1, NowUnixMicros());
  idx.generation = generation_;
  by_generation_[idx.generation] = rel;
}

bool DirectoryIndex::Put(ManifestEntry entry, const Fingerprint& fp) {
  std::string rel = entry.path;
  Indexed& idx = entries_[rel];
  bool was_live = !idx.entry.path.empty() && !idx.entry.deleted;
  bool changed = !was_live || idx.entry.digest != entry.digest || idx.entry.mode != entry.mode;
  if (was_live) {
    live_bytes_ -= idx.entry.size;
  } else {
    ++live_files_;
  }
  entry.deleted = false;
  live_bytes_ += entry.size;
  idx.entry = std::move(entry);
  idx.fp = fp;
  if (changed) {
    Bump(rel, idx);
  }
  return changed;
}

bool DirectoryIndex::MarkDeleted(const std::string& rel, Clock::time_point now) {
  auto it = entries_.find(rel);
  if (it == entries_.end() || it->second.entry.deleted) {
    return false;
  }
  Indexed& idx = it->second;
  idx.entry.deleted = true;
  idx.deleted_at = now;
  Bump(rel, idx);
  live_bytes_ -= idx.entry.size;
  --live_files_;
  if (tombstones_.count({rel, idx.entry.digest}) == 0) {
    Remember(rel, idx.entry.digest);
    tombstones_changed_ = true;
  }
  return true;
}

void DirectoryIndex::Remember(const std::string& path, const store::Digest& digest) {
  auto key = std::make_pair(path, digest);
  if (!tombstones_.insert(key).second) {
    return;
  }
  tombstone_order_.push_back(std::move(key));
  while (tombstone_order_.size() > max_tombstones_) {
    tombstones_.erase(tombstone_order_.front());
    tombstone_order_.pop_front();
  }
}

std::vector<std::string> DirectoryIndex::LiveBelow(const std::string& rel_dir) const {
  std::string prefix = rel_dir + "/";
  std::vector<std::string> out;
  for (auto it = entries_.lower_bound(prefix); it != entries_.end(); ++it) {
    if (!it->first.starts_with(prefix)) {
      break;
    }
    if (!it->second.entry.deleted) {
      out.push_back(it->first);
    }
  }
  return out;
}

Manifest DirectoryIndex::List(uint64_t since, uint64_t listing_after, size_t page_entries,
                              size_t page_bytes) const {
  Manifest m;
  m.generation = generation_;
  if (since != 0 && since < pruned_generation_) {
    // Deletions after `since` were forgotten: the asker must replace its view with a listing.
    since = 0;
    listing_after = 0;
    m.full = true;
  }
  size_t max_entries = std::max<size_t>(page_entries, 1);
  size_t bytes = 0;
  uint64_t after = since != 0 ? since : listing_after;
  for (auto it = by_generation_.upper_bound(after); it != by_generation_.end(); ++it) {
    const Indexed& idx = entries_.at(it->second);
    if (since == 0 && idx.entry.deleted) {
      continue;
    }
    if (m.entries.size() >= max_entries || bytes >= page_bytes) {
      m.more = true;  // the cursor is the last generation listed
      break;
    }
    m.entries.push_back(idx.entry);
    bytes += idx.entry.path.size() + 64;  // the entry's other fields, roughly, as protobuf
    m.generation = it->first;
  }
  if (!m.more) {
    m.generation = generation_;
  }
  return m;
}

size_t DirectoryIndex::PruneDeleted(Clock::time_point now, std::chrono::milliseconds retention) {
  if (entries_.size() == live_files_) {
    return 0;  // nothing deleted: no walk
  }
  size_t pruned = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Indexed& idx = it->second;
    if (!idx.entry.deleted || now - idx.deleted_at < retention) {
      ++it;
      continue;
    }
    pruned_generation_ = std::max(pruned_generation_, idx.generation);
    by_generation_.erase(idx.generation);
    it = entries_.erase(it);
    ++pruned;
  }
  return pruned;
}

bool DirectoryIndex::IsTombstoned(const std::string& path, const store::Digest& digest) const {
  return tombstones_.count({path, digest}) > 0;
}

size_t DirectoryIndex::LoadTombstones(std::string_view rest) {
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    size_t tab = line.find('\t');
    if (tab == std::string_view::npos) {
      continue;
    }
    auto digest = store::Digest::FromHex(line.substr(0, tab));
    std::string path(line.substr(tab + 1));
    if (!digest || !IsSafeRelativePath(path)) {
      continue;
    }
    Remember(path, *digest);
  }
  return tombstone_order_.size();
}

std::optional<std::string> DirectoryIndex::TakeTombstonesIfChanged() {
  if (!tombstones_changed_) {
    return std::nullopt;
  }
  tombstones_changed_ = false;
  std::string text;
  for (const auto& [path, digest] : tombstone_order_) {
    text += digest.Hex() + "\t" + path + "\n";
  }
  return text;
}

}  // namespace buildcache::dircache
