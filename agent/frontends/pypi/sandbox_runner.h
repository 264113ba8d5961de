#pragma once

// The local BuildRunner: the builder's own interpreter in the sandbox (build_sandbox.h), with the
// build requirements fetched through the agent's index first (build_requirements.h).

#include <string>

#include "agent/frontends/pypi/build_runner.h"
#include "agent/frontends/pypi/build_sandbox.h"

namespace buildcache::pypi {

class SandboxRunner : public BuildRunner {
 public:
  SandboxRunner(Sandbox sandbox, std::string bwrap) : sandbox_(sandbox), bwrap_(std::move(bwrap)) {}

  // BuildRunner. task.builder must be a local one (python set).
  Status Run(const BuildTask& task) override;

 private:
  const Sandbox sandbox_;
  const std::string bwrap_;
};

}  // namespace buildcache::pypi
