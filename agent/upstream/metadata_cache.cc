#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <memory>
#include <optional>
#include <span>
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

// Documents and records are fetched again when lost: they are written without their own fsync
// and made durable by the store's grouped content sync (a machine crash before it leaves them
// absent, never wrong; see LmdbStoreOptions::content_sync_interval).
store::WriteOptions Unsynced() {
  store::WriteOptions o;
  o.sync_content = false;
  return o;
}

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

// The request's fetch options, made conditional on `stored` (a 200 document) when given.
FetchOptions ConditionalFetch(const MetadataRequest& request, const Document* stored) {
  FetchOptions fetch = request.fetch;
  if (stored == nullptr) return fetch;
  if (!stored->etag.empty() && !HasHeader(fetch.headers, "If-None-Match")) {
    fetch.headers.emplace_back("If-None-Match", stored->etag);
  }
  if (!stored->last_modified.empty() && !HasHeader(fetch.headers, "If-Modified-Since")) {
    fetch.headers.emplace_back("If-Modified-Since", stored->last_modified);
  }
  return fetch;
}

// The upstream's status as a refresh reads it: a 403 is a not-found where the protocol says so.
int ReadStatus(const MetadataRequest& request, const UpstreamResponse& r) {
  return r.status == 403 && request.forbidden_is_not_found ? 404 : r.status;
}

// Reads a refresh's response head, whose status the caller read as `status`, into `fresh` (the
// content type of a 200, the validators of a 200 or 304). OK for the statuses a refresh takes
// (200, 304, 404, 410); kUnavailable for any other and for a 200 announcing more than max_size.
Status ReadHead(const std::string& where, const MetadataRequest& request, const UpstreamResponse& r,
                int status, Document& fresh) {
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
      return Unavailable(UnexpectedStatusMessage(where, status));
  }
}

// The document a 200, 404 or 410 answer makes (a not-found answer keeps nothing of the response).
Cached Answered(Document fresh, int status, SystemClock::time_point now) {
  Cached c;
  if (status == 200) c.doc = std::move(fresh);
  c.doc.status = status;
  c.doc.fetched_at = now;
  return c;
}

Status SentTooMuch(const std::string& where, const MetadataRequest& request) {
  return Unavailable(where + " sent more than the " + std::to_string(request.max_size) +
                     " byte limit");
}

}  // namespace

struct MetadataCache::Impl {
  store::BlobStore& store;
  Fetcher& fetcher;
  UpstreamObserver observer;
  MetadataCacheOptions options;
  Coalescer<Result<Document>> flights;
  Coalescer<Result<Document>> stream_flights;  // Stream's: publish heads, the body is stored

  SystemClock::time_point Now() const {
    return options.clock ? options.clock() : SystemClock::now();
  }

  static bool Fresh(const Document& doc, const MetadataRequest& request,
                    SystemClock::time_point now) {
    const auto ttl = doc.status == 200 ? request.ttl : request.negative_ttl;
    const auto age = now - doc.fetched_at;
    return age >= SystemClock::duration::zero() && age < ttl;
  }

  // The stored document, body read whole (Get).
  std::optional<Cached> Load(const std::string& key) {
    std::unique_ptr<store::BlobReader> body;
    auto cached = LoadHead(key, &body);
    if (!cached || cached->doc.status != 200) return cached;
    auto bytes = store::ReadAll(*body);
    if (!bytes.ok()) return std::nullopt;
    cached->doc.body = std::move(bytes).value();
    return cached;
  }

  // The record of key and, for a 200 document, a reader of its body (checked against the
  // record, as Load does), without reading the body.
  std::optional<Cached> LoadHead(const std::string& key, std::unique_ptr<store::BlobReader>* body) {
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
    // The body and its record are two commits; a crash or eviction between them leaves a record
    // whose body is missing or different, which counts as nothing cached.
    auto reader = store.Open(key);
    if (!reader.ok() || (*reader)->info().digest.Hex() != cached->body_sha256) return std::nullopt;
    cached->doc.from_peer = cached->doc.from_peer || (*reader)->origin() == "peer";
    cached->doc.body_sha256 = cached->body_sha256;
    cached->doc.stored_size = (*reader)->info().size;
    *body = std::move(reader).value();
    return cached;
  }

  // Stores the body (for 200) and then the record. Failures are logged: the caller still has the
  // document, it is just not cached.
  void Save(const std::string& key, Cached& c, bool body_changed) {
    if (c.doc.status == 200 && body_changed) {
      auto info = store::PutBytes(store, key, c.doc.body, Unsynced());
      if (!info.ok()) {
        log::Warn("metadata not stored", {{"key", key}, {"error", info.status().ToString()}});
        return;
      }
      c.body_sha256 = info->digest.Hex();
    } else if (c.doc.status != 200) {
      c.body_sha256.clear();
      (void)store.Delete(key);
    }
    auto record =
        store::PutBytes(store, key + std::string(kMetaSuffix), EncodeRecord(c), Unsynced());
    if (!record.ok()) {
      log::Warn("metadata not stored", {{"key", key}, {"error", record.status().ToString()}});
    }
  }

  Result<Document> Refresh(const MetadataRequest& request, const Url& url,
                           std::optional<Cached> cached);

  // A waiter's wait for the refresh it joined (counted as coalesced): the leader's result, or
  // kDeadlineExceeded after wait_timeout.
  Result<Document> AwaitRefresh(Coalescer<Result<Document>>::Flight& flight,
                                const MetadataRequest& request, const Url& url) {
    if (observer.on_coalesced) observer.on_coalesced(request.frontend);
    auto result = flight.Wait(options.wait_timeout);
    if (!result) {
      return DeadlineExceeded("waited " + std::to_string(options.wait_timeout.count()) +
                              " ms for the refresh of " + url.Redacted());
    }
    return *std::move(result);
  }

  // What one upstream fetch of a refresh came to, for Settle.
  struct FetchReport {
    int status;        // the upstream's (404 for a 403 read as not found)
    bool conditional;  // If-None-Match / If-Modified-Since were sent
    uint64_t received;
    std::chrono::steady_clock::time_point start;
  };
  // The fetch's status, refusing a 304 to an unconditional request, after reporting the fetch
  // to the observer.
  Status Settle(const MetadataRequest& request, const std::string& where, Status fetched,
                const FetchReport& report) {
    if (fetched.ok() && report.status == 304 && !report.conditional) {
      fetched = Unavailable(where + " answered 304 to an unconditional request");
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - report.start).count();
    std::string_view outcome = "error";
    if (fetched.ok()) {
      outcome = report.status == 200 ? "ok" : report.status == 304 ? "not_modified" : "not_found";
    }
    if (observer.on_fetch) observer.on_fetch(request.frontend, outcome, report.received, seconds);
    return fetched;
  }

  // The stored copy, revalidated by a 304 (`fresh` holds the answer's validators), saved.
  Document Revalidated(const std::string& key, Cached& cached, const Document& fresh,
                       SystemClock::time_point now) {
    cached.doc.fetched_at = now;
    if (!fresh.etag.empty()) cached.doc.etag = fresh.etag;
    if (!fresh.last_modified.empty()) cached.doc.last_modified = fresh.last_modified;
    Save(key, cached, /*body_changed=*/false);
    cached.doc.body_sha256 = cached.body_sha256;
    return cached.doc;
  }

  // What a failed refresh answers: the stored copy marked stale (logged and counted), or
  // kUnavailable when nothing is stored.
  Result<Document> StaleOrUnavailable(const MetadataRequest& request, const Url& url,
                                      std::optional<Cached>& cached, const Status& fetched,
                                      SystemClock::time_point now) {
    if (cached) {
      const auto age =
          std::chrono::duration_cast<std::chrono::seconds>(now - cached->doc.fetched_at);
      log::Warn("serving stale metadata", {{"frontend", request.frontend},
                                           {"key", request.key},
                                           {"url", url.Redacted()},
                                           {"age_seconds", static_cast<int64_t>(age.count())},
                                           {"error", fetched.message()}});
      if (observer.on_stale_served) observer.on_stale_served(request.frontend);
      cached->doc.stale = true;
      cached->doc.body_sha256 = cached->body_sha256;
      return cached->doc;
    }
    log::Warn("metadata unavailable",
              {{"frontend", request.frontend}, {"key", request.key}, {"error", fetched.message()}});
    return Unavailable("no cached copy of " + url.Redacted() +
                       " and the upstream failed: " + fetched.message());
  }

  // Stream's leader: refreshes the key into the store (streaming a cold body to `sink` as it
  // arrives). Returns the head to publish to waiters; *handed_on tells whether the body already
  // went to the sink (else the caller serves what is stored).
  struct StreamSink {
    const std::function<Status(const Document&)>& on_head;
    const std::function<Status(std::string_view)>& on_data;
    bool head_called = false;
    Status failed;  // the first non-OK status a callback returned
  };
  Result<Document> RefreshStreaming(const MetadataRequest& request, const Url& url,
                                    std::optional<Cached> cached, StreamSink& sink,
                                    bool* handed_on);
  // Hands the head of a document streaming from the upstream to the sink.
  static void HandHead(StreamSink& sink, const Document& doc, bool* handed_on) {
    *handed_on = true;
    sink.head_called = true;
    sink.failed = sink.on_head(doc);
  }
  // Commits a streamed body and then its record; c.body_sha256 is left empty when either
  // failed (logged).
  void CommitStreamed(const std::string& key, store::BlobWriter& writer, Cached& c) {
    auto info = writer.Commit();
    if (!info.ok()) {
      log::Warn("metadata not stored", {{"key", key}, {"error", info.status().ToString()}});
      return;
    }
    c.body_sha256 = info->digest.Hex();
    auto record =
        store::PutBytes(store, key + std::string(kMetaSuffix), EncodeRecord(c), Unsynced());
    if (!record.ok()) {
      log::Warn("metadata not stored", {{"key", key}, {"error", record.status().ToString()}});
      c.body_sha256.clear();
    }
  }
  // Hands a stored document to the sink: the head, then the body read in pieces.
  Status ServeStored(Document doc, store::BlobReader* body, StreamSink& sink);
  // ServeStored for a loaded copy; returns its head.
  Result<Document> ServeCopy(Cached copy, store::BlobReader* body, StreamSink& sink) {
    Document head = copy.doc;
    BC_RETURN_IF_ERROR(ServeStored(std::move(copy.doc), body, sink));
    return head;
  }
  // Hands the sink the document a refresh published, read from the store where the refresh
  // left it (a negative answer has no body to read).
  Result<Document> ServePublished(const MetadataRequest& request, const Url& url,
                                  const Document& published, StreamSink& sink) {
    if (published.status != 200) {
      BC_RETURN_IF_ERROR(ServeStored(published, nullptr, sink));
      return published;
    }
    std::unique_ptr<store::BlobReader> body;
    std::optional<Cached> cached = LoadHead(request.key, &body);
    if (!cached) return Unavailable("the refresh of " + url.Redacted() + " was not stored");
    cached->doc.stale = published.stale;
    cached->doc.fetched_at = published.fetched_at;
    return ServeCopy(std::move(*cached), body.get(), sink);
  }
};

namespace {
constexpr size_t kStreamPieceBytes = size_t{256} * 1024;
}  // namespace

Status MetadataCache::Impl::ServeStored(Document doc, store::BlobReader* body, StreamSink& sink) {
  doc.body.clear();
  sink.head_called = true;
  if (Status s = sink.on_head(doc); !s.ok()) return s;
  if (doc.status != 200 || body == nullptr) return Status::Ok();
  std::string buf(std::min<uint64_t>(kStreamPieceBytes, body->info().size), '\0');
  for (uint64_t offset = 0; offset < body->info().size;) {
    BC_ASSIGN_OR_RETURN(size_t n, body->ReadAt(offset, std::span<char>(buf.data(), buf.size())));
    if (n == 0) return DataLoss("stored metadata shorter than its recorded size");
    BC_RETURN_IF_ERROR(sink.on_data(std::string_view(buf.data(), n)));
    offset += n;
  }
  return Status::Ok();
}

Result<Document> MetadataCache::Impl::RefreshStreaming(const MetadataRequest& request,
                                                       const Url& url, std::optional<Cached> cached,
                                                       StreamSink& sink, bool* handed_on) {
  *handed_on = false;
  const std::string where = "upstream " + url.Redacted();
  const bool conditional = cached && cached->doc.status == 200;
  const FetchOptions fetch = ConditionalFetch(request, conditional ? &cached->doc : nullptr);
  // Only a cold body goes to the caller as it arrives: with a stored copy, an upstream failure in
  // the middle of the body must still leave the stale copy to serve.
  const bool pass_on = !cached;

  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  uint64_t received = 0;
  Document fresh;
  std::unique_ptr<store::BlobWriter> writer;
  auto on_head = [&](const UpstreamResponse& r) -> Status {
    status = ReadStatus(request, r);
    BC_RETURN_IF_ERROR(ReadHead(where, request, r, status, fresh));
    if (status != 200) return Status::Ok();
    fresh.status = 200;
    fresh.fetched_at = Now();
    if (auto w = store.NewWriter(request.key, Unsynced()); w.ok()) {
      writer = std::move(w).value();
    } else {
      log::Warn("metadata not stored", {{"key", request.key}, {"error", w.status().ToString()}});
    }
    if (pass_on) HandHead(sink, fresh, handed_on);
    return Status::Ok();
  };
  auto on_data = [&](std::string_view data) -> Status {
    received += data.size();
    if (status != 200) return Status::Ok();  // an error page: dropped
    if (received > request.max_size) return SentTooMuch(where, request);
    if (writer) {
      if (Status s = writer->Write(data); !s.ok()) {
        log::Warn("metadata not stored", {{"key", request.key}, {"error", s.ToString()}});
        writer.reset();
      }
    }
    // Without a store copy a refresh cannot be served afterwards: give up (stale or error).
    if (!writer && !pass_on) return Unavailable("the store cannot take " + request.key);
    if (pass_on && sink.failed.ok()) sink.failed = sink.on_data(data);
    return Status::Ok();
  };
  Status fetched = fetcher.Get(request.url, fetch, on_head, on_data);
  if (fetched.code() == StatusCode::kInvalidArgument && !*handed_on) return fetched;
  fetched = Settle(request, where, std::move(fetched), {status, conditional, received, start});
  const auto now = Now();

  if (fetched.ok()) {
    if (status == 304) return Revalidated(request.key, *cached, fresh, now);
    Cached c = Answered(std::move(fresh), status, now);
    if (status != 200) {
      Save(request.key, c, /*body_changed=*/true);
      if (pass_on) HandHead(sink, c.doc, handed_on);
      return std::move(c.doc);
    }
    if (writer) CommitStreamed(request.key, *writer, c);
    c.doc.body_sha256 = c.body_sha256;
    if (!pass_on && c.body_sha256.empty()) {
      fetched = Unavailable("the store cannot take " + request.key);
    } else {
      return std::move(c.doc);
    }
  }
  if (*handed_on) {
    // Part of a cold body went to the caller; nothing stale exists to fall back on.
    log::Warn("metadata unavailable",
              {{"frontend", request.frontend}, {"key", request.key}, {"error", fetched.message()}});
    return Unavailable(where + " failed in the middle of the document: " + fetched.message());
  }
  return StaleOrUnavailable(request, url, cached, fetched, now);
}

Result<Document> MetadataCache::Impl::Refresh(const MetadataRequest& request, const Url& url,
                                              std::optional<Cached> cached) {
  const std::string where = "upstream " + url.Redacted();
  const bool conditional = cached && cached->doc.status == 200;
  const FetchOptions fetch = ConditionalFetch(request, conditional ? &cached->doc : nullptr);

  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  uint64_t received = 0;
  Document fresh;
  auto on_head = [&](const UpstreamResponse& r) -> Status {
    status = ReadStatus(request, r);
    return ReadHead(where, request, r, status, fresh);
  };
  auto on_data = [&](std::string_view data) -> Status {
    received += data.size();
    if (status != 200) return Status::Ok();  // an error page: dropped
    if (received > request.max_size) return SentTooMuch(where, request);
    fresh.body.append(data);
    return Status::Ok();
  };
  Status fetched = fetcher.Get(request.url, fetch, on_head, on_data);
  // Rejected before anything was sent (a bad request header): not an upstream failure.
  if (fetched.code() == StatusCode::kInvalidArgument) return fetched;
  fetched = Settle(request, where, std::move(fetched), {status, conditional, received, start});
  const auto now = Now();

  if (fetched.ok()) {
    if (status == 304) return Revalidated(request.key, *cached, fresh, now);
    Cached c = Answered(std::move(fresh), status, now);
    Save(request.key, c, /*body_changed=*/true);
    c.doc.body_sha256 = c.body_sha256;
    return std::move(c.doc);
  }
  return StaleOrUnavailable(request, url, cached, fetched, now);
}

MetadataCache::MetadataCache(store::BlobStore& store, Fetcher& fetcher, UpstreamObserver observer,
                             MetadataCacheOptions options)
    : impl_(new Impl{store, fetcher, std::move(observer), std::move(options), {}, {}}) {}

MetadataCache::~MetadataCache() = default;

Result<Document> MetadataCache::Get(const MetadataRequest& request) {
  BC_ASSIGN_OR_RETURN(Url url, ParseUrl(request.url));
  if (request.key.empty()) return InvalidArgument("empty metadata key");
  Impl& impl = *impl_;
  std::optional<Cached> cached = impl.Load(request.key);
  if (cached && Impl::Fresh(cached->doc, request, impl.Now())) return std::move(cached->doc);

  auto joined = impl.flights.Join(request.key);
  if (!joined.leadership) return impl.AwaitRefresh(*joined.flight, request, url);
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

Result<Document> MetadataCache::Stream(const MetadataRequest& request,
                                       const std::function<Status(const Document&)>& on_head,
                                       const std::function<Status(std::string_view)>& on_data) {
  BC_ASSIGN_OR_RETURN(Url url, ParseUrl(request.url));
  if (request.key.empty()) return InvalidArgument("empty metadata key");
  Impl& impl = *impl_;
  Impl::StreamSink sink{on_head, on_data, false, Status::Ok()};
  std::unique_ptr<store::BlobReader> body;
  std::optional<Cached> cached = impl.LoadHead(request.key, &body);
  if (cached && Impl::Fresh(cached->doc, request, impl.Now())) {
    return impl.ServeCopy(std::move(*cached), body.get(), sink);
  }

  auto joined = impl.stream_flights.Join(request.key);
  if (!joined.leadership) {
    Result<Document> result = impl.AwaitRefresh(*joined.flight, request, url);
    BC_RETURN_IF_ERROR(result.status());
    // The leader left the document in the store (or it is a negative answer): read it there.
    body.reset();
    return impl.ServePublished(request, url, *result, sink);
  }
  // Another refresh may have finished between the look-up and Join.
  body.reset();
  cached = impl.LoadHead(request.key, &body);
  if (cached && Impl::Fresh(cached->doc, request, impl.Now())) {
    joined.leadership->Publish(cached->doc);
    return impl.ServeCopy(std::move(*cached), body.get(), sink);
  }
  body.reset();
  bool handed_on = false;
  Result<Document> result =
      impl.RefreshStreaming(request, url, std::move(cached), sink, &handed_on);
  joined.leadership->Publish(result);
  if (!result.ok()) return result;
  if (handed_on) {
    BC_RETURN_IF_ERROR(sink.failed);
    return result;
  }
  // Revalidated, refreshed into the store, or stale: served from the store.
  return impl.ServePublished(request, url, *result, sink);
}

std::string_view DocumentSource(const Document& doc, std::chrono::system_clock::time_point start) {
  if (!doc.stale && doc.fetched_at >= start) return "upstream";
  return doc.from_peer ? "peer" : "local";
}

}  // namespace buildcache::upstream
