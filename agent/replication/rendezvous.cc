#include "agent/replication/rendezvous.h"

#include <algorithm>
#include <utility>

namespace buildcache::replication {
namespace {

uint64_t Fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ULL) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// splitmix64's finalizer: FNV alone clusters on similar inputs (node-1, node-2, ...).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t RendezvousScore(std::string_view key, std::string_view member) {
  return Mix(Fnv1a(key) ^ Mix(Fnv1a(member)));
}

std::vector<std::string> RendezvousOwners(std::string_view key,
                                          const std::vector<std::string>& members, size_t copies) {
  std::vector<std::pair<uint64_t, const std::string*>> scored;
  scored.reserve(members.size());
  for (const std::string& m : members) scored.emplace_back(RendezvousScore(key, m), &m);
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : *a.second < *b.second;
  });
  std::vector<std::string> out;
  for (const auto& [score, member] : scored) {
    if (out.size() >= copies) break;
    if (!out.empty() && out.back() == *member) continue;
    if (std::find(out.begin(), out.end(), *member) != out.end()) continue;
    out.push_back(*member);
  }
  return out;
}

}  // namespace buildcache::replication
