#include "agent/frontends/pypi/wheel_house.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

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

}  // namespace

std::string EncodeWheelList(const std::vector<WheelEntry>& list) {
  Json files = Json::array();
  for (const WheelEntry& e : list) {
    files.push_back({{"filename", e.filename},
                     {"sha256", e.sha256},
                     {"size", e.size},
                     {"requires_python", e.requires_python},
                     {"uploaded", e.uploaded}});
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
      if (!ParseWheelFilename(e.filename).ok() || !store::Digest::FromHex(e.sha256)) {
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
  std::string project = pending->wheel_.project();
  std::lock_guard lock(mu_);
  List& list = ListLocked(project);
  // Drop entries whose blobs were evicted, so a wheel can be added again after eviction.
  std::erase_if(
      list, [&](const WheelEntry& e) { return !store_.Stat(FileKey(project, e.filename)).ok(); });
  auto existing = std::find_if(list.begin(), list.end(),
                               [&](const WheelEntry& e) { return e.filename == entry.filename; });
  if (existing != list.end()) {
    if (existing->sha256 == entry.sha256) return *existing;
    return AlreadyExists("File already exists: " + entry.filename +
                         " is in the wheel house with different content");
  }
  BC_RETURN_IF_ERROR(pending->writer_->Commit().status());
  list.push_back(entry);
  if (Status s = SaveLocked(project, list); !s.ok()) {
    list.pop_back();
    (void)store_.Delete(FileKey(project, entry.filename));
    return s;
  }
  log::Info("pypi wheel stored", {{"project", project},
                                  {"filename", entry.filename},
                                  {"sha256", entry.sha256},
                                  {"bytes", entry.size}});
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
  auto it =
      fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) return ErrnoStatus(ec.value(), "scanning " + dir.string());
  std::unique_ptr<char[]> buf(new char[kScanBuffer]);
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      log::Warn("pypi wheel scan error", {{"dir", dir.string()}, {"error", ec.message()}});
      ++result.failed;
      ec.clear();
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
    Status s = [&]() -> Status {
      std::ifstream in(it->path(), std::ios::binary);
      if (!in) return Unavailable("cannot open " + it->path().string());
      BC_ASSIGN_OR_RETURN(auto pending, Begin(filename));
      while (in) {
        in.read(buf.get(), kScanBuffer);
        std::streamsize n = in.gcount();
        if (n > 0) BC_RETURN_IF_ERROR(pending->Write({buf.get(), static_cast<size_t>(n)}));
      }
      if (in.bad()) return Unavailable("cannot read " + it->path().string());
      return Commit(std::move(pending)).status();
    }();
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

std::vector<WheelEntry> WheelHouse::Files(std::string_view project) {
  std::vector<WheelEntry> out;
  {
    std::lock_guard lock(mu_);
    if (const List* list = CachedListLocked(project)) out = *list;
  }
  std::erase_if(out, [&](const WheelEntry& e) {
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
  if (it != lists_.end()) return &it->second;
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
  return &lists_.emplace(std::string(project), std::move(decoded).value()).first->second;
}

Status WheelHouse::SaveLocked(const std::string& project, const List& list) {
  return store::PutBytes(store_, IndexKey(project), EncodeWheelList(list)).status();
}

}  // namespace buildcache::pypi
