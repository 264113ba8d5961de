#pragma once

// The BuildRunner of builders with an image: the build runs in a builder pod the operator starts
// (docs/operator.md, "Wheel builds in pods"). The agent never creates pods: it creates a
// WheelBuild (buildcache.io/v1alpha1) naming its BuildCache, the builder and the sdist, with the
// build's one-time token (build_uploads.h); the operator turns it into a locked-down pod that
// fetches the build script from this agent (agent_url) and uploads the wheel and the log.
//
// Run: registers the build's token, creates the WheelBuild <buildCache>-<id> in `ns`, waits for
// the script's log upload, the WheelBuild's status.phase Failed (its status.message goes into
// the build's log and error), the task's deadline plus `grace` (pod start), or the agent's
// shutdown, then deletes the WheelBuild (propagationPolicy Background) and ends the token. An
// API error creating it (403: no RBAC; 404: the CRD is not installed) fails the build with the
// server's message. The token appears in no message or log.

#include <chrono>
#include <string>

#include "agent/frontends/pypi/build_runner.h"
#include "agent/frontends/pypi/build_uploads.h"
#include "common/kube/kube_client.h"
#include "common/kube/resource.h"

namespace buildcache::pypi {

// buildcache.io/v1alpha1 WheelBuild (namespaced; the operator owns the CRD).
extern const kube::Resource kWheelBuilds;

struct PodRunnerOptions {
  std::string ns;           // where WheelBuilds are created (the BuildCache's namespace)
  std::string build_cache;  // the BuildCache's name
  std::string agent_url;    // "http://<pod IP>:<client port>": how a builder pod reaches the agent
  std::string node;         // the agent's node (label buildcache.io/node; "" = none)
  // How long past the build's deadline the agent waits (the pod's start counts against
  // activeDeadlineSeconds only once it runs).
  std::chrono::milliseconds grace{std::chrono::seconds(60)};
  // How often the WheelBuild's status is read while waiting.
  std::chrono::milliseconds poll{std::chrono::seconds(2)};
};

class PodRunner : public BuildRunner {
 public:
  // The client and the uploads must outlive the runner.
  PodRunner(kube::KubeClient& kube, BuildUploads& uploads, PodRunnerOptions options);

  // BuildRunner. task.builder must be an image builder.
  Status Run(const BuildTask& task) override;

  // The WheelBuild Run creates for `task` (tests, docs).
  kube::Json WheelBuildFor(const BuildTask& task, const std::string& token) const;

 private:
  // Waits for the script's log, a failed WheelBuild, the deadline or shutdown.
  Status Wait(const BuildTask& task, const std::string& name);

  kube::KubeClient& kube_;
  BuildUploads& uploads_;
  const PodRunnerOptions options_;
};

}  // namespace buildcache::pypi
