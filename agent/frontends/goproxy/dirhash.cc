#include "agent/frontends/goproxy/dirhash.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "agent/store/digest.h"
#include "common/zip/zip_reader.h"

namespace buildcache::goproxy {
namespace {

std::string Hash1(std::vector<std::pair<std::string, std::string>> files) {
  std::sort(files.begin(), files.end());
  store::Sha256 summary;
  for (const auto& [name, hex] : files) summary.Update(hex + "  " + name + "\n");
  return "h1:" + Base64(summary.Finish().raw());
}

}  // namespace

std::string Base64(std::string_view raw) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((raw.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(raw[k])); };
  for (; i + 3 <= raw.size(); i += 3) {
    uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (size_t rest = raw.size() - i; rest > 0) {
    uint32_t v = byte(i) << 16;
    if (rest == 2) v |= byte(i + 1) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string HashGoMod(std::string_view content) {
  return Hash1({{"go.mod", store::Digest::Of(content).Hex()}});
}

Result<std::string> HashZip(const ReadAtFn& read_at, uint64_t size, const ZipLimits& limits) {
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
