#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <optional>
#include <string>

#include "agent/upstream/coalescer.h"
#include "agent/upstream/upstream.h"
#include "agent/upstream/url.h"
#include "common/log/log.h"

namespace buildcache::upstream {

namespace {

using SystemClock = std::chrono::system_clock;

constexpr std::string_view kMetaSuffix = "#meta";
constexpr std::string_view kMetaMagic = "buildcache-metadata 1";

// A stored document with the body digest its record names.
struct Cached {
  Document doc;
  std::string body_sha256;  // hex; empty for negative entries
};

// Header values come from the upstream; a record line must stay one line.
std::string OneLine(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  return out;
}

std::string EncodeRecord(const Cached& c) {
  const int64_t ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(c.doc.fetched_at.time_since_epoch())
          .count();
  std::string out(kMetaMagic);
  out += "\nstatus " + std::to_string(c.doc.status);
  out += "\nfetched-at-ms " + std::to_string(ms);
  out += "\nbody-sha256 " + c.body_sha256;
  out += "\ncontent-type " + OneLine(c.doc.content_type);
  out += "\netag " + OneLine(c.doc.etag);
  out += "\nlast-modified " + OneLine(c.doc.last_modified);
  out += "\n";
  return out;
}

template <typename Int>
bool ParseInt(std::string_view s, Int* out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

std::optional<Cached> DecodeRecord(std::string_view text) {
  size_t eol = text.find('\n');
  if (eol == std::string_view::npos || text.substr(0, eol) != kMetaMagic) return std::nullopt;
  text.remove_prefix(eol + 1);
  Cached c;
  bool have_status = false;
  bool have_time = false;
  while (!text.empty()) {
    eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    size_t space = line.find(' ');
    std::string_view name = line.substr(0, space);
    std::string_view value = space == std::string_view::npos ? "" : line.substr(space + 1);
    if (name == "status") {
      have_status = ParseInt(value, &c.doc.status);
    } else if (name == "fetched-at-ms") {
      int64_t ms = 0;
      have_time = ParseInt(value, &ms);
      c.doc.fetched_at = SystemClock::time_point(std::chrono::milliseconds(ms));
    } else if (name == "body-sha256") {
      c.body_sha256 = std::string(value);
    } else if (name == "content-type") {
      c.doc.content_type = std::string(value);
    } else if (name == "etag") {
      c.doc.etag = std::string(value);
    } else if (name == "last-modified") {
      c.doc.last_modified = std::string(value);
    }
  }
  if (!have_status || !have_time) return std::nullopt;
  if (c.doc.status == 200 && c.body_sha256.empty()) return std::nullopt;
  return c;
}

bool HasHeader(const HeaderList& headers, std::string_view name) {
  for (const auto& [k, v] : headers) {
    if (k.size() == name.size() && std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return true;
    }
  }
  return false;
}

}  // namespace

struct MetadataCache::Impl {
  store::BlobStore& store;
  Fetcher& fetcher;
  UpstreamObserver observer;
  MetadataCacheOptions options;
  Coalescer<Result<Document>> flights;

  SystemClock::time_point Now() const {
    return options.clock ? options.clock() : SystemClock::now();
  }

  static bool Fresh(const Document& doc, const MetadataRequest& request,
                    SystemClock::time_point now) {
    const auto ttl = doc.status == 200 ? request.ttl : request.negative_ttl;
    const auto age = now - doc.fetched_at;
    return age >= SystemClock::duration::zero() && age < ttl;
  }

  std::optional<Cached> Load(const std::string& key) {
    auto record = store.Open(key + std::string(kMetaSuffix));
    if (!record.ok()) return std::nullopt;
    auto text = store::ReadAll(**record);
    if (!text.ok()) return std::nullopt;
    auto cached = DecodeRecord(*text);
    if (!cached) {
      log::Warn("metadata record unreadable", {{"key", key}});
      return std::nullopt;
    }
    cached->doc.from_peer = (*record)->origin() == "peer";
    if (cached->doc.status != 200) return cached;
    auto body = store.Open(key);
    // The body and its record are two commits; a crash or eviction between them leaves a record
    // whose body is missing or different, which counts as nothing cached.
    if (!body.ok() || (*body)->info().digest.Hex() != cached->body_sha256) return std::nullopt;
    auto bytes = store::ReadAll(**body);
    if (!bytes.ok()) return std::nullopt;
    cached->doc.from_peer = cached->doc.from_peer || (*body)->origin() == "peer";
    cached->doc.body = std::move(bytes).value();
    return cached;
  }

  // Stores the body (for 200) and then the record. Failures are logged: the caller still has the
  // document, it is just not cached.
  void Save(const std::string& key, Cached& c, bool body_changed) {
    if (c.doc.status == 200 && body_changed) {
      auto info = store::PutBytes(store, key, c.doc.body);
      if (!info.ok()) {
        log::Warn("metadata not stored", {{"key", key}, {"error", info.status().ToString()}});
        return;
      }
      c.body_sha256 = info->digest.Hex();
    } else if (c.doc.status != 200) {
      c.body_sha256.clear();
      (void)store.Delete(key);
    }
    auto record = store::PutBytes(store, key + std::string(kMetaSuffix), EncodeRecord(c));
    if (!record.ok()) {
      log::Warn("metadata not stored", {{"key", key}, {"error", record.status().ToString()}});
    }
  }

  Result<Document> Refresh(const MetadataRequest& request, const Url& url,
                           std::optional<Cached> cached);
};

Result<Document> MetadataCache::Impl::Refresh(const MetadataRequest& request, const Url& url,
                                              std::optional<Cached> cached) {
  const std::string where = "upstream " + url.Redacted();
  FetchOptions fetch = request.fetch;
  const bool conditional = cached && cached->doc.status == 200;
  if (conditional) {
    if (!cached->doc.etag.empty() && !HasHeader(fetch.headers, "If-None-Match")) {
      fetch.headers.emplace_back("If-None-Match", cached->doc.etag);
    }
    if (!cached->doc.last_modified.empty() && !HasHeader(fetch.headers, "If-Modified-Since")) {
      fetch.headers.emplace_back("If-Modified-Since", cached->doc.last_modified);
    }
  }

  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  uint64_t received = 0;
  Document fresh;
  auto on_head = [&](const UpstreamResponse& r) -> Status {
    status = r.status;
    switch (status) {
      case 200:
        if (r.content_length && *r.content_length > request.max_size) {
          return Unavailable(where + " sends " + std::to_string(*r.content_length) +
                             " bytes, more than the " + std::to_string(request.max_size) +
                             " byte limit");
        }
        fresh.content_type = std::string(r.header("Content-Type"));
        [[fallthrough]];
      case 304:
        fresh.etag = std::string(r.header("ETag"));
        fresh.last_modified = std::string(r.header("Last-Modified"));
        return Status::Ok();
      case 404:
      case 410:
        return Status::Ok();
      default:
        return Unavailable(where + " answered " + std::to_string(status));
    }
  };
  auto on_data = [&](std::string_view data) -> Status {
    received += data.size();
    if (status != 200) return Status::Ok();  // an error page: dropped
    if (received > request.max_size) {
      return Unavailable(where + " sent more than the " + std::to_string(request.max_size) +
                         " byte limit");
    }
    fresh.body.append(data);
    return Status::Ok();
  };
  Status fetched = fetcher.Get(request.url, fetch, on_head, on_data);
  // Rejected before anything was sent (a bad request header): not an upstream failure.
  if (fetched.code() == StatusCode::kInvalidArgument) return fetched;
  if (fetched.ok() && status == 304 && !conditional) {
    fetched = Unavailable(where + " answered 304 to an unconditional request");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto now = Now();

  std::string_view outcome = "error";
  if (fetched.ok()) {
    outcome = status == 200 ? "ok" : status == 304 ? "not_modified" : "not_found";
  }
  if (observer.on_fetch) observer.on_fetch(request.frontend, outcome, received, seconds);

  if (fetched.ok()) {
    if (status == 304) {
      cached->doc.fetched_at = now;
      if (!fresh.etag.empty()) cached->doc.etag = fresh.etag;
      if (!fresh.last_modified.empty()) cached->doc.last_modified = fresh.last_modified;
      Save(request.key, *cached, /*body_changed=*/false);
      return cached->doc;
    }
    Cached c;
    c.doc = std::move(fresh);
    c.doc.status = status;
    c.doc.fetched_at = now;
    if (status != 200) {
      c.doc.body.clear();
      c.doc.content_type.clear();
      c.doc.etag.clear();
      c.doc.last_modified.clear();
    }
    Save(request.key, c, /*body_changed=*/true);
    return std::move(c.doc);
  }
  if (cached) {
    const auto age = std::chrono::duration_cast<std::chrono::seconds>(now - cached->doc.fetched_at);
    log::Warn("serving stale metadata", {{"frontend", request.frontend},
                                         {"key", request.key},
                                         {"url", url.Redacted()},
                                         {"age_seconds", static_cast<int64_t>(age.count())},
                                         {"error", fetched.message()}});
    if (observer.on_stale_served) observer.on_stale_served(request.frontend);
    cached->doc.stale = true;
    return cached->doc;
  }
  log::Warn("metadata unavailable",
            {{"frontend", request.frontend}, {"key", request.key}, {"error", fetched.message()}});
  return Unavailable("no cached copy of " + url.Redacted() +
                     " and the upstream failed: " + fetched.message());
}

MetadataCache::MetadataCache(store::BlobStore& store, Fetcher& fetcher, UpstreamObserver observer,
                             MetadataCacheOptions options)
    : impl_(new Impl{store, fetcher, std::move(observer), std::move(options), {}}) {}

MetadataCache::~MetadataCache() = default;

Result<Document> MetadataCache::Get(const MetadataRequest& request) {
  BC_ASSIGN_OR_RETURN(Url url, ParseUrl(request.url));
  if (request.key.empty()) return InvalidArgument("empty metadata key");
  Impl& impl = *impl_;
  std::optional<Cached> cached = impl.Load(request.key);
  if (cached && Impl::Fresh(cached->doc, request, impl.Now())) return std::move(cached->doc);

  auto joined = impl.flights.Join(request.key);
  if (!joined.leadership) {
    if (impl.observer.on_coalesced) impl.observer.on_coalesced(request.frontend);
    auto result = joined.flight->Wait(impl.options.wait_timeout);
    if (!result) {
      return DeadlineExceeded("waited " + std::to_string(impl.options.wait_timeout.count()) +
                              " ms for the refresh of " + url.Redacted());
    }
    return *std::move(result);
  }
  // Another refresh may have finished between the look-up and Join.
  cached = impl.Load(request.key);
  if (cached && Impl::Fresh(cached->doc, request, impl.Now())) {
    joined.leadership->Publish(cached->doc);
    return std::move(cached->doc);
  }
  Result<Document> result = impl.Refresh(request, url, std::move(cached));
  joined.leadership->Publish(result);
  return result;
}

std::string_view DocumentSource(const Document& doc, std::chrono::system_clock::time_point start) {
  if (!doc.stale && doc.fetched_at >= start) return "upstream";
  return doc.from_peer ? "peer" : "local";
}

}  // namespace buildcache::upstream
