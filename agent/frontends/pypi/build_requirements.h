#pragma once

// A wheel build's requirements (PEP 517/518 `[build-system] requires`), fetched through the
// agent's own index so the build itself can run without network:
//   1. ReadBuildRequires runs the builder's interpreter in the sandbox, with no network, to read
//      `pyproject.toml` out of the sdist (nothing of the sdist runs).
//   2. Every requirement is checked (CheckBuildRequirement): a name, extras, version specifiers
//      and a marker, never a URL or a path, so the sdist cannot point the download anywhere.
//   3. DownloadBuildRequires runs `pip download --only-binary :all:` with the builder's
//      interpreter against the agent's index only (the sandbox keeps the host network for this
//      step; wheels are only downloaded, no code runs) into a directory of the build.
//   4. The build runs `pip wheel --no-index --find-links DIR` with build isolation and no network.
//      When the backend asks for more (get_requires_for_build_wheel) and pip finds nothing,
//      MissingRequirements reads what from its log, and the builder downloads those and builds
//      once more.

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "agent/frontends/pypi/build_sandbox.h"
#include "common/status/status.h"

namespace buildcache::pypi {

inline constexpr size_t kMaxBuildRequirements = 32;
inline constexpr size_t kMaxBuildRequirementLength = 200;

// The Python program ReadBuildRequires runs (argv[1]: the sdist; prints {"requires": [...] or
// null} as its last line). The build script of pod builds (build_script.h) runs the same one.
std::string_view ReadBuildRequiresScript();

// What pip assumes when an sdist declares no build system.
std::vector<std::string> DefaultBuildRequires();

// OK when `req` is a PEP 508 requirement made of a project name, optional extras, version
// specifiers and an environment marker only. kInvalidArgument, naming the requirement, for a
// direct URL ("x @ https://..."), a path or archive name, an option ("-r ..."), or anything
// longer than kMaxBuildRequirementLength.
Status CheckBuildRequirement(std::string_view req);

// The requirements the read step printed (its output's last line, JSON {"requires": [...] or
// null}); null means the default. Every one is checked; at most kMaxBuildRequirements.
Result<std::vector<std::string>> ParseBuildRequires(std::string_view output);

// Requirements a failed pip run could not find ("No matching distribution found for X"),
// without duplicates, in the order of the log. Not checked (the log is the build's output).
std::vector<std::string> MissingRequirements(std::string_view log);

// Runs `python` in the sandbox described by `base` (its scratch holds `sdist`; no network) to
// read the sdist's build requirements. The step's output is appended to base.log.
Result<std::vector<std::string>> ReadBuildRequires(SandboxRun base, const std::string& python,
                                                   const std::filesystem::path& sdist);

// Downloads `requirements` and their dependencies as wheels fitting `python` from `index_url` into
// `dir` (created; it becomes the step's scratch, so the step sees nothing else of the build).
// The output is appended to base.log. Every requirement must pass CheckBuildRequirement.
Status DownloadBuildRequires(SandboxRun base, const std::string& python,
                             const std::string& index_url,
                             const std::vector<std::string>& requirements,
                             const std::filesystem::path& dir);

}  // namespace buildcache::pypi
