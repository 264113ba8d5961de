#include "agent/frontends/pypi/wheel_house.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "agent/frontends/pypi/wheel_check.h"
#include "common/log/log.h"

namespace buildcache::pypi {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kZipSignature = "PK\x03\x04";
constexpr size_t kScanBuffer = size_t{256} * 1024;

// PEP 700 upload-time format: yyyy-mm-ddThh:mm:ss.ffffffZ.
std::string IsoTime(std::chrono::system_clock::time_point t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(us / 1'000'000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%06lldZ", static_cast<long long>(us % 1'000'000));
  return buf;
}

std::string LowerHex(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Opens `relative` (a path below the directory `dir_fd`) read-only, resolving it without following
// any symbolic link and without leaving the directory (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS; kernels without openat2 get a component-by-component O_NOFOLLOW walk).
Result<int> OpenBeneath(int dir_fd, const std::filesystem::path& relative) {
  if (relative.empty() || relative.is_absolute()) {
    return InvalidArgument("not a relative path: " + relative.string());
  }
  struct open_how how = {};
  how.flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, dir_fd, relative.c_str(), &how, sizeof how);
  if (fd >= 0) return static_cast<int>(fd);
  if (errno != ENOSYS) return ErrnoStatus(errno, "opening " + relative.string());
  int at = dir_fd;
  std::vector<std::string> parts;
  for (const auto& part : relative) parts.push_back(part.string());
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == ".." || parts[i] == ".") {
      if (at != dir_fd) ::close(at);
      return InvalidArgument("path leaves the directory: " + relative.string());
    }
    bool last = i + 1 == parts.size();
    int next = ::openat(at, parts[i].c_str(),
                        (last ? O_RDONLY : O_RDONLY | O_DIRECTORY) | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    if (at != dir_fd) ::close(at);
    if (next < 0) return ErrnoStatus(err, "opening " + relative.string());
    at = next;
  }
  return at;
}

}  // namespace

std::string EncodeWheelList(const std::vector<WheelEntry>& list) {
  Json files = Json::array();
  for (const WheelEntry& e : list) {
    files.push_back({{"filename", e.filename},
                     {"sha256", e.sha256},
                     {"size", e.size},
                     {"requires_python", e.requires_python},
                     {"uploaded", e.uploaded}});
    if (e.built()) {
      files.back()["built_from"] = e.built_from;
      files.back()["builder"] = e.builder;
      files.back()["tools"] = e.tools;
    }
    if (e.removed) files.back()["removed"] = true;
  }
  Json doc = {{"version", 1}, {"files", std::move(files)}};
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<std::vector<WheelEntry>> DecodeWheelList(std::string_view json) {
  Json doc = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return InvalidArgument("wheel list is not JSON");
  try {
    std::vector<WheelEntry> out;
    for (const Json& f : doc.at("files")) {
      WheelEntry e;
      e.filename = f.at("filename").get<std::string>();
      e.sha256 = f.at("sha256").get<std::string>();
      e.size = f.at("size").get<uint64_t>();
      e.requires_python = f.value("requires_python", "");
      e.uploaded = f.value("uploaded", "");
      e.built_from = f.value("built_from", "");
      e.builder = f.value("builder", "");
      e.tools = f.value("tools", "");
      e.removed = f.value("removed", false);
      if (!ParseWheelFilename(e.filename).ok() || !store::Digest::FromHex(e.sha256) ||
          (e.built() && !store::Digest::FromHex(e.built_from))) {
        return InvalidArgument("wheel list has a bad entry");
      }
      out.push_back(std::move(e));
    }
    return out;
  } catch (const Json::exception& e) {
    return InvalidArgument(std::string("malformed wheel list: ") + e.what());
  }
}

WheelHouse::Pending::~Pending() = default;

Status WheelHouse::Pending::Write(std::string_view data) {
  if (head_.size() < kZipSignature.size()) {
    head_.append(data.substr(0, kZipSignature.size() - head_.size()));
  }
  hash_.Update(data);
  size_ += data.size();
  return writer_->Write(data);
}

WheelHouse::WheelHouse(store::BlobStore& store, WheelHouseOptions options)
    : store_(store), options_(std::move(options)) {}

WheelHouse::~WheelHouse() = default;

std::string WheelHouse::FileKey(std::string_view project, std::string_view filename) const {
  return options_.key_prefix + "wheelhouse/" + std::string(project) + "/" + std::string(filename);
}

std::string WheelHouse::IndexKey(std::string_view project) const {
  return options_.key_prefix + "wheelhouse-index/" + std::string(project);
}

Result<std::unique_ptr<WheelHouse::Pending>> WheelHouse::Begin(std::string_view filename) {
  BC_ASSIGN_OR_RETURN(WheelName wheel, ParseWheelFilename(filename));
  std::unique_ptr<Pending> p(new Pending());
  p->filename_ = std::string(filename);
  BC_ASSIGN_OR_RETURN(p->writer_, store_.NewWriter(FileKey(wheel.project(), filename), {}));
  p->wheel_ = std::move(wheel);
  return p;
}

Result<WheelEntry> WheelHouse::Commit(std::unique_ptr<Pending> pending,
                                      std::optional<std::string_view> expected_sha256,
                                      std::string_view requires_python) {
  if (pending->head_ != kZipSignature) return InvalidArgument("a wheel must be a zip file");
  WheelEntry entry;
  entry.filename = pending->filename_;
  entry.sha256 = pending->hash_.Finish().Hex();
  entry.size = pending->size_;
  entry.requires_python = std::string(requires_python);
  entry.uploaded = IsoTime(options_.now());
  if (expected_sha256 && LowerHex(*expected_sha256) != entry.sha256) {
    return InvalidArgument("sha256_digest does not match the uploaded content");
  }
  return CommitEntry(std::move(pending), std::move(entry));
}

Result<WheelEntry> WheelHouse::CommitBuilt(std::unique_ptr<Pending> pending,
                                           const WheelEntry& provenance) {
  if (pending->head_ != kZipSignature) return InvalidArgument("a wheel must be a zip file");
  if (!store::Digest::FromHex(provenance.built_from)) {
    return InvalidArgument("a built wheel needs the sha256 of its sdist");
  }
  WheelEntry entry = provenance;
  entry.filename = pending->filename_;
  entry.sha256 = pending->hash_.Finish().Hex();
  entry.size = pending->size_;
  entry.uploaded = IsoTime(options_.now());
  return CommitEntry(std::move(pending), std::move(entry));
}

Result<WheelEntry> WheelHouse::CommitEntry(std::unique_ptr<Pending> pending, WheelEntry entry) {
  std::string project = pending->wheel_.project();
  MutexLock lock(mu_);
  List& list = ListLocked(project);
  // Drop entries whose blobs were evicted, so a wheel can be added again after eviction.
  std::erase_if(
      list, [&](const WheelEntry& e) { return !store_.Stat(FileKey(project, e.filename)).ok(); });
  auto existing = std::find_if(list.begin(), list.end(),
                               [&](const WheelEntry& e) { return e.filename == entry.filename; });
  if (existing != list.end() && !existing->removed) {
    if (existing->sha256 == entry.sha256) return *existing;
    return AlreadyExists("File already exists: " + entry.filename +
                         " is in the wheel house with different content");
  }
  BC_RETURN_IF_ERROR(pending->writer_->Commit().status());
  // A tombstone of the name gives way to the new wheel.
  std::optional<WheelEntry> tombstone;
  if (existing != list.end()) {
    tombstone = *existing;
    list.erase(existing);
  }
  list.push_back(entry);
  if (Status s = SaveLocked(project, list); !s.ok()) {
    list.pop_back();
    if (tombstone) list.push_back(*tombstone);
    (void)store_.Delete(FileKey(project, entry.filename));
    return s;
  }
  log::Info("pypi wheel stored", {{"project", project},
                                  {"filename", entry.filename},
                                  {"sha256", entry.sha256},
                                  {"bytes", entry.size},
                                  {"built_from", entry.built_from}});
  return entry;
}

Result<WheelEntry> WheelHouse::AddBytes(std::string_view filename, std::string_view data,
                                        std::optional<std::string_view> expected_sha256) {
  BC_ASSIGN_OR_RETURN(auto pending, Begin(filename));
  BC_RETURN_IF_ERROR(pending->Write(data));
  return Commit(std::move(pending), expected_sha256);
}

Result<ScanResult> WheelHouse::ScanDirectory(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("no such directory: " + dir.string());
  ScanResult result;
  int root_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) return ErrnoStatus(errno, "opening " + dir.string());
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } root_closer{root_fd};
  auto it =
      fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) return ErrnoStatus(ec.value(), "scanning " + dir.string());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      log::Warn("pypi wheel scan error", {{"dir", dir.string()}, {"error", ec.message()}});
      ++result.failed;
      ec.clear();
      continue;
    }
    // Pods write these directories: a symlink (to /etc/shadow, or to a wheel elsewhere) is never
    // followed, and neither is a directory link (the iterator does not descend into those).
    if (it->is_symlink(ec)) {
      log::Warn("pypi wheel skipped",
                {{"path", it->path().string()}, {"error", "a symbolic link; not followed"}});
      ++result.failed;
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    std::string filename = it->path().filename().string();
    if (!filename.ends_with(".whl")) continue;
    auto wheel = ParseWheelFilename(filename);
    if (!wheel.ok()) {
      ++result.failed;
      log::Warn("pypi wheel skipped",
                {{"path", it->path().string()}, {"error", wheel.status().ToString()}});
      continue;
    }
    if (Find(wheel->project(), filename)) {
      ++result.present;
      continue;
    }
    Status s =
        AddFile(root_fd, it->path().lexically_relative(dir), /*check_archive=*/false).status();
    if (s.ok()) {
      ++result.added;
    } else if (s.code() == StatusCode::kAlreadyExists) {
      ++result.present;
    } else {
      ++result.failed;
      log::Warn("pypi wheel skipped", {{"path", it->path().string()}, {"error", s.ToString()}});
    }
  }
  log::Info("pypi wheel scan done", {{"dir", dir.string()},
                                     {"added", result.added},
                                     {"present", result.present},
                                     {"failed", result.failed}});
  return result;
}

Result<WheelEntry> WheelHouse::AddFile(int dir_fd, const std::filesystem::path& relative,
                                       bool check_archive) {
  const std::string filename = relative.filename().string();
  BC_ASSIGN_OR_RETURN(WheelName wheel, ParseWheelFilename(filename));
  // Opened beneath the directory without following any link, so a file swapped for a link (or a
  // parent directory swapped for one) after the walk saw it is refused too.
  BC_ASSIGN_OR_RETURN(int fd, OpenBeneath(dir_fd, relative));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return FailedPrecondition("not a regular file: " + relative.string());
  }
  if (check_archive) {
    zip::ReadAtFn read_at = [fd](uint64_t offset, std::span<char> buf) -> Result<size_t> {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
      if (n < 0) return ErrnoStatus(errno, "reading the wheel");
      return static_cast<size_t>(n);
    };
    BC_RETURN_IF_ERROR(CheckBuiltWheel(read_at, static_cast<uint64_t>(st.st_size), filename,
                                       wheel.project(), wheel.version));
  }
  BC_ASSIGN_OR_RETURN(auto pending, Begin(filename));
  std::unique_ptr<char[]> buf(new char[kScanBuffer]);
  for (off_t offset = 0;;) {
    ssize_t n = ::pread(fd, buf.get(), kScanBuffer, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "reading " + relative.string());
    if (n == 0) break;
    BC_RETURN_IF_ERROR(pending->Write({buf.get(), static_cast<size_t>(n)}));
    offset += n;
  }
  return Commit(std::move(pending));
}

std::vector<WheelEntry> WheelHouse::Files(std::string_view project) {
  RefreshFromOwners(project);
  std::vector<WheelEntry> out;
  {
    MutexLock lock(mu_);
    if (const List* list = CachedListLocked(project)) out = *list;
  }
  std::erase_if(out, [&](const WheelEntry& e) {
    if (e.removed) return true;
    auto info = store_.Stat(FileKey(project, e.filename));
    return !info.ok() || info->digest.Hex() != e.sha256;
  });
  return out;
}

std::optional<WheelEntry> WheelHouse::Find(std::string_view project, std::string_view filename) {
  for (WheelEntry& e : Files(project)) {
    if (e.filename == filename) return std::move(e);
  }
  return std::nullopt;
}

WheelHouse::List& WheelHouse::ListLocked(const std::string& project) {
  if (CachedListLocked(project) != nullptr) return lists_.find(project)->second;
  return lists_.emplace(project, List()).first->second;
}

const WheelHouse::List* WheelHouse::CachedListLocked(std::string_view project) {
  auto it = lists_.find(project);
  if (it != lists_.end()) {
    MergeStoredLocked(it->first, it->second);
    return &it->second;
  }
  auto reader = store_.Open(IndexKey(project));
  if (!reader.ok()) {
    // Projects without a wheel house are not remembered, so requests for arbitrary names do not
    // grow memory; the store lookup is cheap.
    if (reader.status().code() != StatusCode::kNotFound) {
      log::Warn("pypi wheel list unreadable",
                {{"project", project}, {"error", reader.status().ToString()}});
    }
    return nullptr;
  }
  auto body = store::ReadAll(**reader);
  auto decoded = body.ok() ? DecodeWheelList(*body) : Result<List>(body.status());
  if (!decoded.ok()) {
    log::Warn("pypi wheel list unreadable",
              {{"project", project}, {"error", decoded.status().ToString()}});
    return nullptr;
  }
  list_digests_[std::string(project)] = store::Digest::Of(*body);
  return &lists_.emplace(std::string(project), std::move(decoded).value()).first->second;
}

void WheelHouse::MergeStoredLocked(const std::string& project, List& list) {
  auto info = store_.Stat(IndexKey(project));
  if (!info.ok()) return;
  auto known = list_digests_.find(project);
  if (known != list_digests_.end() && known->second == info->digest) return;
  auto reader = store_.Open(IndexKey(project));
  auto body = reader.ok() ? store::ReadAll(**reader) : Result<std::string>(reader.status());
  auto decoded = body.ok() ? DecodeWheelList(*body) : Result<List>(body.status());
  if (!decoded.ok()) return;
  // A peer replaced the stored list (replication pushes each node's list): keep ours and add
  // the wheels only it names; the next change here saves the union.
  MergeInto(list, std::move(decoded).value());
  list_digests_[project] = store::Digest::Of(*body);
}

bool WheelHouse::MergeInto(List& list, List other) {
  bool changed = false;
  for (WheelEntry& e : other) {
    auto mine = std::find_if(list.begin(), list.end(),
                             [&e](const WheelEntry& m) { return m.filename == e.filename; });
    if (mine == list.end()) {
      list.push_back(std::move(e));
      changed = true;
    } else if (mine->removed != e.removed && e.uploaded > mine->uploaded &&
               (e.sha256 == mine->sha256 || mine->removed)) {
      // A later removal of the same wheel, or a later wheel where ours was removed. Two live
      // wheels of one name are never swapped: the first stays (Commit).
      *mine = std::move(e);
      changed = true;
    }
  }
  return changed;
}

void WheelHouse::RefreshFromOwners(std::string_view project) {
  if (!options_.owner_copies) return;
  {
    MutexLock lock(mu_);
    // Only lists this agent holds: a project without one is pulled from the owners on use
    // (the replicated store), and names clients make up are not remembered.
    if (!lists_.contains(project)) return;
    const auto now = options_.steady_now();
    // The age of a copy counts from its first use here.
    auto [it, first_use] = refreshed_.try_emplace(std::string(project), now);
    if (first_use || now - it->second < options_.list_ttl) return;
    it->second = now;
  }
  std::vector<std::string> copies = options_.owner_copies(IndexKey(project));
  if (copies.empty()) return;
  MutexLock lock(mu_);
  auto it = lists_.find(project);
  if (it == lists_.end()) return;
  for (const std::string& body : copies) {
    auto decoded = DecodeWheelList(body);
    if (!decoded.ok()) {
      log::Warn("pypi wheel list from owner unreadable",
                {{"project", project}, {"error", decoded.status().ToString()}});
      continue;
    }
    if (MergeInto(it->second, std::move(decoded).value())) {
      log::Debug("pypi wheel list refreshed", {{"project", project}});
    }
  }
}

Status WheelHouse::Unlist(std::string_view project, std::string_view filename,
                          std::string_view sha256) {
  const std::string name(project);
  MutexLock lock(mu_);
  List& list = ListLocked(name);
  auto it = std::find_if(list.begin(), list.end(), [&](const WheelEntry& e) {
    return e.filename == filename && e.sha256 == sha256 && !e.removed;
  });
  if (it == list.end()) return NotFound(std::string(filename) + " is not listed");
  WheelEntry before = *it;
  it->removed = true;
  it->uploaded = IsoTime(options_.now());
  if (Status s = SaveLocked(name, list); !s.ok()) {
    *it = before;
    return s;
  }
  log::Info("pypi wheel unlisted", {{"project", name}, {"filename", std::string(filename)}});
  return Status::Ok();
}

Status WheelHouse::SaveLocked(const std::string& project, const List& list) {
  const std::string body = EncodeWheelList(list);
  BC_RETURN_IF_ERROR(store::PutBytes(store_, IndexKey(project), body).status());
  list_digests_[project] = store::Digest::Of(body);
  return Status::Ok();
}

}  // namespace buildcache::pypi
