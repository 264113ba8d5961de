#include "agent/frontends/goproxy/dirhash.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "agent/frontends/goproxy/zip_stream_hasher.h"
#include "agent/store/digest.h"
#include "common/text/base64.h"
#include "common/zip/zip_reader.h"

namespace buildcache::goproxy {
namespace {

std::string Hash1(std::vector<std::pair<std::string, std::string>> files) {
  std::sort(files.begin(), files.end());
  store::Sha256 summary;
  for (const auto& [name, hex] : files) summary.Update(hex + "  " + name + "\n");
  return "h1:" + text::Base64Encode(summary.Finish().raw());
}

}  // namespace

std::string HashGoMod(std::string_view content) {
  return Hash1({{"go.mod", store::Digest::Of(content).Hex()}});
}

Result<std::string> HashZip(const ReadAtFn& read_at, uint64_t size, const ZipLimits& limits,
                            const ZipStreamHasher* streamed) {
  BC_ASSIGN_OR_RETURN(std::vector<zip::Entry> entries,
                      zip::ReadDirectory(read_at, size, limits.max_entries));
  std::set<std::string_view> names;
  uint64_t total = 0;
  for (const zip::Entry& e : entries) {
    if (e.name.find('\n') != std::string::npos) return DataLoss("file name with a newline");
    if (!names.insert(e.name).second) return DataLoss("duplicate file in module zip: " + e.name);
    if (e.uncompressed > limits.max_uncompressed - std::min(total, limits.max_uncompressed)) {
      return DataLoss("module zip too large when unpacked");
    }
    total += e.uncompressed;
  }
  std::vector<std::pair<std::string, std::string>> files;
  files.reserve(entries.size());
  for (const zip::Entry& e : entries) {
    if (streamed != nullptr) {
      if (std::optional<std::string> hex = streamed->HashOf(e)) {
        files.emplace_back(e.name, std::move(*hex));
        continue;
      }
    }
    store::Sha256 sha;
    BC_RETURN_IF_ERROR(zip::ReadEntry(read_at, size, e, [&](std::string_view data) {
      sha.Update(data);
      return Status::Ok();
    }));
    files.emplace_back(e.name, sha.Finish().Hex());
  }
  return Hash1(std::move(files));
}

}  // namespace buildcache::goproxy
