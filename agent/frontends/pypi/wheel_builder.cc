#include "agent/frontends/pypi/wheel_builder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/frontends/pypi/build_log.h"
#include "agent/frontends/pypi/wheel_check.h"
#include "agent/store/digest.h"
#include "common/fs/file.h"
#include "common/log/log.h"

namespace buildcache::pypi {
namespace {

namespace fsys = std::filesystem;

constexpr size_t kCopyChunk = size_t{256} * 1024;
constexpr auto kProbeDeadline = std::chrono::seconds(60);

// Prints what a builder is, as one JSON line (run by ProbeBuilder in the sandbox).
constexpr const char* kProbeScript = R"(import importlib.metadata, json, platform
def version(dist):
    try:
        return importlib.metadata.version(dist)
    except Exception:
        return ""
lib, libc_version = platform.libc_ver()
print(json.dumps({"implementation": platform.python_implementation(),
                  "python": platform.python_version(), "system": platform.system(),
                  "cpu": platform.machine(), "lib": lib, "libc_version": libc_version,
                  "pip": version("pip"), "setuptools": version("setuptools"),
                  "wheel": version("wheel")}))
)";

// A ReadAtFn over a descriptor.
zip::ReadAtFn ReadAtFd(int fd) {
  return [fd](uint64_t offset, std::span<char> buf) -> Result<size_t> {
    ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0) return ErrnoStatus(errno, "reading the built wheel");
    return static_cast<size_t>(n);
  };
}

// The one regular *.whl file the build left in out_dir, opened without following links (the
// sandbox wrote that directory: a link there could name any host file).
Result<std::pair<std::string, fs::UniqueFd>> OpenBuiltWheel(const fsys::path& out_dir) {
  std::vector<std::string> wheels;
  std::error_code ec;
  for (const auto& entry : fsys::directory_iterator(out_dir, ec)) {
    wheels.push_back(entry.path().filename().string());
  }
  if (ec) return Internal("cannot list the build's output: " + ec.message());
  if (wheels.size() != 1 || !wheels[0].ends_with(".whl")) {
    return InvalidArgument("the build left " + std::to_string(wheels.size()) +
                           " files, not one wheel");
  }
  fs::UniqueFd fd(open((out_dir / wheels[0]).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "opening " + wheels[0]);
  struct stat st;
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return InvalidArgument(wheels[0] + " is not a regular file");
  }
  return std::pair{wheels[0], std::move(fd)};
}

std::string IdOf(const std::string& key) { return store::Digest::Of(key).Hex().substr(0, 16); }

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string_view BuildDecisionName(BuildDecision d) {
  switch (d) {
    case BuildDecision::kStarted:
      return "started";
    case BuildDecision::kDeduplicated:
      return "deduplicated";
    case BuildDecision::kFailedRecently:
      return "failed_recently";
    case BuildDecision::kNoBuilder:
      return "no_builder";
    case BuildDecision::kQueueFull:
      return "queue_full";
  }
  return "?";
}

bool BuilderSpec::Serves(const ClientPlatform& c) const {
  const ClientPlatform& b = platform;
  return b.implementation == c.implementation && b.python_major == c.python_major &&
         b.python_minor == c.python_minor && b.system == c.system && b.cpu == c.cpu &&
         !b.libc.empty() && b.libc == c.libc &&
         std::pair{b.libc_major, b.libc_minor} <= std::pair{c.libc_major, c.libc_minor};
}

std::string BuilderSpec::Provenance() const {
  return name + " (" + (pod() ? image : platform.Key()) + ")";
}

Result<BuilderSpec> ProbeBuilder(std::string name, std::string python, SandboxRun run) {
  run.argv = {python, "-I", "-c", kProbeScript};
  run.log = run.scratch / "probe.out";
  run.deadline = kProbeDeadline;
  BC_ASSIGN_OR_RETURN(SandboxResult result, RunSandboxed(run));
  std::string out = ReadLogTail(run.log, 64 * 1024);
  if (!result.ok()) {
    return FailedPrecondition("builder " + name + " (" + python +
                              ") does not run: " + result.Describe() + ": " + out);
  }
  // The probe's answer is its last line: anything a site hook printed before is ignored.
  while (!out.empty() && out.back() == '\n') out.pop_back();
  std::string line = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return FailedPrecondition("builder " + name + ": no probe answer: " + out);
  // The probe answers in the shape of a pip User-Agent, so one parser reads both.
  nlohmann::json ua = {
      {"python", j.value("python", "")},
      {"implementation", {{"name", j.value("implementation", "")}}},
      {"system", {{"name", j.value("system", "")}}},
      {"cpu", j.value("cpu", "")},
      {"distro",
       {{"libc", {{"lib", j.value("lib", "")}, {"version", j.value("libc_version", "")}}}}}};
  auto platform = ParseClientPlatform("pip/probe " + ua.dump());
  if (!platform || platform->libc.empty()) {
    return FailedPrecondition("builder " + name +
                              " is not CPython or PyPy on a known libc: " + line);
  }
  BuilderSpec spec;
  spec.name = std::move(name);
  spec.python = std::move(python);
  spec.platform = *platform;
  spec.tools = j.value("implementation", "") + " " + j.value("python", "") + "; pip " +
               j.value("pip", "") + "; setuptools " + j.value("setuptools", "") + "; wheel " +
               j.value("wheel", "");
  spec.read_only_paths = run.read_only_paths;
  return spec;
}

WheelBuilder::WheelBuilder(store::BlobStore& store, WheelHouse& house, WheelBuildOptions options)
    : store_(store),
      house_(house),
      options_(std::move(options)),
      local_runner_(options_.sandbox, options_.bwrap) {
  std::error_code ec;
  fsys::create_directories(options_.work_dir / "logs", ec);
  // What a build that was running when the agent stopped left behind.
  fsys::remove_all(options_.work_dir / "scratch", ec);
  fsys::create_directories(options_.work_dir / "scratch", ec);
  if (options_.records_store != nullptr) {
    record_store_ =
        std::make_unique<BuildRecordStore>(*options_.records_store, options_.records_prefix);
    LoadRecords();
  }
  for (size_t i = 0; i < std::max<size_t>(options_.workers, 1); ++i) {
    workers_.emplace_back([this] { Worker(); });
  }
}

WheelBuilder::~WheelBuilder() {
  stopping_ = true;
  {
    MutexLock lock(mu_);
    changed_.NotifyAll();
  }
  for (std::thread& t : workers_) t.join();
}

fsys::path WheelBuilder::LogPath(std::string_view id) const {
  return options_.work_dir / "logs" / (std::string(id) + ".log");
}

void WheelBuilder::LoadRecords() {
  const auto steady_now = options_.now();
  const int64_t wall_now = UnixMillisNow();
  std::vector<BuildRecord> loaded = record_store_->LoadAll();
  std::vector<BuildRecord> interrupted;
  {
    MutexLock lock(mu_);
    for (BuildRecord& r : loaded) {
      if (!r.done()) {
        r.state = BuildRecord::State::kInterrupted;
        r.error = "the agent stopped during the build";
        r.finished_unix_ms = wall_now;
        interrupted.push_back(r);
      }
      // The builder's clock is not the wall clock: place the finish time as long before now as
      // the wall clock says it was (a clock set back counts as just now).
      r.finished = steady_now -
                   std::chrono::milliseconds(std::max<int64_t>(0, wall_now - r.finished_unix_ms));
      std::string id = r.id;
      records_[id] = std::move(r);
    }
    ForgetOldestRecords();
  }
  for (const BuildRecord& r : interrupted) {
    AppendLogLine(LogPath(r.id), "interrupted: " + r.error);
    SaveRecord(r);
    log::Warn("pypi build interrupted",
              {{"id", r.id}, {"project", r.project}, {"version", r.version}});
  }
  if (!loaded.empty()) {
    log::Info("pypi build records loaded",
              {{"records", loaded.size()}, {"interrupted", interrupted.size()}});
  }
}

void WheelBuilder::SaveRecord(const BuildRecord& record) {
  if (record_store_) record_store_->Save(record);
}

BuildDecision WheelBuilder::Request(const SdistRef& sdist, const ClientPlatform& client,
                                    std::string* id_out) {
  const BuilderSpec* builder = nullptr;
  for (const BuilderSpec& b : options_.builders) {
    if (b.Serves(client)) {
      builder = &b;
      break;
    }
  }
  if (builder == nullptr) return BuildDecision::kNoBuilder;
  const std::string key = sdist.sha256 + "\n" + builder->name + "\n" + builder->platform.Key();
  const std::string id = IdOf(key);
  if (id_out != nullptr) *id_out = id;
  MutexLock lock(mu_);
  if (auto it = records_.find(id); it != records_.end()) {
    BuildRecord& r = it->second;
    if (r.state == BuildRecord::State::kQueued || r.state == BuildRecord::State::kRunning) {
      if (options_.metrics.deduplicated) options_.metrics.deduplicated->Inc();
      return BuildDecision::kDeduplicated;
    }
    if (r.state == BuildRecord::State::kFailed &&
        options_.now() - r.finished < options_.failure_ttl) {
      return BuildDecision::kFailedRecently;
    }
  }
  if (queue_.size() >= options_.max_queue) return BuildDecision::kQueueFull;
  BuildRecord& r = records_[id];
  r = BuildRecord{};
  r.id = id;
  r.project = sdist.project;
  r.version = sdist.version;
  r.sdist = sdist.filename;
  r.sha256 = sdist.sha256;
  r.builder = builder->name;
  r.platform = builder->platform.Key();
  queue_.push_back(Job{id, sdist, client, builder});
  SaveRecord(r);
  if (options_.metrics.started) options_.metrics.started->Inc();
  log::Info("pypi build queued", {{"id", id},
                                  {"project", sdist.project},
                                  {"version", sdist.version},
                                  {"sdist_sha256", sdist.sha256},
                                  {"builder", builder->name},
                                  {"platform", builder->platform.Key()}});
  changed_.NotifyAll();
  return BuildDecision::kStarted;
}

void WheelBuilder::Worker() {
  for (;;) {
    Job job;
    {
      MutexLock lock(mu_);
      while (queue_.empty() && !stopping_) changed_.Wait(mu_);
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
      BuildRecord& r = records_[job.id];
      r.state = BuildRecord::State::kRunning;
      SaveRecord(r);
    }
    auto start = std::chrono::steady_clock::now();
    Result<std::string> result = Build(job, LogPath(job.id));
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Finish(job, result, seconds);
  }
}

void WheelBuilder::Finish(const Job& job, const Result<std::string>& result, double seconds) {
  // A build the agent's shutdown killed did not fail: it is interrupted, and built again later.
  const bool interrupted = !result.ok() && stopping_;
  const std::string error = interrupted ? "the agent stopped during the build"
                                        : (result.ok() ? "" : result.status().ToString());
  AppendLogLine(LogPath(job.id), result.ok()   ? "stored " + *result
                                 : interrupted ? "interrupted: " + error
                                               : "failed: " + error);
  if (!interrupted && options_.metrics.seconds) options_.metrics.seconds->Observe(seconds);
  if (options_.metrics.succeeded && result.ok()) options_.metrics.succeeded->Inc();
  if (options_.metrics.failed && !result.ok() && !interrupted) options_.metrics.failed->Inc();
  BuildRecord finished;
  {
    // The record changes before the log line: whoever reads the log line and then asks
    // /pypi/builds/ sees the build finished.
    MutexLock lock(mu_);
    --running_;
    BuildRecord& r = records_[job.id];
    r.state = result.ok()   ? BuildRecord::State::kSucceeded
              : interrupted ? BuildRecord::State::kInterrupted
                            : BuildRecord::State::kFailed;
    r.error = error;
    r.wheel = result.ok() ? *result : "";
    r.seconds = seconds;
    r.finished = options_.now();
    r.finished_unix_ms = UnixMillisNow();
    finished = r;
    SaveRecord(r);
    ForgetOldestRecords();
    changed_.NotifyAll();
  }
  if (result.ok()) {
    log::Info("pypi build succeeded", {{"id", job.id},
                                       {"wheel", *result},
                                       {"builder", job.builder->Provenance()},
                                       {"built_from", job.sdist.sha256},
                                       {"seconds", seconds}});
  } else if (interrupted) {
    log::Warn("pypi build interrupted",
              {{"id", job.id}, {"project", job.sdist.project}, {"version", job.sdist.version}});
  } else {
    log::Warn("pypi build failed", {{"id", job.id},
                                    {"project", job.sdist.project},
                                    {"version", job.sdist.version},
                                    {"error", error},
                                    {"log", LogPath(job.id).string()}});
  }
  if (options_.on_finished) options_.on_finished(finished);
}

void WheelBuilder::ForgetOldestRecords() {
  // Forget the oldest finished builds beyond the bound (their logs go with them).
  while (records_.size() > options_.max_records) {
    auto oldest = records_.end();
    for (auto it = records_.begin(); it != records_.end(); ++it) {
      if (it->second.done() &&
          (oldest == records_.end() || it->second.finished < oldest->second.finished)) {
        oldest = it;
      }
    }
    if (oldest == records_.end()) break;
    std::error_code ec;
    fsys::remove(LogPath(oldest->first), ec);
    if (record_store_) record_store_->Remove(oldest->first);
    records_.erase(oldest);
  }
}

Result<std::string> WheelBuilder::Build(const Job& job, const fsys::path& log_path) {
  const fsys::path scratch = options_.work_dir / "scratch" / job.id;
  std::error_code ec;
  fsys::remove_all(scratch, ec);
  fsys::create_directories(scratch / "out", ec);
  if (ec) return Internal("cannot create " + scratch.string() + ": " + ec.message());
  struct Cleanup {
    fsys::path dir;
    ~Cleanup() {
      std::error_code ignored;
      fsys::remove_all(dir, ignored);
    }
  } cleanup{scratch};
  std::ofstream(log_path, std::ios::trunc).flush();  // the steps below append
  BuildTask task;
  task.id = job.id;
  task.sdist = job.sdist;
  task.builder = job.builder;
  task.scratch = scratch;
  task.sdist_path = scratch / job.sdist.filename;
  task.out_dir = scratch / "out";
  task.log = log_path;
  task.deadline = std::chrono::steady_clock::now() + options_.deadline;
  task.index_url = IndexUrl();
  task.max_wheel_bytes = options_.max_wheel_bytes;
  task.cancel = &stopping_;
  BC_RETURN_IF_ERROR(CopySdist(job, task.sdist_path));
  BuildRunner* runner = &local_runner_;
  if (job.builder->pod()) {
    if (!options_.pod_runner) {
      return FailedPrecondition("no pod runner for builder " + job.builder->name);
    }
    runner = options_.pod_runner.get();
  }
  BC_RETURN_IF_ERROR(runner->Run(task));
  return StoreWheel(job, task.out_dir);
}

Status WheelBuilder::CopySdist(const Job& job, const fsys::path& sdist) {
  // Copied out of the store and checked against the index digest once more.
  BC_ASSIGN_OR_RETURN(auto reader, store_.Open(job.sdist.store_key));
  std::ofstream out(sdist, std::ios::binary);
  std::string buf(kCopyChunk, '\0');
  store::Sha256 sha;
  for (uint64_t offset = 0;;) {
    BC_ASSIGN_OR_RETURN(size_t n, reader->ReadAt(offset, buf));
    if (n == 0) break;
    sha.Update({buf.data(), n});
    out.write(buf.data(), static_cast<std::streamsize>(n));
    offset += n;
  }
  if (!out.flush()) return Internal("cannot write " + sdist.string());
  if (sha.Finish().Hex() != job.sdist.sha256) {
    return DataLoss("the stored sdist does not match its index digest");
  }
  return Status::Ok();
}

void WheelBuilder::SetIndexUrl(std::string url) {
  MutexLock lock(mu_);
  index_url_ = std::move(url);
}

std::string WheelBuilder::IndexUrl() const {
  MutexLock lock(mu_);
  return index_url_;
}

Result<std::string> WheelBuilder::StoreWheel(const Job& job, const fsys::path& out_dir) {
  BC_ASSIGN_OR_RETURN(auto opened, OpenBuiltWheel(out_dir));
  auto& [filename, fd] = opened;
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat " + filename);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > options_.max_wheel_bytes) return TooLarge(filename + " is too large");
  zip::ReadAtFn read_at = ReadAtFd(fd.get());
  BC_RETURN_IF_ERROR(
      CheckBuiltWheel(read_at, size, filename, job.sdist.project, job.sdist.version));
  BC_ASSIGN_OR_RETURN(WheelName wheel, ParseWheelFilename(filename));
  if (!WheelFits(wheel, job.builder->platform) || !WheelFits(wheel, job.client)) {
    return InvalidArgument(filename + " does not fit the platform it was built for (" +
                           job.client.Key() + ")");
  }
  BC_ASSIGN_OR_RETURN(auto pending, house_.Begin(filename));
  std::string buf(kCopyChunk, '\0');
  for (uint64_t offset = 0; offset < size;) {
    BC_ASSIGN_OR_RETURN(size_t n, read_at(offset, buf));
    if (n == 0) return DataLoss(filename + " shrank while it was stored");
    BC_RETURN_IF_ERROR(pending->Write({buf.data(), n}));
    offset += n;
  }
  WheelEntry provenance;
  provenance.built_from = job.sdist.sha256;
  provenance.builder = job.builder->Provenance();
  provenance.tools = job.builder->tools;
  BC_ASSIGN_OR_RETURN(WheelEntry entry, house_.CommitBuilt(std::move(pending), provenance));
  return entry.filename;
}

std::vector<BuildRecord> WheelBuilder::Builds() const {
  MutexLock lock(mu_);
  std::vector<BuildRecord> out;
  for (const auto& [id, r] : records_) out.push_back(r);
  return out;
}

Result<std::string> WheelBuilder::Log(std::string_view id, size_t max_bytes) const {
  {
    MutexLock lock(mu_);
    if (!records_.contains(id)) return NotFound("no build " + std::string(id));
  }
  return ReadLogTail(LogPath(id), max_bytes);
}

bool WheelBuilder::WaitIdle(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(mu_);
  while (!queue_.empty() || running_ > 0) {
    if (!changed_.WaitUntil(mu_, deadline) && std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
  }
  return true;
}

}  // namespace buildcache::pypi
