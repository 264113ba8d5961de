#include "agent/upstream/derived_cache.h"

#include "agent/store/digest.h"

namespace buildcache::upstream {

std::string DocumentFingerprint(const Document& doc) {
  // The content type is part of it: the same bytes parse differently as HTML and as JSON.
  return std::to_string(doc.status) + " " + store::Digest::Of(doc.body).Hex() + " " +
         doc.content_type;
}

}  // namespace buildcache::upstream
