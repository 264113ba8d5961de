#include "agent/frontends/pypi/sandbox_runner.h"

#include <algorithm>

#include "agent/frontends/pypi/build_log.h"
#include "agent/frontends/pypi/build_requirements.h"

namespace buildcache::pypi {

namespace fsys = std::filesystem;

Status SandboxRunner::Run(const BuildTask& task) {
  const BuilderSpec& builder = *task.builder;
  SandboxRun run;
  run.sandbox = sandbox_;
  run.bwrap = bwrap_;
  run.read_only_paths = builder.read_only_paths;
  run.scratch = task.scratch;
  run.log = task.log;
  run.max_file_bytes = task.max_wheel_bytes;
  run.cancel = task.cancel;
  auto left = [&task] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        task.deadline - std::chrono::steady_clock::now()));
  };
  // No network in the build: no index. Without the agent's index URL the build requirements
  // come from the builder's own environment (--no-build-isolation); with it they are downloaded
  // as wheels through the agent first (build_requirements.h).
  const fsys::path deps = task.scratch / "deps";
  run.argv = {builder.python,
              "-m",
              "pip",
              "wheel",
              "--no-deps",
              "--no-index",
              "--no-cache-dir",
              "--disable-pip-version-check",
              "--no-input"};
  if (task.index_url.empty()) {
    run.argv.push_back("--no-build-isolation");
  } else {
    run.deadline = left();
    BC_ASSIGN_OR_RETURN(std::vector<std::string> requires_list,
                        ReadBuildRequires(run, builder.python, task.sdist_path));
    run.deadline = left();
    BC_RETURN_IF_ERROR(
        DownloadBuildRequires(run, builder.python, task.index_url, requires_list, deps));
    for (std::string arg : {std::string("--find-links"), ScratchPath(run, deps)}) {
      run.argv.push_back(std::move(arg));
    }
  }
  for (std::string arg :
       {std::string("-w"), ScratchPath(run, task.out_dir), ScratchPath(run, task.sdist_path)}) {
    run.argv.push_back(std::move(arg));
  }
  run.append_log = true;
  run.deadline = left();
  BC_ASSIGN_OR_RETURN(SandboxResult result, RunSandboxed(run));
  if (!result.ok() && !task.index_url.empty() && !result.timed_out && !result.cancelled) {
    // The backend asked for more than [build-system] requires (get_requires_for_build_wheel):
    // fetch what pip could not find, once, and build again.
    std::vector<std::string> missing = MissingRequirements(ReadLogTail(task.log, 64 * 1024));
    if (!missing.empty()) {
      if (missing.size() > kMaxBuildRequirements) missing.resize(kMaxBuildRequirements);
      run.deadline = left();
      BC_RETURN_IF_ERROR(DownloadBuildRequires(run, builder.python, task.index_url, missing, deps));
      std::error_code ec;
      fsys::remove_all(task.out_dir, ec);
      fsys::create_directories(task.out_dir, ec);
      AppendLogLine(task.log, "building again with the requirements the backend asked for");
      run.deadline = left();
      BC_ASSIGN_OR_RETURN(result, RunSandboxed(run));
    }
  }
  if (!result.ok()) return Unavailable("the build ended with " + result.Describe());
  return Status::Ok();
}

}  // namespace buildcache::pypi
