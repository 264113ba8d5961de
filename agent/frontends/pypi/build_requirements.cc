#include "agent/frontends/pypi/build_requirements.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent/frontends/pypi/names.h"

namespace buildcache::pypi {
namespace {

namespace fsys = std::filesystem;

constexpr size_t kMaxReadOutput = 64 * 1024;

// Reads `[build-system] requires` of the sdist named by argv[1] and prints it as the last line
// (JSON; null when the sdist declares none). Only pyproject.toml at the top directory is read;
// nothing is extracted or run.
constexpr const char* kReadScript = R"(import json, sys, tarfile, zipfile
path = sys.argv[1]
LIMIT = 1 << 20
def top_level(name):
    return name.count("/") == 1 and name.endswith("/pyproject.toml")
def read():
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if top_level(info.filename) and info.file_size <= LIMIT:
                    return z.read(info)
        return None
    with tarfile.open(path) as t:
        for m in t:
            if m.isfile() and top_level(m.name) and m.size <= LIMIT:
                return t.extractfile(m).read()
    return None
data = read()
requires = None
if data is not None:
    try:
        import tomllib
    except ImportError:
        from pip._vendor import tomli as tomllib
    system = tomllib.loads(data.decode("utf-8")).get("build-system")
    if isinstance(system, dict) and "requires" in system:
        requires = system["requires"]
print(json.dumps({"requires": requires}))
)";

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// Characters of extras, version specifiers and markers ('"' and '\'' quote marker values).
bool IsTailChar(char c) {
  return IsNameChar(c) || std::string_view(" \t[],<>=!~*+;\"'()").find(c) != std::string_view::npos;
}

std::string ReadFile(const fsys::path& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string out(max_bytes, '\0');
  in.read(out.data(), static_cast<std::streamsize>(max_bytes));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

void AppendToLog(const fsys::path& log, std::string_view text) {
  std::ofstream out(log, std::ios::app | std::ios::binary);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

}  // namespace

std::string_view ReadBuildRequiresScript() { return kReadScript; }

std::vector<std::string> DefaultBuildRequires() { return {"setuptools>=40.8.0", "wheel"}; }

Status CheckBuildRequirement(std::string_view req) {
  auto refuse = [req](std::string_view why) {
    return InvalidArgument("build requirement \"" +
                           std::string(req.substr(0, kMaxBuildRequirementLength)) +
                           "\" refused: " + std::string(why));
  };
  if (req.empty() || req.size() > kMaxBuildRequirementLength) return refuse("empty or too long");
  size_t name_end = 0;
  while (name_end < req.size() && IsNameChar(req[name_end])) ++name_end;
  std::string_view name = req.substr(0, name_end);
  if (!IsValidProjectName(name)) return refuse("it does not start with a project name");
  // pip takes an argument that looks like an archive for a local file to build.
  for (std::string_view ext : {".whl", ".zip", ".tar", ".tgz", ".tbz", ".txz", ".gz", ".bz2"}) {
    if (name.find(ext) != std::string_view::npos) return refuse("it looks like a file name");
  }
  for (char c : req.substr(name_end)) {
    if (!IsTailChar(c)) {
      return refuse(
          "only extras, version specifiers and markers may follow the name (no URL or "
          "path)");
    }
  }
  return Status::Ok();
}

Result<std::vector<std::string>> ParseBuildRequires(std::string_view output) {
  while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) {
    output.remove_suffix(1);
  }
  size_t nl = output.rfind('\n');
  std::string_view line = nl == std::string_view::npos ? output : output.substr(nl + 1);
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("requires")) {
    return InvalidArgument("the sdist's build requirements could not be read");
  }
  const nlohmann::json& list = j["requires"];
  if (list.is_null()) return DefaultBuildRequires();
  if (!list.is_array()) return InvalidArgument("[build-system] requires is not a list");
  if (list.size() > kMaxBuildRequirements) {
    return InvalidArgument("[build-system] requires names more than " +
                           std::to_string(kMaxBuildRequirements) + " requirements");
  }
  std::vector<std::string> out;
  for (const nlohmann::json& r : list) {
    if (!r.is_string()) return InvalidArgument("[build-system] requires holds a non-string");
    BC_RETURN_IF_ERROR(CheckBuildRequirement(r.get<std::string>()));
    out.push_back(r.get<std::string>());
  }
  return out;
}

std::vector<std::string> MissingRequirements(std::string_view log) {
  constexpr std::string_view kMarker = "No matching distribution found for ";
  std::vector<std::string> out;
  for (size_t at = log.find(kMarker); at != std::string_view::npos;
       at = log.find(kMarker, at + 1)) {
    size_t begin = at + kMarker.size();
    size_t end = log.find('\n', begin);
    std::string req(log.substr(begin, end == std::string_view::npos ? end : end - begin));
    while (!req.empty() && (req.back() == '\r' || req.back() == ' ')) req.pop_back();
    if (!req.empty() && std::find(out.begin(), out.end(), req) == out.end()) out.push_back(req);
  }
  return out;
}

Result<std::vector<std::string>> ReadBuildRequires(SandboxRun base, const std::string& python,
                                                   const fsys::path& sdist) {
  const fsys::path main_log = base.log;
  base.log = base.scratch / "requires.out";
  base.append_log = false;
  base.network = false;
  base.argv = {python, "-I", "-c", kReadScript, ScratchPath(base, sdist)};
  BC_ASSIGN_OR_RETURN(SandboxResult result, RunSandboxed(base));
  std::string out = ReadFile(base.log, kMaxReadOutput);
  AppendToLog(main_log, "[buildcache] reading the build requirements\n" + out);
  if (!result.ok()) {
    return InvalidArgument("reading the sdist's build requirements ended with " +
                           result.Describe());
  }
  return ParseBuildRequires(out);
}

Status DownloadBuildRequires(SandboxRun base, const std::string& python,
                             const std::string& index_url,
                             const std::vector<std::string>& requirements, const fsys::path& dir) {
  for (const std::string& r : requirements) BC_RETURN_IF_ERROR(CheckBuildRequirement(r));
  std::error_code ec;
  fsys::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir.string() + ": " + ec.message());
  std::string names;
  for (const std::string& r : requirements) names += (names.empty() ? "" : ", ") + r;
  AppendToLog(base.log, "\n[buildcache] downloading build requirements from the agent's index: " +
                            names + "\n");
  // pip ignores a plain-HTTP index unless it is trusted; the agent's own address is.
  std::string host =
      index_url.substr(index_url.find("://") == std::string::npos ? 0 : index_url.find("://") + 3);
  host = host.substr(0, host.find('/'));
  base.scratch = dir;
  base.append_log = true;
  base.network = true;
  base.argv = {python,
               "-I",
               "-m",
               "pip",
               "download",
               "--isolated",
               "--only-binary",
               ":all:",
               "--no-cache-dir",
               "--disable-pip-version-check",
               "--no-input",
               "--index-url",
               index_url,
               "--trusted-host",
               host,
               "-d",
               ScratchPath(base, dir),
               "--"};
  base.argv.insert(base.argv.end(), requirements.begin(), requirements.end());
  BC_ASSIGN_OR_RETURN(SandboxResult result, RunSandboxed(base));
  if (!result.ok()) {
    return Unavailable("downloading the build requirements (" + names +
                       ") from the agent's index ended with " + result.Describe());
  }
  return Status::Ok();
}

}  // namespace buildcache::pypi
