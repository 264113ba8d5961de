#pragma once

// The build script a builder pod runs (GET <prefix>/builds/<id>/script, build_uploads.h): Python 3
// (>= 3.8), standard library only. It takes the agent's URL, the build id and the build's token
// from BUILDCACHE_AGENT_URL, BUILDCACHE_BUILD_ID and BUILDCACHE_BUILD_TOKEN, and does what the
// local build does (sandbox_runner.h, build_requirements.h):
//   1. downloads the sdist (GET .../sdist) and checks it against the digest embedded in the
//      script;
//   2. reads its `[build-system] requires` with ReadBuildRequiresScript, checks each as
//      CheckBuildRequirement does, and downloads them as wheels (pip download --only-binary
//      :all:) from the agent's index, the token as Basic password of user "wheelbuild";
//   3. runs `python3 -m pip wheel --no-deps --no-index --find-links <deps> -w <out> <sdist>`, and
//      once more after downloading what the backend asked for when pip found nothing for it;
//   4. uploads the one wheel (PUT .../wheel/<file>), then always the log of every step (its last
//      kBuildScriptLogBytes, PUT .../log), and exits 0, or 1 when anything failed.
// The token is never printed (URLs in the log show "****").

#include <cstdint>
#include <string>

#include "agent/frontends/pypi/build_runner.h"

namespace buildcache::pypi {

inline constexpr uint64_t kBuildScriptLogBytes = uint64_t{512} * 1024;

// The script for `task`: its sdist's file name and digest embedded.
std::string BuildScript(const BuildTask& task);

}  // namespace buildcache::pypi
