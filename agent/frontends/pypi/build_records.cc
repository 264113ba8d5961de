#include "agent/frontends/pypi/build_records.h"

#include <nlohmann/json.hpp>

#include "common/log/log.h"

namespace buildcache::pypi {
namespace {

using Json = nlohmann::json;

constexpr size_t kListPage = 256;
constexpr size_t kMaxRecordBytes = size_t{64} << 10;

constexpr std::pair<BuildRecord::State, std::string_view> kStates[] = {
    {BuildRecord::State::kQueued, "queued"},
    {BuildRecord::State::kRunning, "running"},
    {BuildRecord::State::kSucceeded, "succeeded"},
    {BuildRecord::State::kFailed, "failed"},
    {BuildRecord::State::kInterrupted, "interrupted"}};

bool IsLowerHex(std::string_view s, size_t size) {
  return s.size() == size && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

}  // namespace

std::string_view BuildStateName(BuildRecord::State s) {
  for (const auto& [state, name] : kStates) {
    if (state == s) return name;
  }
  return "?";
}

std::string EncodeBuildRecord(const BuildRecord& r) {
  Json j = {{"version", 1},
            {"id", r.id},
            {"project", r.project},
            {"release", r.version},
            {"sdist", r.sdist},
            {"sha256", r.sha256},
            {"builder", r.builder},
            {"platform", r.platform},
            {"state", std::string(BuildStateName(r.state))},
            {"error", r.error},
            {"wheel", r.wheel},
            {"seconds", r.seconds},
            {"finished_unix_ms", r.finished_unix_ms}};
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<BuildRecord> DecodeBuildRecord(std::string_view json) {
  Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("build record is not JSON");
  try {
    BuildRecord r;
    r.id = j.at("id").get<std::string>();
    r.project = j.at("project").get<std::string>();
    r.version = j.at("release").get<std::string>();
    r.sdist = j.at("sdist").get<std::string>();
    r.sha256 = j.at("sha256").get<std::string>();
    r.builder = j.value("builder", "");
    r.platform = j.value("platform", "");
    r.error = j.value("error", "");
    r.wheel = j.value("wheel", "");
    r.seconds = j.value("seconds", 0.0);
    r.finished_unix_ms = j.value("finished_unix_ms", int64_t{0});
    const std::string state = j.at("state").get<std::string>();
    bool known = false;
    for (const auto& [s, name] : kStates) {
      if (name == state) {
        r.state = s;
        known = true;
      }
    }
    if (!known) return InvalidArgument("build record has an unknown state \"" + state + "\"");
    if (!IsLowerHex(r.id, 16) || !IsLowerHex(r.sha256, 64)) {
      return InvalidArgument("build record has a bad id or sha256");
    }
    return r;
  } catch (const Json::exception& e) {
    return InvalidArgument(std::string("malformed build record: ") + e.what());
  }
}

BuildRecordStore::BuildRecordStore(store::BlobStore& store, std::string prefix)
    : store_(store), prefix_(std::move(prefix)) {}

std::string BuildRecordStore::Key(std::string_view id) const { return prefix_ + std::string(id); }

void BuildRecordStore::Save(const BuildRecord& record) {
  auto put = store::PutBytes(store_, Key(record.id), EncodeBuildRecord(record));
  if (!put.ok()) {
    log::Warn("pypi build record not saved",
              {{"id", record.id}, {"error", put.status().ToString()}});
  }
}

void BuildRecordStore::Remove(std::string_view id) { (void)store_.Delete(Key(id)); }

std::vector<BuildRecord> BuildRecordStore::LoadAll() {
  std::vector<BuildRecord> out;
  std::vector<std::string> bad;
  std::string after;
  for (;;) {
    auto page = store_.ListKeys(prefix_, after, kListPage);
    if (!page.ok()) {
      log::Warn("pypi build records not read", {{"error", page.status().ToString()}});
      break;
    }
    for (const std::string& key : page->keys) {
      auto reader = store_.Open(key);
      Result<std::string> body =
          reader.ok() ? store::ReadAll(**reader) : Result<std::string>(reader.status());
      if (body.ok() && body->size() > kMaxRecordBytes) body = InvalidArgument("too large");
      auto record = body.ok() ? DecodeBuildRecord(*body) : Result<BuildRecord>(body.status());
      if (record.ok() && Key(record->id) != key) record = InvalidArgument("key and id differ");
      if (!record.ok()) {
        log::Warn("pypi build record unreadable",
                  {{"key", key}, {"error", record.status().ToString()}});
        bad.push_back(key);
        continue;
      }
      out.push_back(std::move(record).value());
    }
    if (page->next.empty()) break;
    after = page->next;
  }
  for (const std::string& key : bad) (void)store_.Delete(key);
  return out;
}

}  // namespace buildcache::pypi
