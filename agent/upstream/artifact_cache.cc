#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "agent/store/digest.h"
#include "agent/upstream/coalescer.h"
#include "agent/upstream/serving.h"
#include "agent/upstream/upstream.h"
#include "agent/upstream/url.h"
#include "agent/upstream/verifier.h"
#include "common/http/headers.h"
#include "common/http/status_http.h"
#include "common/log/log.h"

namespace buildcache::upstream {

namespace {

using http::kSourceHeader;
// Rounds of "look in the store, else fetch or wait": a waiter whose leader could not store the
// object, or an object evicted right after it was fetched, gets another round.
constexpr int kRounds = 3;
// Blobs whose SHA-1/384/512 are kept in memory (a few hundred bytes each).
constexpr size_t kMaxKeptDigests = 100'000;

struct DigestHash {
  size_t operator()(const store::Digest& d) const { return std::hash<std::string_view>()(d.raw()); }
};

// What a fetch came to, as shared with the requests that waited on it.
struct FetchOutcome {
  FetchOutcome(Status s) : status(std::move(s)) {}  // NOLINT(google-explicit-constructor)
  Status status;                                    // OK: the artifact is committed to the store
  bool gone = false;         // the upstream answered 410 (status is kNotFound)
  bool fetch_again = false;  // fetched and verified, but the store could not keep it
};

std::optional<store::Digest> ExpectedSha256(const Artifact& artifact) {
  for (const auto& e : artifact.expected) {
    if (e.algorithm == ExpectedDigest::Algorithm::kSha256 && e.raw.size() == 32) {
      std::array<uint8_t, 32> bytes;
      std::memcpy(bytes.data(), e.raw.data(), bytes.size());
      return store::Digest(bytes);
    }
  }
  return std::nullopt;
}

std::string_view ContentType(const Artifact& artifact) {
  return artifact.content_type.empty() ? std::string_view("application/octet-stream")
                                       : std::string_view(artifact.content_type);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Upstream statuses that mean "no such artifact" for this artifact.
bool IsNotFoundStatus(const Artifact& a, int status) {
  return status == 404 || status == 410 || (status == 403 && a.forbidden_is_not_found);
}

}  // namespace

struct ArtifactCache::Impl {
  store::BlobStore& store;
  Fetcher& fetcher;
  UpstreamObserver observer;
  ArtifactCacheOptions options;
  Coalescer<FetchOutcome> flights;

  // Not-found answers remembered for Artifact::negative_ttl, by store key.
  struct Negative {
    std::chrono::steady_clock::time_point expires;
    bool gone = false;
    std::string message;
  };
  std::mutex negative_mu;
  std::map<std::string, Negative> negatives;  // guarded by negative_mu

  std::chrono::steady_clock::time_point Now() const {
    return options.clock ? options.clock() : std::chrono::steady_clock::now();
  }

  // The remembered not-found answer for the artifact, while it is fresh.
  std::optional<FetchOutcome> RememberedNotFound(const Artifact& a) {
    if (a.negative_ttl.count() <= 0) return std::nullopt;
    std::lock_guard<std::mutex> lock(negative_mu);
    auto it = negatives.find(a.key);
    if (it == negatives.end()) return std::nullopt;
    if (it->second.expires <= Now()) {
      negatives.erase(it);
      return std::nullopt;
    }
    FetchOutcome outcome(NotFound(it->second.message));
    outcome.gone = it->second.gone;
    return outcome;
  }

  void RememberNotFound(const Artifact& a, const FetchOutcome& outcome) {
    if (a.negative_ttl.count() <= 0 || options.max_negative_entries == 0) return;
    std::lock_guard<std::mutex> lock(negative_mu);
    const auto now = Now();
    if (negatives.size() >= options.max_negative_entries && !negatives.contains(a.key)) {
      std::erase_if(negatives, [&](const auto& e) { return e.second.expires <= now; });
      if (negatives.size() >= options.max_negative_entries) {
        negatives.erase(std::min_element(
            negatives.begin(), negatives.end(),
            [](const auto& x, const auto& y) { return x.second.expires < y.second.expires; }));
      }
    }
    negatives[a.key] = Negative{now + a.negative_ttl, outcome.gone, outcome.status.message()};
  }

  void Count(const std::function<void(std::string_view)>& f, const Artifact& a) {
    if (f) f(a.frontend);
  }

  // Digests other than SHA-256 that this agent computed itself over stored blobs, by the blob's
  // SHA-256 (the store verifies that one on reads). Bounded: when full it is emptied, and blobs
  // are hashed again on their next use.
  std::mutex kept_mu;
  std::unordered_map<store::Digest, std::vector<ExpectedDigest>, DigestHash> kept;

  void Keep(const store::Digest& digest, const std::vector<ExpectedDigest>& computed) {
    if (computed.empty()) return;
    std::lock_guard lock(kept_mu);
    if (kept.size() >= kMaxKeptDigests) kept.clear();
    std::vector<ExpectedDigest>& entry = kept[digest];
    for (const ExpectedDigest& c : computed) {
      bool present = std::any_of(entry.begin(), entry.end(), [&](const ExpectedDigest& e) {
        return e.algorithm == c.algorithm;
      });
      if (!present) entry.push_back(c);
    }
  }

  // The kept digest of the blob in `algorithm`, when computed before.
  std::optional<std::string> Kept(const store::Digest& digest,
                                  ExpectedDigest::Algorithm algorithm) {
    std::lock_guard lock(kept_mu);
    auto it = kept.find(digest);
    if (it == kept.end()) return std::nullopt;
    for (const ExpectedDigest& e : it->second) {
      if (e.algorithm == algorithm) return e.raw;
    }
    return std::nullopt;
  }

  // Whether the stored blob is the artifact (see ArtifactCache::Serve). `reader` is the opened
  // blob, or nullptr when only its info is at hand (it is then opened if a digest must be
  // computed). A blob that is not the artifact is counted, logged and removed from the store.
  bool Matches(const Artifact& a, const store::BlobInfo& info, store::BlobReader* reader) {
    std::string mismatch;
    auto sha256 = ExpectedSha256(a);
    if (sha256 && *sha256 != info.digest) {
      mismatch = "sha256 " + info.digest.Hex() + ", expected " + sha256->Hex();
    } else if (a.size && *a.size != info.size) {
      mismatch = "size " + std::to_string(info.size) + ", expected " + std::to_string(*a.size);
    }
    std::vector<ExpectedDigest::Algorithm> missing;
    for (const ExpectedDigest& e : a.expected) {
      if (!mismatch.empty() || e.algorithm == ExpectedDigest::Algorithm::kSha256) continue;
      auto kept_raw = Kept(info.digest, e.algorithm);
      if (!kept_raw) {
        missing.push_back(e.algorithm);
      } else if (*kept_raw != e.raw) {
        mismatch = std::string(AlgorithmName(e.algorithm)) + " " + ToHex(*kept_raw) +
                   ", expected " + ToHex(e.raw);
      }
    }
    if (mismatch.empty() && !missing.empty()) {
      std::unique_ptr<store::BlobReader> opened;
      if (reader == nullptr) {
        auto o = store.Open(a.key);
        if (!o.ok()) return false;
        opened = std::move(o).value();
        if (opened->info().digest != info.digest) return false;  // replaced meanwhile
        reader = opened.get();
      }
      auto computed = HashBlob(*reader, missing);
      if (!computed.ok()) {
        log::Warn("stored artifact unreadable",
                  {{"key", a.key}, {"error", computed.status().ToString()}});
        return false;
      }
      Keep(info.digest, *computed);
      for (const ExpectedDigest& c : *computed) {
        for (const ExpectedDigest& e : a.expected) {
          if (mismatch.empty() && e.algorithm == c.algorithm && e.raw != c.raw) {
            mismatch = std::string(AlgorithmName(e.algorithm)) + " " + ToHex(c.raw) +
                       ", expected " + ToHex(e.raw);
          }
        }
      }
    }
    if (mismatch.empty()) return true;
    Count(observer.on_stored_mismatch, a);
    log::Warn("stored artifact does not match its index; fetching it again",
              {{"frontend", a.frontend}, {"key", a.key}, {"stored", mismatch}});
    (void)store.Delete(a.key);
    return false;
  }

  std::optional<store::BlobInfo> LocalInfo(const Artifact& a) {
    auto info = store.Stat(a.key);
    if (!info.ok() || !Matches(a, *info, nullptr)) return std::nullopt;
    return *info;
  }

  // Serves the stored artifact; false (response untouched) when it is not stored.
  bool ServeLocal(const http::Request& request, http::Response& response, const Artifact& a,
                  std::string_view source) {
    auto opened = store.Open(a.key);
    if (!opened.ok()) {
      if (opened.status().code() != StatusCode::kNotFound) {
        log::Warn("artifact store read failed",
                  {{"key", a.key}, {"error", opened.status().ToString()}});
      }
      return false;
    }
    store::BlobReader& reader = **opened;
    if (!Matches(a, reader.info(), &reader)) return false;
    response.SetStatus(200);
    response.SetHeader("Content-Type", ContentType(a));
    // A blob the store pulled from a peer for this read is a peer hit, not a local one.
    response.SetHeader(kSourceHeader, source == "local" ? reader.origin() : source);
    const ByteRange range = RequestedRange(request, reader.info().size);
    if (Status s = SendBlob(reader, range, response); !s.ok() && !response.started()) {
      http::SendError(response, s);
    }
    return true;
  }

  void RespondError(http::Response& response, const FetchOutcome& outcome) {
    if (outcome.gone && !response.started()) {
      response.SetStatus(410);
      response.SetHeader("Content-Type", "text/plain; charset=utf-8");
      (void)response.Send("GONE: " + outcome.status.message() + "\n");
      return;
    }
    http::SendError(response, outcome.status);
  }

  // Fetches the artifact from upstream into the store, verifying it; when `client` is given it
  // is answered too (streamed while fetching, then completed, aborted or given an error).
  FetchOutcome Fetch(const Artifact& a, const Url& url, http::Response* client,
                     store::BlobInfo* committed);
};

FetchOutcome ArtifactCache::Impl::Fetch(const Artifact& a, const Url& url, http::Response* client,
                                        store::BlobInfo* committed) {
  const auto start = std::chrono::steady_clock::now();
  const std::string where = "upstream " + url.Redacted();
  const uint64_t max = options.max_object_size;
  const std::optional<store::Digest> sha256 = ExpectedSha256(a);

  int upstream_status = 0;
  std::optional<uint64_t> length;
  uint64_t received = 0;
  std::unique_ptr<store::BlobWriter> writer;
  std::unique_ptr<Verifier> verifier;
  Status store_failure;   // why the object is not being stored
  Status verify_failure;  // a size mismatch found while streaming
  bool client_ok = client != nullptr;
  bool began = false;
  char held_back = 0;  // the last byte of a Content-Length body, sent once verified
  std::string_view source = "upstream";  // X-Buildcache-Source: "peer" when a peer streams it

  auto on_head = [&](const UpstreamResponse& r) -> Status {
    if (verifier != nullptr) {
      // The upstream taking over from a peer that failed mid-stream: the body continues where
      // the peer stopped, so it must be the same length (the digests decide the rest).
      if (r.status < 200 || r.status > 299) {
        return Unavailable(where + " answered " + std::to_string(r.status) +
                           " after a peer had started the artifact");
      }
      if (length && r.content_length && *length != *r.content_length) {
        return Unavailable(where + " sends " + std::to_string(*r.content_length) +
                           " bytes; the peer announced " + std::to_string(*length));
      }
      return Status::Ok();
    }
    upstream_status = r.status;
    if (IsNotFoundStatus(a, r.status)) {
      return NotFound(where + " answered " + std::to_string(r.status));
    }
    if (r.status < 200 || r.status > 299) {
      return Unavailable(where + " answered " + std::to_string(r.status));
    }
    length = r.content_length;
    if (length && *length > max) {
      return Unavailable(where + " sends " + std::to_string(*length) + " bytes, more than the " +
                         std::to_string(max) + " byte object limit");
    }
    if (length && a.size && *length != *a.size) {
      verify_failure = DataLoss(where + " sends " + std::to_string(*length) +
                                " bytes; the index says " + std::to_string(*a.size));
      return verify_failure;
    }
    store::WriteOptions write_options;
    write_options.expected_digest = sha256;
    write_options.expected_size = length ? length : a.size;
    auto w = store.NewWriter(a.key, write_options);
    if (w.ok()) {
      writer = std::move(w).value();
    } else {
      store_failure = w.status();
      log::Warn("artifact not stored",
                {{"frontend", a.frontend}, {"key", a.key}, {"error", store_failure.ToString()}});
      if (client == nullptr) return store_failure;
    }
    verifier = std::make_unique<Verifier>(a.expected, writer != nullptr && sha256.has_value());
    return Status::Ok();
  };

  auto on_data = [&](std::string_view data) -> Status {
    received += data.size();
    if (received > max) {
      return Unavailable(where + " sent more than the " + std::to_string(max) +
                         " byte object limit");
    }
    if (a.size && received > *a.size) {
      verify_failure = DataLoss(where + " sent more than the " + std::to_string(*a.size) +
                                " bytes the index says");
      return verify_failure;
    }
    verifier->Update(data);
    if (writer) {
      // The store checks SHA-256; without it the rest of the body could not be verified, so a
      // store failure here ends the transfer.
      BC_RETURN_IF_ERROR(writer->Write(data));
    }
    if (client_ok) {
      if (!began) {
        began = true;
        client->SetStatus(200);
        client->SetHeader("Content-Type", ContentType(a));
        client->SetHeader(kSourceHeader, source);
        client_ok = client->Begin(length).ok();
      }
      std::string_view out = data;
      if (length && received == *length) {
        held_back = out.back();
        out.remove_suffix(1);
      }
      if (client_ok && !out.empty()) client_ok = client->Write(out).ok();
      if (!client_ok) {
        log::Debug("artifact client went away", {{"key", a.key}});
        if (!writer) return Cancelled("the client went away and the object is not being stored");
      }
    }
    return Status::Ok();
  };

  Status fetched;
  bool used_upstream = true;
  if (options.peers != nullptr) {
    Status refused;  // what this cache's own callbacks returned, as opposed to a peer failure
    source = "peer";
    Status peer = options.peers->Fetch(
        a,
        [&](const UpstreamResponse& r) {
          Status st = on_head(r);
          if (!st.ok()) refused = st;
          return st;
        },
        [&](std::string_view data) {
          Status st = on_data(data);
          if (!st.ok()) refused = st;
          return st;
        });
    if (peer.ok() || !refused.ok()) {
      fetched = peer;
      used_upstream = false;
    } else {
      if (peer.code() != StatusCode::kFailedPrecondition) {
        log::Info("peer fetch failed; fetching upstream",
                  {{"key", a.key}, {"delivered", received}, {"error", peer.message()}});
      }
      if (verifier == nullptr) source = "upstream";
      // Continue after what the peer delivered; the whole body is still verified at the end.
      uint64_t skip = received;
      fetched = fetcher.Get(a.url, a.fetch, on_head, [&](std::string_view data) -> Status {
        if (skip >= data.size()) {
          skip -= data.size();
          return Status::Ok();
        }
        data.remove_prefix(skip);
        skip = 0;
        return on_data(data);
      });
    }
  } else {
    fetched = fetcher.Get(a.url, a.fetch, on_head, on_data);
  }
  if (fetched.code() == StatusCode::kInvalidArgument) {
    // Rejected before anything was sent (a bad request header): not an upstream fetch.
    if (client != nullptr) http::SendError(*client, fetched);
    return FetchOutcome(fetched);
  }
  if (fetched.ok() && verifier == nullptr) fetched = Internal("fetcher skipped the response head");
  Status verified = verify_failure;
  bool stored = false;
  if (fetched.ok()) {
    verified = verifier->Finish();
    if (a.size && verified.ok() && received != *a.size) {
      verified = DataLoss(where + " sent " + std::to_string(received) + " bytes; the index says " +
                          std::to_string(*a.size));
    }
    if (verified.ok() && writer) {
      auto info = writer->Commit();
      if (info.ok()) {
        stored = true;
        Keep(info->digest, verifier->Computed());
        if (committed != nullptr) *committed = *info;
      } else if (info.status().code() == StatusCode::kDataLoss) {
        verified = info.status().WithContext(where);
      } else {
        store_failure = info.status();
        log::Warn("artifact not stored",
                  {{"frontend", a.frontend}, {"key", a.key}, {"error", store_failure.ToString()}});
      }
    }
    writer.reset();
  }

  const double seconds = SecondsSince(start);
  std::string_view outcome_label = "error";
  const bool not_found = IsNotFoundStatus(a, upstream_status);
  if (not_found) {
    outcome_label = "not_found";
  } else if (fetched.ok() && verified.ok()) {
    outcome_label = "ok";
  }
  if (observer.on_fetch && used_upstream) {
    observer.on_fetch(a.frontend, outcome_label, received, seconds);
  }

  if (!verified.ok()) {
    Count(observer.on_verify_failed, a);
    log::Warn("artifact verification failed", {{"frontend", a.frontend},
                                               {"key", a.key},
                                               {"url", url.Redacted()},
                                               {"error", verified.message()}});
    FetchOutcome outcome(verified);
    if (client != nullptr) http::SendError(*client, outcome.status);
    return outcome;
  }
  if (!fetched.ok()) {
    FetchOutcome outcome(fetched);
    outcome.gone = upstream_status == 410;
    if (not_found && fetched.code() == StatusCode::kNotFound) {
      log::Debug("artifact not found upstream",
                 {{"frontend", a.frontend}, {"key", a.key}, {"status", upstream_status}});
      RememberNotFound(a, outcome);
    } else {
      log::Warn("artifact fetch failed",
                {{"frontend", a.frontend}, {"key", a.key}, {"error", fetched.ToString()}});
    }
    if (client != nullptr) RespondError(*client, outcome);
    return outcome;
  }

  log::Debug("artifact fetched", {{"frontend", a.frontend},
                                  {"key", a.key},
                                  {"bytes", received},
                                  {"seconds", seconds},
                                  {"stored", stored}});
  if (client_ok) {
    if (!began) {
      client->SetStatus(200);
      client->SetHeader("Content-Type", ContentType(a));
      client->SetHeader(kSourceHeader, source);
      (void)client->Send({});
    } else {
      if (length && *length > 0) client_ok = client->Write(std::string_view(&held_back, 1)).ok();
      if (client_ok) (void)client->End();
    }
  }
  if (stored) return FetchOutcome(Status::Ok());
  FetchOutcome outcome(store_failure.ok() ? Internal("artifact neither stored nor failed")
                                          : store_failure);
  outcome.fetch_again = true;
  return outcome;
}

ArtifactCache::ArtifactCache(store::BlobStore& store, Fetcher& fetcher, UpstreamObserver observer,
                             ArtifactCacheOptions options)
    : impl_(new Impl{store, fetcher, std::move(observer), std::move(options), {}, {}, {}}) {}

ArtifactCache::~ArtifactCache() = default;

void ArtifactCache::Serve(http::Request& request, http::Response& response,
                          const Artifact& artifact) {
  const std::string_view method = request.method();
  if (method != "GET" && method != "HEAD") {
    response.SetStatus(405);
    response.SetHeader("Allow", "GET, HEAD");
    (void)response.Send("method not allowed\n");
    return;
  }
  auto url = ParseUrl(artifact.url);
  if (!url.ok() || artifact.key.empty()) {
    http::SendError(response, url.ok() ? InvalidArgument("empty artifact key") : url.status());
    return;
  }
  Impl& impl = *impl_;
  for (int round = 0; round < kRounds; ++round) {
    if (impl.ServeLocal(request, response, artifact, round == 0 ? "local" : "upstream")) return;
    if (auto remembered = impl.RememberedNotFound(artifact)) {
      impl.RespondError(response, *remembered);
      return;
    }
    auto joined = impl.flights.Join(artifact.key);
    if (joined.leadership) {
      // A fetch may have committed between the look-up and Join.
      if (impl.ServeLocal(request, response, artifact, round == 0 ? "local" : "upstream")) {
        joined.leadership->Publish(FetchOutcome(Status::Ok()));
        return;
      }
      if (method == "HEAD") {
        // Fetched into the store, then answered from it (with its length) in the next round.
        // An object the store cannot keep gets the store's error rather than a refetch per round.
        FetchOutcome outcome = impl.Fetch(artifact, *url, nullptr, nullptr);
        joined.leadership->Publish(outcome);
        if (outcome.status.ok()) continue;
        impl.RespondError(response, outcome);
        return;
      }
      joined.leadership->Publish(impl.Fetch(artifact, *url, &response, nullptr));
      return;
    }
    impl.Count(impl.observer.on_coalesced, artifact);
    auto outcome = joined.flight->Wait(impl.options.wait_timeout);
    if (!outcome) {
      http::SendError(
          response, DeadlineExceeded("waited " + std::to_string(impl.options.wait_timeout.count()) +
                                     " ms for the upstream fetch of " + url->Redacted()));
      return;
    }
    if (outcome->status.ok() || outcome->fetch_again) continue;
    impl.RespondError(response, *outcome);
    return;
  }
  http::SendError(response, Unavailable("artifact from " + url->Redacted() +
                                        " was fetched but could not be kept in the store"));
}

Result<store::BlobInfo> ArtifactCache::Ensure(const Artifact& artifact) {
  BC_ASSIGN_OR_RETURN(Url url, ParseUrl(artifact.url));
  if (artifact.key.empty()) return InvalidArgument("empty artifact key");
  Impl& impl = *impl_;
  for (int round = 0; round < kRounds; ++round) {
    if (auto info = impl.LocalInfo(artifact)) return *info;
    if (auto remembered = impl.RememberedNotFound(artifact)) return remembered->status;
    auto joined = impl.flights.Join(artifact.key);
    if (joined.leadership) {
      if (auto info = impl.LocalInfo(artifact)) {
        joined.leadership->Publish(FetchOutcome(Status::Ok()));
        return *info;
      }
      store::BlobInfo committed;
      FetchOutcome outcome = impl.Fetch(artifact, url, nullptr, &committed);
      joined.leadership->Publish(outcome);
      if (outcome.status.ok()) return committed;
      return outcome.status;
    }
    impl.Count(impl.observer.on_coalesced, artifact);
    auto outcome = joined.flight->Wait(impl.options.wait_timeout);
    if (!outcome) {
      return DeadlineExceeded("waited " + std::to_string(impl.options.wait_timeout.count()) +
                              " ms for the upstream fetch of " + url.Redacted());
    }
    if (outcome->status.ok() || outcome->fetch_again) continue;
    return outcome->status;
  }
  return Unavailable("artifact from " + url.Redacted() +
                     " was fetched but could not be kept in the store");
}

}  // namespace buildcache::upstream
