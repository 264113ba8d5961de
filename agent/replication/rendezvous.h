#pragma once

// Rendezvous (highest random weight) hashing: every agent computes the same owners for a key from
// the same member list, and a member joining or leaving moves only the keys it owns (about 1/N of
// them), unlike hashing modulo N.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace buildcache::replication {

// The weight of member for key: a 64-bit mix of both, stable across processes and builds.
uint64_t RendezvousScore(std::string_view key, std::string_view member);

// The min(copies, members.size()) members with the highest score for key, highest first (ties,
// which need a 64-bit collision, broken by name). Duplicate members count once.
std::vector<std::string> RendezvousOwners(std::string_view key,
                                          const std::vector<std::string>& members, size_t copies);

}  // namespace buildcache::replication
