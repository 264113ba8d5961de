#include "agent/upstream/derived_cache.h"

#include "agent/store/digest.h"

namespace buildcache::upstream {

std::string DocumentFingerprint(const Document& doc) {
  // The content type is part of it: the same bytes parse differently as HTML and as JSON.
  const std::string digest =
      doc.body_sha256.empty() ? store::Digest::Of(doc.body).Hex() : doc.body_sha256;
  return std::to_string(doc.status) + " " + digest + " " + doc.content_type;
}

}  // namespace buildcache::upstream
