#include "agent/frontends/pypi/pod_runner.h"

#include <algorithm>

#include "agent/frontends/pypi/build_log.h"
#include "common/kube/api_error.h"
#include "common/log/log.h"

namespace buildcache::pypi {

const kube::Resource kWheelBuilds{.group = "buildcache.io",
                                  .version = "v1alpha1",
                                  .plural = "wheelbuilds",
                                  .kind = "WheelBuild",
                                  .namespaced = true};

namespace {

// An API server's message may quote the object it refused: never pass the token on.
std::string Redact(std::string text, const std::string& token) {
  if (token.empty()) return text;
  for (size_t at = text.find(token); at != std::string::npos; at = text.find(token, at)) {
    text.replace(at, token.size(), "****");
  }
  return text;
}

}  // namespace

PodRunner::PodRunner(kube::KubeClient& kube, BuildUploads& uploads, PodRunnerOptions options)
    : kube_(kube), uploads_(uploads), options_(std::move(options)) {}

kube::Json PodRunner::WheelBuildFor(const BuildTask& task, const std::string& token) const {
  const auto left = std::chrono::duration_cast<std::chrono::seconds>(
      task.deadline - std::chrono::steady_clock::now());
  const int64_t deadline_seconds = std::clamp<int64_t>(left.count(), 60, 7200);
  kube::Json labels = {{"buildcache.io/buildcache", options_.build_cache}};
  if (!options_.node.empty()) labels["buildcache.io/node"] = options_.node;
  return {{"apiVersion", kWheelBuilds.ApiVersion()},
          {"kind", kWheelBuilds.kind},
          {"metadata",
           {{"name", options_.build_cache + "-" + task.id},
            {"namespace", options_.ns},
            {"labels", labels}}},
          {"spec",
           {{"buildCache", options_.build_cache},
            {"builder", task.builder->name},
            {"buildId", task.id},
            {"sdist",
             {{"project", task.sdist.project},
              {"version", task.sdist.version},
              {"filename", task.sdist.filename},
              {"sha256", task.sdist.sha256}}},
            {"agentURL", options_.agent_url},
            {"uploadToken", token},
            {"deadlineSeconds", deadline_seconds}}}};
}

Status PodRunner::Run(const BuildTask& task) {
  BC_ASSIGN_OR_RETURN(std::string token, uploads_.Begin(task));
  const std::string name = options_.build_cache + "-" + task.id;
  struct EndUploads {
    BuildUploads& uploads;
    const std::string& id;
    ~EndUploads() { uploads.End(id); }
  } end_uploads{uploads_, task.id};
  AppendLogLine(task.log, "creating WheelBuild " + options_.ns + "/" + name + " (builder " +
                              task.builder->name + ", image " + task.builder->image + ")");
  Result<kube::Json> created = kube_.Create(kWheelBuilds, WheelBuildFor(task, token));
  if (!created.ok()) {
    std::string why = Redact(created.status().message(), token);
    log::Warn("pypi wheelbuild not created", {{"id", task.id}, {"name", name}, {"error", why}});
    return FailedPrecondition("creating WheelBuild " + options_.ns + "/" + name + ": " + why);
  }
  log::Info("pypi wheelbuild created",
            {{"id", task.id}, {"name", name}, {"namespace", options_.ns}});
  Status waited = Wait(task, name);
  kube::DeleteOptions del;
  del.propagation_policy = "Background";
  if (Status s = kube_.Delete(kWheelBuilds, options_.ns, name, del);
      !s.ok() && !kube::IsNotFound(s)) {
    log::Warn("pypi wheelbuild not deleted",
              {{"id", task.id}, {"name", name}, {"error", Redact(s.message(), token)}});
  }
  return Status(waited.code(), Redact(waited.message(), token));
}

Status PodRunner::Wait(const BuildTask& task, const std::string& name) {
  const auto give_up = task.deadline + options_.grace;
  bool pod_done = false;  // the WheelBuild said Succeeded: the log should be there already
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    BuildProgress progress = uploads_.Wait(task.id, std::min(now + options_.poll, give_up));
    if (progress.log) {
      if (!progress.wheel) return Unavailable("the build script uploaded no wheel (see its log)");
      return Status::Ok();
    }
    if (task.cancel != nullptr && task.cancel->load()) {
      return Cancelled("the agent stopped during the build");
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      AppendLogLine(task.log, "the builder pod did not finish within the build's deadline");
      return DeadlineExceeded("the builder pod did not finish within the build's deadline");
    }
    if (pod_done) {
      return Unavailable("the builder pod ended without uploading the build's log");
    }
    Result<kube::Json> wb = kube_.Get(kWheelBuilds, options_.ns, name);
    if (!wb.ok()) {
      if (kube::IsNotFound(wb.status())) {
        return Unavailable("WheelBuild " + name + " was deleted before the build ended");
      }
      continue;  // the API server is away for a moment: the deadline still bounds the wait
    }
    const kube::Json status = wb->value("status", kube::Json::object());
    const std::string phase = status.is_object() ? status.value("phase", "") : "";
    if (phase == "Failed") {
      const std::string message = status.value("message", "");
      AppendLogLine(task.log, "WheelBuild " + name + " failed: " + message);
      return Unavailable("the builder pod failed: " + message);
    }
    if (phase == "Succeeded") pod_done = true;
  }
}

}  // namespace buildcache::pypi
