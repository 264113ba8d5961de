#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "agent/store/digest.h"
#include "agent/upstream/coalescer.h"
#include "agent/upstream/hold_back.h"
#include "agent/upstream/serving.h"
#include "agent/upstream/upstream.h"
#include "agent/upstream/url.h"
#include "agent/upstream/verifier.h"
#include "common/base/thread_annotations.h"
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
  Mutex negative_mu;
  std::map<std::string, Negative> negatives GUARDED_BY(negative_mu);

  std::chrono::steady_clock::time_point Now() const {
    return options.clock ? options.clock() : std::chrono::steady_clock::now();
  }

  // The remembered not-found answer for the artifact, while it is fresh.
  std::optional<FetchOutcome> RememberedNotFound(const Artifact& a) {
    if (a.negative_ttl.count() <= 0) return std::nullopt;
    MutexLock lock(negative_mu);
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
    MutexLock lock(negative_mu);
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
  Mutex kept_mu;
  std::unordered_map<store::Digest, std::vector<ExpectedDigest>, DigestHash> kept
      GUARDED_BY(kept_mu);

  void Keep(const store::Digest& digest, const std::vector<ExpectedDigest>& computed) {
    if (computed.empty()) return;
    MutexLock lock(kept_mu);
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
    MutexLock lock(kept_mu);
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
  // With `leader`, every piece of the body counts as the flight's progress, and a failure is
  // published before the client hears of it.
  FetchOutcome Fetch(const Artifact& a, const Url& url, http::Response* client,
                     store::BlobInfo* committed,
                     Coalescer<FetchOutcome>::Leadership* leader = nullptr);
  class FetchRun;
};

// One fetch of one artifact into the store, and to a client when one is given. Its phases, in
// order: the response head (OnHead), the body (OnData), when a peer failed mid-stream the
// upstream's head of the resumed transfer (OnResumedHead) and the rest of the body, then Finish,
// the only exit: it verifies, commits, labels the outcome and answers the client. Used once, on
// the requesting thread.
class ArtifactCache::Impl::FetchRun {
 public:
  FetchRun(Impl& impl, const Artifact& a, const Url& url, http::Response* client,
           Coalescer<FetchOutcome>::Leadership* leader)
      : impl_(impl),
        a_(a),
        url_(url),
        client_(client),
        leader_(leader),
        where_("upstream " + url.Redacted()),
        sha256_(ExpectedSha256(a)),
        client_ok_(client != nullptr) {}

  // Try peers, resume upstream, finish.
  FetchOutcome Run(store::BlobInfo* committed) {
    Status fetched;
    if (impl_.options.peers == nullptr || !TryPeers(&fetched)) fetched = FromUpstream();
    return Finish(std::move(fetched), committed);
  }

 private:
  enum class Phase { kHead, kData };

  // Streams the artifact from a peer. False when the upstream must take over (no peer had it, or
  // one failed on its side); else *fetched is the result, a refusal of this run's own included.
  bool TryPeers(Status* fetched);
  // Fetches from the upstream, after the bytes a peer already delivered when there were some.
  Status FromUpstream();
  Status OnHead(const UpstreamResponse& r);
  Status OnResumedHead(const UpstreamResponse& r);
  Status OnData(std::string_view data);
  void ToClient(std::string_view data);
  void BeginClient();
  FetchOutcome Finish(Status fetched, store::BlobInfo* committed);
  // Checks the whole body and commits it; returns the verification result.
  Status VerifyAndCommit(store::BlobInfo* committed);
  void Observe(const Status& fetched, const Status& verified);
  FetchOutcome Failed(const Status& fetched);
  // A failure is published before the client hears of it: a request that arrives after the
  // answer starts its own fetch (or finds the remembered not-found) instead of sharing this one.
  void AnswerError(const FetchOutcome& outcome) {
    if (leader_ != nullptr) leader_->Publish(outcome);
    if (client_ != nullptr) impl_.RespondError(*client_, outcome);
  }

  Impl& impl_;
  const Artifact& a_;
  const Url& url_;
  http::Response* const client_;
  Coalescer<FetchOutcome>::Leadership* const leader_;
  const std::string where_;
  const std::optional<store::Digest> sha256_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();

  Phase phase_ = Phase::kHead;
  int upstream_status_ = 0;
  std::optional<uint64_t> length_;  // announced by the (first) response head
  uint64_t received_ = 0;
  std::unique_ptr<store::BlobWriter> writer_;
  std::unique_ptr<Verifier> verifier_;
  Status store_failure_;   // why the object is not being stored
  Status verify_failure_;  // a size mismatch found while streaming
  bool stored_ = false;
  bool used_upstream_ = true;
  bool client_ok_;
  bool began_ = false;
  HoldBack hold_;                         // the client's last byte, sent once verified
  std::string_view source_ = "upstream";  // X-Buildcache-Source: "peer" when a peer streams it
};

bool ArtifactCache::Impl::FetchRun::TryPeers(Status* fetched) {
  Status refused;  // what this run's own callbacks returned, as opposed to a peer failure
  source_ = "peer";
  Status peer = impl_.options.peers->Fetch(
      a_,
      [&](const UpstreamResponse& r) {
        Status st = OnHead(r);
        if (!st.ok()) refused = st;
        return st;
      },
      [&](std::string_view data) {
        Status st = OnData(data);
        if (!st.ok()) refused = st;
        return st;
      });
  if (peer.ok() || !refused.ok()) {
    *fetched = peer;
    used_upstream_ = false;
    return true;
  }
  if (peer.code() != StatusCode::kFailedPrecondition) {
    log::Info("peer fetch failed; fetching upstream",
              {{"key", a_.key}, {"delivered", received_}, {"error", peer.message()}});
  }
  if (phase_ == Phase::kHead) source_ = "upstream";
  return false;
}

Status ArtifactCache::Impl::FetchRun::FromUpstream() {
  if (phase_ == Phase::kHead) {
    return impl_.fetcher.Get(
        a_.url, a_.fetch, [&](const UpstreamResponse& r) { return OnHead(r); },
        [&](std::string_view data) { return OnData(data); });
  }
  // Continue after what the peer delivered; the whole body is still verified at the end.
  uint64_t skip = received_;
  return impl_.fetcher.Get(
      a_.url, a_.fetch, [&](const UpstreamResponse& r) { return OnResumedHead(r); },
      [&](std::string_view data) -> Status {
        if (skip >= data.size()) {
          skip -= data.size();
          return Status::Ok();
        }
        data.remove_prefix(skip);
        skip = 0;
        return OnData(data);
      });
}

Status ArtifactCache::Impl::FetchRun::OnHead(const UpstreamResponse& r) {
  const uint64_t max = impl_.options.max_object_size;
  upstream_status_ = r.status;
  if (IsNotFoundStatus(a_, r.status)) {
    return NotFound(where_ + " answered " + std::to_string(r.status));
  }
  if (r.status < 200 || r.status > 299) {
    return Unavailable(UnexpectedStatusMessage(where_, r.status));
  }
  length_ = r.content_length;
  if (length_ && *length_ > max) {
    return Unavailable(where_ + " sends " + std::to_string(*length_) + " bytes, more than the " +
                       std::to_string(max) + " byte object limit");
  }
  if (length_ && a_.size && *length_ != *a_.size) {
    verify_failure_ = DataLoss(where_ + " sends " + std::to_string(*length_) +
                               " bytes; the index says " + std::to_string(*a_.size));
    return verify_failure_;
  }
  store::WriteOptions write_options;
  write_options.expected_digest = sha256_;
  write_options.expected_size = length_ ? length_ : a_.size;
  // Fetched again if a machine crash loses it before the store's grouped content sync; the
  // store re-hashes it after an unclean stop, so it is then absent, never wrong.
  write_options.sync_content = false;
  auto w = impl_.store.NewWriter(a_.key, write_options);
  if (w.ok()) {
    writer_ = std::move(w).value();
  } else {
    store_failure_ = w.status();
    log::Warn("artifact not stored",
              {{"frontend", a_.frontend}, {"key", a_.key}, {"error", store_failure_.ToString()}});
    if (client_ == nullptr) return store_failure_;
  }
  verifier_ = std::make_unique<Verifier>(a_.expected, writer_ != nullptr && sha256_.has_value());
  hold_ = HoldBack(length_);
  phase_ = Phase::kData;
  return Status::Ok();
}

Status ArtifactCache::Impl::FetchRun::OnResumedHead(const UpstreamResponse& r) {
  // The upstream taking over from a peer that failed mid-stream: the body continues where the
  // peer stopped, so it must be the same length (the digests decide the rest).
  if (r.status < 200 || r.status > 299) {
    return Unavailable(where_ + " answered " + std::to_string(r.status) +
                       " after a peer had started the artifact");
  }
  if (length_ && r.content_length && *length_ != *r.content_length) {
    return Unavailable(where_ + " sends " + std::to_string(*r.content_length) +
                       " bytes; the peer announced " + std::to_string(*length_));
  }
  return Status::Ok();
}

Status ArtifactCache::Impl::FetchRun::OnData(std::string_view data) {
  const uint64_t max = impl_.options.max_object_size;
  received_ += data.size();
  if (received_ > max) {
    return Unavailable(where_ + " sent more than the " + std::to_string(max) +
                       " byte object limit");
  }
  if (a_.size && received_ > *a_.size) {
    verify_failure_ = DataLoss(where_ + " sent more than the " + std::to_string(*a_.size) +
                               " bytes the index says");
    return verify_failure_;
  }
  if (length_ && received_ > *length_) {
    return Unavailable(where_ + " sent more than the " + std::to_string(*length_) +
                       " bytes it announced");
  }
  verifier_->Update(data);
  // Requests waiting for this fetch wait as long as bytes arrive.
  if (leader_ != nullptr) leader_->Progress();
  if (writer_) {
    // The store checks SHA-256; without it the rest of the body could not be verified, so a
    // store failure here ends the transfer.
    BC_RETURN_IF_ERROR(writer_->Write(data));
  }
  if (client_ok_) {
    ToClient(data);
    if (!client_ok_) {
      log::Debug("artifact client went away", {{"key", a_.key}});
      if (!writer_) return Cancelled("the client went away and the object is not being stored");
    }
  }
  return Status::Ok();
}

void ArtifactCache::Impl::FetchRun::BeginClient() {
  client_->SetStatus(200);
  client_->SetHeader("Content-Type", ContentType(a_));
  client_->SetHeader(kSourceHeader, source_);
}

void ArtifactCache::Impl::FetchRun::ToClient(std::string_view data) {
  if (!began_) {
    began_ = true;
    BeginClient();
    client_ok_ = client_->Begin(length_).ok();
  }
  std::string_view out = hold_.Pass(data);
  if (client_ok_ && !out.empty()) client_ok_ = client_->Write(out).ok();
}

Status ArtifactCache::Impl::FetchRun::VerifyAndCommit(store::BlobInfo* committed) {
  Status verified = verifier_->Finish();
  if (a_.size && verified.ok() && received_ != *a_.size) {
    verified = DataLoss(where_ + " sent " + std::to_string(received_) + " bytes; the index says " +
                        std::to_string(*a_.size));
  }
  if (verified.ok() && writer_) {
    auto info = writer_->Commit();
    if (info.ok()) {
      stored_ = true;
      impl_.Keep(info->digest, verifier_->Computed());
      if (committed != nullptr) *committed = *info;
    } else if (info.status().code() == StatusCode::kDataLoss) {
      verified = info.status().WithContext(where_);
    } else {
      store_failure_ = info.status();
      log::Warn("artifact not stored",
                {{"frontend", a_.frontend}, {"key", a_.key}, {"error", store_failure_.ToString()}});
    }
  }
  writer_.reset();
  return verified;
}

void ArtifactCache::Impl::FetchRun::Observe(const Status& fetched, const Status& verified) {
  if (!impl_.observer.on_fetch || !used_upstream_) return;
  std::string_view label = "error";
  if (IsNotFoundStatus(a_, upstream_status_)) {
    label = "not_found";
  } else if (fetched.ok() && verified.ok()) {
    label = "ok";
  }
  impl_.observer.on_fetch(a_.frontend, label, received_, SecondsSince(start_));
}

FetchOutcome ArtifactCache::Impl::FetchRun::Failed(const Status& fetched) {
  FetchOutcome outcome(fetched);
  outcome.gone = upstream_status_ == 410;
  if (IsNotFoundStatus(a_, upstream_status_) && fetched.code() == StatusCode::kNotFound) {
    log::Debug("artifact not found upstream",
               {{"frontend", a_.frontend}, {"key", a_.key}, {"status", upstream_status_}});
    impl_.RememberNotFound(a_, outcome);
  } else {
    log::Warn("artifact fetch failed",
              {{"frontend", a_.frontend}, {"key", a_.key}, {"error", fetched.ToString()}});
  }
  AnswerError(outcome);
  return outcome;
}

FetchOutcome ArtifactCache::Impl::FetchRun::Finish(Status fetched, store::BlobInfo* committed) {
  if (fetched.code() == StatusCode::kInvalidArgument) {
    // Rejected before anything was sent (a bad request header): not an upstream fetch.
    AnswerError(FetchOutcome(fetched));
    return FetchOutcome(fetched);
  }
  if (fetched.ok() && verifier_ == nullptr) fetched = Internal("fetcher skipped the response head");
  const Status verified = fetched.ok() ? VerifyAndCommit(committed) : verify_failure_;
  Observe(fetched, verified);
  if (!verified.ok()) {
    impl_.Count(impl_.observer.on_verify_failed, a_);
    log::Warn("artifact verification failed", {{"frontend", a_.frontend},
                                               {"key", a_.key},
                                               {"url", url_.Redacted()},
                                               {"error", verified.message()}});
    AnswerError(FetchOutcome(verified));
    return FetchOutcome(verified);
  }
  if (!fetched.ok()) return Failed(fetched);

  log::Debug("artifact fetched", {{"frontend", a_.frontend},
                                  {"key", a_.key},
                                  {"bytes", received_},
                                  {"seconds", SecondsSince(start_)},
                                  {"stored", stored_}});
  if (client_ok_) {
    if (!began_) {
      BeginClient();
      (void)client_->Send({});
    } else {
      const std::string_view held = hold_.Release();
      if (!held.empty()) client_ok_ = client_->Write(held).ok();
      if (client_ok_) (void)client_->End();
    }
  }
  if (stored_) return FetchOutcome(Status::Ok());
  FetchOutcome outcome(store_failure_.ok() ? Internal("artifact neither stored nor failed")
                                           : store_failure_);
  outcome.fetch_again = true;
  return outcome;
}

FetchOutcome ArtifactCache::Impl::Fetch(const Artifact& a, const Url& url, http::Response* client,
                                        store::BlobInfo* committed,
                                        Coalescer<FetchOutcome>::Leadership* leader) {
  return FetchRun(*this, a, url, client, leader).Run(committed);
}

ArtifactCache::ArtifactCache(store::BlobStore& store, Fetcher& fetcher, UpstreamObserver observer,
                             ArtifactCacheOptions options)
    : impl_(new Impl{store, fetcher, std::move(observer), std::move(options), {}, {}, {}, {}, {}}) {
}

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
        FetchOutcome outcome = impl.Fetch(artifact, *url, nullptr, nullptr, &*joined.leadership);
        joined.leadership->Publish(outcome);
        if (outcome.status.ok()) continue;
        impl.RespondError(response, outcome);
        return;
      }
      joined.leadership->Publish(
          impl.Fetch(artifact, *url, &response, nullptr, &*joined.leadership));
      return;
    }
    impl.Count(impl.observer.on_coalesced, artifact);
    auto outcome = joined.flight->Wait(impl.options.wait_timeout);
    if (!outcome) {
      http::SendError(
          response,
          DeadlineExceeded("the upstream fetch of " + url->Redacted() + " made no progress for " +
                           std::to_string(impl.options.wait_timeout.count()) + " ms"));
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
      FetchOutcome outcome = impl.Fetch(artifact, url, nullptr, &committed, &*joined.leadership);
      joined.leadership->Publish(outcome);
      if (outcome.status.ok()) return committed;
      return outcome.status;
    }
    impl.Count(impl.observer.on_coalesced, artifact);
    auto outcome = joined.flight->Wait(impl.options.wait_timeout);
    if (!outcome) {
      return DeadlineExceeded("the upstream fetch of " + url.Redacted() + " made no progress for " +
                              std::to_string(impl.options.wait_timeout.count()) + " ms");
    }
    if (outcome->status.ok() || outcome->fetch_again) continue;
    return outcome->status;
  }
  return Unavailable("artifact from " + url.Redacted() +
                     " was fetched but could not be kept in the store");
}

}  // namespace buildcache::upstream
