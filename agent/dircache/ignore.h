#pragma once

#include <string_view>

namespace buildcache::dircache {

// Whether a path (relative to a directory cache's root, '/'-separated) names a file that tools
// write only temporarily or use as a lock, and which is therefore never indexed, listed or
// pulled. A path is ignored when any of its elements is (so whole temporary directories, such as
// npm's _cacache/tmp/, are skipped). An element is ignored when it
//   - starts with "tmp" or ".tmp": npm cacache's tmp/, mkstemp-style names, this agent's own
//     ".tmp.bc-pull-*" files;
//   - ends with ".tmp", ".temp", ".partial", ".part", ".lock", ".swp", ".crdownload", "~",
//     ".alive" or ".bak": pip's "<name><random>.tmp" (renamed into place when complete), Go's
//     module download "<zip><random>.tmp" and "<dir>.partial" markers, ccache's "<file>.lock" and
//     "<file>.alive", editors and browsers;
//   - contains ".tmp.": ccache's "<file>.tmp.<random>" before its rename;
//   - is "lock" (Go's module cache lock files), ".package-cache" or ".package-cache-mutate"
//     (Cargo's registry locks).
// docs/directory-caches.md lists the same patterns; keep both in step.
bool IsIgnoredPath(std::string_view relative_path);

// Whether a relative path is safe to create under a root: not empty, not absolute, no empty, "."
// or ".." elements, no NUL. Paths from peers that fail this are rejected, never written.
bool IsSafeRelativePath(std::string_view relative_path);

}  // namespace buildcache::dircache
