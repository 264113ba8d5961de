#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>

#include "agent/identity/caller.h"
#include "common/base/thread_annotations.h"
#include "common/metrics/metrics.h"

namespace buildcache::agent {

// Which caller a lookup is attributed to in buildcache_scope_requests_total and
// buildcache_scope_bytes_total: the `scope` label value.
//
// The value is the caller's scope as the identity source decided it (the pod's namespace from the
// node's pod watch or a verified ServiceAccount token, or a token file entry's scope), never
// anything the request says about itself. Prometheus keeps one series per label value, so the
// values are bounded: the first `limit` distinct scopes this agent sees keep their own value for
// the agent's lifetime, and every later one is counted under kOther. Three reserved values are
// not scope names (IsScopeName rejects their parentheses), so no namespace can pass for them:
//   (anonymous)  callers without credentials or a known address
//   (unscoped)   callers without a scope: identity off, or a token file entry with scope ""
//   (other)      scopes beyond the limit
// At most limit + 3 values exist. Thread-safe.
class ScopeLabels {
 public:
  static constexpr std::string_view kAnonymous = "(anonymous)";
  static constexpr std::string_view kUnscoped = "(unscoped)";
  static constexpr std::string_view kOther = "(other)";

  explicit ScopeLabels(size_t limit) : limit_(limit) {}

  // The label value for `caller`; admits its scope while fewer than `limit` are admitted.
  std::string For(const identity::Caller& caller) EXCLUDES(mu_);

  // Scopes admitted so far (at most limit).
  size_t admitted() const EXCLUDES(mu_);

 private:
  const size_t limit_;
  mutable Mutex mu_;
  std::unordered_set<std::string> admitted_ GUARDED_BY(mu_);
};

// The per-scope families and the label bound, for the Attribute decorator
// (instrumented_handler.h).
struct ScopeAttribution {
  ScopeLabels& labels;
  // buildcache_scope_requests_total{scope,result}: lookups (GET, HEAD) answered hit (from this
  // agent's store or a peer) or miss (404, or fetched from the upstream to answer).
  metrics::Family<metrics::Counter>& requests;
  // buildcache_scope_bytes_total{scope,result}: body bytes of those answers: hit = what the cache
  // saved the caller fetching, miss = what came from the upstream.
  metrics::Family<metrics::Counter>& bytes;
};

}  // namespace buildcache::agent
