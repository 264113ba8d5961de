#include "agent/frontends/pypi/build_log.h"

#include <fstream>

namespace buildcache::pypi {

std::string ReadLogTail(const std::filesystem::path& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff start = size > static_cast<std::streamoff>(max_bytes)
                             ? size - static_cast<std::streamoff>(max_bytes)
                             : 0;
  in.seekg(start);
  std::string out(static_cast<size_t>(size - start), '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

void AppendLogLine(const std::filesystem::path& path, std::string_view line) {
  std::ofstream out(path, std::ios::app);
  out << "\n[buildcache] " << line << "\n";
}

void AppendLogText(const std::filesystem::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

}  // namespace buildcache::pypi
