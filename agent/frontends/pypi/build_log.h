#pragma once

// A build's log file: the build's output, then the agent's lines ("[buildcache] ...").

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace buildcache::pypi {

// At most max_bytes from the end of the file ("" when it cannot be read).
std::string ReadLogTail(const std::filesystem::path& path, size_t max_bytes);

// Appends "\n[buildcache] <line>\n".
void AppendLogLine(const std::filesystem::path& path, std::string_view line);

// Appends text as it is.
void AppendLogText(const std::filesystem::path& path, std::string_view text);

}  // namespace buildcache::pypi
