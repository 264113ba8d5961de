#include "agent/upstream/hold_back.h"

#include <algorithm>

namespace buildcache::upstream {

uint64_t HoldBack::Releasable(uint64_t received, bool verified) const {
  if (verified || !length_) return received;
  if (*length_ == 0) return 0;
  return std::min(received, *length_ - 1);
}

std::string_view HoldBack::Pass(std::string_view data) {
  const uint64_t start = received_;  // the object's offset of data[0]
  received_ += data.size();
  const uint64_t releasable = Releasable(received_, false);
  const size_t out = releasable > start ? static_cast<size_t>(releasable - start) : 0;
  held_.append(data.substr(out));
  return data.substr(0, out);
}

}  // namespace buildcache::upstream
